"""scripts/analyze.py end to end on two tiny saved GPT-2s (a "TopoNet" with metadata, a baseline without), offline."""

import json
import sys
from pathlib import Path

import pytest
import torch
from _scripts import run_script
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

import hf_topo  # noqa: F401  (registers the downsampled model classes, as a user's `import hf_topo` does)
from hf_topo import TopoConfig, TopoLoss
from hf_topo.cli import analyze
from hf_topo.data import train_bpe_tokenizer
from hf_topo.downsampling import downsample_model

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


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny GPT-2s saved with a trained tokenizer; the first carries TopoNet metadata (τ=1), the second none."""
    root = tmp_path_factory.mktemp("models")
    tokenizer = train_bpe_tokenizer([CORPUS], vocab_size=300)
    paths = {}
    for name, seed in (("toponet", 0), ("baseline", 1)):
        torch.manual_seed(seed)
        config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2)
        model = GPT2LMHeadModel(config)
        if name == "toponet":
            TopoLoss(TopoConfig(tau=1.0)).config_for(model).attach_to(model.config)
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


def test_analyze_writes_report_figures_and_a_loadable_downsampled_model(models, tmp_path):
    out = tmp_path / "analysis"
    argv = [
        "--model",
        str(models["toponet"]),
        "--baseline",
        str(models["baseline"]),
        "--text_file",
        str(models["text"]),
    ]
    argv += ["--stimuli_a", str(models["stimuli_a"]), "--stimuli_b", str(models["stimuli_b"])]
    argv += ["--blimp_dir", str(_blimp_dir(tmp_path / "blimp")), "--save_downsampled", "2", "--output_dir", str(out)]
    report = analyze.main(argv + FAST)

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
    assert 1 <= summary["effective_dimensionality"] <= 128
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
    for name in report["figures"].values():
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name

    # --save_downsampled 2: an ordinary checkpoint, loaded with AutoModelForCausalLM (registered classes)
    loaded = AutoModelForCausalLM.from_pretrained(out / "downsampled")
    expected = downsample_model(AutoModelForCausalLM.from_pretrained(models["toponet"]), (2, 2))
    ids = torch.randint(0, 300, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, expected(ids).logits)
    assert report["metadata"]["downsampled"]["parameters"] == sum(p.numel() for p in loaded.parameters())


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


def test_analyze_temporal_windows_of_model_and_baseline(models, tmp_path):
    out = tmp_path / "temporal"
    argv = ["--model", str(models["toponet"]), "--baseline", str(models["baseline"]), "--text_file"]
    argv += [str(models["text"]), "--output_dir", str(out), "--sweeps", "noise", "--temporal_windows", "true"]
    argv += ["--temporal_max_delta", "4", "--temporal_max_sequences", "3"]
    report = analyze.main(argv + FAST)
    fits = report["model"]["temporal_windows"]["fits"]
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
        (["--stimuli_a", "missing_a.txt"], "both --stimuli_a and --stimuli_b"),
        (["--layers", "h.9.mlp.c_fc"], "No topographic layer named"),
    ],
)
def test_analyze_fails_clearly_on_bad_input(models, tmp_path, extra, error):
    argv = ["--model", str(models["toponet"]), "--text_file", str(models["text"]), "--output_dir", str(tmp_path)]
    with pytest.raises((ValueError, FileNotFoundError), match=error):
        analyze.main(argv + FAST + extra)


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
