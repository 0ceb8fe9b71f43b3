"""TopoTrainer (hf_topo.trainer) with the real transformers Trainer on a tiny GPT-2, on CPU.

Runs use plain SGD (no momentum, no weight decay, no clipping, constant learning rate) and no dropout, so that
weights after a few steps are a deterministic function of the gradients and can be compared exactly.
"""

import copy
import dataclasses
import json
import math

import pytest
import torch
from _training import training_args as _args
from _training import weights as _weights
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file
from transformers import (
    AutoModelForCausalLM,
    GPT2LMHeadModel,
    HfArgumentParser,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from hf_topo import TOPOGRAPHY_KEY, TopoConfig, TopoRegularizer, TopoTrainer, TopoTrainingArguments
from hf_topo.config import TOPO_SETTINGS
from hf_topo.trainer import topo_argument_name

C_FC = ["transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc"]


def _trainer(out, data, model, loss_kwargs=True, **overrides):
    trainer = TopoTrainer(model=model, args=_args(out, **overrides), train_dataset=data)
    if not loss_kwargs:
        # As for a model whose forward takes no loss kwargs: the Trainer divides each micro-batch loss by the number
        # of accumulation steps instead of normalizing by num_items_in_batch.
        trainer.model_accepts_loss_kwargs = False
    return trainer


def _train(out, data, model, **kwargs):
    trainer = _trainer(out, data, model, **kwargs)
    trainer.train()
    return trainer


def _step_logs(trainer):
    return {h["step"]: h for h in trainer.state.log_history if "loss" in h}


def _assert_same_weights(a, b, atol=1e-5):
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=atol), name


@pytest.mark.parametrize("loss_kwargs", [True, False], ids=["num_items_in_batch", "divided_by_ga"])
@pytest.mark.parametrize("schedule", ["3_full_steps", "partial_last_window"])
def test_gradient_accumulation_gives_the_same_weights(tmp_path, token_dataset, make_gpt2, loss_kwargs, schedule):
    if schedule == "3_full_steps":
        data, run = token_dataset(64), dict(max_steps=3)
    else:  # 20 samples, one epoch: steps of 16 and 4 samples, i.e. 4 micro-batches then 1 with accumulation 4
        data, run = token_dataset(20), dict(max_steps=-1, num_train_epochs=1)
    big = _train(tmp_path / "big", data, make_gpt2(), loss_kwargs=loss_kwargs, per_device_train_batch_size=16, **run)
    accumulated = _train(
        tmp_path / "ga",
        data,
        make_gpt2(),
        loss_kwargs=loss_kwargs,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=4,
        **run,
    )
    baseline = _train(
        tmp_path / "tau0",
        data,
        make_gpt2(),
        loss_kwargs=loss_kwargs,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=4,
        tau=0.0,
        **run,
    )
    assert big.state.global_step == accumulated.state.global_step == (3 if schedule == "3_full_steps" else 2)
    _assert_same_weights(_weights(big.model), _weights(accumulated.model))
    # τ = 5 really moved the weights: the comparison above is not between two untouched models.
    diff = (accumulated.model.transformer.h[0].mlp.c_fc.weight - baseline.model.transformer.h[0].mlp.c_fc.weight).abs()
    assert diff.max() > 1e-2
    big_logs, ga_logs = _step_logs(big), _step_logs(accumulated)
    assert big_logs.keys() == ga_logs.keys()
    for step in big_logs:
        for key in ("loss", "task_loss", "topo_loss"):
            assert big_logs[step][key] == pytest.approx(ga_logs[step][key], rel=1e-5, abs=1e-6), (step, key)


@pytest.mark.parametrize("accumulation", [1, 4])
def test_one_topoloss_evaluation_per_optimizer_step(tmp_path, token_dataset, make_gpt2, accumulation):
    data = token_dataset(64)
    trainer = TopoTrainer(
        model=make_gpt2(),
        args=_args(
            tmp_path,
            per_device_train_batch_size=16 // accumulation,
            gradient_accumulation_steps=accumulation,
            eval_strategy="steps",
            eval_steps=1,
            per_device_eval_batch_size=8,
        ),
        train_dataset=data,
        eval_dataset=token_dataset(16, seed=2),
    )
    calls = []
    real_compute = trainer.topo_loss.compute

    def counting_compute(*args, **kwargs):  # the real computation, counted
        calls.append((trainer.state.global_step, trainer.model.training))
        return real_compute(*args, **kwargs)

    trainer.topo_loss.compute = counting_compute
    trainer.train()
    # Training: once per optimizer step, never during the evaluation loss of each micro-batch. Evaluation: once per
    # evaluation (eval_topo_loss), after its loop.
    assert [step for step, training in calls if training] == [0, 1, 2]
    assert [step for step, training in calls if not training] == [1, 2, 3]
    assert sum("eval_loss" in h and "eval_topo_loss" in h for h in trainer.state.log_history) == 3


@pytest.mark.parametrize("accumulation, loss_kwargs", [(1, True), (4, True), (4, False)])
def test_topo_term_weighs_tau_per_optimizer_step(tmp_path, token_dataset, make_gpt2, accumulation, loss_kwargs):
    # One SGD step from the same start: W1 = W0 − lr·(∇task + τ·∇topo). The difference between a τ run and a τ=0 run
    # is lr·τ·∇topo(W0), which must equal the gradient of TopoLoss computed directly, whatever the accumulation.
    lr, tau = 0.5, 5.0
    data = token_dataset(64)
    common = dict(
        max_steps=1,
        per_device_train_batch_size=16 // accumulation,
        gradient_accumulation_steps=accumulation,
        learning_rate=lr,
        loss_kwargs=loss_kwargs,
    )
    topo_run = _train(tmp_path / "topo", data, make_gpt2(), tau=tau, **common)
    base_run = _train(tmp_path / "base", data, make_gpt2(), tau=0.0, **common)
    start = make_gpt2()
    TopoRegularizer(TopoConfig())(start).backward()
    w_topo, w_base = _weights(topo_run.model), _weights(base_run.model)
    for name, param in start.named_parameters():
        if name in {f"{layer}.weight" for layer in C_FC}:
            expected = lr * tau * param.grad
            assert expected.abs().max() > 1e-3
            assert torch.allclose(w_base[name] - w_topo[name], expected, atol=1e-6, rtol=1e-4), name
        else:  # every other parameter sees only the task gradient
            assert torch.allclose(w_base[name], w_topo[name], atol=1e-7), name
    # Logged: loss = task_loss + τ·topo_loss, and task_loss is the task loss of the τ=0 run.
    log, base_log = _step_logs(topo_run)[1], _step_logs(base_run)[1]
    assert log["tau"] == tau and base_log["tau"] == 0.0
    assert log["task_loss"] + tau * log["topo_loss"] == pytest.approx(log["loss"], rel=1e-6)
    assert log["task_loss"] == pytest.approx(base_log["loss"], rel=1e-5)
    assert log["loss"] - base_log["loss"] > 1.0  # τ·topo_loss is about 5 · 0.94


def test_tau_zero_trains_exactly_like_the_plain_trainer(tmp_path, token_dataset, make_gpt2):
    data = token_dataset(64)
    topo = _train(
        tmp_path / "topo", data, make_gpt2(), tau=0.0, per_device_train_batch_size=4, gradient_accumulation_steps=4
    )
    plain = Trainer(
        model=make_gpt2(),
        args=_args(
            tmp_path / "plain", cls=TrainingArguments, per_device_train_batch_size=4, gradient_accumulation_steps=4
        ),
        train_dataset=data,
    )
    plain.train()
    _assert_same_weights(_weights(topo.model), _weights(plain.model), atol=1e-7)
    assert _step_logs(topo)[3]["topo_loss"] > 0.5  # the baseline still logs its TopoLoss
    assert _step_logs(topo)[3]["loss"] == pytest.approx(_step_logs(plain)[3]["loss"], rel=1e-6)


def test_logs_carry_the_topo_values(tmp_path, token_dataset, make_gpt2):
    start = TopoRegularizer(TopoConfig(target_modules=["h.0.mlp.c_fc"], watch_modules=["h.1.mlp.c_fc"])).per_layer(
        make_gpt2()
    )
    trainer = _train(
        tmp_path,
        token_dataset(64),
        make_gpt2(),
        max_steps=4,
        logging_steps=2,
        tau=2.0,
        tau_schedule="warmup:2",
        topo_target_modules=["h.0.mlp.c_fc"],
        topo_watch_modules=["h.1.mlp.c_fc"],
    )
    logs = _step_logs(trainer)
    assert list(logs) == [2, 4]
    for log in logs.values():
        for key in ("loss", "task_loss", "topo_loss", "tau", "topo_loss/h.0.mlp.c_fc", "topo_loss/h.1.mlp.c_fc"):
            assert key in log, key
        assert log["topo_loss"] == log["topo_loss/h.0.mlp.c_fc"]  # the mean is over targets only
        assert 0.05 < log["topo_loss"] < 1
    # τ logged is the mean of the τ used in the logged steps: steps 0, 1 use 0 and 1; steps 2, 3 use 2 and 2.
    assert logs[2]["tau"] == pytest.approx(0.5) and logs[4]["tau"] == pytest.approx(2.0)
    assert logs[4]["task_loss"] + 2.0 * logs[4]["topo_loss"] == pytest.approx(logs[4]["loss"], rel=1e-6)
    # Step 0 used the initial weights, step 1 barely moved h.1 (no topo gradient, τ·0 on h.0 at step 0).
    assert logs[2]["topo_loss/h.1.mlp.c_fc"] == pytest.approx(start["transformer.h.1.mlp.c_fc"].item(), abs=1e-3)


def test_watched_layers_get_no_topo_gradient(tmp_path, token_dataset, make_gpt2):
    data = token_dataset(64)
    overrides = dict(max_steps=1, topo_target_modules=["h.0.mlp.c_fc"], topo_watch_modules=["h.1.mlp.c_fc"])
    watched = _train(tmp_path / "w", data, make_gpt2(), tau=5.0, **overrides)
    baseline = _train(tmp_path / "b", data, make_gpt2(), tau=0.0, **overrides)
    h_w, h_b = watched.model.transformer.h, baseline.model.transformer.h
    assert torch.equal(h_w[1].mlp.c_fc.weight, h_b[1].mlp.c_fc.weight)  # watched: task gradient only
    assert (h_w[0].mlp.c_fc.weight - h_b[0].mlp.c_fc.weight).abs().max() > 1e-2  # target: τ·∇topo


def test_metadata_round_trip(tmp_path, token_dataset, make_gpt2):
    out = tmp_path / "run"
    trainer = _train(
        out,
        token_dataset(64),
        make_gpt2(),
        save_strategy="steps",
        save_steps=2,
        tau_schedule="warmup:2,cosine:4:0.5",
        topo_factor_w=2.0,
        topo_interpolation="bicubic",
    )
    trainer.save_model()
    saved = json.loads((out / "config.json").read_text())[TOPOGRAPHY_KEY]
    assert saved["target_modules"] == ["mlp.c_fc"] and saved["factor_h"] == 3.0 and saved["factor_w"] == 2.0
    assert saved["interpolation"] == "bicubic"
    assert saved["tau"]["value"] == 5.0 and saved["tau"]["at_step"] == 3
    assert saved["tau"]["current"] == pytest.approx(5.0 * (0.5 + 0.25 * (1 + 0.5**0.5)))  # cosine at 1/4
    assert saved["layers"] == {
        name: {"layer_type": "Conv1D", "height": 8, "width": 16, "depth": 32, "units": "output", "role": "target"}
        for name in C_FC
    }
    checkpoint = json.loads((out / "checkpoint-2" / "config.json").read_text())[TOPOGRAPHY_KEY]
    assert checkpoint["tau"]["at_step"] == 2 and checkpoint["tau"]["current"] == 5.0
    assert checkpoint["layers"] == saved["layers"]

    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model) is GPT2LMHeadModel
    _assert_same_weights(_weights(model), _weights(trainer.model), atol=0)
    tensors = load_file(out / "model.safetensors")
    assert torch.equal(tensors["transformer.h.1.mlp.c_fc.weight"], trainer.model.transformer.h[1].mlp.c_fc.weight)

    loaded = TopoConfig.from_pretrained(out)
    assert loaded == trainer.topo_loss.config_for(trainer.model)
    assert loaded.target_modules == ["mlp.c_fc"] and loaded.tau == 5.0
    assert (loaded.factor_h, loaded.factor_w, loaded.interpolation) == (3.0, 2.0, "bicubic")
    assert loaded.tau_schedule == trainer.topo_config.tau_schedule
    assert {n: s.shape for n, s in loaded.layers.items()} == {n: (8, 16, 32) for n in C_FC}
    assert TopoConfig.from_pretrained(model) == loaded  # checked against the loaded weights too


def test_resume_keeps_the_tau_schedule(tmp_path, token_dataset, make_gpt2):
    data = token_dataset(64)
    common = dict(max_steps=6, per_device_train_batch_size=4, tau_schedule="warmup:4", learning_rate=0.1)
    full = _train(tmp_path / "full", data, make_gpt2(), save_strategy="steps", save_steps=3, **common)
    checkpoint = tmp_path / "full" / "checkpoint-3"
    stored = json.loads((checkpoint / "config.json").read_text())[TOPOGRAPHY_KEY]
    assert stored["tau"]["at_step"] == 3 and stored["tau"]["current"] == pytest.approx(3.75)

    # A fresh process: another initialization, everything restored from checkpoint-3.
    resumed = _trainer(tmp_path / "resumed", data, make_gpt2(seed=123), **common)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    full_logs, resumed_logs = _step_logs(full), _step_logs(resumed)
    assert {s: log["tau"] for s, log in full_logs.items()} == {1: 0.0, 2: 1.25, 3: 2.5, 4: 3.75, 5: 5.0, 6: 5.0}
    assert {s: resumed_logs[s]["tau"] for s in (4, 5, 6)} == {4: 3.75, 5: 5.0, 6: 5.0}
    for step in (4, 5, 6):
        assert resumed_logs[step]["topo_loss"] == pytest.approx(full_logs[step]["topo_loss"], abs=1e-6)
        assert resumed_logs[step]["loss"] == pytest.approx(full_logs[step]["loss"], rel=1e-5)
    _assert_same_weights(_weights(full.model), _weights(resumed.model))


def test_resuming_on_the_same_trainer_keeps_the_topo_term(tmp_path, token_dataset, make_gpt2):
    # trainer.train() again on the same TopoTrainer (e.g. resuming in a notebook after an interrupted run) must add
    # τ·topo_loss on its first step like any other: train() resets the step of the last TopoLoss evaluation
    # (`_topo_last_step`); kept across train() calls, it would make a run that starts at that same global step skip
    # the topographic term for that step (and log no topo_loss).
    data = token_dataset(64)
    trainer = _trainer(
        tmp_path, data, make_gpt2(), max_steps=4, per_device_train_batch_size=4, save_strategy="steps", save_steps=3
    )
    trainer.train()
    first_run = _weights(trainer.model)
    assert "topo_loss" in _step_logs(trainer)[4]
    trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-3"))
    assert "topo_loss" in _step_logs(trainer)[4]
    _assert_same_weights(first_run, _weights(trainer.model))


def test_peft_lora_model(tmp_path, token_dataset, make_gpt2):
    model = get_peft_model(make_gpt2(), LoraConfig(r=2, target_modules=["c_fc"], fan_in_fan_out=True))
    start = TopoRegularizer(TopoConfig()).per_layer(model)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainer = _train(tmp_path, token_dataset(64), model, max_steps=2, learning_rate=0.1)
    log = _step_logs(trainer)[1]
    assert log["topo_loss/h.0.mlp.c_fc"] == pytest.approx(start["base_model.model.transformer.h.0.mlp.c_fc"].item())
    lora_b = model.base_model.model.transformer.h[0].mlp.c_fc.lora_B["default"].weight
    assert lora_b.abs().max() > 1e-4  # started at zero: the adapters were trained
    for name, param in model.named_parameters():
        if name in frozen:
            assert torch.equal(param, frozen[name]), name
    assert set(trainer.topo_loss.config_for(model).layers) == set(C_FC)


def test_command_line_arguments():
    (args,) = HfArgumentParser(TopoTrainingArguments).parse_args_into_dataclasses(
        args=[
            "--output_dir", "unused", "--report_to", "none", "--tau", "2.5",
            "--topo_target_modules", "mlp.c_fc", "attn.c_proj", "--topo_watch_modules", "re:.*\\.mlp\\.c_proj",
            "--topo_factor_h", "2", "--topo_interpolation", "area", "--topo_sheet_shape", "4", "32",
            "--tau_schedule", "warmup:10",
        ]
    )  # fmt: skip
    config = args.topo_config()
    assert config.target_modules == ["mlp.c_fc", "attn.c_proj"]
    assert config.watch_modules == r".*\.mlp\.c_proj"  # one "re:" entry is a regex
    assert (config.tau, config.factor_h, config.factor_w, config.interpolation) == (2.5, 2.0, 3.0, "area")
    assert config.sheet_shape == (4, 32) and config.tau_at(5) == pytest.approx(1.25)


def test_training_arguments_are_the_topo_config_settings(tmp_path):
    """Each TopoConfig setting is one training argument, named by topo_argument_name, with its default and help."""
    arguments = {f.name: f for f in dataclasses.fields(TopoTrainingArguments)}
    settings = {f.name: f for f in dataclasses.fields(TopoConfig) if f.name in TOPO_SETTINGS}
    assert TOPO_SETTINGS == ("target_modules", "tau", "factor_h", "factor_w", "interpolation", "sheet_shape",
                             "watch_modules", "tau_schedule", "loss", "distance", "neighbourhood", "sheet",
                             "include_bias", "radius", "neighbourhoods_per_batch", "accumulation")  # fmt: skip
    assert {name for name in arguments if name.startswith(("tau", "topo_"))} == set(map(topo_argument_name, settings))
    assert [topo_argument_name(s) for s in ("tau", "tau_schedule", "loss", "factor_h")] == [
        "tau", "tau_schedule", "topo_loss_type", "topo_factor_h"
    ]  # fmt: skip

    def default(f):
        return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default

    for name, setting in settings.items():
        argument = arguments[topo_argument_name(name)]
        assert argument.metadata == {"help": setting.metadata["help"]}, name
        assert default(argument) == default(setting), name
    assert TopoTrainingArguments(output_dir=str(tmp_path), report_to="none").topo_config() == TopoConfig()


def test_regex_target_from_the_arguments(tmp_path, token_dataset, make_gpt2):
    trainer = _trainer(
        tmp_path, token_dataset(64), make_gpt2(), topo_target_modules=[r"re:transformer\.h\.1\.mlp\.c_(fc|proj)"]
    )
    assert [layer.name for layer in trainer.topo_loss.layers(trainer.model)] == [
        "transformer.h.1.mlp.c_fc",
        "transformer.h.1.mlp.c_proj",
    ]


def test_topo_config_overrides_plain_training_arguments(tmp_path, token_dataset, make_gpt2):
    trainer = TopoTrainer(
        model=make_gpt2(),
        args=_args(tmp_path, cls=TrainingArguments, max_steps=1),
        topo_config=TopoConfig(tau=3.0, target_modules=["h.0.mlp.c_fc"]),
        train_dataset=token_dataset(64),
    )
    trainer.train()
    log = _step_logs(trainer)[1]
    assert log["tau"] == 3.0 and list(k for k in log if k.startswith("topo_loss/")) == ["topo_loss/h.0.mlp.c_fc"]


def test_bad_input_fails_before_training(tmp_path, token_dataset, make_gpt2):
    data = token_dataset(16)
    with pytest.raises(ValueError, match=r"target_modules=\['does_not_exist'\] matches no .*Candidates: .*'mlp.c_fc'"):
        TopoTrainer(
            model=make_gpt2(), args=_args(tmp_path, topo_target_modules=["does_not_exist"]), train_dataset=data
        )
    with pytest.raises(ValueError, match=r"tau=-1.0 must be a finite number >= 0"):
        _args(tmp_path, tau=-1.0)
    with pytest.raises(ValueError, match=r"factor_h=0.5 must be a finite number >= 1"):
        _args(tmp_path, topo_factor_h=0.5)
    with pytest.raises(ValueError, match="interpolation='trilinear' is not supported"):
        _args(tmp_path, topo_interpolation="trilinear")
    with pytest.raises(ValueError, match="Cannot read τ schedule phase 'warmup'"):
        _args(tmp_path, tau_schedule="warmup")
    with pytest.raises(ValueError, match=r"Layer 'transformer.h.0.mlp.c_fc' \(128 units\).*cannot be downsampled"):
        TopoTrainer(model=make_gpt2(), args=_args(tmp_path, topo_factor_h=9.0), train_dataset=data)
    with pytest.raises(TypeError, match=r"cannot carry a cortical sheet: transformer.wte"):
        TopoTrainer(model=make_gpt2(), args=_args(tmp_path, topo_target_modules=["wte"]), train_dataset=data)
    with pytest.raises(TypeError, match="TopoTrainer needs its topo settings"):
        TopoTrainer(model=make_gpt2(), args=_args(tmp_path, cls=TrainingArguments), train_dataset=data)


def test_continuing_from_a_toponet_checks_its_stored_sheets(tmp_path, token_dataset, make_gpt2):
    out = tmp_path / "toponet"
    _train(out, token_dataset(64), make_gpt2(), max_steps=1).save_model()
    config_file = out / "config.json"
    data = json.loads(config_file.read_text())
    # Unchanged metadata: continuing is fine.
    TopoTrainer(model=AutoModelForCausalLM.from_pretrained(out), args=_args(tmp_path / "ok"), train_dataset=None)
    edited = copy.deepcopy(data)
    edited[TOPOGRAPHY_KEY]["layers"]["transformer.h.1.mlp.c_fc"]["depth"] = 64
    config_file.write_text(json.dumps(edited))
    with pytest.raises(ValueError, match=r"'transformer.h.1.mlp.c_fc' says Conv1D sheet \(8, 16, 64\)"):
        TopoTrainer(model=AutoModelForCausalLM.from_pretrained(out), args=_args(tmp_path / "next"), train_dataset=None)


def test_peft_model_saves_its_topography_next_to_the_adapter(tmp_path, token_dataset, make_gpt2):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(make_gpt2(), LoraConfig(r=2, target_modules=["c_fc"], fan_in_fan_out=True))
    args = TopoTrainingArguments(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, report_to=[], use_cpu=True,
        save_strategy="no", tau=3.0,
    )  # fmt: skip
    trainer = TopoTrainer(model=model, args=args, train_dataset=token_dataset())
    trainer.train()
    trainer.save_model()
    assert (tmp_path / "adapter_model.safetensors").exists() and not (tmp_path / "config.json").exists()
    loaded = TopoConfig.from_pretrained(tmp_path)
    assert loaded.tau == 3.0 and set(loaded.layers) == {"transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc"}


# ---- hyperparameter search, evaluation, tags, transformers versions -----------------------------------------------


class _TrialLogs(TrainerCallback):
    """Every training log of every trial, with the trial's parameters as the Trainer recorded them."""

    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.logs.append((dict(state.trial_params or {}), state.global_step, dict(logs)))


@pytest.mark.slow  # a fresh process or a training run: the fast lane leaves it to CI
def test_hyperparameter_search_trains_each_trial_with_its_own_tau(tmp_path, token_dataset, make_gpt2):
    import optuna  # in the `test` extra: a missing optuna fails here, never skips

    taus = [1.0, 7.0]
    recorder = _TrialLogs()
    trainer = TopoTrainer(
        model_init=lambda: make_gpt2(),
        args=_args(tmp_path, max_steps=2, tau=taus[0], per_device_train_batch_size=8),
        train_dataset=token_dataset(64),
        eval_dataset=token_dataset(16, seed=2),
        callbacks=[recorder],
    )
    best = trainer.hyperparameter_search(
        hp_space=lambda trial: {"tau": trial.suggest_categorical("tau", taus)},
        backend="optuna",
        n_trials=2,
        sampler=optuna.samplers.GridSampler({"tau": taus}, seed=0),
    )
    by_tau = {}
    for params, step, log in recorder.logs:
        by_tau.setdefault(params["tau"], {})[step] = log
    assert sorted(by_tau) == taus and all(sorted(logs) == [1, 2] for logs in by_tau.values())
    for tau, logs in by_tau.items():
        for log in logs.values():
            assert log["tau"] == tau  # the τ the trial's steps used
            assert log["task_loss"] + tau * log["topo_loss"] == pytest.approx(log["loss"], rel=1e-6)
    # Same initial model and batches: the first step differs only by the topographic term, (7 − 1)·topo_loss.
    first, second = by_tau[1.0][1], by_tau[7.0][1]
    assert first["topo_loss"] == pytest.approx(second["topo_loss"], rel=1e-6)
    assert first["task_loss"] == pytest.approx(second["task_loss"], rel=1e-5)
    assert second["loss"] - first["loss"] == pytest.approx(6.0 * first["topo_loss"], rel=1e-4)
    # The objective is the evaluation loss (eval_topo_loss is reported but not summed into it).
    assert float(best.hyperparameters["tau"]) in taus and 2 < best.objective < math.log(64) + 1


def test_evaluate_reports_the_topo_loss(tmp_path, token_dataset, make_gpt2):
    model = make_gpt2()
    trainer = TopoTrainer(
        model=model,
        args=_args(tmp_path, max_steps=2, eval_strategy="steps", eval_steps=2, per_device_eval_batch_size=8),
        train_dataset=token_dataset(64),
        eval_dataset=token_dataset(16, seed=2),
    )
    before = trainer.evaluate()
    assert before["eval_topo_loss"] == pytest.approx(TopoRegularizer(TopoConfig())(make_gpt2()).item(), rel=1e-6)
    trainer.train()
    after = trainer.evaluate()
    assert after["eval_topo_loss"] == pytest.approx(TopoRegularizer(TopoConfig())(model).item(), rel=1e-6)
    assert after["eval_topo_loss"] < before["eval_topo_loss"]  # τ = 5 smoothed the sheets
    logged = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert logged[0]["step"] == 2 and logged[0]["eval_topo_loss"] == pytest.approx(after["eval_topo_loss"])
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.parameters())  # measured without gradients
    assert trainer.predict(token_dataset(8, seed=3)).metrics["test_topo_loss"] == after["eval_topo_loss"]


def test_evaluate_measures_activation_similarity_on_the_first_batch(tmp_path, token_dataset, make_gpt2):
    model = make_gpt2()
    eval_data = token_dataset(16, seed=2)
    trainer = TopoTrainer(
        model=model,
        args=_args(tmp_path, topo_loss_type="activation_similarity", per_device_eval_batch_size=4),
        train_dataset=token_dataset(64),
        eval_dataset=eval_data,
    )
    metrics = trainer.evaluate()
    first_batch = {"input_ids": torch.tensor(eval_data["input_ids"][:4])}
    expected, _ = TopoRegularizer(TopoConfig(loss="activation_similarity")).evaluate(model, first_batch)
    assert metrics["eval_topo_loss"] == pytest.approx(expected.item(), rel=1e-6)
    second_batch = {"input_ids": torch.tensor(eval_data["input_ids"][4:8])}
    other, _ = TopoRegularizer(TopoConfig(loss="activation_similarity")).evaluate(model, second_batch)
    assert abs(other.item() - expected.item()) > 1e-6  # the comparison above does depend on which batch


def test_trainer_tags_the_model_for_the_hub(tmp_path, token_dataset, make_gpt2):
    model = make_gpt2()
    model.add_model_tags(["mine"])
    TopoTrainer(model=model, args=_args(tmp_path / "plain"), train_dataset=token_dataset(16))
    assert model.model_tags == ["mine", "hf_topo", "topographic"]

    peft_model = get_peft_model(make_gpt2(), LoraConfig(r=2, target_modules=["c_fc"], fan_in_fan_out=True))
    trainer = TopoTrainer(
        model=peft_model, args=_args(tmp_path / "lora", max_steps=1), train_dataset=token_dataset(16)
    )
    assert peft_model.get_base_model().model_tags == ["hf_topo", "topographic"]
    trainer.train()
    trainer.save_model()
    card = (tmp_path / "lora" / "README.md").read_text()  # PEFT's adapter card
    header = card.split("---")[1]
    assert "- hf_topo" in header and "- topographic" in header


def test_trainer_tags_models_built_by_model_init(tmp_path, token_dataset, make_gpt2):
    built = []

    def model_init():
        built.append(make_gpt2())
        return built[-1]

    trainer = TopoTrainer(model_init=model_init, args=_args(tmp_path, max_steps=1), train_dataset=token_dataset(16))
    trainer.train()
    assert len(built) == 2 and all(m.model_tags == ["hf_topo", "topographic"] for m in built)


def test_changed_arguments_are_read_again_at_train(tmp_path, token_dataset, make_gpt2):
    trainer = _trainer(tmp_path, token_dataset(64), make_gpt2(), max_steps=1)
    trainer.args.tau = 2.0
    trainer.args.topo_target_modules = ["h.1.mlp.c_fc"]
    trainer.train()
    log = _step_logs(trainer)[1]
    assert log["tau"] == 2.0 and [k for k in log if k.startswith("topo_loss/")] == ["topo_loss/h.1.mlp.c_fc"]
    assert trainer.topo_config == trainer.args.topo_config()
    trainer.args.tau = -1.0  # set behind __post_init__'s back: validated when read
    with pytest.raises(ValueError, match=r"tau=-1.0 must be a finite number >= 0"):
        trainer.train()
    # An explicit topo_config is never replaced by the arguments.
    fixed = TopoTrainer(
        model=make_gpt2(),
        args=_args(tmp_path / "fixed", max_steps=1, tau=9.0),
        topo_config=TopoConfig(tau=3.0),
        train_dataset=token_dataset(64),
    )
    fixed.train()
    assert _step_logs(fixed)[1]["tau"] == 3.0


def test_gradient_accumulation_scaling_without_loss_is_scaled_for_ga(tmp_path, token_dataset, make_gpt2, monkeypatch):
    # transformers < 5.19 has no Trainer.loss_is_scaled_for_ga: the trainer then applies the rule training_step had.
    trainer = _trainer(tmp_path, token_dataset(64), make_gpt2(), gradient_accumulation_steps=4)
    trainer.current_gradient_accumulation_steps = 4
    monkeypatch.delattr(Trainer, "loss_is_scaled_for_ga")
    assert not hasattr(trainer, "loss_is_scaled_for_ga")
    assert trainer.model_accepts_loss_kwargs
    assert trainer._loss_scaling_for_backward(num_items_in_batch=torch.tensor(64)) == 1.0
    assert trainer._loss_scaling_for_backward(num_items_in_batch=None) == 0.25
    trainer.model_accepts_loss_kwargs = False
    assert trainer._loss_scaling_for_backward(num_items_in_batch=torch.tensor(64)) == 0.25


def test_malformed_stored_topography_is_refused(tmp_path, token_dataset, make_gpt2):
    model = make_gpt2()
    model.config.topography = TopoConfig().to_dict() | {"factor_h": "3"}
    with pytest.raises(ValueError, match=r"'topography' record of .* is malformed: factor_h is a string"):
        TopoTrainer(model=model, args=_args(tmp_path), train_dataset=token_dataset(16))
