"""TopoTrainer with the real transformers Trainer on a tiny GPT-2 (CPU)."""

import json

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from hf_topo import TopoConfig, TopoTrainer, TopoTrainingArguments


def _model(seed=0):
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    # no dropout: micro-batches and one big batch must see the same forward
    config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.0
    return GPT2LMHeadModel(config)


def _data(n=64, seq=16):
    ids = torch.randint(0, 64, (n, seq), generator=torch.Generator().manual_seed(1)).tolist()
    return Dataset.from_dict({"input_ids": ids, "labels": ids})


def _args(tmp_path, **overrides):
    defaults = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=16, gradient_accumulation_steps=1, max_steps=3,
        learning_rate=0.5, optim="sgd", weight_decay=0.0, max_grad_norm=1e9, lr_scheduler_type="constant",
        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0, data_seed=0,
        dataloader_num_workers=0, disable_tqdm=True, tau=5.0,
    )  # fmt: skip
    return TopoTrainingArguments(**(defaults | overrides))


def _train(tmp_path, **overrides):
    trainer = TopoTrainer(model=_model(), args=_args(tmp_path, **overrides), train_dataset=_data())
    trainer.train()
    return trainer


def test_gradient_accumulation_gives_the_same_weights(tmp_path):
    one = _train(tmp_path / "a", per_device_train_batch_size=16, gradient_accumulation_steps=1)
    four = _train(tmp_path / "b", per_device_train_batch_size=4, gradient_accumulation_steps=4)
    baseline = _train(tmp_path / "c", per_device_train_batch_size=4, gradient_accumulation_steps=4, tau=0.0)
    w_one, w_four, w_base = (t.model.transformer.h[0].mlp.c_fc.weight for t in (one, four, baseline))
    assert torch.allclose(w_one, w_four, atol=1e-5)
    assert (w_four - w_base).abs().max() > 1e-3  # τ really moved the weights
    for a, b in zip(one.state.log_history[:3], four.state.log_history[:3], strict=True):
        assert a["topo_loss"] == pytest.approx(b["topo_loss"], abs=1e-6)


def test_topo_term_weighs_tau_per_optimizer_step(tmp_path):
    # One SGD step: W1 = W0 − lr·(∇task + τ·∇topo). Recover τ·∇topo from the τ and τ=0 runs and compare it with
    # the gradient of TopoLoss computed directly, for accumulation 4.
    lr, tau = 0.5, 5.0
    topo_run = _train(
        tmp_path / "t", max_steps=1, per_device_train_batch_size=4, gradient_accumulation_steps=4, tau=tau
    )
    base_run = _train(
        tmp_path / "b", max_steps=1, per_device_train_batch_size=4, gradient_accumulation_steps=4, tau=0.0
    )
    model = _model()
    topo_run.topo_loss(model).backward()
    expected = model.transformer.h[1].mlp.c_fc.weight.grad * tau
    w_topo = topo_run.model.transformer.h[1].mlp.c_fc.weight
    w_base = base_run.model.transformer.h[1].mlp.c_fc.weight
    assert torch.allclose((w_base - w_topo) / lr, expected, atol=1e-5, rtol=1e-3)


def test_one_topoloss_evaluation_per_optimizer_step(tmp_path):
    trainer = TopoTrainer(
        model=_model(),
        args=_args(tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=4),
        train_dataset=_data(),
    )
    calls = []
    real_compute = trainer.topo_loss.compute

    def counting_compute(*args, **kwargs):
        calls.append(trainer.state.global_step)
        return real_compute(*args, **kwargs)

    trainer.topo_loss.compute = counting_compute
    trainer.train()
    assert calls == [0, 1, 2]


def test_logs_carry_topo_values(tmp_path):
    trainer = _train(tmp_path, tau=2.0)
    log = trainer.state.log_history[0]
    for key in ("loss", "task_loss", "topo_loss", "tau", "topo_loss/h.0.mlp.c_fc", "topo_loss/h.1.mlp.c_fc"):
        assert key in log
    assert log["tau"] == 2.0
    assert log["task_loss"] + 2.0 * log["topo_loss"] == pytest.approx(log["loss"], rel=1e-5)
    assert log["topo_loss"] == pytest.approx((log["topo_loss/h.0.mlp.c_fc"] + log["topo_loss/h.1.mlp.c_fc"]) / 2)


def test_metadata_round_trip(tmp_path):
    out = tmp_path / "run"
    trainer = _train(out, save_strategy="steps", save_steps=2, tau_schedule="warmup:2,cosine:4:0.5", topo_factor_w=2.0)
    trainer.save_model()
    saved = json.loads((out / "config.json").read_text())["topography"]
    assert saved["tau"]["value"] == 5.0 and saved["tau"]["at_step"] == 3
    assert saved["layers"]["transformer.h.0.mlp.c_fc"] == {
        "layer_type": "Conv1D",
        "height": 8,
        "width": 16,
        "depth": 32,
        "role": "target",
    }
    assert json.loads((out / "checkpoint-2" / "config.json").read_text())["topography"]["tau"]["at_step"] == 2

    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model) is GPT2LMHeadModel
    loaded = TopoConfig.from_pretrained(out)
    assert loaded.tau == 5.0 and loaded.factor_w == 2.0 and loaded.target_modules == ["mlp.c_fc"]
    assert loaded.tau_schedule == trainer.topo_config.tau_schedule
    assert set(loaded.layers) == {"transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc"}
    assert TopoConfig.from_pretrained(model).layers == loaded.layers


def test_resume_keeps_the_tau_schedule(tmp_path):
    common = dict(max_steps=6, per_device_train_batch_size=4, tau_schedule="warmup:4", learning_rate=0.1)
    full = _train(tmp_path / "full", **common)
    _train(tmp_path / "part", save_strategy="steps", save_steps=3, **(common | {"max_steps": 3}))
    resumed = TopoTrainer(model=_model(), args=_args(tmp_path / "part", **common), train_dataset=_data())
    resumed.train(resume_from_checkpoint=str(tmp_path / "part" / "checkpoint-3"))
    taus = lambda t: {h["step"]: h["tau"] for h in t.state.log_history if "tau" in h}  # noqa: E731
    assert taus(full) == {1: 0.0, 2: 1.25, 3: 2.5, 4: 3.75, 5: 5.0, 6: 5.0}
    assert {s: v for s, v in taus(resumed).items() if s > 3} == {4: 3.75, 5: 5.0, 6: 5.0}
    for a, b in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_bad_input_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match="matches no Linear/Conv1D/Conv2d layer.*'mlp.c_fc'"):
        TopoTrainer(model=_model(), args=_args(tmp_path, topo_target_modules=["mlp.w1"]), train_dataset=_data())
    with pytest.raises(ValueError, match="tau=-1.0 must be a finite number >= 0"):
        _args(tmp_path, tau=-1.0)
    with pytest.raises(ValueError, match="factor_h=0.5 must be a finite number >= 1"):
        _args(tmp_path, topo_factor_h=0.5)
    with pytest.raises(ValueError, match="cannot be downsampled"):
        TopoTrainer(model=_model(), args=_args(tmp_path, topo_factor_h=9.0), train_dataset=_data())
    with pytest.raises(ValueError, match="Cannot read τ schedule phase"):
        _args(tmp_path, tau_schedule="warmup")
    with pytest.raises(TypeError, match="topo settings"):
        from transformers import TrainingArguments

        TopoTrainer(model=_model(), args=TrainingArguments(output_dir=str(tmp_path), report_to=[]))


def test_continuing_from_a_toponet_checks_its_stored_sheets(tmp_path):
    out = tmp_path / "toponet"
    trainer = _train(out, max_steps=1)
    trainer.save_model()
    config_file = out / "config.json"
    data = json.loads(config_file.read_text())
    data["topography"]["layers"]["transformer.h.1.mlp.c_fc"]["depth"] = 64
    config_file.write_text(json.dumps(data))
    model = AutoModelForCausalLM.from_pretrained(out)
    with pytest.raises(ValueError, match=r"'transformer.h.1.mlp.c_fc' says Conv1D sheet \(8, 16, 64\)"):
        TopoTrainer(model=model, args=_args(tmp_path / "next"), train_dataset=_data())
