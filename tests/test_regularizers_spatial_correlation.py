"""TopoLM's spatial-correlation loss: parity with a float64 transcription of TopoLM's formula, gradients, seeded
neighbourhoods, TopoLM's placement on four families, τ per optimizer step, exact resume, and a run from the command
line."""

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _scripts import offline_env, run_script
from _training import training_args
from conftest import build_causal_lm
from datasets import Dataset

from hf_topo import TopoConfig, TopoRegularizer, TopoTrainer, spatial_correlation_loss, topolm_targets
from hf_topo.regularizers.spatial_correlation import (
    neighbourhood_centres,
    neighbourhood_generator,
    sample_neighbourhoods,
)

# ---- a float64 transcription of TopoLM's models/positions.py (github epflneuroailab/topolm) ---------------------


def _topolm_p_norm(positions, p):
    diff = positions[:, None, :] - positions[None, :, :]
    if p == 2:
        return torch.sqrt(torch.sum(diff**2, dim=-1))
    return torch.max(torch.abs(diff), dim=-1)[0]  # p = 'inf'


def _topolm_local_spatial_loss(activations, positions):
    num_units = activations.shape[1]
    idx = np.tril_indices(num_units, k=-1)
    D = 1 / (1 + _topolm_p_norm(positions, 2))
    r = torch.corrcoef(activations.T)
    return 0.5 * (1 - torch.corrcoef(torch.stack([r[idx], D[idx]], dim=0))[0, 1])


def _topolm_spatial_loss_fn(activations, coordinates, neighborhood_masks, accum):
    # spatial_loss_fn with the neighbourhoods given instead of drawn by torch.randperm on the global RNG
    cur_loss = [_topolm_local_spatial_loss(activations[:, m], coordinates[m]) for m in neighborhood_masks]
    return torch.stack(cur_loss).mean() if accum == "mean" else torch.stack(cur_loss).max()


def _topolm_get_neighborhood(center, positions, radius):
    return _topolm_p_norm(positions, "inf")[center] < radius


def _topolm_center_mask(positions, radius):
    n = int(np.sqrt(positions.shape[0]))
    x, y = positions[:, 0], positions[:, 1]
    return (x >= radius - 1) & (x <= n - radius) & (y >= radius - 1) & (y <= n - radius)


def _grid(height, width):
    # TopoLM: torch.Tensor(list(product(np.arange(28), repeat=2))): unit u at (u // width, u % width)
    return torch.tensor(list(itertools.product(range(height), range(width))), dtype=torch.float64)


# ---- the pure function ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("accumulation", ["mean", "max"])
@pytest.mark.parametrize("height, width, radius", [(28, 28, 5), (8, 12, 3)])
def test_value_equals_topolms_formula_on_the_same_neighbourhoods(accumulation, height, width, radius):
    gen = torch.Generator().manual_seed(3)
    n_units = height * width
    # correlated responses, as a layer's are: a few latent factors plus noise
    responses = torch.randn(96, 6, generator=gen, dtype=torch.float64) @ torch.randn(
        6, n_units, generator=gen, dtype=torch.float64
    ) + 0.5 * torch.randn(96, n_units, generator=gen, dtype=torch.float64)
    neighbourhoods = sample_neighbourhoods(height, width, radius, 5, neighbourhood_generator(7))
    coordinates = _grid(height, width)
    masks = []
    for window in neighbourhoods:
        mask = torch.zeros(n_units, dtype=torch.bool)
        mask[window] = True
        masks.append(mask)
        centre = int(window[len(window) // 2])
        assert torch.equal(mask, _topolm_get_neighborhood(centre, coordinates, radius))  # TopoLM's neighbourhood
    reference = _topolm_spatial_loss_fn(responses, coordinates, masks, accumulation)
    ours64 = spatial_correlation_loss(responses, width, neighbourhoods, accumulation)
    ours32 = spatial_correlation_loss(responses.float(), width, neighbourhoods, accumulation)
    assert ours64.dtype == torch.float64 and ours32.dtype == torch.float32
    assert ours64.item() == pytest.approx(reference.item(), abs=1e-12)
    assert ours32.item() == pytest.approx(reference.item(), abs=2e-6)
    assert 0 < reference.item() < 1


def test_centres_are_topolms_on_a_square_sheet():
    coordinates = _grid(28, 28)
    expected = torch.nonzero(_topolm_center_mask(coordinates, 5)).flatten()
    assert torch.equal(neighbourhood_centres(28, 28, 5), expected)
    assert len(expected) == 20 * 20
    windows = sample_neighbourhoods(28, 28, 5, 400, neighbourhood_generator(0))
    assert windows.shape == (400, 81) and windows.min() >= 0 and windows.max() < 784


def test_zero_when_correlations_follow_inverse_distance_and_one_when_they_oppose_it():
    # responses whose correlations are an increasing affine map of 1/(1+d): units are noisy copies of a common
    # signal weighted by closeness is hard to build exactly, so check the bounds through the definition instead:
    # corr(r, D) = 1 → 0, corr(r, D) = -1 → 1.
    height = width = 3
    neighbourhoods = sample_neighbourhoods(height, width, 2, 1, neighbourhood_generator(0))
    gen = torch.Generator().manual_seed(0)
    shared = torch.randn(500, 1, generator=gen, dtype=torch.float64)
    independent = torch.randn(500, 9, generator=gen, dtype=torch.float64)
    # the centre unit mixes with everyone, others only with it: correlations are high for centre pairs
    # (distance 1 or √2), 0 for the rest; a check of the direction, not of an exact value
    near = torch.cat([independent[:, :4], shared, independent[:, 5:]], dim=1)
    near[:, [1, 3, 5, 7]] += 3 * shared  # edge neighbours of the centre (distance 1) correlate strongly
    far = near.clone()
    far[:, [1, 3, 5, 7]] -= 3 * shared
    far[:, [1, 3, 5, 7]] += 3 * independent[:, 4:5]
    far[:, [0, 2, 6, 8]] += 3 * shared  # corners (distance √2) correlate with the centre instead
    assert spatial_correlation_loss(near, width, neighbourhoods) < spatial_correlation_loss(far, width, neighbourhoods)


def test_gradients_match_finite_differences():
    gen = torch.Generator().manual_seed(1)
    responses = torch.randn(6, 16, generator=gen, dtype=torch.float64, requires_grad=True)
    neighbourhoods = sample_neighbourhoods(4, 4, 2, 2, neighbourhood_generator(2))
    for accumulation in ("mean", "max"):
        assert torch.autograd.gradcheck(
            lambda x, a=accumulation: spatial_correlation_loss(x, 4, neighbourhoods, a), (responses,), fast_mode=True
        )


def test_neighbourhoods_are_seeded_by_their_keys_only():
    draws = []
    for global_seed in (0, 123):
        torch.manual_seed(global_seed)  # the global RNG does not matter
        draws.append(sample_neighbourhoods(28, 28, 5, 5, neighbourhood_generator(42, 10, 0)))
    assert torch.equal(draws[0], draws[1])
    other_step = sample_neighbourhoods(28, 28, 5, 5, neighbourhood_generator(42, 11, 0))
    other_micro_batch = sample_neighbourhoods(28, 28, 5, 5, neighbourhood_generator(42, 10, 1))
    assert not torch.equal(draws[0], other_step) and not torch.equal(draws[0], other_micro_batch)
    assert len(set(draws[0][:, 40].tolist())) == 5  # distinct centres, as TopoLM's randperm draws


def test_bad_input_fails_clearly():
    with pytest.raises(ValueError, match=r"radius=5 needs a 9x9 window, but the sheet is only 4x8"):
        neighbourhood_centres(4, 8, 5)
    with pytest.raises(ValueError, match=r"neighbourhoods_per_batch=13 must be an integer from 1 to 12"):
        sample_neighbourhoods(4, 8, 2, 13)
    with pytest.raises(ValueError, match=r"accumulation='sum' is not supported"):
        spatial_correlation_loss(torch.randn(4, 9), 3, torch.arange(9)[None], "sum")
    with pytest.raises(ValueError, match=r"radius=1 must be an integer >= 2"):
        TopoConfig(loss="spatial_correlation", radius=1)
    with pytest.raises(ValueError, match=r"accumulation='maximum' is not supported"):
        TopoConfig(loss="spatial_correlation", accumulation="maximum")


# ---- on models -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["gpt2", "gpt_neo", "gpt_neox", "llama"])
def test_topolm_placement_reads_the_residual_stream_of_every_block(family, make_gpt2):
    model = make_gpt2(n_embd=36, n_layer=3) if family == "gpt2" else build_causal_lm(family, hidden_size=36)
    topo = TopoRegularizer(TopoConfig(loss="spatial_correlation", radius=2, **topolm_targets(model)))
    layers = topo.layers(model)
    n_layer = model.config.num_hidden_layers
    parallel = family == "gpt_neox" and model.config.use_parallel_residual
    assert len(layers) == (n_layer if parallel else 2 * n_layer)
    assert all(layer.sheet.shape == (6, 6, 1) and layer.sheet.units == "input" for layer in layers)
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    with topo.record_activations(model) as recorded:
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
    # the hidden states after block i are what the next site past block i's after-attention site receives
    after_blocks = [recorded[layer.name] for layer in layers][(0 if parallel else 1) :: (1 if parallel else 2)]
    assert len(after_blocks) == n_layer
    for i in range(n_layer - 1):
        assert torch.equal(after_blocks[i], hidden[i + 1])
    outputs = TopoRegularizer(TopoConfig(loss="spatial_correlation", radius=2, **topolm_targets(model, "outputs")))
    assert len(outputs.layers(model)) == 2 * n_layer


def test_model_value_is_the_function_of_the_non_padding_hidden_states(make_gpt2):
    model = make_gpt2(n_embd=36)
    topo = TopoRegularizer(
        TopoConfig(loss="spatial_correlation", radius=2, neighbourhoods_per_batch=4, **topolm_targets(model))
    )
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    with topo.record_activations(model) as recorded:
        model(input_ids=ids, attention_mask=mask)
    total, per_layer = topo.compute(model, activations=recorded, attention_mask=mask, neighbourhood_keys=(4, 2))
    for index, layer in enumerate(topo.layers(model)):
        responses = recorded[layer.name][mask.bool()]  # (17 non-padding positions, 36)
        windows = sample_neighbourhoods(6, 6, 2, 4, neighbourhood_generator(4, 2, index))
        expected = spatial_correlation_loss(responses, 6, windows)
        assert per_layer[layer.name].item() == pytest.approx(expected.item(), abs=1e-6)
    assert total.item() == pytest.approx(torch.stack(list(per_layer.values())).mean().item(), abs=1e-7)
    total.backward()
    assert model.transformer.h[0].mlp.c_fc.weight.grad.abs().max() > 0  # the loss trains the blocks


def _topolm_args(out, **overrides):
    settings = dict(
        max_steps=1, topo_loss_type="spatial_correlation", topo_radius=2, topo_neighbourhoods_per_batch=3,
        topo_target_modules=[r"re:transformer\.h\.\d+\.ln_2|transformer\.h\.[1-9]\d*\.ln_1|transformer\.ln_f"],
        topo_sheet="input",
    )  # fmt: skip
    return training_args(out, **(settings | overrides))


@pytest.mark.parametrize("accumulation", [2])
def test_tau_weighs_the_mean_over_micro_batches_of_one_optimizer_step(tmp_path, make_gpt2, accumulation):
    ids = torch.randint(0, 64, (16,), generator=torch.Generator().manual_seed(5)).tolist()
    data = Dataset.from_dict({"input_ids": [ids] * 16, "labels": [ids] * 16})
    lr, tau = 0.5, 5.0
    moved = {}
    for name, run_tau in (("topolm", tau), ("base", 0.0)):
        args = _topolm_args(
            tmp_path / name, tau=run_tau, learning_rate=lr, per_device_train_batch_size=16 // accumulation,
            gradient_accumulation_steps=accumulation,
        )  # fmt: skip
        trainer = TopoTrainer(model=make_gpt2(), args=args, train_dataset=data)
        trainer.train()
        moved[name] = {n: p.detach() for n, p in trainer.model.named_parameters()}
    # expected: lr·τ·mean_m ∇L(micro-batch m's neighbourhoods: keys (seed 0, step 0, m)) on the same sequences
    start = make_gpt2()
    topo = TopoRegularizer(trainer.topo_config)
    batch = torch.tensor([ids] * (16 // accumulation))
    for micro_batch in range(accumulation):
        with topo.record_activations(start) as recorded:
            start(input_ids=batch)
        value, _ = topo.compute(start, activations=recorded, neighbourhood_keys=(0, 0, micro_batch))
        (value / accumulation).backward()
    for name, param in start.named_parameters():
        expected = lr * tau * param.grad if param.grad is not None else torch.zeros_like(param)
        assert torch.allclose(moved["base"][name] - moved["topolm"][name], expected, atol=2e-6, rtol=1e-3), name
    log = [h for h in trainer.state.log_history if "topo_loss" in h][0]
    assert 0 < log["topo_loss"] < 1


@pytest.mark.slow
def test_a_resumed_run_draws_the_same_neighbourhoods(tmp_path, make_gpt2, token_dataset):
    data = token_dataset(32)
    straight = TopoTrainer(
        model=make_gpt2(), args=_topolm_args(tmp_path / "straight", max_steps=4, per_device_train_batch_size=8,
                                             gradient_accumulation_steps=2, learning_rate=0.1), train_dataset=data,
    )  # fmt: skip
    straight.train()
    first = TopoTrainer(
        model=make_gpt2(), args=_topolm_args(tmp_path / "resumed", max_steps=4, per_device_train_batch_size=8,
                                             gradient_accumulation_steps=2, learning_rate=0.1, save_strategy="steps",
                                             save_steps=2), train_dataset=data,
    )  # fmt: skip
    first.train()
    resumed = TopoTrainer(
        model=make_gpt2(seed=9), args=_topolm_args(tmp_path / "resumed", max_steps=4, per_device_train_batch_size=8,
                                                   gradient_accumulation_steps=2, learning_rate=0.1),
        train_dataset=data,
    )  # fmt: skip
    resumed.train(resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-2"))

    def topo_logs(trainer):
        return [(h["step"], h["topo_loss"]) for h in trainer.state.log_history if "topo_loss" in h]

    for (step, value), (straight_step, straight_value) in zip(
        topo_logs(resumed)[-2:], topo_logs(straight)[-2:], strict=True
    ):
        assert step == straight_step and value == pytest.approx(straight_value, abs=1e-6)
    for (name, a), b in zip(straight.model.named_parameters(), resumed.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


@pytest.mark.slow
def test_a_topolm_style_model_trains_from_the_command_line(tmp_path):
    from hf_topo.data import write_python_corpus

    corpus = write_python_corpus(str(tmp_path / "corpus.txt"), max_bytes=20_000)
    out = tmp_path / "topolm"
    command = Path(sys.executable).with_name("hf-topo")
    regex = r"re:transformer\.h\.\d+\.ln_2|transformer\.h\.[1-9]\d*\.ln_1|transformer\.ln_f"
    run_script([
        str(command), "pretrain", "--train_file", corpus, "--output_dir", str(out), "--model_preset", "tiny-gpt2",
        "--config_overrides", "n_embd=36,n_layer=2,n_head=2", "--block_size", "32", "--tokenizer_vocab_size", "300",
        "--max_eval_blocks", "4", "--per_device_train_batch_size", "4", "--learning_rate", "1e-3",
        "--logging_steps", "1", "--report_to", "none", "--use_cpu", "true", "--seed", "1", "--max_steps", "3",
        "--save_strategy", "no", "--tau", "10", "--topo_loss_type", "spatial_correlation", "--topo_sheet", "input",
        "--topo_target_modules", regex, "--topo_radius", "2", "--topo_neighbourhoods_per_batch", "4",
        "--topo_accumulation", "max",
    ], tmp_path)  # fmt: skip
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    logged = [h for h in history if "topo_loss" in h]
    assert len(logged) == 3 and all(0 < h["topo_loss"] < 1 for h in logged)
    assert {k for k in logged[0] if k.startswith("topo_loss/")} == {
        "topo_loss/h.0.ln_2", "topo_loss/h.1.ln_1", "topo_loss/h.1.ln_2", "topo_loss/ln_f"
    }  # fmt: skip
    # the saved setup, read back in a fresh process
    read = subprocess.run(
        [sys.executable, "-c", "import json, sys; from hf_topo import TopoConfig; "
         "c = TopoConfig.from_pretrained(sys.argv[1]); print(json.dumps(c.to_dict()))", str(out)],
        env=offline_env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    record = json.loads(read.stdout)
    assert (record["loss"], record["sheet"], record["radius"], record["accumulation"]) == (
        "spatial_correlation", "input", 2, "max"
    )  # fmt: skip
    assert record["neighbourhoods_per_batch"] == 4 and record["tau"]["value"] == 10.0
    assert record["layers"]["transformer.ln_f"] == {
        "layer_type": "Activations", "height": 6, "width": 6, "depth": 1, "units": "input", "role": "target"
    }  # fmt: skip
