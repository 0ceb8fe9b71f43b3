"""scripts/pretrain.py end to end: as a plain script and under `accelerate launch`, on a local corpus, offline.

A fresh Python process costs an import of torch and transformers (seconds when idle, much more on a busy machine), so
only what needs one runs as a subprocess: the script itself, `accelerate launch`, the demo, the quick start and one
refusal's stderr. The other runs call `hf_topo.cli.pretrain.main`, the function behind `hf-topo pretrain`, in this
process."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _scripts import ACCELERATE_ONE_CPU, offline_env, run_script
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_topo import TopoConfig
from hf_topo.data import write_python_corpus

ROOT = Path(__file__).resolve().parents[1]
COMMON = [
    "--model_preset", "tiny-gpt2", "--config_overrides", "n_embd=32,n_layer=2,n_head=2",
    "--block_size", "32", "--tokenizer_vocab_size", "300", "--max_eval_blocks", "8",
    "--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--logging_steps", "1",
    "--report_to", "none", "--use_cpu", "true", "--seed", "1",
]  # fmt: skip


_env = offline_env


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_python_corpus(str(tmp_path_factory.mktemp("corpus") / "stdlib.txt"), max_bytes=40_000)


_run = run_script


def _blimp_dir(root: Path) -> Path:
    root.mkdir()
    rows = [{"sentence_good": f"def f{i}(x): return x", "sentence_bad": f"def f{i}(x) return x:", "field": "syntax",
             "linguistics_term": "code", "UID": "code_syntax"} for i in range(5)]  # fmt: skip
    (root / "code_syntax.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return root


@pytest.mark.slow
def test_pretrain_script_trains_saves_and_reports(tmp_path, corpus):
    out = tmp_path / "toponet"
    cmd = [sys.executable, str(ROOT / "scripts/pretrain.py"), "--train_file", corpus, "--output_dir", str(out)]
    cmd += COMMON + ["--max_steps", "6", "--tau", "3", "--tau_schedule", "warmup:2", "--save_steps", "3"]
    cmd += ["--blimp_dir", str(_blimp_dir(tmp_path / "blimp")), "--eval_strategy", "steps", "--eval_steps", "3"]
    result = _run(cmd, tmp_path)
    assert "TopoNet saved to" in result.stdout and "BLiMP" in result.stdout

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_perplexity"] > 1 and 0 < metrics["topo_loss"] < 1
    assert set(metrics["topo_loss_per_layer"]) == {"h.0.mlp.c_fc", "h.1.mlp.c_fc"}
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    taus = [h["tau"] for h in history if "tau" in h]
    assert taus == [0.0, 1.5, 3.0, 3.0, 3.0, 3.0]  # warmup:2 then constant, logged per optimizer step

    model = AutoModelForCausalLM.from_pretrained(out)
    AutoTokenizer.from_pretrained(out)  # the locally trained tokenizer is saved with the model
    topo = TopoConfig.from_pretrained(out)
    assert topo.tau == 3.0 and topo.target_modules == ["mlp.c_fc"]
    assert {n: s.shape for n, s in topo.layers.items()} == {
        "transformer.h.0.mlp.c_fc": (8, 16, 32),
        "transformer.h.1.mlp.c_fc": (8, 16, 32),
    }
    TopoConfig.from_pretrained(model)  # stored sheets agree with the loaded weights
    checkpoint = json.loads((out / "checkpoint-3" / "config.json").read_text())
    assert checkpoint["topography"]["tau"]["at_step"] == 3
    assert [h["step"] for h in history if "blimp/overall" in h] == [3, 6]  # BlimpCallback at each evaluation
    assert 0 <= metrics["blimp_overall"] <= 1 and set(metrics["blimp_fields"]) == {"syntax"}
    assert json.loads((out / "blimp.json").read_text())["n_pairs"] == {"code_syntax": 5}


@pytest.mark.parametrize("loss_type", ["laplacian_pyramid", "activation_similarity"])
def test_topo_loss_of_a_toponet_is_far_below_its_tau_0_twin(tmp_path, corpus, loss_type):
    """The same recipe (seed, data, 3 steps at a learning rate of 1e-2) with τ=50 and τ=0: the regularizer the TopoNet
    was trained with must end far below its twin's, on every layer (the final value of Activation Similarity is read
    on the first evaluation batch)."""
    from hf_topo.cli import pretrain

    metrics = {}
    for tau in ("50", "0"):
        out = tmp_path / f"tau{tau}"
        argv = ["--train_file", corpus, "--output_dir", str(out), *COMMON, "--learning_rate", "1e-2"]
        argv += ["--max_steps", "3", "--tau", tau, "--topo_loss_type", loss_type, "--save_strategy", "no"]
        metrics[tau] = pretrain.main(argv)
        assert json.loads((out / "metrics.json").read_text())["topo_loss"] == metrics[tau]["topo_loss"]
        assert TopoConfig.from_pretrained(out).loss == loss_type
    toponet, twin = metrics["50"], metrics["0"]
    assert twin["topo_loss"] > 0.8  # an untrained sheet: neighbours barely alike
    assert toponet["topo_loss"] < 0.5 * twin["topo_loss"]
    assert set(toponet["topo_loss_per_layer"]) == {"h.0.mlp.c_fc", "h.1.mlp.c_fc"}
    for layer, value in toponet["topo_loss_per_layer"].items():
        assert value < 0.5 * twin["topo_loss_per_layer"][layer], layer
    assert toponet["eval_loss"] == pytest.approx(twin["eval_loss"], rel=0.1)  # the same recipe, the same task


@pytest.mark.slow
def test_pretrain_under_accelerate_launch(tmp_path, corpus):
    out = tmp_path / "launched"
    cmd = [sys.executable, *ACCELERATE_ONE_CPU, str(ROOT / "scripts/pretrain.py")]
    cmd += ["--train_file", corpus, "--output_dir", str(out)]
    cmd += COMMON + ["--max_steps", "3", "--tau", "1", "--save_strategy", "no"]
    _run(cmd, tmp_path)
    assert json.loads((out / "config.json").read_text())["topography"]["tau"]["value"] == 1.0


def test_pretrain_rejects_bad_topo_settings_before_training(tmp_path, corpus):
    from hf_topo.cli import pretrain

    argv = ["--train_file", corpus, "--output_dir", str(tmp_path), *COMMON]
    with pytest.raises(ValueError, match=r"matches no Linear/Conv1D/Conv2d/RNN layer(.|\n)*c_fc"):
        pretrain.main(argv + ["--max_steps", "2", "--topo_target_modules", "mlp.w_in"])
    assert not (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("checkpoint-*"))
    with pytest.raises(ValueError, match="tau=-1.0 must be a finite number >= 0"):
        pretrain.main(argv + ["--tau", "-1"])


def test_pretrain_help_documents_topo_flags(capsys):
    from hf_topo.cli import pretrain

    with pytest.raises(SystemExit) as exit_code:
        pretrain.main(["--help"])
    assert exit_code.value.code == 0
    help_text = capsys.readouterr().out
    for flag in (
        "--tau",
        "--tau_schedule",
        "--topo_target_modules",
        "--topo_factor_h",
        "--model_preset",
        "--train_file",
    ):
        assert flag in help_text


@pytest.mark.slow
def test_pretrain_streaming_jsonl(tmp_path):
    lines = [json.dumps({"text": f"def function_{i}(x):\n    return x * {i} + {i % 7}\n"}) for i in range(400)]
    (tmp_path / "train.jsonl").write_text("\n".join(lines[:360]))
    (tmp_path / "val.jsonl").write_text("\n".join(lines[360:]))
    out = tmp_path / "streamed"
    from hf_topo.cli import pretrain

    argv = ["--train_file", str(tmp_path / "train.jsonl")]
    argv += ["--validation_file", str(tmp_path / "val.jsonl"), "--streaming", "true", "--output_dir", str(out)]
    pretrain.main(argv + COMMON + ["--max_steps", "3", "--tau", "1", "--save_strategy", "no"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_loss"] > 0
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 3
    assert json.loads((out / "config.json").read_text())["topography"]["layers"]


@pytest.mark.slow
def test_demo_trains_both_models_and_reports(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, str(ROOT / "scripts/demo.py"), "--output_dir", str(out), "--max_steps", "4"]
    cmd += ["--corpus_bytes", "40000", "--vocab_size", "300", "--batch_size", "4", "--block_size", "32"]
    result = _run(cmd, tmp_path)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["baseline"]["tau"] == 0.0 and summary["toponet"]["tau"] == 5.0
    assert summary["toponet"]["topo_loss"] < summary["baseline"]["topo_loss"]
    for path in summary["figures"]:
        assert Path(path).stat().st_size > 10_000  # real PNGs
    assert "| toponet | 5 |" in result.stdout and str(out / "toponet") in result.stdout
    assert "BLiMP: not evaluated (no data given; pass --blimp_dir" in result.stdout
    assert (out / "toponet" / "tokenizer.json").exists() and (out / "baseline" / "config.json").exists()
    # Both models analysed on the held-out 5 % (what they were evaluated on), with the TopoNet downsampled 2x2.
    heldout = out / "data" / "validation.txt"
    assert heldout.stat().st_size > 0 and json.loads((out / "toponet" / "metrics.json").read_text())["eval_loss"] > 0
    report = json.loads((out / "analysis" / "report.json").read_text())
    assert report["metadata"]["text"]["text_file"] == str(heldout)
    assert summary["analysis"]["toponet"]["smoothness"] == report["summary"]["smoothness"]
    assert summary["analysis"]["baseline"]["morans_i"] == report["baseline_summary"]["morans_i"]
    assert (
        "| smoothness (activations) |" in result.stdout and "Moran's I of the units' temporal reach" in result.stdout
    )
    assert (out / "analysis" / "downsampled" / "config.json").exists()


def test_held_out_lines_are_copies_and_the_users_file_stays_as_it_is(tmp_path):
    from hf_topo.experiments.recipes import hold_out_lines

    text = "".join(f"line {i}\n" for i in range(20))
    (tmp_path / "corpus.txt").write_text(text)
    train, held_out = hold_out_lines(str(tmp_path / "corpus.txt"), 0.1, str(tmp_path / "data"))
    assert (tmp_path / "corpus.txt").read_text() == text
    assert (
        Path(held_out).read_text() == "line 18\nline 19\n" and Path(train).read_text() + "line 18\nline 19\n" == text
    )
    # Again over the same folder (a second invocation sharing it): whole files, replaced, no partial file left.
    assert hold_out_lines(str(tmp_path / "corpus.txt"), 0.1, str(tmp_path / "data")) == (train, held_out)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["train.txt", "validation.txt"]
    (tmp_path / "one.txt").write_text("a single line\n")
    with pytest.raises(ValueError, match="one.txt has 1 line.*too few to train on some and hold out the last 10%"):
        hold_out_lines(str(tmp_path / "one.txt"), 0.1, str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_demo_refuses_a_folder_with_a_previous_demo(tmp_path):
    from hf_topo.cli import demo

    (tmp_path / "demo" / "toponet").mkdir(parents=True)
    (tmp_path / "demo" / "toponet" / "config.json").write_text("{}")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(ValueError, match="toponet holds a previous demo run; pass another output_dir="):
        demo.main(["--output_dir", str(tmp_path / "demo"), "--max_steps", "1"])
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written or replaced


#: The quick start's sizes (about a minute of training when the machine is idle) → the test's (every line still runs).
QUICKSTART_SIZES = {
    "max_bytes=500_000": "max_bytes=40_000",
    "vocab_size=2048": "vocab_size=300",
    "block_size=128": "block_size=32",
    "max_steps=100": "max_steps=2",
}


@pytest.mark.slow
def test_readme_quickstart_runs(tmp_path):
    code = (ROOT / "examples/quickstart.py").read_text()
    for full, small in QUICKSTART_SIZES.items():
        assert code.count(full) == 1, f"examples/quickstart.py no longer says {full!r}: update QUICKSTART_SIZES"
        code = code.replace(full, small)
    (tmp_path / "quickstart.py").write_text(code)
    result = _run([sys.executable, str(tmp_path / "quickstart.py")], tmp_path)
    assert (
        "CorticalSheet(module_name='transformer.h.0.mlp.c_fc', layer_type='Conv1D', height=16, width=32"
        in result.stdout
    )
    assert (tmp_path / "outputs/quickstart/toponet/config.json").exists()


def _jsonl_corpus(root: Path, n: int = 400) -> Path:
    lines = [json.dumps({"text": f"def function_{i}(x):\n    return x * {i} + {i % 7}\n"}) for i in range(n)]
    (root / "corpus.jsonl").write_text("\n".join(lines))
    return root / "corpus.jsonl"


@pytest.mark.slow
def test_pretrain_streaming_resumes_exactly(tmp_path):
    # A seeded shuffle buffer over the stream, the validation set held out from its head, 6 steps with a checkpoint at
    # 3; then a second run resumes from that checkpoint. The Trainer skips the 3 consumed steps of the (deterministic)
    # stream, so the resumed run must end on the uninterrupted run's weights.
    data = ["--train_file", str(_jsonl_corpus(tmp_path)), "--streaming", "true", "--validation_documents", "20"]
    data += ["--streaming_shuffle_buffer", "64", "--max_steps", "6", "--tau", "2", "--save_steps", "3"]
    from hf_topo.cli import pretrain

    full = tmp_path / "full"
    pretrain.main([*data, *COMMON, "--output_dir", str(full)])
    resumed = tmp_path / "resumed"
    argv = [*data, *COMMON, "--output_dir", str(resumed)]
    pretrain.main(argv + ["--tokenizer_name", str(full), "--resume_from_checkpoint", str(full / "checkpoint-3")])

    history = json.loads((resumed / "trainer_state.json").read_text())["log_history"]
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3, 4, 5, 6]  # 1-3 come from the checkpoint's state
    full_history = json.loads((full / "trainer_state.json").read_text())["log_history"]
    losses = {h["step"]: h["loss"] for h in full_history if "loss" in h}
    for h in history:
        if "loss" in h:  # the same batches at the same steps
            assert h["loss"] == pytest.approx(losses[h["step"]], rel=1e-5), h["step"]
    a, b = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name
    moved = load_file(full / "checkpoint-3" / "model.safetensors")
    assert max((a[n] - moved[n]).abs().max().item() for n in a) > 1e-3  # steps 4-6 did change the weights


def test_pretrain_streaming_needs_max_steps_and_a_validation_set(tmp_path):
    from hf_topo.cli import pretrain

    argv = ["--train_file", str(_jsonl_corpus(tmp_path, 40))]
    argv += ["--streaming", "true", "--output_dir", str(tmp_path / "out"), *COMMON]
    with pytest.raises(ValueError, match="set max_steps="):
        pretrain.main(argv)
    with pytest.raises(ValueError, match="validation_documents=N"):
        pretrain.main(argv + ["--max_steps", "2"])


@pytest.mark.slow
def test_same_command_twice_is_refused_and_true_resumes_the_last_checkpoint(tmp_path, corpus):
    """A second run into the same folder never overwrites or mixes with the first; `--resume_from_checkpoint true`
    continues from the folder's last checkpoint (as transformers' run_clm.py finds it) and ends where an
    uninterrupted run ends."""
    from hf_topo.cli import pretrain

    hf_topo_command = [sys.executable, "-m", "hf_topo.cli", "pretrain"]
    flags = ["--train_file", corpus, *COMMON, "--tau", "2", "--save_steps", "2"]
    flags += ["--lr_scheduler_type", "constant"]  # the same schedule whether a run is planned for 2 or 4 steps
    out = tmp_path / "run"
    pretrain.main([*flags, "--max_steps", "2", "--output_dir", str(out)])
    first = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert Path("checkpoint-2/model.safetensors") in first

    again = subprocess.run(
        [*hf_topo_command, *flags, "--max_steps", "4", "--output_dir", str(out)],
        env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert again.returncode != 0
    assert (
        "already holds a training run" in again.stderr
        and "Traceback" not in again.stderr
        and "--resume_from_checkpoint true" in again.stderr
    )
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == first  # untouched

    # "interrupted" after step 2 of 4: the same command with 4 steps resumes from checkpoint-2
    pretrain.main([*flags, "--max_steps", "4", "--output_dir", str(out), "--resume_from_checkpoint", "true"])
    full = tmp_path / "full"
    pretrain.main([*flags, "--max_steps", "4", "--output_dir", str(full)])
    a, b = load_file(full / "model.safetensors"), load_file(out / "model.safetensors")
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3, 4]


@pytest.mark.parametrize(("preset", "layer"), [("tiny-gpt-neox", "mlp.dense_h_to_4h"), ("tiny-llama", "mlp.up_proj")])
@pytest.mark.slow  # a fresh process or a training run: the fast lane leaves it to CI
def test_pretrain_other_families_default_to_their_expansion_layer(tmp_path, corpus, preset, layer):
    """Without --topo_target_modules a NeoX or Llama preset trains TopoLoss on its family's MLP expansion layer
    (GPT-2's default `mlp.c_fc` matches nothing there); the saved model loads in a fresh process with that record."""
    from hf_topo.experiments.recipes import small_cpu_recipe
    from hf_topo.pretraining import pretrain

    out = tmp_path / preset
    args = small_cpu_recipe(
        corpus, corpus, str(out), tau=5.0, max_steps=2, batch_size=2, learning_rate=1e-3, block_size=16, seed=0,
        model_preset=preset, vocab_size=300, max_eval_blocks=2, use_cpu=True,
    )  # fmt: skip
    pretrain(*args)
    code = (
        "import json, sys; from transformers import AutoModelForCausalLM; from hf_topo import TopoConfig; "
        "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); t = TopoConfig.from_pretrained(m); "
        "print(json.dumps([m.config.model_type, t.target_modules, t.tau, sorted(t.layers)]))"
    )
    result = subprocess.run([sys.executable, "-c", code, str(out)], env=_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    model_type, targets, tau, layers = json.loads(result.stdout.strip().splitlines()[-1])
    assert model_type == ("gpt_neox" if "neox" in preset else "llama")
    assert targets == [layer] and tau == 5.0
    assert len(layers) == 4 and all(name.endswith(layer) for name in layers)
