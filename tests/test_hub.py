"""Hub integration (hf_topo.hub, scripts/push_to_hub.py, TopoTrainer.create_model_card / push_to_hub).

The Hub is unreachable here, so the push tests swap huggingface_hub's HTTP client (``set_client_factory``) for one
whose transport is a small fake Hub: huggingface_hub's real code builds the repo creation, preupload, LFS batch and
upload, and the ndjson commit; the fake answers and records them. A live test pushes to a private temporary repo
and deletes it, and runs only when HF_TOKEN is set and huggingface.co is reachable.
"""

import base64
import hashlib
import json
import math
import os
import socket
import sys
import uuid
from pathlib import Path

import huggingface_hub
import pytest
import torch
import yaml

try:  # huggingface_hub 2.x talks through httpx2, 1.x through httpx
    import httpx2
except ImportError:
    import httpx as httpx2
from _scripts import ROOT, run_script
from _training import training_args
from conftest import build_causal_lm
from datasets import Dataset
from huggingface_hub import ModelCard, ModelCardData, constants
from huggingface_hub.repocard_data import model_index_to_eval_results
from huggingface_hub.utils._http import default_client_factory, hf_request_event_hook
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    default_data_collator,
)

from hf_topo import TopoConfig, TopoTrainer, attach_inferred_topography
from hf_topo.analysis.summary import AnalysisSummary, SweepPoint, SweepSummary
from hf_topo.data import train_bpe_tokenizer
from hf_topo.hub import (
    TOPONET_TAGS,
    build_upload_folder,
    card_template_path,
    load_toponet,
    push_folder,
    read_results,
    toponet_card,
)

# huggingface_hub's single-part LFS upload passes a file object as `data=`, which httpx2 deprecates (not ours).
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning")

MODEL_FILES = {"config.json", "generation_config.json", "model.safetensors"}
TOKENIZER_FILES = {"tokenizer.json", "tokenizer_config.json"}

# ---- fixtures: a real tiny TopoNet, trained and saved as scripts/pretrain.py leaves it -------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["def add(a, b):\n    return a + b\n" * 20, "the cat sat on the mat and the dog sat too\n" * 20]
    tok = train_bpe_tokenizer(texts, vocab_size=300)
    tok.pad_token = tok.eos_token
    return tok


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tokenizer):
    """``(output_dir, trainer)``: 3-block GPT-2 TopoNet, 3 TopoTrainer steps, saved with tokenizer, trainer state and
    the metrics.json that scripts/pretrain.py writes (eval loss, perplexity, TopoLoss from the trained model)."""
    out = tmp_path_factory.mktemp("toponet")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer), n_positions=32, n_embd=32, n_layer=3, n_head=2, bos_token_id=0, eos_token_id=0
        )
    )
    ids = torch.randint(0, len(tokenizer), (48, 16), generator=torch.Generator().manual_seed(1)).tolist()
    data = Dataset.from_dict({"input_ids": ids, "labels": ids})
    args = training_args(
        out,
        max_steps=3,
        tau=2.0,
        tau_schedule="warmup:2",
        per_device_train_batch_size=8,
        hub_model_id="me/tiny-toponet",
        hub_token="hf_fake_token",
    )
    trainer = TopoTrainer(
        model=model,
        args=args,
        train_dataset=data,
        eval_dataset=data.select(range(8)),
        processing_class=tokenizer,
        data_collator=default_data_collator,
    )
    trainer.train()
    trainer.save_model()
    trainer.save_state()
    metrics = trainer.evaluate()
    metrics["eval_perplexity"] = math.exp(metrics["eval_loss"])
    topo, per_layer = trainer.topo_loss.compute(trainer.model, with_grad=False)
    metrics |= {
        "topo_loss": topo.item(),
        "tau": 2.0,
        "output_dir": str(out),
        "topo_loss_per_layer": {trainer.topo_loss_label(n): v.item() for n, v in per_layer.items()},
    }
    (out / "metrics.json").write_text(json.dumps(metrics))
    return out, trainer


def _parse_card(text: str) -> dict:
    """The card's YAML metadata, validated by huggingface_hub's own classes."""
    card = ModelCard(text)  # parses the YAML header into ModelCardData (raises on an invalid model-index)
    assert isinstance(card.data, ModelCardData)
    metadata = yaml.safe_load(text.split("---\n")[1])
    ModelCardData(**metadata)  # the metadata round-trips into the dataclass
    return metadata


# ---- the card --------------------------------------------------------------------------------------------------------


def test_card_template_ships_with_the_package():
    assert card_template_path().is_file()
    assert (ROOT / "model_cards" / "toponet_card.md").read_text() == card_template_path().read_text()


def test_card_without_results(tiny_gpt2):
    attach_inferred_topography(tiny_gpt2)
    card = toponet_card(tiny_gpt2, repo_id="me/gpt2-inferred")
    metadata = _parse_card(str(card))
    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "text-generation"
    assert set(TOPONET_TAGS) <= set(metadata["tags"]) and "topographic" in metadata["tags"]
    assert "model-index" not in metadata and card.data.eval_results is None
    text = card.text
    assert "No evaluation results were recorded" in text and "inferred cortical-sheet metadata" in text
    assert "| `transformer.h.1.mlp.c_fc` | Conv1D | 8 × 16 | 128 | 32 | target |" in text
    assert 'from_pretrained("me/gpt2-inferred")' in text and "@inproceedings{deb2025toponets" in text
    assert "## Topographic maps" not in text  # no figure given, no empty section


def test_card_with_results_has_a_valid_model_index(trained):
    out, _ = trained
    results = read_results(out)
    results |= {
        "blimp_overall": 0.625,
        "blimp_fields": {"syntax": 0.6, "morphology": 0.65},
        "blimp_pairs": 40,
        "blimp_paradigms": 2,
    }
    model = AutoModelForCausalLM.from_pretrained(out)
    card = toponet_card(
        model,
        repo_id="me/tiny-toponet",
        results=results,
        figures=["figures/sheet_maps.png"],
        datasets=["wikitext"],
        eval_dataset="wikitext",
        eval_dataset_config="wikitext-2-raw-v1",
        base_model="openai-community/gpt2",
        license="apache-2.0",
        language="en",
    )
    metadata = _parse_card(str(card))
    assert metadata["base_model"] == "openai-community/gpt2" and metadata["datasets"] == ["wikitext"]
    name, evals = model_index_to_eval_results(metadata["model-index"])
    assert name == "tiny-toponet"
    by_metric = {e.metric_type: e for e in evals}
    assert set(by_metric) == {"perplexity", "loss", "accuracy"} == set(metadata["metrics"])
    assert by_metric["perplexity"].metric_value == pytest.approx(results["eval_perplexity"], abs=1e-4)
    assert by_metric["perplexity"].dataset_type == "wikitext"
    assert by_metric["perplexity"].dataset_config == "wikitext-2-raw-v1"
    assert by_metric["accuracy"].dataset_type == "nyu-mll/blimp" and by_metric["accuracy"].metric_value == 0.625
    assert "40 pairs" in by_metric["accuracy"].metric_name  # a subset of BLiMP says so
    assert [e.metric_type for e in card.data.eval_results] == [e.metric_type for e in evals]
    text = card.text
    assert "τ = 2" in text and "linear(0→1, 2 steps)" in text and "τ at the saved step | 2 (step 3)" in text
    assert f"| TopoLoss (mean over target layers, 1 − mean cos) | {results['topo_loss']:.4g} |" in text
    assert "| morphology | 0.65 |" in text and "![" in text and "(figures/sheet_maps.png)" in text


def test_card_needs_topography(tiny_gpt2):
    with pytest.raises(ValueError, match="no 'topography' metadata"):
        toponet_card(tiny_gpt2)


# ---- TopoTrainer: create_model_card and push_to_hub ---------------------------------------------------------------


def test_trainer_create_model_card_writes_our_card(trained):
    out, trainer = trained
    trainer.create_model_card(dataset="wikitext", license="mit")
    text = (out / "README.md").read_text()
    metadata = _parse_card(text)
    assert "topographic" in metadata["tags"] and metadata["license"] == "mit"
    assert (out / "figures" / "sheet_maps.png").stat().st_size > 1000
    assert "(figures/sheet_maps.png)" in text
    assert "| learning rate | 0.5 |" in text and "| optimizer | sgd |" in text  # the recipe from the arguments
    assert "transformer.h.2.mlp.c_fc" in text and 'from_pretrained("me/tiny-toponet")' in text
    _, evals = model_index_to_eval_results(metadata["model-index"])
    assert {e.metric_type for e in evals} == {"perplexity", "loss"}  # eval loss from metrics.json, dataset named


def test_trainer_card_before_any_save_and_for_activation_losses(tmp_path, tiny_gpt2):
    args = training_args(tmp_path / "run", topo_loss_type="activation_similarity", tau=1.0)
    trainer = TopoTrainer(model=tiny_gpt2, args=args)
    trainer.create_model_card()  # nothing saved yet: the card describes the trainer's model
    text = (tmp_path / "run" / "README.md").read_text()
    _parse_card(text)
    assert "activation_similarity" in text and "| distance, neighbourhood radius | correlation, 1 |" in text
    assert "No evaluation results were recorded" in text  # activation losses need a batch: not computed here
    assert (tmp_path / "run" / "figures" / "sheet_maps.png").is_file()


# ---- the upload folder -------------------------------------------------------------------------------------------------


def _analysis_dir(root: Path) -> Path:
    """What hf-topo analyze leaves: report.json with the typed (and the derived flat) summary, and PNG figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root.mkdir()
    pruning = SweepSummary(
        kind="pruning",
        x_label="fraction of weights pruned",
        points=[SweepPoint(x, 30.0 + d, d) for x, d in ((0.0, 0.0), (0.5, 0.7), (0.9, 28.7))],
    )
    typed = AnalysisSummary(smoothness=0.21, effective_dimensionality=4.5, morans_i=0.33, sweeps={"pruning": pruning})
    # hf-topo analyze writes the typed summary and the flat keys derived from it; the card reads the typed one only
    flat = typed.flat() | {"n_layers": 3, "note": "text"}
    (root / "report.json").write_text(json.dumps({"summary": flat, "analysis_summary": typed.to_dict(), "model": {}}))
    for name in ("sheet_maps", "smoothness_curve"):
        fig = plt.figure(figsize=(2, 2))
        plt.plot([0, 1], [1, 0])
        fig.savefig(root / f"{name}.png")
        plt.close(fig)
    return root


def test_upload_folder_with_analysis(trained, tmp_path):
    out, _ = trained
    folder = tmp_path / "upload"
    build_upload_folder(out, folder, repo_id="me/tiny-toponet")
    files = build_upload_folder(  # rebuilding replaces the previous upload folder
        out, folder, repo_id="me/tiny-toponet", analysis_dir=_analysis_dir(tmp_path / "an"), overwrite=True
    )
    assert set(files) == MODEL_FILES | TOKENIZER_FILES | {
        "README.md",
        "figures/sheet_maps.png",
        "figures/smoothness_curve.png",
    }
    text = (folder / "README.md").read_text()
    assert "| smoothness (activations; highest − lowest binned correlation vs distance) | 0.21 |" in text
    assert "| Moran's I of activation maps | 0.33 |" in text and "note" not in text and "n_layers" not in text
    assert "| Δ perplexity, L1 pruning (fraction of weights) | 50 %: +0.7, 90 %: +28.7 |" in text
    assert "(figures/smoothness_curve.png)" in text and "Correlation of unit responses versus distance" in text


@pytest.mark.slow
def test_push_script_dry_run_folder_reloads(trained, tmp_path):
    out, _ = trained
    folder = tmp_path / "dry"
    cmd = [
        sys.executable,
        str(ROOT / "scripts/push_to_hub.py"),
        "--model",
        str(out),
        "--repo_id",
        "me/tiny-toponet",
        "--dry_run",
        "--output_dir",
        str(folder),
        "--datasets",
        "wikitext",
        "--eval_dataset",
        "wikitext",
    ]
    result = run_script(cmd)
    assert "Dry run: nothing uploaded" in result.stdout
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert files == MODEL_FILES | TOKENIZER_FILES | {"README.md", "figures/sheet_maps.png"}

    model = AutoModelForCausalLM.from_pretrained(folder)
    original = AutoModelForCausalLM.from_pretrained(out)
    for (name, a), (_, b) in zip(model.state_dict().items(), original.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    topo = TopoConfig.from_pretrained(model)
    assert topo.tau == 2.0 and len(topo.layers) == 3 and not topo.inferred
    assert len(AutoTokenizer.from_pretrained(folder)) == len(AutoTokenizer.from_pretrained(out))
    metadata = _parse_card((folder / "README.md").read_text())
    assert "perplexity" in metadata["metrics"]
    assert str(out) not in (folder / "README.md").read_text()  # no local paths leak into the card


def test_upload_folder_of_a_converted_nanogpt(tmp_path, tokenizer):
    from test_convert import make_reference, save_checkpoint

    from hf_topo.convert import attach_tokenizer, convert_nanogpt

    reference, model_args = make_reference(bias=False, vocab_size=320)
    model = convert_nanogpt(save_checkpoint(reference, model_args, tmp_path / "tau_50.pt"))
    tokenizer.save_pretrained(tmp_path / "tok")
    attach_tokenizer(model, tmp_path / "hf", str(tmp_path / "tok"))
    model.save_pretrained(tmp_path / "hf")
    files = build_upload_folder(tmp_path / "hf", tmp_path / "up", repo_id="me/toponet-nanogpt-tau50")
    assert set(files) == MODEL_FILES | TOKENIZER_FILES | {"README.md", "figures/sheet_maps.png"}
    text = (tmp_path / "up" / "README.md").read_text()
    _parse_card(text)
    assert "Converted from the nanoGPT checkpoint `tau_50.pt`" in text and "zero biases" in text
    assert "| iterations (nanoGPT iter_num) | 1234 |" in text and "τ = 50" in text
    assert f"the tokenizer has {len(tokenizer)} tokens" in text


def test_upload_folder_bad_inputs(trained, tmp_path, tiny_gpt2):
    out, _ = trained
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        build_upload_folder(tmp_path / "nowhere", tmp_path / "f")
    (tmp_path / "text").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        build_upload_folder(tmp_path / "text", tmp_path / "f")
    with pytest.raises(ValueError, match="exactly one slash"):
        build_upload_folder(out, tmp_path / "f", repo_id="no-namespace")
    with pytest.raises(ValueError, match="not a directory"):
        build_upload_folder(out, tmp_path / "f", analysis_dir=tmp_path / "missing")
    with pytest.raises(ValueError, match="must not be"):
        build_upload_folder(out, out)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        build_upload_folder(out, tmp_path / "busy")
    with pytest.raises(ValueError, match="does not look like an upload folder"):
        build_upload_folder(out, tmp_path / "busy", overwrite=True)  # never wipes an arbitrary directory
    tiny_gpt2.save_pretrained(tmp_path / "plain")  # no topography, no tokenizer
    with pytest.raises(ValueError, match="infer_topography"):
        build_upload_folder(tmp_path / "plain", tmp_path / "f")
    with pytest.raises(ValueError, match="No tokenizer"):
        build_upload_folder(tmp_path / "plain", tmp_path / "f", infer_topography=True)
    with pytest.raises(ValueError, match="exactly one slash"):
        push_folder(tmp_path, "a/b/c")


def test_push_refuses_what_a_user_gets_wrong_before_writing_anything(trained, tmp_path):
    """`hf-topo push` with a model folder that is missing, not a model or without weights, a repo id that is not
    'owner/name', an --analysis_dir without report.json (or with a broken one), a non-empty --output_dir: each is an
    error saying what to pass, and no upload folder is written."""
    from hf_topo.cli import push

    out, _ = trained
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("push it\n")
    (tmp_path / "weightless").mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "weightless" / name).write_bytes((out / name).read_bytes())
    figures_only = _analysis_dir(tmp_path / "figures_only")
    (figures_only / "report.json").unlink()
    broken = _analysis_dir(tmp_path / "broken")
    (broken / "report.json").write_text('{"summary": {"smoothness": 0.2')  # cut off while being written
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")

    upload = tmp_path / "upload"
    cases = [
        (["--model", str(tmp_path / "missing")], FileNotFoundError, "missing does not exist"),
        (["--model", str(tmp_path / "notes")], ValueError, "not a saved model folder \\(no config.json"),
        (["--model", str(tmp_path / "weightless")], ValueError, "has a config.json but no weights.*save_pretrained"),
        (["--repo_id", "tiny-toponet"], ValueError, "'user_or_org/model_name' \\(exactly one slash"),
        (["--repo_id", "me/tiny/toponet"], ValueError, "exactly one slash"),
        (["--analysis_dir", str(tmp_path / "nowhere")], ValueError, "is not a directory"),
        (["--analysis_dir", str(figures_only)], ValueError, "has no report.json.*hf-topo analyze"),
        (["--analysis_dir", str(broken)], ValueError, "report.json is not valid JSON"),
        (["--output_dir", str(tmp_path / "busy")], ValueError, "not empty; pass overwrite=True"),
    ]
    for change, error, message in cases:
        argv = {"--model": str(out), "--repo_id": "me/tiny-toponet", "--output_dir": str(upload)}
        argv.update(dict(zip(change[::2], change[1::2], strict=True)))
        with pytest.raises(error, match=message):
            push.main([*(item for pair in argv.items() for item in pair), "--dry_run"])
        assert not upload.exists(), change
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["keep.txt"]  # not overwritten


def test_push_refuses_offline_before_writing_anything(trained, tmp_path, monkeypatch):
    """`hf-topo push` without --dry_run while HF_HUB_OFFLINE is set is one clear error naming the Hub and the
    variable (not a network traceback), before the upload folder is written; push_folder refuses the same way."""
    from huggingface_hub import constants

    from hf_topo.cli import push

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets
    out, _ = trained
    upload = tmp_path / "upload"
    with pytest.raises(ValueError, match="Hugging Face Hub.*HF_HUB_OFFLINE is set.*--dry_run"):
        push.main(["--model", str(out), "--repo_id", "me/tiny-toponet", "--output_dir", str(upload)])
    assert not upload.exists()
    push.main(["--model", str(out), "--repo_id", "me/tiny-toponet", "--output_dir", str(upload), "--dry_run"])
    with pytest.raises(ValueError, match="Hugging Face Hub.*HF_HUB_OFFLINE"):
        push_folder(upload, "me/tiny-toponet")


def test_push_folder_turns_an_unreachable_hub_into_one_error(trained, tmp_path, monkeypatch):
    from huggingface_hub import HfApi, constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def no_network(self, *args, **kwargs):
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(HfApi, "create_repo", no_network)
    folder = tmp_path / "f"
    build_upload_folder(trained[0], folder, repo_id="me/tiny-toponet")
    with pytest.raises(ValueError, match="Cannot reach the Hugging Face Hub.*Failed to resolve.*network"):
        push_folder(folder, "me/tiny-toponet")


@pytest.mark.parametrize("record", ["laplacian_pyramid", ["c_fc"], {"schema_version": 1, "tau": "high"}])
def test_a_malformed_topography_record_is_an_error_never_a_missing_one(tmp_path, tiny_gpt2, record):
    """A `topography` entry that is not a valid record is TopoConfig's error, in the card and in load_toponet (which
    would otherwise infer sheets over it as if it were missing)."""
    tiny_gpt2.config.topography = record
    with pytest.raises(ValueError, match="'topography' record.*is malformed"):
        toponet_card(tiny_gpt2.config)
    tiny_gpt2.save_pretrained(tmp_path / "model")
    for infer in (True, False):
        with pytest.raises(ValueError, match="'topography' record.*is malformed"):
            load_toponet(tmp_path / "model", infer_if_missing=infer)
    tiny_gpt2.config.topography = None
    with pytest.raises(ValueError, match="has no 'topography' metadata"):
        toponet_card(tiny_gpt2.config)


def test_card_renders_the_typed_analysis_summary(tiny_gpt2):
    """The card's analysis rows come from AnalysisSummary: measures by field, one row per sweep in a fixed order with
    its strengths written per kind; unperturbed and non-finite points and unmeasured measures are left out."""
    attach_inferred_topography(tiny_gpt2)
    sweep = lambda kind, points: SweepSummary(kind, "x", [SweepPoint(x, 10 + d, d) for x, d in points])  # noqa: E731
    summary = AnalysisSummary(
        smoothness=0.25,
        morans_i=float("nan"),
        temporal_fractions={"power_law": 0.5, "exponential": 0.25, "neither": 0.25, "delta": 0.0},
        sweeps={
            "noise": sweep("noise", [(0.0, 0.0), (1.0, 3.25), (0.5, 0.5)]),
            "downsampling": sweep("downsampling", [(1.0, 0.0), (2.0, 1.5), (3.0, float("inf"))]),
            "deletion": sweep("deletion", [(0.0, 0.0), (0.3, 2.0)]),
        },
    )
    text = str(toponet_card(tiny_gpt2.config, results={"analysis": summary}))
    assert "| smoothness (activations; highest − lowest binned correlation vs distance) | 0.25 |" in text
    assert "| share of power-law temporal windows | 0.5 |" in text and "Moran's I of activation maps" not in text
    rows = [line for line in text.splitlines() if line.startswith("| Δ perplexity")]
    assert rows == [
        "| Δ perplexity, weight noise (σ × weight std) | σ 0.5: +0.5, σ 1: +3.25 |",
        "| Δ perplexity, sheets downsampled φ × φ | φ 2: +1.5 |",
        "| Δ perplexity, token deletion | 30 %: +2 |",
    ]
    with pytest.raises(TypeError, match="must be an AnalysisSummary"):
        toponet_card(tiny_gpt2.config, results={"analysis": summary.flat()})


def test_read_results_reads_a_report_written_before_the_typed_summary(tmp_path):
    """An older report.json (flat summary + SweepResult records, no analysis_summary) still gives the card its typed
    summary: measures by name, sweeps from the records, never from the flat key names."""
    (tmp_path / "report.json").write_text(
        json.dumps(
            {
                "summary": {"smoothness": 0.3, "pruned_50pct_delta_perplexity": 99.0},
                "model": {
                    "sweeps": {
                        "pruning": {
                            "kind": "pruning",
                            "x_label": "fraction",
                            "x": [0.0, 0.5],
                            "perplexity": [9, 10],
                            "delta_perplexity": [0.0, 1.0],
                            "reference_perplexity": 9,
                            "delta_blimp": None,
                            "parameters_kept": None,
                        }
                    }
                },
            }
        )  # fmt: skip
    )
    summary = read_results(tmp_path, tmp_path)["analysis"]
    assert summary.smoothness == 0.3 and summary.delta_perplexity("pruning", 0.5) == 1.0
    assert summary.sweeps["pruning"].perturbed_points() == [SweepPoint(0.5, 10, 1.0)]


def test_upload_folder_infers_metadata_for_a_plain_model(tmp_path, tiny_gpt2, tokenizer):
    tokenizer.save_pretrained(tmp_path / "tok")
    tiny_gpt2.save_pretrained(tmp_path / "small")
    with pytest.raises(ValueError, match="not this model's tokenizer"):  # 64 embeddings, ~300 tokens
        build_upload_folder(tmp_path / "small", tmp_path / "up", infer_topography=True, tokenizer=tmp_path / "tok")
    GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tokenizer), n_positions=16, n_embd=32, n_layer=2, n_head=2)
    ).save_pretrained(tmp_path / "plain")
    files = build_upload_folder(tmp_path / "plain", tmp_path / "up", infer_topography=True, tokenizer=tmp_path / "tok")
    assert "README.md" in files
    topo = TopoConfig.from_pretrained(tmp_path / "up")
    assert topo.inferred and topo.tau == 0.0 and len(topo.layers) == 2


# ---- inferred metadata on models that lack it --------------------------------------------------------------------


def test_load_toponet_infers_sheets_for_gpt2_and_gpt_neo(tmp_path):
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=48, n_layer=2, n_head=2))
    neo = build_causal_lm("gpt_neo", hidden_size=48, max_position_embeddings=16)
    for name, model, prefix in (("gpt2", gpt2, "transformer.h"), ("neo", neo, "transformer.h")):
        model.save_pretrained(tmp_path / name)
        with pytest.raises(ValueError, match="no 'topography' metadata"):
            load_toponet(tmp_path / name, infer_if_missing=False)
        loaded = load_toponet(tmp_path / name)
        topo = TopoConfig.from_pretrained(loaded)
        assert topo.inferred and topo.tau == 0.0 and topo.target_modules == ["mlp.c_fc"]
        assert set(topo.layers) == {f"{prefix}.{i}.mlp.c_fc" for i in range(2)}
        assert topo.layers[f"{prefix}.0.mlp.c_fc"].shape == (12, 16, 48)  # 192 units, most-square
        loaded.save_pretrained(tmp_path / f"{name}-with-metadata")  # saved, the inferred record stays inferred
        assert TopoConfig.from_pretrained(tmp_path / f"{name}-with-metadata").inferred


def test_load_toponet_infers_for_neox_and_llama(tmp_path, tiny_neox, tiny_llama):
    for name, model, suffix, shape in (
        ("neox", tiny_neox, "mlp.dense_h_to_4h", (8, 12, 32)),
        ("llama", tiny_llama, "mlp.up_proj", (10, 12, 32)),
    ):
        model.save_pretrained(tmp_path / name)
        topo = TopoConfig.from_pretrained(load_toponet(tmp_path / name))
        assert topo.inferred and all(n.endswith(suffix) for n in topo.layers)
        assert next(iter(topo.layers.values())).shape == shape


def test_load_toponet_rejects_contradicting_metadata(tmp_path, trained):
    out, _ = trained
    config = json.loads((out / "config.json").read_text())
    config["topography"]["layers"]["transformer.h.0.mlp.c_fc"]["height"] = 4
    config["topography"]["layers"]["transformer.h.0.mlp.c_fc"]["width"] = 32
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps(config))
    (tmp_path / "bad" / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="different models"):
        load_toponet(tmp_path / "bad")


# ---- pushing through huggingface_hub's real commit code, to a fake Hub ---------------------------------------------


class FakeHub:
    """Answers the endpoints an upload_folder push uses and records what huggingface_hub sent."""

    LFS_HOST = "fake-lfs.test"

    def __init__(self):
        self.requests: list[tuple[str, str]] = []
        self.created: list[dict] = []
        self.branches: list[str] = []
        self.preuploaded: list[str] = []
        self.lfs_uploads: dict[str, bytes] = {}
        self.verified: list[str] = []
        self.commits: list[dict] = []
        self.validated: list[str] = []

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        method, path = request.method, request.url.path
        self.requests.append((method, f"{request.url.host}{path}"))
        if request.url.host != self.LFS_HOST:  # storage URLs are pre-signed; the Hub API gets the token
            assert request.headers.get("authorization") == "Bearer hf_fake_token", (method, path)
        if method == "POST" and path == "/api/repos/create":
            body = json.loads(request.content)
            self.created.append(body)
            return httpx2.Response(200, json={"url": f"https://huggingface.co/{body['organization']}/{body['name']}"})
        if method == "POST" and path == "/api/validate-yaml":  # upload_folder checks README.md's metadata first
            body = json.loads(request.content)
            self.validated.append(body["content"])
            try:  # the server's validator is not available; huggingface_hub's own parser stands in for it
                ModelCard(body["content"])
            except ValueError as err:
                return httpx2.Response(400, json={"errors": [{"message": str(err)}]})
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        if method == "POST" and "/branch/" in path:
            self.branches.append(path.rsplit("/branch/", 1)[1])
            return httpx2.Response(200, json={})
        if method == "POST" and "/preupload/" in path:
            files = json.loads(request.content)["files"]
            self.preuploaded += [f["path"] for f in files]
            binary = (".safetensors", ".png", ".bin")
            return httpx2.Response(
                200,
                json={
                    "files": [
                        {
                            "path": f["path"],
                            "uploadMode": "lfs" if f["path"].endswith(binary) else "regular",
                            "shouldIgnore": False,
                            "oid": None,
                        }
                        for f in files
                    ]
                },
            )
        if method == "POST" and path.endswith(".git/info/lfs/objects/batch"):
            objects = json.loads(request.content)["objects"]
            return httpx2.Response(
                200,
                json={
                    "transfer": "basic",
                    "objects": [
                        {
                            "oid": o["oid"],
                            "size": o["size"],
                            "actions": {
                                "upload": {"href": f"https://{self.LFS_HOST}/upload/{o['oid']}"},
                                "verify": {"href": f"https://huggingface.co{path.replace('/batch', '/verify')}"},
                            },
                        }
                        for o in objects
                    ],
                },
            )
        if method == "PUT" and request.url.host == self.LFS_HOST:
            oid = path.rsplit("/", 1)[1]
            self.lfs_uploads[oid] = request.read()
            return httpx2.Response(200)
        if method == "POST" and path.endswith("/objects/verify"):
            self.verified.append(json.loads(request.content)["oid"])
            return httpx2.Response(200, json={})
        if method == "POST" and "/commit/" in path:
            lines = [json.loads(line) for line in request.content.decode().splitlines() if line]
            self.commits.append({"path": path, "lines": lines})
            repo = path.split("/api/models/")[1].split("/commit/")[0]
            return httpx2.Response(
                200,
                json={
                    "commitUrl": f"https://huggingface.co/{repo}/commit/{'a' * 40}",
                    "commitOid": "a" * 40,
                    "pullRequestUrl": None,
                },
            )
        return httpx2.Response(404, json={"error": f"fake Hub has no {method} {path}"})

    def committed_files(self, commit: dict) -> dict[str, dict]:
        files = {}
        for line in commit["lines"]:
            if line["key"] in ("file", "lfsFile"):
                files[line["value"]["path"]] = line | {"value": line["value"]}
        return files


@pytest.fixture
def fake_hub(monkeypatch):
    hub = FakeHub()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the fake transport is the only thing reached
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # hf_xet uploads through its own (Rust) client
    huggingface_hub.set_client_factory(
        lambda: httpx2.Client(
            transport=httpx2.MockTransport(hub.handle),
            follow_redirects=True,
            event_hooks={"request": [hf_request_event_hook]},
        )
    )
    yield hub
    huggingface_hub.set_client_factory(default_client_factory)


def _local_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_push_commits_exactly_the_dry_run_folder(trained, tmp_path, fake_hub):
    out, _ = trained
    folder = tmp_path / "upload"
    build_upload_folder(out, folder, repo_id="me/tiny-toponet")
    local = _local_files(folder)

    info = push_folder(
        folder, "me/tiny-toponet", private=True, revision="v1", commit_message="TopoNet τ=2", token="hf_fake_token"
    )
    assert info.commit_url.startswith("https://huggingface.co/me/tiny-toponet/commit/")
    assert fake_hub.created == [
        {"name": "tiny-toponet", "organization": "me", "visibility": "private", "type": "model"}
    ]
    assert fake_hub.branches == ["v1"]
    (commit,) = fake_hub.commits
    assert commit["path"] == "/api/models/me/tiny-toponet/commit/v1"
    header = commit["lines"][0]
    assert header["key"] == "header" and header["value"]["summary"] == "TopoNet τ=2"
    committed = fake_hub.committed_files(commit)
    assert set(committed) == set(local) == set(fake_hub.preuploaded)
    for path, line in committed.items():
        if line["key"] == "file":  # small text files travel inside the commit, base64
            assert base64.b64decode(line["value"]["content"]) == local[path], path
        else:  # LFS: sha256 in the commit, bytes PUT to the storage URL the batch endpoint gave
            oid = hashlib.sha256(local[path]).hexdigest()
            assert line["value"]["oid"] == oid and fake_hub.lfs_uploads[oid] == local[path], path
    assert {p for p, line in committed.items() if line["key"] == "lfsFile"} == {
        "model.safetensors",
        "figures/sheet_maps.png",
    }
    assert sorted(fake_hub.verified) == sorted(fake_hub.lfs_uploads)
    assert fake_hub.validated and set(fake_hub.validated) == {
        local["README.md"].decode()
    }  # the card's YAML was checked


def test_push_script_pushes_the_folder_it_wrote(trained, tmp_path, fake_hub, capsys):
    from hf_topo.cli import push

    out, _ = trained
    argv = ["--model", str(out), "--repo_id", "me/tiny-toponet", "--output_dir", str(tmp_path / "f")]
    result = push.main(argv + ["--token", "hf_fake_token"])
    assert result["commit_url"] and "Pushed to https://huggingface.co/me/tiny-toponet" in capsys.readouterr().out
    (commit,) = fake_hub.commits
    assert set(fake_hub.committed_files(commit)) == set(result["files"]) == set(_local_files(tmp_path / "f"))
    assert "visibility" not in fake_hub.created[0] and fake_hub.branches == []  # the namespace's default
    with pytest.raises(ValueError, match="exactly one slash"):
        push.main(["--model", str(out), "--repo_id", "tiny", "--dry_run"])


def test_trainer_push_to_hub_uploads_our_card(trained, fake_hub):
    out, trainer = trained
    trainer.push_to_hub(commit_message="End of training", dataset="wikitext")
    (commit,) = fake_hub.commits
    committed = fake_hub.committed_files(commit)
    assert {"README.md", "figures/sheet_maps.png", "config.json", "model.safetensors"} <= set(committed)
    card = base64.b64decode(committed["README.md"]["value"]["content"]).decode()
    assert "topographic" in _parse_card(card)["tags"] and "# tiny-toponet" in card
    config = json.loads(base64.b64decode(committed["config.json"]["value"]["content"]))
    assert config["topography"]["tau"]["value"] == 2.0


# ---- live ---------------------------------------------------------------------------------------------------------------


def _hub_reachable() -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(
    not os.environ.get("HF_TOKEN") or not _hub_reachable(), reason="needs HF_TOKEN and a reachable huggingface.co"
)
def test_live_push_to_a_private_temporary_repo(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    api = huggingface_hub.HfApi(token=os.environ["HF_TOKEN"])
    repo_id = f"{api.whoami()['name']}/hf-topo-test-{uuid.uuid4().hex[:8]}"
    out, _ = trained
    files = build_upload_folder(out, tmp_path / "up", repo_id=repo_id)
    try:
        push_folder(tmp_path / "up", repo_id, private=True, token=os.environ["HF_TOKEN"])
        assert set(api.list_repo_files(repo_id)) - {".gitattributes"} == set(files)
        assert api.model_info(repo_id).private
        model = AutoModelForCausalLM.from_pretrained(repo_id, token=os.environ["HF_TOKEN"])
        assert TopoConfig.from_pretrained(model).tau == 2.0
    finally:
        api.delete_repo(repo_id, missing_ok=True)
