"""resolve_checkpoint (hf_topo.checkpoints): which checkpoint a run resumes from, on real folders and real runs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _scripts import offline_env
from safetensors.torch import load_file
from transformers import HfArgumentParser, TrainerCallback, TrainingArguments

from hf_topo import TopoTrainer, TopoTrainingArguments, resolve_checkpoint

TESTS = Path(__file__).resolve().parent


def _parsed(output_dir, *flags: str) -> TrainingArguments:
    """TrainingArguments as a command parses them: `--resume_from_checkpoint true` arrives as the string "true"."""
    (args,) = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses(
        args=["--output_dir", str(output_dir), "--report_to", "none", *flags]
    )
    return args


def _checkpoint(folder: Path, step: int, complete: bool = True) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"")
    if complete:  # the Trainer writes trainer_state.json last
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


# ---- fresh runs ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags", [[], ["--resume_from_checkpoint", "false"], ["--resume_from_checkpoint", "False"]])
def test_fresh_run_into_a_new_or_empty_folder(tmp_path, flags):
    assert resolve_checkpoint(_parsed(tmp_path / "new", *flags)) is None
    (tmp_path / "empty").mkdir()
    assert resolve_checkpoint(_parsed(tmp_path / "empty", *flags)) is None
    # Files and folders that are not a run's (notes, data, names that are not checkpoint-N) are fine.
    (tmp_path / "empty" / "notes.txt").write_text("x")
    (tmp_path / "empty" / "data").mkdir()
    (tmp_path / "empty" / "checkpoint-notes.txt").write_text("x")
    (tmp_path / "empty" / "checkpoint-best").mkdir()
    assert resolve_checkpoint(_parsed(tmp_path / "empty", *flags)) is None


@pytest.mark.parametrize("word", ["false", "False", "no", "0"])
def test_false_words_are_a_fresh_run(tmp_path, word):
    assert resolve_checkpoint(_parsed(tmp_path, "--resume_from_checkpoint", word)) is None


@pytest.mark.parametrize(
    "leftover",
    ["checkpoint-500", "config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
     "trainer_state.json", "adapter_model.safetensors", "adapter_config.json"],
)  # fmt: skip
def test_fresh_run_into_a_previous_run_is_refused(tmp_path, leftover):
    if leftover.startswith("checkpoint-"):
        _checkpoint(tmp_path, 500)
    else:
        (tmp_path / leftover).write_text("{}")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError) as raised:
        resolve_checkpoint(_parsed(tmp_path))
    message = str(raised.value)
    assert f"{str(tmp_path)!r} already holds a training run ({leftover})" in message
    assert "resume_from_checkpoint=true" in message and "new or empty output_dir=" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing was touched


# ---- resume: true -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("word", ["true", "True", "TRUE", "1", "yes"])
def test_true_resumes_from_the_last_checkpoint(tmp_path, word):
    for step in (2, 9, 10):
        _checkpoint(tmp_path, step)
    (tmp_path / "checkpoint-99.txt").write_text("not a folder")
    assert resolve_checkpoint(_parsed(tmp_path, "--resume_from_checkpoint", word)) == str(tmp_path / "checkpoint-10")


def test_true_also_as_a_boolean(tmp_path):
    _checkpoint(tmp_path, 4)
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], resume_from_checkpoint=True)
    assert resolve_checkpoint(args) == str(tmp_path / "checkpoint-4")


def test_true_without_a_checkpoint(tmp_path):
    with pytest.raises(ValueError, match=r"'.*missing' holds no checkpoint-N folder to resume from"):
        resolve_checkpoint(_parsed(tmp_path / "missing", "--resume_from_checkpoint", "true"))
    (tmp_path / "model.safetensors").write_text("")
    with pytest.raises(ValueError, match=r"holds no checkpoint-N folder.*Check output_dir="):
        resolve_checkpoint(_parsed(tmp_path, "--resume_from_checkpoint", "true"))


def test_true_with_an_interrupted_save(tmp_path):
    _checkpoint(tmp_path, 3)
    _checkpoint(tmp_path, 6, complete=False)
    with pytest.raises(ValueError, match=r"checkpoint-6', is incomplete: it has no trainer_state.json.*Delete that"):
        resolve_checkpoint(_parsed(tmp_path, "--resume_from_checkpoint", "true"))


# ---- resume: a path ---------------------------------------------------------------------------------------------------


def test_an_explicit_checkpoint(tmp_path):
    path = _checkpoint(tmp_path / "run", 3)
    _checkpoint(tmp_path / "run", 6)
    # An explicit checkpoint is taken as given (also into another output_dir, as after a crash elsewhere).
    assert resolve_checkpoint(_parsed(tmp_path / "elsewhere", "--resume_from_checkpoint", str(path))) == str(path)
    with pytest.raises(ValueError, match=r"'.*checkpoint-7' does not exist or is not a folder.*true"):
        resolve_checkpoint(_parsed(tmp_path / "run", "--resume_from_checkpoint", str(tmp_path / "run/checkpoint-7")))
    with pytest.raises(ValueError, match=r"is not a checkpoint folder: it has no trainer_state.json"):
        resolve_checkpoint(_parsed(tmp_path, "--resume_from_checkpoint", str(tmp_path / "run")))
    with pytest.raises(TypeError, match=r"resume_from_checkpoint=3 \(int\) is not understood"):
        resolve_checkpoint(TrainingArguments(output_dir=str(tmp_path), report_to=[], resume_from_checkpoint=3))


# ---- a real run, interrupted, resumed with `true` in a fresh process -------------------------------------------------

RUN_FLAGS = [
    "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "3", "--per_device_train_batch_size", "4",
    "--learning_rate", "0.1", "--optim", "sgd", "--weight_decay", "0", "--max_grad_norm", "0",
    "--lr_scheduler_type", "constant", "--logging_steps", "1", "--use_cpu", "true", "--seed", "0", "--data_seed", "0",
    "--dataloader_num_workers", "0", "--disable_tqdm", "true", "--tau", "5", "--tau_schedule", "warmup:4",
]  # fmt: skip

_RESUME_IN_A_FRESH_PROCESS = """
import json, sys
import torch
from datasets import load_from_disk
from transformers import AutoConfig, AutoModelForCausalLM, HfArgumentParser
from hf_topo import TopoTrainer, TopoTrainingArguments, resolve_checkpoint

model_dir, data_dir, *argv = sys.argv[1:]
(args,) = HfArgumentParser(TopoTrainingArguments).parse_args_into_dataclasses(args=argv)
checkpoint = resolve_checkpoint(args)
torch.manual_seed(123)  # another initialization: everything must come from the checkpoint
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
trainer = TopoTrainer(model=model, args=args, train_dataset=load_from_disk(data_dir))
trainer.train(resume_from_checkpoint=checkpoint)
print(json.dumps({"checkpoint": checkpoint}))
"""


class _Interrupt(TrainerCallback):
    """Stops the run with an exception after optimizer step ``at`` (as a crash or Ctrl-C would)."""

    def __init__(self, at: int):
        self.at = at

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise KeyboardInterrupt(f"interrupted after step {self.at}")


def _topo_args(output_dir, *flags):
    (args,) = HfArgumentParser(TopoTrainingArguments).parse_args_into_dataclasses(
        args=["--output_dir", str(output_dir), "--report_to", "none", *RUN_FLAGS, *flags]
    )
    return args


def _logged_losses(output_dir: Path, step: int) -> dict:
    history = json.loads((output_dir / f"checkpoint-{step}" / "trainer_state.json").read_text())["log_history"]
    return {h["step"]: (h["loss"], h["tau"], h["topo_loss"]) for h in history if "loss" in h}


@pytest.mark.slow
def test_interrupted_run_resumes_with_true_bit_identical(tmp_path, make_gpt2, token_dataset):
    data = token_dataset(64)
    data.save_to_disk(tmp_path / "data")
    make_gpt2().config.save_pretrained(tmp_path / "model")

    full = tmp_path / "full"
    args = _topo_args(full)
    assert resolve_checkpoint(args) is None
    TopoTrainer(model=make_gpt2(), args=args, train_dataset=data).train(resume_from_checkpoint=None)

    interrupted = tmp_path / "interrupted"
    args = _topo_args(interrupted)
    assert resolve_checkpoint(args) is None
    trainer = TopoTrainer(model=make_gpt2(), args=args, train_dataset=data, callbacks=[_Interrupt(at=4)])
    with pytest.raises(KeyboardInterrupt):
        trainer.train(resume_from_checkpoint=None)
    assert sorted(p.name for p in interrupted.iterdir()) == ["checkpoint-3"]
    # The same command again without resuming is refused: it would overwrite checkpoint-3 and mix the runs.
    with pytest.raises(ValueError, match="already holds a training run"):
        resolve_checkpoint(_topo_args(interrupted))

    cmd = [sys.executable, "-c", _RESUME_IN_A_FRESH_PROCESS, str(tmp_path / "model"), str(tmp_path / "data")]
    cmd += ["--output_dir", str(interrupted), "--report_to", "none", *RUN_FLAGS, "--resume_from_checkpoint", "true"]
    result = subprocess.run(cmd, env=offline_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"checkpoint": str(interrupted / "checkpoint-3")}

    a = load_file(full / "checkpoint-6" / "model.safetensors")
    b = load_file(interrupted / "checkpoint-6" / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name  # bit-identical to the uninterrupted run
    moved = load_file(full / "checkpoint-3" / "model.safetensors")
    assert max((a[n] - moved[n]).abs().max().item() for n in a) > 1e-3  # steps 4-6 did change the weights
    assert _logged_losses(interrupted, 6) == _logged_losses(full, 6)  # same losses, τ (warmup) and topo losses
    assert resolve_checkpoint(_topo_args(interrupted, "--resume_from_checkpoint", "true")) == str(
        interrupted / "checkpoint-6"
    )
