"""The regularizer registry (hf_topo.regularizers.registry), used as a user would: a toy regularizer registered from
outside the package trains a tiny GPT-2 through the real TopoTrainer, logs, saves and reloads."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from _training import training_args
from safetensors.numpy import load_file

from hf_topo import TopoConfig, TopoRegularizer, TopoTrainer
from hf_topo.regularizers import (
    RegularizerSpec,
    get_regularizer,
    register_regularizer,
    registered_regularizers,
    unregister_regularizer,
)

TOY = "neighbour_msd"


def neighbour_msd(weights, config):
    """Mean squared difference between the weights of horizontally and vertically neighbouring units."""
    sheet = weights.units.float()  # (height, width, depth)
    return torch.cat(
        [(sheet[:, 1:] - sheet[:, :-1]).pow(2).flatten(), (sheet[1:] - sheet[:-1]).pow(2).flatten()]
    ).mean()


def neighbour_msd_numpy(conv1d_weight: np.ndarray, height: int, width: int) -> float:
    """The same toy, restated on a GPT-2 Conv1D weight ``(in, out)`` as saved: unit ``u`` (a column) sits at
    ``(u // width, u % width)``."""
    sheet = conv1d_weight.T.reshape(height, width, -1).astype(np.float64)
    pairs = [sheet[:, 1:] - sheet[:, :-1], sheet[1:] - sheet[:-1]]
    return float(np.concatenate([(p**2).ravel() for p in pairs]).mean())


@pytest.fixture
def toy_regularizer():
    register_regularizer(TOY, display_name="Neighbour MSD", reads="weights", formula="mean (x_u − x_v)²")(
        neighbour_msd
    )
    yield TOY
    unregister_regularizer(TOY)


def test_builtins_are_registered_with_their_specs():
    assert registered_regularizers()[:4] == (
        "laplacian_pyramid",
        "weight_similarity",
        "activation_similarity",
        "spatial_correlation",
    )
    specs = {name: get_regularizer(name) for name in registered_regularizers()[:4]}
    assert {n: s.display_name for n, s in specs.items()} == {
        "laplacian_pyramid": "TopoLoss",
        "weight_similarity": "Weight Similarity",
        "activation_similarity": "Activation Similarity",
        "spatial_correlation": "TopoLM spatial correlation",
    }
    assert [n for n, s in specs.items() if s.reads_activations] == ["activation_similarity", "spatial_correlation"]
    assert [n for n, s in specs.items() if s.bias_map] == ["laplacian_pyramid"]
    assert TopoConfig(loss="spatial_correlation").reads_activations
    assert TopoRegularizer(TopoConfig(loss="weight_similarity")).spec is specs["weight_similarity"]


@pytest.mark.slow  # a fresh process or a training run: the fast lane leaves it to CI
def test_toy_regularizer_trains_through_topo_trainer(tmp_path, toy_regularizer, make_gpt2, token_dataset):
    model = make_gpt2()
    initial = {k: v.detach().numpy().copy() for k, v in model.state_dict().items() if "mlp.c_fc.weight" in k}
    args = training_args(
        tmp_path, topo_loss_type=toy_regularizer, tau=50.0, max_steps=3, save_strategy="steps", save_steps=1
    )
    trainer = TopoTrainer(model=model, args=args, train_dataset=token_dataset(64))
    trainer.train()
    logs = {h["step"]: h for h in trainer.state.log_history if "loss" in h}
    names = ["transformer.h.0.mlp.c_fc.weight", "transformer.h.1.mlp.c_fc.weight"]

    def expected(weights):  # the mean over the two target layers, 8x16 sheets
        return np.mean([neighbour_msd_numpy(weights[n], 8, 16) for n in names])

    # The value logged at step k is the regularizer on the weights the step starts from: the initial ones, then the
    # weights saved by the previous step's checkpoint.
    assert logs[1]["topo_loss"] == pytest.approx(expected(initial), rel=1e-5)
    for step in (2, 3):
        saved = load_file(str(tmp_path / f"checkpoint-{step - 1}" / "model.safetensors"))
        assert logs[step]["topo_loss"] == pytest.approx(expected(saved), rel=1e-5), step
    assert logs[3]["topo_loss"] < logs[2]["topo_loss"] < logs[1]["topo_loss"]  # τ pulls neighbouring units together
    for step, log in logs.items():
        assert log["task_loss"] + 50.0 * log["topo_loss"] == pytest.approx(log["loss"], rel=1e-5), step

    trainer.save_model(str(tmp_path / "final"))
    record = json.loads((tmp_path / "final" / "config.json").read_text())["topography"]
    assert record["loss"] == TOY
    final = load_file(str(tmp_path / "final" / "model.safetensors"))
    # A fresh process: the saved record needs the regularizer registered again, and then reloads exactly.
    script = (
        "import sys, json\n"
        "from transformers import AutoModelForCausalLM\n"
        "from hf_topo import TopoConfig, TopoRegularizer\n"
        "model = AutoModelForCausalLM.from_pretrained(sys.argv[1])\n"
        "try:\n"
        "    TopoConfig.from_pretrained(model)\n"
        "except ValueError as err:\n"
        "    refused = str(err)\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "import test_registry as toy\n"
        "from hf_topo.regularizers import register_regularizer\n"
        "register_regularizer(toy.TOY, reads='weights')(toy.neighbour_msd)\n"
        "config = TopoConfig.from_pretrained(model)\n"
        "print(json.dumps([refused, config.loss, TopoRegularizer(config)(model).item()]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "final"), str(__import__("pathlib").Path(__file__).parent)],
        capture_output=True,
        text=True,
        check=True,
    )
    refused, loss, value = json.loads(result.stdout.strip().splitlines()[-1])
    assert f"loss={TOY!r} is not known" in refused and "register_regularizer" in refused
    assert loss == TOY
    assert value == pytest.approx(expected(final), rel=1e-5)


def test_toy_regularizer_is_measured_post_hoc(toy_regularizer, tiny_gpt2):
    from hf_topo.analysis import regularizer_values, topographic_layers

    layers = topographic_layers(tiny_gpt2, TopoConfig())
    values = regularizer_values(layers, losses=[TOY, "laplacian_pyramid"])
    weights = {n: p.detach().numpy() for n, p in tiny_gpt2.named_parameters()}
    expected = [neighbour_msd_numpy(weights[f"transformer.h.{i}.mlp.c_fc.weight"], 8, 16) for i in (0, 1)]
    assert values[TOY].per_layer == pytest.approx(dict(zip([layer.name for layer in layers], expected, strict=True)))
    assert values[TOY].settings == {}


def test_toy_regularizer_reads_activations(tiny_gpt2):
    """An activation-based toy: the mean squared difference of horizontally neighbouring units' responses."""

    def response_msd(activations, config):
        sheet = activations.units  # (height, width, n_samples)
        return (sheet[:, 1:] - sheet[:, :-1]).float().pow(2).mean()

    register_regularizer(RegularizerSpec("response_msd", layer_loss=response_msd, reads="activations"))
    try:
        topo = TopoRegularizer(TopoConfig(loss="response_msd"))
        batch = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(3))
        with topo.record_activations(tiny_gpt2) as recorded:
            tiny_gpt2(input_ids=batch)
        value, per_layer = topo.compute(tiny_gpt2, activations=recorded)
        for name, got in per_layer.items():
            responses = recorded[name].detach().reshape(-1, 128).double().numpy()  # (16 samples, 128 units)
            sheet = responses.T.reshape(8, 16, -1)
            assert got.item() == pytest.approx(((sheet[:, 1:] - sheet[:, :-1]) ** 2).mean(), rel=1e-5), name
        assert value.requires_grad
        with pytest.raises(ValueError, match="record_activations"):
            topo.compute(tiny_gpt2)
    finally:
        unregister_regularizer("response_msd")


def test_registered_names_are_refused_when_taken_or_unknown(toy_regularizer):
    with pytest.raises(ValueError, match=r"'neighbour_msd' is already registered \(Neighbour MSD\).*Registered: \("):
        register_regularizer(TOY, reads="weights")(neighbour_msd)
    with pytest.raises(ValueError, match="'laplacian_pyramid' is already registered"):
        register_regularizer(RegularizerSpec("laplacian_pyramid", layer_loss=neighbour_msd))
    with pytest.raises(ValueError, match=r"loss='neighbour_mse' is not known: the registered regularizers are .*"):
        TopoConfig(loss="neighbour_mse")
    with pytest.raises(ValueError, match="register_regularizer"):
        get_regularizer("neighbour_mse")
    with pytest.raises(ValueError, match="reads='weight' of regularizer 'x' must be one of"):
        RegularizerSpec("x", layer_loss=neighbour_msd, reads="weight")
    with pytest.raises(ValueError, match="a Python identifier"):
        RegularizerSpec("my loss", layer_loss=neighbour_msd)
    with pytest.raises(
        ValueError, match=r"include_bias=True .*does not apply to loss='neighbour_msd'.*'laplacian_pyramid'"
    ):
        TopoConfig(loss=TOY, include_bias=True)
    assert TOY in registered_regularizers()
    unregister_regularizer(TOY)
    assert TOY not in registered_regularizers()
    register_regularizer(TOY, reads="weights")(neighbour_msd)  # the fixture unregisters it again
