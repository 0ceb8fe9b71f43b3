"""TopoConfig, τ schedules, target matching, PEFT models, watched layers and stored-metadata checks."""

import copy
import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, LlamaConfig

from hf_topo import TauSchedule, TopoConfig, TopoLoss
from hf_topo.sheet import sheet_for_module


def test_config_dict_round_trip():
    config = TopoConfig(
        target_modules=["mlp.c_fc"],
        tau=3.0,
        factor_h=2.0,
        tau_schedule="warmup:10,cosine:20:0.1",
        watch_modules=["attn.c_proj"],
    )
    data = json.loads(json.dumps(config.to_dict(step=5)))
    assert data["tau"]["current"] == pytest.approx(1.5) and data["schema_version"] == 1
    back = TopoConfig.from_dict(data)
    assert back.to_dict() == config.to_dict()
    assert TopoConfig.from_dict({"target_modules": "re:x", "tau": 2}).tau == 2.0


def test_config_rejects_bad_values():
    for kwargs, message in [
        (dict(tau=-0.1), "tau=-0.1 must be"),
        (dict(factor_w=0.9), "factor_w=0.9 must be"),
        (dict(interpolation="linear"), "interpolation='linear' is not supported"),
        (dict(sheet_shape=(4,)), "sheet_shape=.* must be two positive integers"),
        (dict(loss="mse"), "loss='mse' is not known"),
    ]:
        with pytest.raises(ValueError, match=message):
            TopoConfig(**kwargs)
    with pytest.raises(ValueError, match="schema_version=99"):
        TopoConfig.from_dict({"schema_version": 99})
    with pytest.raises(ValueError, match="Unknown topography settings"):
        TopoConfig.from_dict({"taus": 1})


def test_schedule_values():
    schedule = TauSchedule.parse("warmup:10,constant:5,cosine:10:0.1")
    values = {step: schedule.multiplier(step) for step in (0, 5, 10, 12, 15, 20, 25, 100)}
    assert values == pytest.approx({0: 0.0, 5: 0.5, 10: 1.0, 12: 1.0, 15: 1.0, 20: 0.55, 25: 0.1, 100: 0.1})
    assert TauSchedule.from_list(schedule.to_list()) == schedule
    assert TauSchedule.parse("constant").multiplier(10**6) == 1.0
    assert TopoConfig(tau=4.0, tau_schedule="linear:4:1:0").tau_at(2) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="Cannot read τ schedule phase 'cosine'"):
        TauSchedule.parse("cosine")
    with pytest.raises(ValueError, match="steps >= 1"):
        TauSchedule.parse("warmup:0")


def test_target_matching_suffix_regex_and_errors(tiny_gpt2):
    assert [layer.name for layer in TopoLoss(target_modules=["mlp.c_fc"]).layers(tiny_gpt2)] == [
        "transformer.h.0.mlp.c_fc",
        "transformer.h.1.mlp.c_fc",
    ]
    assert [layer.name for layer in TopoLoss(target_modules=r".*\.1\.mlp\.c_(fc|proj)").layers(tiny_gpt2)] == [
        "transformer.h.1.mlp.c_fc",
        "transformer.h.1.mlp.c_proj",
    ]
    with pytest.raises(ValueError, match=r"matches no .*Candidates: 'attn.c_attn', 'attn.c_proj', 'mlp.c_fc'"):
        TopoLoss(target_modules=["mlp.fc_in"]).layers(tiny_gpt2)
    with pytest.raises(TypeError, match="cannot carry a cortical sheet: transformer.wte"):
        TopoLoss(target_modules=["wte"]).layers(tiny_gpt2)
    with pytest.raises(ValueError, match="is not a valid regular expression"):
        TopoLoss(target_modules="mlp.(c_fc").layers(tiny_gpt2)


def test_sheet_shapes_and_sheet_errors(tiny_gpt2):
    layers = TopoLoss(TopoConfig(sheet_shape=(4, 32), factor_h=2)).layers(tiny_gpt2)
    assert layers[0].sheet.shape == (4, 32, 32)
    with pytest.raises(ValueError, match=r"sheet_shape=\(5, 25\) has 125 positions but .* has 128 output units"):
        TopoLoss(TopoConfig(sheet_shape=(5, 25))).layers(tiny_gpt2)
    prime = nn.Sequential(nn.Linear(4, 13))
    with pytest.raises(ValueError, match=r"Layer '0' \(13 units\): A 1x13 cortical sheet cannot be downsampled"):
        TopoLoss(target_modules=["0"]).layers(prime)
    assert sheet_for_module("conv", nn.Conv2d(3, 64, 5)).shape == (8, 8, 75)
    with pytest.raises(TypeError, match="Cannot lay out a Embedding"):
        sheet_for_module("emb", nn.Embedding(10, 4))


@pytest.mark.parametrize(
    "config, target, units",
    [
        (
            GPTNeoXConfig(
                vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96
            ),
            "mlp.dense_h_to_4h",
            96,
        ),
        (
            LlamaConfig(
                vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=120
            ),
            "mlp.up_proj",
            120,
        ),
        (
            LlamaConfig(
                vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=120
            ),
            "mlp.gate_proj",
            120,
        ),
    ],
)
def test_other_gpt_families(config, target, units):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    topo = TopoLoss(target_modules=[target])
    layers = topo.layers(model)
    assert len(layers) == 2 and all(layer.name.endswith(target) and layer.sheet.n_units == units for layer in layers)
    value = topo(model)
    value.backward()
    assert 0 < value.item() < 1 and layers[0].module.weight.grad.abs().sum() > 0


def test_peft_wrapped_models(tiny_gpt2):
    topo = TopoLoss(target_modules=["mlp.c_fc"])
    plain_value = topo(tiny_gpt2).item()
    on_attention = get_peft_model(
        copy.deepcopy(tiny_gpt2), LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True)
    )
    assert topo(on_attention).item() == pytest.approx(plain_value, abs=1e-7)
    assert topo.config_for(on_attention).layers.keys() == {"transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc"}

    on_fc = get_peft_model(copy.deepcopy(tiny_gpt2), LoraConfig(r=2, target_modules=["c_fc"], fan_in_fan_out=True))
    for name, param in on_fc.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(param, std=0.5)
    value = topo(on_fc)
    merged = copy.deepcopy(on_fc).merge_and_unload()
    assert value.item() == pytest.approx(topo(merged).item(), abs=1e-6)
    assert value.item() != pytest.approx(plain_value, abs=1e-3)
    value.backward()
    grads = {n: p.grad for n, p in on_fc.named_parameters() if "lora_" in n and "c_fc" in n}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())


def test_watched_layers_are_logged_not_optimized(tiny_gpt2):
    topo = TopoLoss(TopoConfig(target_modules=["h.0.mlp.c_fc"], watch_modules=["h.1.mlp.c_fc"]))
    mean, per_layer = topo.compute(tiny_gpt2)
    assert set(per_layer) == {"transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc"}
    assert mean.item() == pytest.approx(per_layer["transformer.h.0.mlp.c_fc"].item())
    assert not per_layer["transformer.h.1.mlp.c_fc"].requires_grad
    mean.backward()
    assert tiny_gpt2.transformer.h[1].mlp.c_fc.weight.grad is None
    assert topo.config_for(tiny_gpt2).to_dict()["layers"]["transformer.h.1.mlp.c_fc"]["role"] == "watch"
    with pytest.raises(ValueError, match="matched by both target_modules and watch_modules"):
        TopoLoss(TopoConfig(watch_modules=["mlp.c_fc"])).layers(tiny_gpt2)


def test_stored_metadata_must_match_the_model(tmp_path, tiny_gpt2):
    with pytest.raises(ValueError, match="has no 'topography' metadata"):
        tiny_gpt2.save_pretrained(tmp_path / "plain")
        TopoConfig.from_pretrained(tmp_path / "plain")
    TopoLoss(TopoConfig(tau=2.0)).config_for(tiny_gpt2).attach_to(tiny_gpt2.config)
    tiny_gpt2.save_pretrained(tmp_path / "topo")
    assert TopoConfig.from_pretrained(tmp_path / "topo").tau == 2.0

    config_file = tmp_path / "topo" / "config.json"
    data = json.loads(config_file.read_text())
    data["topography"]["layers"]["transformer.h.0.mlp.c_fc"].update(height=4, width=32)
    config_file.write_text(json.dumps(data))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "topo")
    with pytest.raises(
        ValueError, match=r"'transformer.h.0.mlp.c_fc' says Conv1D sheet \(4, 32, 32\).*has Conv1D sheet \(8, 16, 32\)"
    ):
        TopoConfig.from_pretrained(model)

    wider = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=48, n_layer=2, n_head=2))
    stored = TopoConfig.from_pretrained(tiny_gpt2)
    with pytest.raises(ValueError, match="says Conv1D sheet"):
        TopoLoss(stored).layers(wider)
    deeper = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=3, n_head=2))
    with pytest.raises(ValueError, match=r"found in the model but not recorded: \['transformer.h.2.mlp.c_fc'\]"):
        TopoLoss(stored).layers(deeper)
