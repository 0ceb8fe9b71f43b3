"""scripts/compare_regularizers.py end to end: a baseline, TopoLoss, WS and AS models trained on a tiny corpus, offline."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
from _scripts import run_script
from transformers import AutoModelForCausalLM

from hf_topo.analysis import collect_activations, load_text_blocks, regularizer_values, topographic_layers
from hf_topo.cli import compare_regularizers
from hf_topo.regularizers import registered_regularizers

ROOT = Path(__file__).resolve().parents[1]

ANIMALS = ["cat", "dog", "bird", "horse", "fox", "owl"]
PLACES = ["river", "hill", "market", "forest", "harbour"]
CORPUS = "".join(
    f"The {ANIMALS[i % 6]} saw {i % 13} {['apples', 'stones', 'boats', 'lamps'][i % 4]} near the {PLACES[i % 5]}, "
    f"and {['then', 'so', 'later'][i % 3]} it went {['home', 'away', 'north'][i % 7 % 3]}.\n"
    for i in range(600)
)
REGULARIZERS = ["none", "TopoLoss", "TopoLoss (input sheet)", "TopoLoss + bias sheet", "WS", "AS", "TopoLM"]
#: Large τ and a high learning rate, so that 12 steps visibly move each regularizer.
TINY = [
    "--strengths", "topo=50", "topo_input=50", "topo_bias=50", "ws=50", "as=5", "topolm=20", "--topolm_radius", "2",
    "--config_overrides", "n_embd=32,n_layer=2", "--vocab_size", "320", "--block_size", "32",
    "--max_steps", "12", "--train_batch_size", "4", "--learning_rate", "1e-2", "--max_eval_blocks", "8",
    "--max_tokens", "512", "--eval_blocks", "8", "--batch_size", "8", "--max_pairs", "4000", "--min_pairs_per_bin", "5",
    "--noise_sigmas", "0", "0.5", "--input_rates", "0", "0.2", "--device", "cpu", "--progress", "false",
]  # fmt: skip


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    corpus = root / "corpus.txt"
    corpus.write_text(CORPUS)
    output_dir = root / "out"
    result = compare_regularizers.main(["--train_file", str(corpus), "--output_dir", str(output_dir), *TINY])
    return result | {"output_dir": output_dir}


def test_one_row_per_model_with_every_family_and_finite_numbers(comparison):
    table = comparison["table"]
    assert [row["name"] for row in table] == [
        "baseline", "topo-tau50", "topo_input-tau50", "topo_bias-tau50", "ws-tau50", "as-tau5", "topolm-tau20"
    ]  # fmt: skip
    assert [row["regularizer"] for row in table] == REGULARIZERS
    assert [row["tau"] for row in table] == [0.0, 50.0, 50.0, 50.0, 50.0, 5.0, 20.0]
    keys = [
        "eval_loss", "perplexity", "topo_loss", "weight_similarity", "activation_similarity", "spatial_correlation",
        "smoothness",
        "weight_smoothness", "morans_i", "effective_dimensionality", "noise_sigma_0.5_delta_perplexity",
        "substitution_20pct_delta_perplexity", "deletion_20pct_delta_perplexity",
    ]  # fmt: skip
    for row in table:
        for key in keys:
            assert isinstance(row[key], float) and math.isfinite(row[key]), (row["name"], key, row.get(key))
        assert row["eval_loss"] == pytest.approx(math.log(row["perplexity"]))
        assert row["noise_sigma_0_delta_perplexity"] == 0.0  # σ=0 is the clean model

    markdown = (comparison["output_dir"] / "comparison.md").read_text().splitlines()
    assert len(markdown) == 2 + 7
    assert "Δppl noise σ=0.5" in markdown[0] and "Δppl deletion p=0.2" in markdown[0] and "Moran's I" in markdown[0]
    assert [line.split("|")[2].strip() for line in markdown[2:]] == REGULARIZERS
    assert json.loads((comparison["output_dir"] / "comparison.json").read_text())["table"] == table


def test_each_model_is_saved_with_its_regularizer_and_strength(comparison):
    expected = {
        "baseline": ("laplacian_pyramid", 0.0),
        "topo-tau50": ("laplacian_pyramid", 50.0),
        "topo_input-tau50": ("laplacian_pyramid", 50.0),
        "topo_bias-tau50": ("laplacian_pyramid", 50.0),
        "ws-tau50": ("weight_similarity", 50.0),
        "as-tau5": ("activation_similarity", 5.0),
        "topolm-tau20": ("spatial_correlation", 20.0),
    }
    for name, (loss, tau) in expected.items():
        record = json.loads((comparison["output_dir"] / name / "config.json").read_text())["topography"]
        assert (record["loss"], record["tau"]["value"], record["distance"]) == (loss, tau, "correlation")
        assert record["sheet"] == ("input" if name.startswith(("topo_input", "topolm")) else "output")
        assert record["include_bias"] is name.startswith("topo_bias")


def test_models_differ_only_in_regularizer_and_strength(comparison):
    """Same data, tokenizer (the baseline's), seed and recipe: the pretraining settings differ in nothing else."""
    per_model = {}
    for model in comparison["models"]:
        settings = model["pretrain_settings"]
        per_model[model["name"]] = {
            k: v
            for k, v in settings.items()
            if k
            not in ("tau", "topo_loss_type", "output_dir", "tokenizer", "topo_target_modules", "topo_sheet",
                    "topo_include_bias")
        }  # fmt: skip
        assert settings.get("topo_include_bias", False) is model["name"].startswith("topo_bias")
        if model["name"].startswith("topo_input"):
            assert settings["topo_sheet"] == "input"
        if model["name"].startswith("topolm"):  # TopoLM's own sites: the residual stream after attention and MLP
            assert settings["topo_sheet"] == "input" and settings["topo_target_modules"][0].startswith("re:")
        else:
            assert "topo_target_modules" not in settings
        if model["name"] != "baseline":  # the baseline trains the tokenizer, every other model reuses it
            assert settings["tokenizer"] == comparison["models"][0]["output_dir"]
        else:
            assert settings["tokenizer"] is None and settings["vocab_size"] > 0
    assert all(settings == per_model["baseline"] for settings in per_model.values())
    assert per_model["baseline"]["topo_distance"] == "correlation"
    assert per_model["baseline"]["config_overrides"] == "n_embd=32,n_layer=2"
    tokenizers = {(comparison["output_dir"] / m["name"] / "tokenizer.json").read_text() for m in comparison["models"]}
    assert len(tokenizers) == 1


def test_extra_flags_are_pretraining_settings_for_every_model(tmp_path):
    args, settings, extra = compare_regularizers.parse_args(
        ["--train_file", "x.txt", "--output_dir", "o", "--weight_decay", "0.05", "--topo_factor_h", "2"]
    )
    assert extra == {"weight_decay": 0.05, "topo_factor_h": 2.0}
    with pytest.raises(ValueError, match="--weight_dekay"):
        compare_regularizers.parse_args(["--train_file", "x.txt", "--output_dir", "o", "--weight_dekay", "0.05"])


def test_each_regularizer_lowers_its_own_post_hoc_value_below_the_baseline(comparison):
    rows = {row["name"]: row for row in comparison["table"]}
    baseline = rows["baseline"]
    assert rows["topo-tau50"]["topo_loss"] < 0.5 * baseline["topo_loss"]
    assert rows["ws-tau50"]["weight_similarity"] < 0.5 * baseline["weight_similarity"]
    assert rows["as-tau5"]["activation_similarity"] < 0.5 * baseline["activation_similarity"]
    # TopoLM trains the residual stream, the post-hoc value reads the MLP expansion layer: lower, not halved
    assert rows["topolm-tau20"]["spatial_correlation"] < baseline["spatial_correlation"]
    # a random, briefly trained layer has uncorrelated neighbours: correlation distance ≈ 1, TopoLoss high
    assert baseline["weight_similarity"] == pytest.approx(1.0, abs=0.1)
    assert baseline["morans_i"] < rows["ws-tau50"]["morans_i"]


@pytest.mark.parametrize("name", ["topo_input-tau50", "topo_bias-tau50"])
def test_input_and_bias_sheet_models_lower_their_own_topoloss(comparison, name):
    """The two sheets of topoloss that the table's post-hoc columns do not read: each model's own TopoLoss, on the
    sheets its record names (c_fc's input sheet; c_fc's output sheet plus its bias map), against the baseline's."""
    from hf_topo import TopoConfig, TopoRegularizer

    models = {m["name"]: m for m in comparison["models"]}
    own = TopoConfig.from_pretrained(models[name]["output_dir"])
    assert (own.sheet, own.include_bias) == (("input", False) if name.startswith("topo_input") else ("output", True))
    values = {}
    for model_name in (name, "baseline"):
        model = AutoModelForCausalLM.from_pretrained(models[model_name]["output_dir"], dtype=torch.float32)
        values[model_name] = (
            TopoRegularizer(TopoConfig.from_dict(own.to_dict() | {"layers": None}))
            .compute(model, with_grad=False)[0]
            .item()
        )
    assert values[name] < 0.5 * values["baseline"]


def test_post_hoc_values_match_a_fresh_measurement_on_the_baselines_sheets(comparison):
    """The reported values are those of the saved models, every one measured on the baseline's layers."""
    from hf_topo import TopoConfig

    models = {m["name"]: m for m in comparison["models"]}
    baseline_dir = models["baseline"]["output_dir"]
    sheets = TopoConfig.from_pretrained(baseline_dir)
    settings = comparison["recipe"]["analysis_settings"]
    model = AutoModelForCausalLM.from_pretrained(models["ws-tau50"]["output_dir"], dtype=torch.float32)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(baseline_dir)
    text = load_text_blocks(tokenizer, 32, text_file=comparison["recipe"]["held_out_file"], max_blocks=16)
    layers = topographic_layers(model, sheets)
    activations = collect_activations(
        model, text, layers, settings["batch_size"], settings["max_tokens"], progress=False
    )
    values = regularizer_values(layers, activations, settings=TopoConfig(radius=2))  # --topolm_radius 2
    for loss in registered_regularizers():
        assert values[loss].mean == pytest.approx(models["ws-tau50"]["posthoc"][loss]["mean"], rel=1e-5)
    assert {m["name"]: sorted(m["layers"]) for m in comparison["models"]} == {
        name: sorted(sheets.layers) for name in models
    }


def test_figure_is_a_png(comparison):
    figure = comparison["output_dir"] / "regularizers.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figure.stat().st_size > 20_000


def test_bad_strengths_and_clashing_flags_are_refused():
    with pytest.raises(ValueError, match="FAMILY"):
        compare_regularizers.parse_strengths(["lp=1"])
    with pytest.raises(ValueError, match="must be > 0"):
        compare_regularizers.parse_strengths(["ws=0"])
    assert compare_regularizers.parse_strengths(["topo=1,5", "as=0.5"]) == [("topo", 1.0), ("topo", 5.0), ("as", 0.5)]
    with pytest.raises(ValueError, match="--tau"):
        compare_regularizers.parse_args(["--train_file", "x.txt", "--output_dir", "o", "--tau", "3"])


@pytest.mark.parametrize(
    "text, error",
    [
        (None, "--train_file '.*corpus.txt' does not exist"),
        ("", r"--train_file '.*corpus.txt' is empty \(0 bytes\)"),
        ("\n  \n", "is empty .*whitespace only"),
        ("The cat saw 3 boats near the river.\n", "has 1 line.*too few to train on some and hold out the last 10%"),
    ],
)
def test_a_missing_empty_or_one_line_training_file_is_refused_before_anything_is_written(tmp_path, text, error):
    corpus = tmp_path / "corpus.txt"
    if text is not None:
        corpus.write_text(text)
    out = tmp_path / "out"
    with pytest.raises((ValueError, FileNotFoundError), match=error):
        compare_regularizers.main(["--train_file", str(corpus), "--output_dir", str(out), *TINY])
    assert not out.exists()


@pytest.mark.slow
def test_command_line_runs_offline(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    argv = list(TINY)
    argv[1 : argv.index("--topolm_radius")] = ["ws=50"]  # the baseline and one WS model: the command line is tested
    result = run_script(
        [sys.executable, "-m", "hf_topo.cli", "compare-regularizers", "--train_file", str(corpus),
         "--output_dir", str(tmp_path / "out"), *argv],
    )  # fmt: skip
    assert "| baseline | none | 0 |" in result.stdout and "| ws-tau50 | WS | 50 |" in result.stdout
    assert (tmp_path / "out" / "regularizers.png").is_file()
