"""Weight / Activation Similarity (hf_topo.regularizers.similarity) and their use through TopoLoss and TopoTrainer."""

import itertools
import json

import numpy as np
import pytest
import torch
from _training import training_args
from _training import weights as _weights
from torch import nn
from transformers import AutoModelForCausalLM
from transformers.pytorch_utils import Conv1D

from hf_topo import TopoConfig, TopoRegularizer, TopoTrainer
from hf_topo.regularizers.similarity import DISTANCES, neighbour_distance_loss, neighbour_pair_count

C_FC = ["transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc"]


def _pairwise_reference(sheet: np.ndarray, distance: str, radius: int) -> float:
    """Mean distance over every ordered pair of units within Chebyshev ``radius``, one pair at a time."""
    height, width, _ = sheet.shape
    values = []
    for i, j in itertools.product(range(height), range(width)):
        for di, dj in itertools.product(range(-radius, radius + 1), repeat=2):
            k, m = i + di, j + dj
            if (di, dj) == (0, 0) or not (0 <= k < height and 0 <= m < width):
                continue
            a, b = sheet[i, j], sheet[k, m]
            if distance == "euclidean":
                values.append(np.linalg.norm(a - b))
            elif distance == "cosine":
                values.append(1 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
            else:
                values.append(1 - np.corrcoef(a, b)[0, 1])
    return float(np.mean(values))


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("radius", [1, 2])
def test_equals_the_per_pair_computation(distance, radius):
    sheet = torch.randn(5, 7, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = _pairwise_reference(sheet.numpy(), distance, radius)
    assert neighbour_distance_loss(sheet, distance, radius).item() == pytest.approx(expected, rel=1e-5)


def test_pair_count_counts_border_units_with_fewer_neighbours():
    # 3x4 sheet, queen neighbours: 9 horizontal, 8 vertical, 12 diagonal unordered pairs.
    assert neighbour_pair_count(3, 4, 1) == 29
    # Corner units have 3 neighbours, edge units 5, inner units 8: 2 * pairs == the sum of neighbour counts.
    counts = [
        sum(0 <= i + di < 3 and 0 <= j + dj < 4 for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0))
        for i in range(3)
        for j in range(4)
    ]
    assert sorted(set(counts)) == [3, 5, 8] and sum(counts) == 2 * 29


@pytest.mark.parametrize("distance", DISTANCES)
def test_zero_for_identical_neighbours_and_grows_with_their_differences(distance):
    generator = torch.Generator().manual_seed(1)
    unit = torch.randn(16, generator=generator)
    identical = unit.expand(4, 6, 16).clone().requires_grad_(True)
    value = neighbour_distance_loss(identical, distance)
    assert value.item() == pytest.approx(0.0, abs=1e-6)
    value.backward()
    assert torch.isfinite(identical.grad).all()  # no NaN from the norm of a zero difference
    noise = torch.randn(4, 6, 16, generator=generator)
    values = [neighbour_distance_loss(unit + scale * noise, distance).item() for scale in (0.01, 0.1, 0.3, 1.0)]
    assert all(a < b for a, b in itertools.pairwise(values)), values


def test_correlation_ignores_offset_and_scale_per_unit():
    unit = torch.randn(12, generator=torch.Generator().manual_seed(2))
    scales = torch.rand(3, 5, 1) + 0.5
    offsets = torch.randn(3, 5, 1)
    assert neighbour_distance_loss(unit * scales + offsets, "correlation").item() == pytest.approx(0.0, abs=1e-6)
    assert neighbour_distance_loss(unit * scales + offsets, "euclidean").item() > 0.1


def test_weight_similarity_is_the_same_on_linear_conv1d_and_conv2d_sheets():
    torch.manual_seed(3)
    linear = nn.Linear(10, 24)
    conv1d = Conv1D(24, 10)
    conv2d = nn.Conv2d(10, 24, kernel_size=1)
    with torch.no_grad():
        conv1d.weight.copy_(linear.weight.T)  # Conv1D stores (in, out)
        conv2d.weight.copy_(linear.weight[:, :, None, None])
    values = []
    for module in (linear, conv1d, conv2d):
        model = nn.Sequential()
        model.add_module("layer", module)
        topo = TopoRegularizer(TopoConfig(target_modules=["layer"], loss="weight_similarity", distance="correlation"))
        values.append(topo(model).item())
    expected = _pairwise_reference(linear.weight.detach().double().reshape(4, 6, 10).numpy(), "correlation", 1)
    assert values == pytest.approx([expected] * 3, rel=1e-5)


@pytest.mark.parametrize("distance", DISTANCES)
def test_weight_similarity_decreases_when_optimized(tiny_gpt2, distance):
    topo = TopoRegularizer(TopoConfig(loss="weight_similarity", distance=distance))
    params = [tiny_gpt2.get_submodule(name).weight for name in C_FC]
    optimizer = torch.optim.Adam(params, lr=1e-2)
    start = topo(tiny_gpt2).item()
    for _ in range(20):
        optimizer.zero_grad()
        topo(tiny_gpt2).backward()
        optimizer.step()
    assert topo(tiny_gpt2).item() < 0.8 * start


def _batch(seed=0, batch=4, seq=16, vocab=64):
    ids = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def _activation_similarity(topo, model, batch):
    with topo.record_activations(model) as recorded:
        model(**batch)
    return topo.compute(model, activations=recorded, attention_mask=batch.get("attention_mask"))


def test_activation_similarity_reads_the_pre_activations_and_excludes_padding(tiny_gpt2):
    topo = TopoRegularizer(TopoConfig(loss="activation_similarity"))
    batch = _batch()
    batch["attention_mask"][:, 12:] = 0  # right padding
    value, per_layer = _activation_similarity(topo, tiny_gpt2, batch)
    # The same numbers from c_fc outputs captured by the test's own hooks, valid positions only.
    outputs = {}
    handles = [
        tiny_gpt2.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: outputs.update({name: o}))
        for name in C_FC
    ]
    with torch.no_grad():
        tiny_gpt2(**batch)
    for handle in handles:
        handle.remove()
    expected = []
    for name in C_FC:
        responses = outputs[name][:, :12].reshape(-1, 128)  # (n_valid, units): unit u is column u
        sheet = responses.T.reshape(8, 16, -1).double().numpy()  # unit u at (u // 16, u % 16)
        expected.append(_pairwise_reference(sheet, "correlation", 1))
    assert [per_layer[n].item() for n in C_FC] == pytest.approx(expected, rel=1e-4)
    assert value.item() == pytest.approx(np.mean(expected), rel=1e-4)


def test_activation_similarity_padding_positions_do_not_count(tiny_gpt2):
    topo = TopoRegularizer(TopoConfig(loss="activation_similarity"))
    batch = _batch()
    batch["attention_mask"][:, 12:] = 0
    value = _activation_similarity(topo, tiny_gpt2, batch)[0].item()
    changed = {k: v.clone() for k, v in batch.items()}
    changed["input_ids"][:, 12:] = (changed["input_ids"][:, 12:] + 7) % 64  # other tokens under the padding
    assert _activation_similarity(topo, tiny_gpt2, changed)[0].item() == pytest.approx(value, rel=1e-6)
    full = _activation_similarity(topo, tiny_gpt2, _batch())[0].item()
    assert abs(full - value) > 1e-4  # the mask really removed positions


def test_activation_similarity_decreases_when_optimized(tiny_gpt2):
    topo = TopoRegularizer(TopoConfig(loss="activation_similarity"))
    optimizer = torch.optim.Adam(tiny_gpt2.parameters(), lr=3e-3)
    batch = _batch()
    start = _activation_similarity(topo, tiny_gpt2, batch)[0].item()
    for _ in range(15):
        optimizer.zero_grad()
        _activation_similarity(topo, tiny_gpt2, batch)[0].backward()
        optimizer.step()
    assert _activation_similarity(topo, tiny_gpt2, batch)[0].item() < 0.8 * start


def test_evaluate_measures_activation_similarity_on_a_batch_in_eval_mode(tiny_gpt2):
    topo = TopoRegularizer(TopoConfig(loss="activation_similarity"))
    batch = _batch()
    tiny_gpt2.train()
    value, per_layer = topo.evaluate(tiny_gpt2, batch)
    assert tiny_gpt2.training and not value.requires_grad  # mode restored, no graph kept
    tiny_gpt2.eval()
    expected = _activation_similarity(topo, tiny_gpt2, batch)[0]
    assert value.item() == pytest.approx(expected.item(), rel=1e-6) and set(per_layer) == set(C_FC)
    with pytest.raises(ValueError, match=r"measured on the activations of a batch: pass inputs="):
        topo.evaluate(tiny_gpt2)
    weights = TopoRegularizer(TopoConfig(loss="weight_similarity"))
    assert weights.evaluate(tiny_gpt2)[0].item() == pytest.approx(weights(tiny_gpt2).item(), rel=1e-6)


def test_activation_similarity_on_a_conv2d_sheet_counts_every_image_position():
    torch.manual_seed(4)
    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(3, 12, kernel_size=3, padding=1))
    topo = TopoRegularizer(TopoConfig(target_modules=["conv"], loss="activation_similarity"))
    images = torch.randn(2, 3, 5, 5)
    with topo.record_activations(model) as recorded:
        output = model(images)
    value = topo.compute(model, activations=recorded)[0]
    responses = output.detach().permute(1, 0, 2, 3).reshape(12, -1)  # unit u: its 2·5·5 responses
    expected = _pairwise_reference(responses.double().reshape(3, 4, -1).numpy(), "correlation", 1)
    assert value.item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="does not apply to the Conv2d layer"):
        topo.compute(model, activations=recorded, attention_mask=torch.ones(2, 5))


def test_hooks_are_removed_after_recording(tiny_gpt2):
    topo = TopoRegularizer(TopoConfig(loss="activation_similarity"))
    with topo.record_activations(tiny_gpt2) as recorded:
        tiny_gpt2(**_batch())
    assert set(recorded) == set(C_FC)
    recorded.clear()
    tiny_gpt2(**_batch(seed=1))
    assert recorded == {}
    assert all(not tiny_gpt2.get_submodule(name)._forward_hooks for name in C_FC)


def _args(out, **overrides):
    return training_args(out, **({"max_steps": 1, "topo_loss_type": "activation_similarity"} | overrides))


@pytest.mark.parametrize("accumulation, loss_kwargs", [(1, True), (4, True), (4, False)])
def test_activation_similarity_weighs_tau_per_optimizer_step(tmp_path, make_gpt2, accumulation, loss_kwargs):
    # All 16 samples are one sequence, so every micro-batch has the same activations and the same correlation-based
    # AS: one SGD step must move every parameter by lr·τ·∇AS(sequence) on top of the task step, whatever the split.
    from datasets import Dataset

    ids = torch.randint(0, 64, (16,), generator=torch.Generator().manual_seed(5)).tolist()
    data = Dataset.from_dict({"input_ids": [ids] * 16, "labels": [ids] * 16})
    lr, tau = 0.5, 5.0
    runs = {}
    for name, run_tau in (("as", tau), ("base", 0.0)):
        trainer = TopoTrainer(
            model=make_gpt2(),
            args=_args(
                tmp_path / name,
                tau=run_tau,
                learning_rate=lr,
                per_device_train_batch_size=16 // accumulation,
                gradient_accumulation_steps=accumulation,
            ),
            train_dataset=data,
        )
        if not loss_kwargs:
            trainer.model_accepts_loss_kwargs = False
        trainer.train()
        runs[name] = trainer
    start = make_gpt2()
    topo = TopoRegularizer(TopoConfig(loss="activation_similarity"))
    one = torch.tensor([ids])
    _activation_similarity(topo, start, {"input_ids": one, "attention_mask": torch.ones_like(one)})[0].backward()
    w_as, w_base = _weights(runs["as"].model), _weights(runs["base"].model)
    moved = 0
    for name, param in start.named_parameters():
        expected = lr * tau * param.grad if param.grad is not None else torch.zeros_like(param)
        assert torch.allclose(w_base[name] - w_as[name], expected, atol=2e-6, rtol=1e-3), name
        moved += int(expected.abs().max() > 1e-4)
    assert moved > len(C_FC)  # AS reaches c_fc and everything upstream of it
    log = [h for h in runs["as"].state.log_history if "loss" in h][0]
    assert log["tau"] == tau and log["topo_loss"] > 0
    assert log["task_loss"] + tau * log["topo_loss"] == pytest.approx(log["loss"], rel=1e-5)


@pytest.mark.parametrize("loss", ["weight_similarity", "activation_similarity"])
def test_metadata_round_trip(tmp_path, token_dataset, make_gpt2, loss):
    trainer = TopoTrainer(
        model=make_gpt2(),
        args=_args(tmp_path, topo_loss_type=loss, topo_distance="cosine", topo_neighbourhood=2, max_steps=2),
        train_dataset=token_dataset(32),
    )
    trainer.train()
    trainer.save_model()
    record = json.loads((tmp_path / "config.json").read_text())["topography"]
    assert (record["loss"], record["distance"], record["neighbourhood"]) == (loss, "cosine", 2)
    config = TopoConfig.from_pretrained(str(tmp_path))
    assert (config.loss, config.distance, config.neighbourhood) == (loss, "cosine", 2)
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path))
    assert TopoConfig.from_pretrained(reloaded) == config
    assert [h for h in trainer.state.log_history if "topo_loss" in h]


def test_records_without_the_new_keys_still_load():
    record = TopoConfig().to_dict()
    for key in ("distance", "neighbourhood"):
        record.pop(key)
    record["schema_version"] = 1
    config = TopoConfig.from_dict(record)
    assert (config.loss, config.distance, config.neighbourhood) == ("laplacian_pyramid", "correlation", 1)


def test_bad_configuration_fails_clearly(tmp_path, tiny_gpt2):
    with pytest.raises(
        ValueError,
        match=r"loss='ws' is not known: the registered regularizers are \('laplacian_pyramid', .*register_regularizer",
    ):
        TopoConfig(loss="ws")
    with pytest.raises(ValueError, match=r"distance='manhattan' is not supported; choose one of"):
        TopoConfig(loss="weight_similarity", distance="manhattan")
    with pytest.raises(ValueError, match=r"neighbourhood=0 must be an integer >= 1"):
        TopoConfig(neighbourhood=0)
    with pytest.raises(ValueError, match=r"topo_loss_type|loss='hebbian'"):
        _args(tmp_path, topo_loss_type="hebbian")
    topo = TopoRegularizer(TopoConfig(loss="activation_similarity"))
    with pytest.raises(ValueError, match=r"computed from the layers' activations .*record_activations"):
        topo(tiny_gpt2)
    with pytest.raises(ValueError, match=r"on layer 'transformer.h.0.mlp.c_fc': no activations of this layer"):
        topo.compute(tiny_gpt2, activations={})
    with pytest.raises(ValueError, match=r"needs at least 2 non-padding positions"):
        batch = _batch(batch=1)
        batch["attention_mask"][:, 1:] = 0
        _activation_similarity(topo, tiny_gpt2, batch)
    with pytest.raises(ValueError, match=r"Expected a \(height, width, depth\) sheet"):
        neighbour_distance_loss(torch.ones(3, 4))
    with pytest.raises(ValueError, match=r"needs at least two units"):
        neighbour_distance_loss(torch.ones(1, 1, 3))
