"""`hf-topo analyze` end to end on two tiny saved GPT-2s, offline: a "TopoNet" whose c_fc weights are planted smooth on
its sheets (with metadata), and its baseline, the same network with its MLP units shuffled (without)."""

import copy
import json
import logging
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _scripts import run_script
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

import hf_topo  # noqa: F401  (registers the downsampled model classes, as a user's `import hf_topo` does)
from hf_topo import TopoConfig, TopoRegularizer
from hf_topo.analysis import AnalysisSummary, mean_morans_i, smoothness, topographic_layers, weight_smoothness
from hf_topo.cli import analyze
from hf_topo.data import train_bpe_tokenizer
from hf_topo.downsampling import downsample_model
from hf_topo.evaluation import load_text_blocks

ROOT = Path(__file__).resolve().parents[1]


CORPUS = "".join(
    f"Sentence {i}: the {['cat', 'dog', 'bird'][i % 3]} saw {i % 11} {['apples', 'stones', 'boats'][i % 5 % 3]} "
    "near the river, and then it went home.\n"
    for i in range(400)
)
FAST = [
    "--block_size", "32", "--max_tokens", "256", "--eval_blocks", "4", "--batch_size", "4", "--max_pairs", "3000",
    "--min_pairs_per_bin", "5", "--pruning_fractions", "0", "0.5", "0.9", "--noise_sigmas", "0", "0.5",
    "--downsampling_factors", "1", "2", "--progress", "false",
]  # fmt: skip


SHEET = (8, 16)  # the sheet of a c_fc with 4 · 32 = 128 units


def _smooth_on_sheet(depth: int, generator: torch.Generator, sigma: float = 1.5) -> torch.Tensor:
    """``(depth, 128)``: white noise blurred with a Gaussian of ``sigma`` units on the 8×16 sheet, so each unit's
    weight vector is a smooth function of its position (Conv1D orientation: one column per unit)."""
    offsets = torch.arange(-4, 5, dtype=torch.float32)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    noise = torch.randn(depth, 1, SHEET[0] + 8, SHEET[1] + 8, generator=generator)
    field = F.conv2d(F.conv2d(noise, kernel.view(1, 1, 9, 1)), kernel.view(1, 1, 1, 9))  # (depth, 1, 8, 16)
    return field.reshape(depth, SHEET[0] * SHEET[1])


def _planted_toponet(tokenizer, steps: int = 60) -> GPT2LMHeadModel:
    """A tiny GPT-2 whose c_fc weights are PLANTED smooth on their sheets (frozen) while the rest learns the corpus
    for ``steps`` Adam steps, so that what c_fc computes matters for the perplexity."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2))
    with torch.no_grad():
        for block in model.transformer.h:
            weight = _smooth_on_sheet(32, generator)
            block.mlp.c_fc.weight.copy_(0.2 * weight / weight.std()).requires_grad_(False)
    ids = torch.tensor(tokenizer(CORPUS)["input_ids"])
    blocks = ids[: ids.numel() // 32 * 32].view(-1, 32)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(steps):
        batch = blocks[torch.randint(len(blocks), (16,), generator=generator)]
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.requires_grad_(True)
    return model.eval()


def _shuffled_twin(model: GPT2LMHeadModel, seed: int = 1) -> GPT2LMHeadModel:
    """The same network with the units of each MLP shuffled on the sheet (c_fc columns and bias, c_proj rows): it
    computes exactly the same function, but its sheet has no topography."""
    twin = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in twin.transformer.h:
            order = torch.randperm(SHEET[0] * SHEET[1], generator=generator)
            block.mlp.c_fc.weight.copy_(block.mlp.c_fc.weight[:, order])
            block.mlp.c_fc.bias.copy_(block.mlp.c_fc.bias[order])
            block.mlp.c_proj.weight.copy_(block.mlp.c_proj.weight[order, :])
    return twin


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny GPT-2s saved with a trained tokenizer: "toponet", whose c_fc weights are planted smooth on its sheets
    (with TopoNet metadata, τ=1), and "baseline", the same network with its MLP units shuffled (no metadata)."""
    root = tmp_path_factory.mktemp("models")
    tokenizer = train_bpe_tokenizer([CORPUS], vocab_size=300)
    toponet = _planted_toponet(tokenizer)
    baseline = _shuffled_twin(toponet)
    TopoRegularizer(TopoConfig(tau=1.0)).config_for(toponet).attach_to(toponet.config)
    paths = {}
    for name, model in (("toponet", toponet), ("baseline", baseline)):
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        paths[name] = root / name
    text = root / "text.txt"
    text.write_text(CORPUS)
    stimuli_a, stimuli_b = root / "animals.txt", root / "numbers.txt"
    stimuli_a.write_text("the cat\nthe dog saw\nthe bird near the river\n")
    stimuli_b.write_text("7 apples\n3 stones and 2 boats\n10\n")
    return paths | {"text": text, "stimuli_a": stimuli_a, "stimuli_b": stimuli_b}


def _blimp_dir(root: Path) -> Path:
    root.mkdir()
    rows = [{"sentence_good": f"the cat saw {i} boats", "sentence_bad": f"the saw cat {i} boats", "field": "syntax",
             "linguistics_term": "order", "UID": "word_order"} for i in range(4)]  # fmt: skip
    (root / "word_order.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return root


@pytest.fixture(scope="module")
def full_run(models, tmp_path_factory):
    """``hf-topo analyze`` of the planted TopoNet against its shuffled twin, with every option: (report, folder)."""
    root = tmp_path_factory.mktemp("full")
    out = root / "analysis"
    argv = ["--model", str(models["toponet"]), "--baseline", str(models["baseline"]), "--text_file"]
    argv += [str(models["text"]), "--stimuli_a", str(models["stimuli_a"]), "--stimuli_b", str(models["stimuli_b"])]
    argv += ["--blimp_dir", str(_blimp_dir(root / "blimp")), "--save_downsampled", "2", "--output_dir", str(out)]
    return analyze.main(argv + FAST), out


def test_analyze_writes_report_figures_and_a_loadable_downsampled_model(models, full_run):
    report, out = full_run
    assert report == json.loads((out / "report.json").read_text())
    summary = report["summary"]
    for key in ("smoothness", "weight_smoothness", "effective_dimensionality", "morans_i", "perplexity", "blimp",
                "downsampled_2x2_perplexity", "downsampled_2x2_parameters_kept", "pruned_50pct_delta_perplexity",
                "noise_sigma_0.5_delta_perplexity", "selectivity_morans_i"):  # fmt: skip
        assert isinstance(summary[key], (int, float)), key
    assert all(isinstance(v, (int, float)) for v in summary.values())  # flat, for the model card
    assert set(report["baseline_summary"]) == set(summary)
    assert summary["downsampled_1x1_delta_perplexity"] == pytest.approx(0.0, abs=1e-3)
    assert summary["pruned_0pct_delta_perplexity"] == 0.0 and 0 < summary["downsampled_2x2_parameters_kept"] < 1
    assert list(report["model"]["layers"]) == ["transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc"]
    assert list(report["baseline"]["layers"]) == list(report["model"]["layers"])  # same layers and sheets
    curve = report["model"]["curves"]["smoothness"]["transformer.h.0.mlp.c_fc"]
    assert len(curve["distances"]) == len(curve["correlations"]) == 20
    assert report["model"]["sweeps"]["pruning"]["delta_blimp"][0] == 0.0
    assert set(report["figures"]) == {
        "sheet_maps",
        "selectivity",
        "smoothness_curve",
        "pruning",
        "noise",
        "downsampling",
        "substitution",
        "deletion",
    }
    assert summary["substitution_0pct_delta_perplexity"] == 0.0 and "deletion_30pct_delta_perplexity" in summary
    # the typed section is what cards and tables read; the flat keys are derived from it
    for which, flat in (("model", summary), ("baseline", report["baseline_summary"])):
        typed = AnalysisSummary.from_report(report, which)
        assert typed.flat() == flat
        assert typed.delta_perplexity("pruning", 0.5) == flat["pruned_50pct_delta_perplexity"]
        assert typed.sweeps["downsampling"].at(2.0).parameters_kept == flat["downsampled_2x2_parameters_kept"]
    for name in report["figures"].values():
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name

    # --save_downsampled 2: an ordinary checkpoint, loaded with AutoModelForCausalLM (registered classes)
    loaded = AutoModelForCausalLM.from_pretrained(out / "downsampled")
    expected = downsample_model(AutoModelForCausalLM.from_pretrained(models["toponet"]), (2, 2))
    ids = torch.randint(0, 300, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, expected(ids).logits)
    assert report["metadata"]["downsampled"]["parameters"] == sum(p.numel() for p in loaded.parameters())


def _c_fc_activations(model, blocks) -> dict[str, torch.Tensor]:
    """Each c_fc's outputs on ``blocks``, one row per token, collected here with plain hooks (not the library's)."""
    outputs = {}
    hooks = [
        block.mlp.c_fc.register_forward_hook(
            lambda m, i, o, name=f"transformer.h.{k}.mlp.c_fc": outputs.update({name: o})
        )
        for k, block in enumerate(model.transformer.h)
    ]
    with torch.no_grad():
        model(input_ids=blocks)
    for hook in hooks:
        hook.remove()
    return {name: output.reshape(-1, output.shape[-1]) for name, output in outputs.items()}


def _effective_dimensionality(samples: torch.Tensor) -> float:
    """The paper's (Σλ)² / Σλ² over the eigenvalues of the samples' covariance, with an eigendecomposition."""
    eigenvalues = torch.linalg.eigvalsh(torch.cov(samples.double().T))
    return float(eigenvalues.sum() ** 2 / eigenvalues.pow(2).sum())


def test_planted_topography_is_found_in_the_model_and_not_in_its_shuffled_twin(models, full_run):
    """The TopoNet's c_fc weights are smooth on its sheets by construction and its baseline is the same network with
    the units shuffled: every topographic measure must be high for the model and near 0 for the baseline, everything
    a shuffle cannot change (perplexity, effective dimensionality, magnitude pruning) equal, and 2×2 downsampling
    must cost the model far less. The baseline's numbers must be the baseline's: measured here directly."""
    report, _ = full_run
    model, baseline = report["summary"], report["baseline_summary"]
    loaded = {name: AutoModelForCausalLM.from_pretrained(models[name]).eval() for name in ("toponet", "baseline")}
    topo_loss = {name: TopoRegularizer(TopoConfig(tau=1.0)).evaluate(m)[0].item() for name, m in loaded.items()}
    assert topo_loss["toponet"] < 0.5 * topo_loss["baseline"]  # the plant itself, as TopoLoss sees it

    for key in ("smoothness", "weight_smoothness", "morans_i", "selectivity_morans_i"):
        assert model[key] > 0.6 and abs(baseline[key]) < 0.35, key  # a shuffled sheet scores at noise level
    for key in ("perplexity", "effective_dimensionality", "pruned_50pct_perplexity", "pruned_90pct_perplexity"):
        assert model[key] == pytest.approx(baseline[key], rel=1e-4), key  # one function, two unit orders
    assert baseline["downsampled_2x2_delta_perplexity"] > 0.5
    assert model["downsampled_2x2_delta_perplexity"] < 0.2 * baseline["downsampled_2x2_delta_perplexity"]

    # Direct measurements: activations on the report's first 256 tokens (max_tokens) with our own hooks.
    tokenizer = AutoTokenizer.from_pretrained(models["toponet"])
    blocks = load_text_blocks(tokenizer, 32, text_file=str(models["text"]), max_blocks=8).input_ids
    sheets = TopoConfig.from_pretrained(loaded["toponet"])  # the baseline is measured on the TopoNet's sheets
    curve = dict(n_bins=20, max_pairs=3000, min_pairs_per_bin=5, seed=0)
    for name, key in (("toponet", "model"), ("baseline", "baseline")):
        activations = _c_fc_activations(loaded[name], blocks)
        dimensionalities = []
        for layer in topographic_layers(loaded[name], sheets):
            measured = report[key]["layers"][layer.name]
            acts = activations[layer.name]
            assert acts.shape == (256, 128)
            dimensionalities.append(_effective_dimensionality(acts))
            assert measured["effective_dimensionality"] == pytest.approx(dimensionalities[-1], rel=1e-6)
            assert measured["weight_smoothness"] == pytest.approx(weight_smoothness(layer, **curve).score, rel=1e-9)
            assert measured["smoothness"] == pytest.approx(smoothness(acts, layer.sheet, **curve).score, rel=1e-5)
            assert measured["morans_i"] == pytest.approx(mean_morans_i(acts, layer.sheet), rel=1e-5, abs=1e-7)
        assert 1 < dimensionalities[0] < 20  # smooth weights of depth 32: a few directions of variance
        summary = report["summary" if key == "model" else "baseline_summary"]
        assert summary["effective_dimensionality"] == pytest.approx(sum(dimensionalities) / 2, rel=1e-6)


def test_analyze_local_dataset_directory_without_baseline(models, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "validation.jsonl").write_text("\n".join(json.dumps({"text": line}) for line in CORPUS.splitlines()))
    out = tmp_path / "single"
    argv = [
        "--model",
        str(models["baseline"]),
        "--dataset",
        str(data_dir),
        "--split",
        "validation",
        "--output_dir",
        str(out),
    ]
    report = analyze.main(argv + FAST + ["--sweeps", "pruning"])
    assert report["baseline_summary"] is None and "noise" not in report["figures"]
    assert report["metadata"]["topography"]["inferred"] is True  # a model without metadata: inferred sheets
    assert (out / "sheet_maps.png").exists() and (out / "pruning.png").exists()


@pytest.mark.slow  # 15 CPU s: a temporal-window analysis of two models end to end
def test_analyze_temporal_windows_of_model_and_baseline(models, tmp_path):
    out = tmp_path / "temporal"
    argv = ["--model", str(models["toponet"]), "--baseline", str(models["baseline"]), "--text_file"]
    argv += [str(models["text"]), "--output_dir", str(out), "--sweeps", "noise", "--temporal_windows", "true"]
    argv += ["--temporal_max_delta", "4", "--temporal_sequence_words", "8", "--temporal_max_sequences", "3"]
    report = analyze.main(argv + FAST)
    fits = report["model"]["temporal_windows"]["fits"]
    # every sentence of CORPUS holds a number, so no sentence is usable for the yoking: skipped, and said so
    assert "no usable sentence of 12 words" in report["model"]["temporal_windows"]["structure_yoking"]["skipped"]
    assert list(fits["layers"]) == ["transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc"]
    assert fits["deltas"] == [0, 1, 2, 3, 4] and report["model"]["temporal_windows"]["windows"]["n_sequences"] == 3
    for summary in (report["summary"], report["baseline_summary"]):
        shares = [summary[f"temporal_fraction_{kind}"] for kind in ("exponential", "power_law", "neither", "delta")]
        assert sum(shares) == pytest.approx(1.0) and "temporal_reach_morans_i" in summary
    figures = [name for key, name in report["figures"].items() if key.startswith("temporal_")]
    assert len(figures) == 2 * (1 + 2)  # per model: the summary and one map per layer
    for name in figures:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.parametrize(
    "extra, error",
    [
        (["--stimuli_a", "missing_a.txt", "--stimuli_b", "missing_b.txt"], "Stimulus file"),
        (["--stimuli_a", "missing_a.txt"], "both stimuli_a= and stimuli_b="),
        (
            ["--layers", "h.9.mlp.c_fc"],
            r"No topographic layer named 'h.9.mlp.c_fc'; the topographic layers are \['transformer.h.0.mlp.c_fc', "
            r"'transformer.h.1.mlp.c_fc'\]",
        ),
        (["--text_file", "missing.txt"], "text_file='missing.txt' does not exist"),
        (["--model", "weightless"], "has a config.json but no weights"),
        (["--baseline", "missing_baseline"], "Model folder '.*missing_baseline' does not exist"),
        (["--baseline", "wider"], "The baseline .*wider cannot be analysed on the layers and sheets of"),
    ],
)
def test_analyze_fails_clearly_on_bad_input(models, tmp_path, caplog, extra, error):
    """Each refused before any model is analysed (nothing logged as analysed) and before anything is written."""
    weightless = tmp_path / "weightless"
    weightless.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (weightless / name).write_bytes((models["toponet"] / name).read_bytes())
    config = GPT2Config(vocab_size=300, n_positions=64, n_embd=48, n_layer=2, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(tmp_path / "wider")  # another architecture, no tokenizer
    paths = {"weightless": str(weightless), "wider": str(tmp_path / "wider")}
    paths["missing_baseline"] = str(tmp_path / "missing_baseline")
    argv = {"--model": str(models["toponet"]), "--text_file": str(models["text"])}
    argv |= {"--output_dir": str(tmp_path / "out")}
    argv.update({flag: paths.get(value, value) for flag, value in zip(extra[::2], extra[1::2], strict=True)})
    with caplog.at_level(logging.INFO), pytest.raises((ValueError, FileNotFoundError), match=error):
        analyze.main([item for pair in argv.items() for item in pair] + FAST)
    assert not any(record.getMessage().startswith("Analysing") for record in caplog.records)
    assert not (tmp_path / "out").exists()


def test_analyze_rejects_an_empty_text_file(models, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    argv = ["--model", str(models["toponet"]), "--text_file", str(empty), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(ValueError, match="empty"):
        analyze.main(argv + FAST)


@pytest.mark.slow
def test_analyze_command_line(models, tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, str(ROOT / "scripts/analyze.py"), "--model", str(models["toponet"]), "--baseline"]
    cmd += [str(models["baseline"]), "--text_file", str(models["text"]), "--output_dir", str(out)] + FAST
    result = run_script(cmd, tmp_path)
    assert "| smoothness |" in result.stdout and "Report:" in result.stdout
    assert json.loads((out / "report.json").read_text())["summary"]["perplexity"] > 1
