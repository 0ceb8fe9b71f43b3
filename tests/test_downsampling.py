"""Topographic downsampling (paper A.5): the layer against its definition, exact sizes, save/load round trips."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from _scripts import offline_env
from conftest import build_causal_lm
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    GPT2Model,
    OPTConfig,
)
from transformers.pytorch_utils import Conv1D

from hf_topo import TopoConfig, TopoLoss
from hf_topo.downsampling import (
    DOWNSAMPLING_KEY,
    TopoDownsampledGPT2LMHeadModel,
    TopoDownsampledLinear,
    downsample_model,
    parameter_count,
)
from hf_topo.sheet import CorticalSheet

MODES = ("bilinear", "bicubic", "nearest", "nearest-exact", "area")


def make_layer(layer_type: str, in_features: int, out_features: int, bias: bool = True) -> nn.Module:
    torch.manual_seed(3)
    if layer_type == "Conv1D":
        layer = Conv1D(out_features, in_features)  # weight (in, out)
        nn.init.normal_(layer.weight)
        nn.init.normal_(layer.bias)
        return layer
    return nn.Linear(in_features, out_features, bias=bias)


def downsampled_forward_f64(layer, x, height, width, factor_h, factor_w, mode):
    """A.5 written out with F.interpolate in float64: down-sample the sheet, matmul, up-sample the output, add bias."""
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    weight = layer.weight.detach().double()
    out_in = weight.T if isinstance(layer, Conv1D) else weight  # (out, in)
    depth = out_in.shape[1]
    sheet = out_in.reshape(height, width, depth)  # unit u = i·w + j at row i, column j
    reduced = F.interpolate(
        sheet.permute(2, 0, 1)[None], scale_factor=(1 / factor_h, 1 / factor_w), mode=mode, **kwargs
    )
    _, _, small_h, small_w = reduced.shape
    small_weight = reduced[0].permute(1, 2, 0).reshape(small_h * small_w, depth)  # (h'·w', in)
    y = x.double() @ small_weight.T  # (..., h'·w')
    lead = y.shape[:-1]
    grid = y.reshape(-1, 1, small_h, small_w)
    up = F.interpolate(grid, size=(height, width), mode=mode, **kwargs).reshape(*lead, height * width)
    if layer.bias is not None:
        up = up + layer.bias.detach().double()
    return up, small_weight


@pytest.fixture
def family_model(request, tiny_gpt2, tiny_neox, tiny_llama):
    """The tiny causal LM of the family named by the parameter."""
    builders = {
        "gpt2": lambda: tiny_gpt2,
        "gpt_neo": lambda: build_causal_lm("gpt_neo"),
        "gpt_neox": lambda: tiny_neox,
        "llama": lambda: tiny_llama,
        "qwen2": lambda: build_causal_lm("qwen2"),
        "mistral": lambda: build_causal_lm("mistral"),
    }
    return builders[request.param]().eval()


def tokens(batch: int = 2, seq: int = 12) -> torch.Tensor:
    return torch.randint(1, 64, (batch, seq), generator=torch.Generator().manual_seed(5))


# ---- the layer ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer_type", ["Linear", "Conv1D"])
def test_factor_one_is_the_original_layer(layer_type):
    layer = make_layer(layer_type, 24, 120)  # 10×12 sheet
    small = TopoDownsampledLinear.from_layer(layer, 1)
    x = torch.randn(3, 5, 24)
    assert (small.reduced_height, small.reduced_width) == (10, 12)
    torch.testing.assert_close(small(x), layer(x), rtol=1e-6, atol=1e-6)
    out_in = layer.weight.T if layer_type == "Conv1D" else layer.weight
    assert torch.equal(small.weight, out_in)


@pytest.mark.parametrize("layer_type", ["Linear", "Conv1D"])
@pytest.mark.parametrize("factors", [(2, 2), (3, 2), (2.5, 1.5), (1, 4)])
@pytest.mark.parametrize("mode", MODES)
def test_forward_equals_a5_definition_in_float64(layer_type, factors, mode):
    layer = make_layer(layer_type, 16, 120)  # 10×12 sheet
    small = TopoDownsampledLinear.from_layer(layer, factors, interpolation=mode)
    x = torch.randn(2, 7, 16)
    expected, small_weight = downsampled_forward_f64(layer, x, 10, 12, *factors, mode)
    assert small.weight.shape == small_weight.shape
    assert small.weight.shape == (math.floor(10 / factors[0]) * math.floor(12 / factors[1]), 16)
    torch.testing.assert_close(small.weight.double(), small_weight, rtol=1e-6, atol=1e-6)
    out = small(x)
    assert out.shape == (2, 7, 120) and out.dtype == torch.float32
    scale = expected.abs().max().item()
    assert (out.double() - expected).abs().max().item() <= 1e-5 * scale


def test_layer_on_a_recorded_sheet_and_without_bias():
    layer = make_layer("Linear", 8, 120, bias=False)
    sheet = CorticalSheet("mlp.up_proj", "Linear", 4, 30, 8)  # not the most-square 10×12
    small = TopoDownsampledLinear.from_layer(layer, (2, 3), sheet=sheet)
    assert (small.height, small.width, small.reduced_height, small.reduced_width) == (4, 30, 2, 10)
    assert small.bias is None and [n for n, _ in small.named_parameters()] == ["weight"]
    x = torch.randn(5, 8)
    expected, _ = downsampled_forward_f64(layer, x, 4, 30, 2, 3, "bilinear")
    torch.testing.assert_close(small(x).double(), expected, rtol=1e-5, atol=1e-5)


def test_layer_gradients_reach_the_reduced_weight_and_bias():
    small = TopoDownsampledLinear.from_layer(make_layer("Conv1D", 16, 120), 2)
    small(torch.randn(4, 16)).square().sum().backward()
    assert small.weight.grad is not None and small.weight.grad.abs().sum() > 0
    assert small.bias.grad is not None and small.bias.grad.abs().sum() > 0


def test_layer_in_bfloat16():
    layer = make_layer("Linear", 16, 120).to(torch.bfloat16)
    small = TopoDownsampledLinear.from_layer(layer, 2)
    x = torch.randn(3, 16, dtype=torch.bfloat16)
    out = small(x)
    assert small.weight.dtype == torch.bfloat16 and out.dtype == torch.bfloat16
    expected, _ = downsampled_forward_f64(layer, x, 10, 12, 2, 2, "bilinear")
    assert (out.double() - expected).abs().max() <= 0.05 * expected.abs().max()


# ---- the model ---------------------------------------------------------------------------------------------------


def test_parameter_counts_exact(tiny_gpt2):
    # Tiny GPT-2 by hand: E=32, vocab 64, 32 positions, 2 blocks, tied LM head.
    E = 32
    block = 2 * E + (E * 3 * E + 3 * E) + (E * E + E) + 2 * E + (E * 4 * E + 4 * E) + (4 * E * E + E)
    full = 64 * E + 32 * E + 2 * block + 2 * E
    assert parameter_count(tiny_gpt2) == full == 28544
    # c_fc: 128 units on an 8×16 sheet. φ=2 → 4×8 = 32 units; φ=3 → 2×5 = 10 units; (1, 4) → 8×4 = 32 units.
    for factors, kept_units in ((2, 32), (3, 10), ((1, 4), 32), ((2.5, 3.5), 3 * 4)):
        small = downsample_model(tiny_gpt2, factors)
        expected = full - 2 * (4 * E - kept_units) * E
        assert parameter_count(small) == expected
        record = small.config.topographic_downsampling
        assert record["original_parameter_count"] == full and record["parameter_count"] == expected
        assert small.transformer.h[0].mlp.c_fc.weight.shape == (kept_units, E)
        assert small.transformer.h[0].mlp.c_fc.bias.shape == (4 * E,)


def test_parameter_count_llama_without_bias(tiny_llama):
    small = downsample_model(tiny_llama, 2)  # up_proj: 120 units, 10×12 → 5×6, no bias
    assert parameter_count(tiny_llama) - parameter_count(small) == 2 * (120 - 30) * 32
    assert small.model.layers[0].mlp.up_proj.bias is None


def test_factor_one_model_computes_the_original(tiny_gpt2, tiny_llama):
    ids = tokens()
    for model in (tiny_gpt2.eval(), tiny_llama.eval()):
        same = downsample_model(model, 1)
        assert parameter_count(same) == parameter_count(model)
        with torch.no_grad():
            torch.testing.assert_close(same(ids).logits, model(ids).logits, rtol=1e-6, atol=1e-6)


def test_model_forward_uses_the_downsampled_layers(tiny_gpt2):
    model = tiny_gpt2.eval()
    small = downsample_model(model, 2)
    layer = small.transformer.h[1].mlp.c_fc
    assert isinstance(layer, TopoDownsampledLinear) and layer.layer_type == "Conv1D"
    hidden = torch.randn(2, 5, 32)
    expected, _ = downsampled_forward_f64(model.transformer.h[1].mlp.c_fc, hidden, 8, 16, 2, 2, "bilinear")
    torch.testing.assert_close(layer(hidden).double(), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        assert not torch.allclose(small(tokens()).logits, model(tokens()).logits)


def test_original_model_is_untouched(tiny_gpt2):
    before = {k: v.clone() for k, v in tiny_gpt2.state_dict().items()}
    config_before = tiny_gpt2.config.to_dict()
    small = downsample_model(tiny_gpt2, 2)
    with torch.no_grad():
        small.transformer.h[0].mlp.c_fc.bias.add_(1.0)  # the copy shares no storage with the original
        small.transformer.wte.weight.add_(1.0)
    assert type(tiny_gpt2).__name__ == "GPT2LMHeadModel"
    assert isinstance(tiny_gpt2.transformer.h[0].mlp.c_fc, Conv1D)
    assert tiny_gpt2.config.to_dict() == config_before and not hasattr(tiny_gpt2.config, DOWNSAMPLING_KEY)
    after = tiny_gpt2.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("family_model", ["gpt2", "gpt_neo", "gpt_neox", "llama", "qwen2", "mistral"], indirect=True)
def test_save_load_round_trip(family_model, tmp_path):
    small = downsample_model(family_model, (2, 3))
    small.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not any(name.endswith((".bin", ".py")) for name in os.listdir(tmp_path))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == f"hf_topo_downsampled_{family_model.config.model_type}"

    loaded, info = AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert type(loaded) is type(small)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert not info["error_msgs"]
    assert (
        parameter_count(loaded) == parameter_count(small) == small.config.topographic_downsampling["parameter_count"]
    )
    for (name, a), (_, b) in zip(small.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    ids = tokens()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, small(ids).logits, rtol=0, atol=0)


def test_round_trip_keeps_ties_and_generates(tiny_gpt2, tmp_path):
    small = downsample_model(tiny_gpt2.eval(), 2)
    assert small.lm_head.weight is small.transformer.wte.weight
    small.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    ids = tokens(1, 6)
    mask = torch.ones_like(ids)
    out_small = small.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
    out_loaded = loaded.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert out_small.shape == (1, 14) and torch.equal(out_small, out_loaded)


def test_round_trip_in_bfloat16(tiny_llama, tmp_path):
    tiny_llama.to(torch.bfloat16).save_pretrained(tmp_path / "original")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "original", dtype=torch.bfloat16).eval()
    small = downsample_model(model, 2)
    assert small.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    # Tensors keep their own dtypes: transformers keeps the rotary frequencies in float32 under a bf16 model.
    assert small.model.rotary_emb.inv_freq.dtype == model.model.rotary_emb.inv_freq.dtype == torch.float32
    small.save_pretrained(tmp_path / "small")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "small", dtype=torch.bfloat16)
    ids = tokens()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, small(ids).logits, rtol=0, atol=0)


def test_downsampled_model_trains(tiny_gpt2):
    small = downsample_model(tiny_gpt2, 2).train()
    ids = tokens()
    small(ids, labels=ids).loss.backward()
    assert small.transformer.h[0].mlp.c_fc.weight.grad.abs().sum() > 0


# ---- which layers, which sheets ----------------------------------------------------------------------------------


def test_recorded_topography_decides_sheets_and_interpolation(make_gpt2, tmp_path):
    model = make_gpt2()
    topo = TopoConfig(target_modules=["mlp.c_fc"], sheet_shape=(4, 32), interpolation="area", tau=2.0)
    TopoLoss(topo).config_for(model).attach_to(model.config)
    small = downsample_model(model, 2)
    layer = small.transformer.h[0].mlp.c_fc
    assert (layer.height, layer.width, layer.reduced_height, layer.reduced_width) == (4, 32, 2, 16)
    assert layer.interpolation == "area"
    assert small.config.topography["tau"]["value"] == 2.0  # the training record travels with the model
    expected, _ = downsampled_forward_f64(model.transformer.h[0].mlp.c_fc, torch.randn(3, 32), 4, 32, 2, 2, "area")
    small.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert loaded.config.topography == small.config.topography
    assert loaded.transformer.h[0].mlp.c_fc.reduced_width == 16
    x = torch.randn(3, 32)
    expected, _ = downsampled_forward_f64(model.transformer.h[0].mlp.c_fc, x, 4, 32, 2, 2, "area")
    torch.testing.assert_close(loaded.transformer.h[0].mlp.c_fc(x).double(), expected, rtol=1e-5, atol=1e-5)


def test_explicit_target_modules(tiny_llama):
    small = downsample_model(tiny_llama, 2, target_modules=["mlp.up_proj", "mlp.gate_proj"])
    mlp = small.model.layers[1].mlp
    assert isinstance(mlp.up_proj, TopoDownsampledLinear) and isinstance(mlp.gate_proj, TopoDownsampledLinear)
    assert isinstance(mlp.down_proj, nn.Linear)
    assert sorted(small.config.topographic_downsampling["layers"]) == [
        f"model.layers.{i}.mlp.{p}" for i in (0, 1) for p in ("gate_proj", "up_proj")
    ]


# ---- bad inputs --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factors", [0.5, 0, -2, float("nan"), float("inf"), True, (2, 2, 2), (2, 0.9), "2", None])
def test_bad_factors(tiny_gpt2, factors):
    with pytest.raises(ValueError, match=r"expected one number φ >= 1 or a pair"):
        downsample_model(tiny_gpt2, factors)


def test_sheet_too_small_for_the_factors(tiny_gpt2):
    with pytest.raises(ValueError, match=r"transformer.h.0.mlp.c_fc.*8x16 cortical sheet cannot be downsampled"):
        downsample_model(tiny_gpt2, (9, 2))


def test_target_modules_matching_nothing(tiny_gpt2):
    with pytest.raises(ValueError, match=r"matches no Linear/Conv1D/Conv2d layer.*Candidates"):
        downsample_model(tiny_gpt2, 2, target_modules=["mlp.up_proj"])


def test_unknown_family_without_metadata():
    config = OPTConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2)
    model = AutoModelForCausalLM.from_config(config)
    with pytest.raises(ValueError, match=r"model_type='opt'.*gpt2"):
        downsample_model(model, 2)


def test_wrong_model_class_already_downsampled_and_peft(tiny_gpt2):
    with pytest.raises(ValueError, match=r"expects the causal LM GPT2LMHeadModel.*got GPT2Model"):
        downsample_model(GPT2Model(tiny_gpt2.config), 2)
    small = downsample_model(tiny_gpt2, 2)
    assert isinstance(small, TopoDownsampledGPT2LMHeadModel)
    with pytest.raises(ValueError, match=r"already downsampled by \(2, 2\)"):
        downsample_model(small, 2)
    with pytest.raises(TypeError, match=r"comes from hf_topo.downsample_model .* use the original model"):
        TopoLoss(TopoConfig())(small)  # no full sheet left to regularize or analyse
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(tiny_gpt2, LoraConfig(target_modules=["c_attn"], r=2, fan_in_fan_out=True))
    with pytest.raises(ValueError, match=r"merge the adapters first"):
        downsample_model(peft_model, 2)


def test_layer_rejects_convolutions_and_bad_sheets():
    with pytest.raises(TypeError, match=r"Cannot downsample a Conv2d"):
        TopoDownsampledLinear.from_layer(nn.Conv2d(3, 16, 3), 2)
    with pytest.raises(ValueError, match=r"1x7 cortical sheet cannot be downsampled"):
        TopoDownsampledLinear.from_layer(nn.Linear(4, 7), 2)  # a prime number of units: a 1×7 sheet
    with pytest.raises(ValueError, match=r"has 120 output units"):
        TopoDownsampledLinear.from_layer(nn.Linear(4, 120), 2, sheet=CorticalSheet("x", "Linear", 7, 7, 4))


def test_config_that_contradicts_the_architecture(tiny_gpt2, tmp_path):
    downsample_model(tiny_gpt2, 2).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config[DOWNSAMPLING_KEY]["layers"]["transformer.h.0.mlp.c_fc"]["depth"] = 64
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"transformer.h.0.mlp.c_fc.*does not match its architecture"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_from_config_builds_an_initialized_downsampled_model(tiny_gpt2):
    config = downsample_model(tiny_gpt2, 2).config
    fresh = AutoModelForCausalLM.from_config(config)
    layer = fresh.transformer.h[0].mlp.c_fc
    assert isinstance(fresh, TopoDownsampledGPT2LMHeadModel) and layer.weight.shape == (32, 32)
    assert torch.isfinite(layer.weight).all() and 0.01 < layer.weight.std().item() < 0.03  # normal(0, 0.02)
    assert torch.equal(layer.bias, torch.zeros(128))
    assert parameter_count(fresh) == config.topographic_downsampling["parameter_count"]


# ---- fresh processes: nothing may depend on what the test process computed before ---------------------------------

_LOAD_IN_A_FRESH_PROCESS = """
import json, sys
import torch
import hf_topo  # registers the downsampled classes: no other hf_topo call before from_pretrained
from transformers import AutoModelForCausalLM

model = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()
ids = torch.tensor(json.loads(sys.argv[2]))
with torch.no_grad():
    logits = model(ids).logits
generated = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False, pad_token_id=0)
print(json.dumps({"class": type(model).__name__, "logits": logits.tolist(), "generated": generated.tolist()}))
"""


def _run_python(code: str, *argv: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-c", code, *argv], env=offline_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.parametrize("family_model", ["gpt2", "llama"], indirect=True)
def test_saved_model_loads_forwards_and_generates_in_a_fresh_process(family_model, tmp_path):
    # Regression: transformers builds the model under a meta-device context, and the blur matrices memoized there were
    # meta placeholders, so the first forward of a freshly loaded model raised "Cannot copy out of meta tensor".
    small = downsample_model(family_model, 2).eval()
    small.save_pretrained(tmp_path)
    ids = tokens(1, 6)
    with torch.no_grad():
        logits = small(ids).logits
    generated = small.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=6, do_sample=False, pad_token_id=0
    )
    result = json.loads(_run_python(_LOAD_IN_A_FRESH_PROCESS, str(tmp_path), json.dumps(ids.tolist())).stdout)
    assert result["class"] == type(small).__name__
    torch.testing.assert_close(torch.tensor(result["logits"]), logits, rtol=1e-5, atol=1e-5)
    assert result["generated"] == generated.tolist()


def test_auto_classes_are_registered_by_import_hf_topo(tmp_path):
    # `import hf_topo` alone must register every downsampled family (registering lazily, on first use of a submodule,
    # would leave AutoModelForCausalLM.from_pretrained unable to resolve a saved model's model_type).
    code = """
import json
import hf_topo
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

found = {}
for model_type in json.loads(__import__("sys").argv[1]):
    config_class = CONFIG_MAPPING[model_type]
    found[model_type] = [config_class.__name__, AutoModelForCausalLM._model_mapping[config_class].__name__]
print(json.dumps(found))
"""
    from hf_topo.downsampling import DOWNSAMPLED_MODEL_CLASSES

    expected = {
        config_class.model_type: [config_class.__name__, model_class.__name__]
        for _, config_class, model_class in DOWNSAMPLED_MODEL_CLASSES.values()
    }
    assert len(expected) == 6
    assert json.loads(_run_python(code, json.dumps(sorted(expected))).stdout) == expected


def test_blur_matrices_do_not_remember_the_device_context_they_were_made_in():
    from hf_topo.regularizers.laplacian_pyramid import _BLUR_CACHE, blur_matrices

    geometry = (7, 11, 1.7, 2.3)  # used by no other test, so the first call below fills its cache entry
    assert not any(key[:4] == geometry for key in _BLUR_CACHE)
    with torch.device("meta"):
        under_meta = blur_matrices(*geometry)
        assert all(m.device.type == "cpu" for m in under_meta)  # CPU unless asked otherwise, whatever the context
        assert all(m.is_meta for m in blur_matrices(*geometry, device="meta"))
    outside = blur_matrices(*geometry)
    assert all(torch.equal(a, b) for a, b in zip(under_meta, outside, strict=True))
    probe = torch.eye(7)[None, :, :, None].expand(1, 7, 7, 11)
    expected = F.interpolate(probe, scale_factor=(1 / 1.7, 1 / 2.3), mode="bilinear", align_corners=False)
    torch.testing.assert_close(outside[0], expected[0, :, :, 0].T)  # down_h, read off F.interpolate itself
    with torch.inference_mode():
        blur_matrices(5, 13, 1.7, 2.3)
    for mats in _BLUR_CACHE.values():
        assert all(type(m) is torch.Tensor and m.device.type == "cpu" and not m.is_inference() for m in mats)
    outside[0].zero_()  # callers get copies: the cache is unharmed
    assert torch.equal(blur_matrices(*geometry)[0], under_meta[0])


def test_layer_trains_after_a_forward_under_inference_mode():
    # The layer's upsampling matrices are cached per (device, dtype); ones made under torch.inference_mode would be
    # inference tensors, which autograd refuses to save for a later training forward.
    layer = TopoDownsampledLinear.from_layer(make_layer("Linear", 16, 120), 2)
    x = torch.randn(3, 16)
    with torch.inference_mode():
        expected = layer(x)
    out = layer(x)
    out.square().sum().backward()
    torch.testing.assert_close(out.detach(), expected)
    assert layer.weight.grad.abs().sum() > 0


def test_malformed_topography_record_is_not_taken_for_a_missing_one(tiny_gpt2):
    tiny_gpt2.config.topography = ["mlp.c_fc"]  # not what hf_topo writes: no silent most-square fallback
    with pytest.raises(ValueError, match=r"'topography' record of GPT2Config is malformed: it is a list"):
        downsample_model(tiny_gpt2, 2)
