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

from hf_topo import TopoConfig, TopoRegularizer
from hf_topo.downsampling import (
    DOWNSAMPLING_KEY,
    TopoDownsampledGPT2LMHeadModel,
    TopoDownsampledLinear,
    closed_form_gains,
    downsample_model,
    fit_least_squares_gains_,
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


def downsampled_forward_f64(layer, x, height, width, factor_h, factor_w, mode, gains=False):
    """A.5 written out with F.interpolate in float64: down-sample the sheet, matmul, up-sample the output, add bias.

    With ``gains``, each unit's output is first multiplied by ``‖W_u‖ / ‖B_u‖``, ``B`` the reduced sheet up-sampled
    back to ``(height, width)`` with F.interpolate (the rows the downsampled layer effectively applies).
    """
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
    if gains:
        blurred = F.interpolate(reduced, size=(height, width), mode=mode, **kwargs)[0]  # (depth, h, w)
        blurred_rows = blurred.permute(1, 2, 0).reshape(height * width, depth)
        up = up * (out_in.norm(dim=1) / blurred_rows.norm(dim=1))
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
@pytest.mark.parametrize("gains", [False, True], ids=["paper", "gains"])
def test_forward_equals_a5_definition_in_float64(layer_type, factors, mode, gains):
    layer = make_layer(layer_type, 16, 120)  # 10×12 sheet
    small = TopoDownsampledLinear.from_layer(layer, factors, interpolation=mode, gain=gains)
    assert (small.gain is not None) == gains
    x = torch.randn(2, 7, 16)
    expected, small_weight = downsampled_forward_f64(layer, x, 10, 12, *factors, mode, gains=gains)
    assert small.weight.shape == small_weight.shape
    assert small.weight.shape == (math.floor(10 / factors[0]) * math.floor(12 / factors[1]), 16)
    torch.testing.assert_close(small.weight.double(), small_weight, rtol=1e-6, atol=1e-6)
    out = small(x)
    assert out.shape == (2, 7, 120) and out.dtype == torch.float32
    scale = expected.abs().max().item()
    assert (out.double() - expected).abs().max().item() <= 1e-5 * scale
    # Without autograd the gains are applied in place: the same numbers.
    with torch.no_grad():
        torch.testing.assert_close(small(x), out, rtol=0, atol=0)
    with torch.inference_mode():
        torch.testing.assert_close(small(x), out, rtol=0, atol=0)


def test_layer_on_a_recorded_sheet_and_without_bias():
    layer = make_layer("Linear", 8, 120, bias=False)
    sheet = CorticalSheet("mlp.up_proj", "Linear", 4, 30, 8)  # not the most-square 10×12
    small = TopoDownsampledLinear.from_layer(layer, (2, 3), sheet=sheet)
    assert (small.height, small.width, small.reduced_height, small.reduced_width) == (4, 30, 2, 10)
    assert small.bias is None and [n for n, _ in small.named_parameters()] == ["weight", "gain"]
    x = torch.randn(5, 8)
    expected, _ = downsampled_forward_f64(layer, x, 4, 30, 2, 3, "bilinear", gains=True)
    torch.testing.assert_close(small(x).double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("gains", [False, True], ids=["paper", "gains"])
def test_layer_gradients_reach_the_reduced_weight_and_bias(gains):
    small = TopoDownsampledLinear.from_layer(make_layer("Conv1D", 16, 120), 2, gain=gains)
    small(torch.randn(4, 16)).square().sum().backward()
    assert small.weight.grad is not None and small.weight.grad.abs().sum() > 0
    assert small.bias.grad is not None and small.bias.grad.abs().sum() > 0
    if gains:  # the gains train too (distillation), through the out-of-place path
        assert small.gain.grad is not None and small.gain.grad.abs().sum() > 0
        # Frozen layer, input that needs a gradient: the in-place path must not run (autograd keeps `out`).
        small.requires_grad_(False)
        x = torch.randn(4, 16, requires_grad=True)
        small(x).square().sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0


def test_layer_in_bfloat16():
    layer = make_layer("Linear", 16, 120).to(torch.bfloat16)
    small = TopoDownsampledLinear.from_layer(layer, 2)
    x = torch.randn(3, 16, dtype=torch.bfloat16)
    out = small(x)
    assert small.weight.dtype == torch.bfloat16 and out.dtype == torch.bfloat16
    expected, _ = downsampled_forward_f64(layer, x, 10, 12, 2, 2, "bilinear", gains=True)
    assert (out.double() - expected).abs().max() <= 0.05 * expected.abs().max()


# ---- the model ---------------------------------------------------------------------------------------------------


def test_parameter_counts_exact(tiny_gpt2):
    # Tiny GPT-2 by hand: E=32, vocab 64, 32 positions, 2 blocks, tied LM head.
    E = 32
    block = 2 * E + (E * 3 * E + 3 * E) + (E * E + E) + 2 * E + (E * 4 * E + 4 * E) + (4 * E * E + E)
    full = 64 * E + 32 * E + 2 * block + 2 * E
    assert parameter_count(tiny_gpt2) == full == 28544
    # c_fc: 128 units on an 8×16 sheet. φ=2 → 4×8 = 32 units; φ=3 → 2×5 = 10 units; (1, 4) → 8×4 = 32 units.
    # With gains (the default) each layer keeps h·w = 128 more parameters, one per unit.
    for factors, kept_units in ((2, 32), (3, 10), ((1, 4), 32), ((2.5, 3.5), 3 * 4)):
        for gains, extra in ((False, 0), (True, 4 * E)):
            small = downsample_model(tiny_gpt2, factors, gains=gains)
            expected = full - 2 * (4 * E - kept_units) * E + 2 * extra
            assert parameter_count(small) == expected
            record = small.config.topographic_downsampling
            assert record["original_parameter_count"] == full and record["parameter_count"] == expected
            assert small.transformer.h[0].mlp.c_fc.weight.shape == (kept_units, E)
            assert small.transformer.h[0].mlp.c_fc.bias.shape == (4 * E,)
            gain = small.transformer.h[0].mlp.c_fc.gain
            assert gain is None if not gains else gain.shape == (4 * E,)


def test_parameter_count_llama_without_bias(tiny_llama):
    small = downsample_model(tiny_llama, 2)  # up_proj: 120 units, 10×12 → 5×6, no bias, 120 gains
    assert parameter_count(tiny_llama) - parameter_count(small) == 2 * (120 - 30) * 32 - 2 * 120
    paper = downsample_model(tiny_llama, 2, gains=False)
    assert parameter_count(tiny_llama) - parameter_count(paper) == 2 * (120 - 30) * 32
    assert small.model.layers[0].mlp.up_proj.bias is None


def test_factor_one_model_computes_the_original(tiny_gpt2, tiny_llama):
    ids = tokens()
    for model in (tiny_gpt2.eval(), tiny_llama.eval()):
        same = downsample_model(model, 1, gains=False)
        assert parameter_count(same) == parameter_count(model)
        with_gains = downsample_model(model, 1)  # nothing blurred: every gain is 1
        assert all(torch.equal(m.gain, torch.ones_like(m.gain)) for m in with_gains.modules() if hasattr(m, "gain"))
        with torch.no_grad():
            torch.testing.assert_close(same(ids).logits, model(ids).logits, rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(with_gains(ids).logits, model(ids).logits, rtol=1e-6, atol=1e-6)


def test_model_forward_uses_the_downsampled_layers(tiny_gpt2):
    model = tiny_gpt2.eval()
    small = downsample_model(model, 2)
    layer = small.transformer.h[1].mlp.c_fc
    assert isinstance(layer, TopoDownsampledLinear) and layer.layer_type == "Conv1D"
    hidden = torch.randn(2, 5, 32)
    expected, _ = downsampled_forward_f64(model.transformer.h[1].mlp.c_fc, hidden, 8, 16, 2, 2, "bilinear", True)
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
    TopoRegularizer(topo).config_for(model).attach_to(model.config)
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
    expected, _ = downsampled_forward_f64(model.transformer.h[0].mlp.c_fc, x, 4, 32, 2, 2, "area", gains=True)
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
    with pytest.raises(ValueError, match=r"matches no Linear/Conv1D/Conv2d/RNN layer.*Candidates"):
        downsample_model(tiny_gpt2, 2, target_modules=["mlp.up_proj"])


def test_unknown_family_without_metadata():
    config = OPTConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2)
    model = AutoModelForCausalLM.from_config(config)
    with pytest.raises(ValueError, match=r"model_type='opt'.*gpt2"):
        downsample_model(model, 2)


def test_wrong_model_class_already_downsampled_and_peft(tiny_gpt2):
    with pytest.raises(
        ValueError,
        match=r"expects the GPT2LMHeadModel of a gpt2 checkpoint, got GPT2Model. Load it with AutoModelForCausalLM",
    ):
        downsample_model(GPT2Model(tiny_gpt2.config), 2)
    small = downsample_model(tiny_gpt2, 2)
    assert isinstance(small, TopoDownsampledGPT2LMHeadModel)
    with pytest.raises(ValueError, match=r"already downsampled by \(2, 2\)"):
        downsample_model(small, 2)
    with pytest.raises(TypeError, match=r"comes from hf_topo.downsample_model .* use the original model"):
        TopoRegularizer(TopoConfig())(small)  # no full sheet left to regularize or analyse
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(tiny_gpt2, LoraConfig(target_modules=["c_attn"], r=2, fan_in_fan_out=True))
    with pytest.raises(ValueError, match=r"merge the adapters first"):
        downsample_model(peft_model, 2)


def test_layer_rejects_convolutions_and_bad_sheets():
    with pytest.raises(TypeError, match=r"cannot downsample a Conv2d: .*TopoDownsampledConv2d"):
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
@pytest.mark.slow  # a fresh process or a training run: the fast lane leaves it to CI
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


@pytest.mark.slow  # a fresh process or a training run: the fast lane leaves it to CI
def test_auto_classes_are_registered_by_import_hf_topo(tmp_path):
    # `import hf_topo` alone must register every downsampled family (registering lazily, on first use of a submodule,
    # would leave AutoModelForCausalLM / AutoModelForImageClassification.from_pretrained unable to resolve a saved
    # model's model_type).
    code = """
import json
import hf_topo
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageClassification
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

found = {}
for model_type in json.loads(__import__("sys").argv[1]):
    config_class = CONFIG_MAPPING[model_type]
    auto = AutoModelForImageClassification if "resnet" in model_type or "vit" in model_type else AutoModelForCausalLM
    found[model_type] = [config_class.__name__, auto._model_mapping[config_class].__name__]
print(json.dumps(found))
"""
    from hf_topo.downsampling import DOWNSAMPLED_MODEL_CLASSES

    expected = {
        config_class.model_type: [config_class.__name__, model_class.__name__]
        for _, config_class, model_class in DOWNSAMPLED_MODEL_CLASSES.values()
    }
    assert len(expected) == 8
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


# ---- per-unit gains: the closed form, least squares, distillation, the record ----------------------------------


@pytest.mark.parametrize("layer_type", ["Linear", "Conv1D"])
def test_closed_form_gains_give_every_unit_back_its_weight_norm(layer_type):
    layer = make_layer(layer_type, 16, 120)  # 10×12 sheet
    small = TopoDownsampledLinear.from_layer(layer, 3)
    out_in = (layer.weight.T if layer_type == "Conv1D" else layer.weight).detach().double()
    applied = small.applied_weight(dtype=torch.float64)  # g ⊙ (U·W'), (120, 16)
    torch.testing.assert_close(applied.norm(dim=1), out_in.norm(dim=1), rtol=1e-6, atol=0)
    blurred = small.applied_weight(gains=False, dtype=torch.float64)
    assert (blurred.norm(dim=1) / out_in.norm(dim=1) - 1).abs().max() > 0.1  # without gains the norms are off
    x = torch.randn(4, 16, dtype=torch.float64)
    expected = x @ applied.T + layer.bias.detach().double()
    torch.testing.assert_close(small.double()(x), expected, rtol=1e-10, atol=1e-10)


def test_zero_rows_keep_gain_one():
    original = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 0.0]])
    blurred = torch.tensor([[0.6, 0.8], [0.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(closed_form_gains(original, blurred), torch.tensor([5.0, 1.0, 1.0]))


def _layer_inputs(model, names, ids):
    """Inputs of the named layers of ``model`` on ``ids``, (tokens, in) in float64."""
    captured = {name: [] for name in names}
    modules = dict(model.named_modules())
    handles = [
        modules[name].register_forward_hook(lambda m, i, o, name=name: captured[name].append(i[0].detach()))
        for name in names
    ]
    with torch.no_grad():
        model(ids)
    for handle in handles:
        handle.remove()
    return {name: torch.cat(xs).flatten(0, -2).double() for name, xs in captured.items()}


def test_least_squares_gains_are_the_per_unit_least_squares_fit(tiny_gpt2):
    model = tiny_gpt2.eval()
    ids = tokens(4, 16)
    fitted = downsample_model(model, 2, gains="least_squares", calibration_tokens=ids)
    closed = downsample_model(model, 2)
    record = fitted.config.topographic_downsampling
    assert (record["variant"], record["gains"], record["distill_steps"]) == ("gains", "least_squares", 0)
    names = list(record["layers"])
    inputs = _layer_inputs(model, names, ids)
    for name in names:
        original = model.get_submodule(name)
        x = inputs[name]
        target = x @ original.weight.detach().double()  # Conv1D: y = x·W (pre-bias)
        _, blurred_rows = downsampled_forward_f64(original, x, 8, 16, 2, 2, "bilinear")  # (32, in) reduced rows
        reduced = blurred_rows.T.reshape(32, 4, 8)  # (in, h', w')
        blurred = F.interpolate(reduced[None], size=(8, 16), mode="bilinear", align_corners=False)[0]
        estimate = x @ blurred.reshape(32, 128)  # ŷ = (U·D·W) x, (tokens, 128)
        reference = torch.stack(
            [torch.linalg.lstsq(estimate[:, u : u + 1], target[:, u : u + 1]).solution[0, 0] for u in range(128)]
        )
        torch.testing.assert_close(fitted.get_submodule(name).gain.double(), reference, rtol=1e-4, atol=1e-6)
        # The least-squares gains fit the calibration outputs at least as well as the closed form.
        error = {
            variant: (m.get_submodule(name).gain.double() * estimate - target).norm()
            for variant, m in (("fitted", fitted), ("closed", closed))
        }
        assert error["fitted"] <= error["closed"] * (1 + 1e-6)


def _kl(teacher, student, ids) -> float:
    with torch.no_grad():
        p = F.log_softmax(teacher(ids).logits.double(), -1)
        q = F.log_softmax(student(ids).logits.double(), -1)
    return F.kl_div(q, p, log_target=True, reduction="none").sum(-1).mean().item()


def test_distillation_trains_only_the_downsampled_layers_and_lowers_the_kl(tiny_gpt2):
    model = tiny_gpt2.eval()
    ids = tokens(4, 16)
    closed = downsample_model(model, 3)
    distilled = downsample_model(model, 3, calibration_tokens=ids, distill_steps=20, distill_learning_rate=1e-2)
    assert distilled.config.topographic_downsampling["distill_steps"] == 20
    assert not distilled.training and all(p.requires_grad for p in distilled.parameters())
    changed = {n for n, p in distilled.named_parameters() if not torch.equal(p, closed.get_parameter(n))}
    assert changed == {f"transformer.h.{i}.mlp.c_fc.{p}" for i in (0, 1) for p in ("weight", "gain")}
    assert _kl(model, distilled, ids) < 0.5 * _kl(model, closed, ids)


@pytest.mark.slow  # a fresh process or a training run: the fast lane leaves it to CI
def test_variant_is_recorded_and_a_version_1_record_loads_as_the_paper_variant(tiny_gpt2, tmp_path):
    model = tiny_gpt2.eval()
    record = downsample_model(model, 2).config.topographic_downsampling
    assert (record["schema_version"], record["variant"], record["gains"]) == (2, "gains", "closed_form")
    assert all(layer["gain"] for layer in record["layers"].values())
    paper = downsample_model(model, 2, gains=False)
    record = paper.config.topographic_downsampling
    assert (record["variant"], record["gains"]) == ("paper", None)
    assert not any(name.endswith(".gain") for name in paper.state_dict())
    # A model saved before gains existed: schema 1, no variant, gains or per-layer gain keys.
    paper.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    old = config[DOWNSAMPLING_KEY]
    for key in ("variant", "gains", "distill_steps"):
        del old[key]
    for layer in old["layers"].values():
        del layer["gain"]
    old["schema_version"] = 1
    (tmp_path / "config.json").write_text(json.dumps(config))
    ids = tokens(1, 6)
    with torch.no_grad():
        logits = paper(ids).logits
    result = json.loads(_run_python(_LOAD_IN_A_FRESH_PROCESS, str(tmp_path), json.dumps(ids.tolist())).stdout)
    assert result["class"] == "TopoDownsampledGPT2LMHeadModel"
    torch.testing.assert_close(torch.tensor(result["logits"]), logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gains": "l2"}, r"gains='l2' is not a gain method"),
        ({"gains": "least_squares"}, r"needs calibration_tokens"),
        ({"distill_steps": 3}, r"needs calibration_tokens"),
        ({"distill_steps": -1}, r"distill_steps=-1 must be a non-negative integer"),
    ],
)
def test_bad_gain_settings(tiny_gpt2, kwargs, message):
    with pytest.raises(ValueError, match=message):
        downsample_model(tiny_gpt2, 2, **kwargs)


def test_least_squares_needs_gains_to_fit(tiny_gpt2):
    paper = downsample_model(tiny_gpt2, 2, gains=False)
    with pytest.raises(ValueError, match=r"no gains to fit"):
        fit_least_squares_gains_(paper, tiny_gpt2, tokens())


# ---- the analysis sweep, its summary and the model card carry the variant -------------------------------------


def test_downsampling_sweep_in_both_variants_and_their_summaries(tiny_gpt2):
    from hf_topo.analysis import downsampling_sweep
    from hf_topo.analysis.activations import topographic_layers
    from hf_topo.analysis.summary import AnalysisSummary, SweepSummary
    from hf_topo.evaluation import evaluate_perplexity
    from hf_topo.hub.card import analysis_rows

    model = tiny_gpt2.eval()
    ids = tokens(4, 12)
    layers = topographic_layers(model)
    sweeps = {
        "downsampling": downsampling_sweep(model, ids, [1, 3], layers, progress=False),
        "downsampling_paper": downsampling_sweep(model, ids, [1, 3], layers, progress=False, gains=False),
    }
    assert (sweeps["downsampling"].variant, sweeps["downsampling_paper"].variant) == ("gains", "paper")
    for name, gains in (("downsampling", True), ("downsampling_paper", False)):
        expected = evaluate_perplexity(downsample_model(model, 3, gains=gains), ids, progress=False)
        assert sweeps[name].perplexity[1] == pytest.approx(expected, rel=1e-6)
    assert sweeps["downsampling"].parameters_kept[1] > sweeps["downsampling_paper"].parameters_kept[1]
    summary = AnalysisSummary(sweeps={name: SweepSummary.from_sweep(s) for name, s in sweeps.items()})
    again = AnalysisSummary.from_dict(json.loads(json.dumps(summary.to_dict())))
    assert again.sweeps["downsampling_paper"].variant == "paper" and again == summary
    flat = summary.flat()
    assert flat["downsampled_3x3_delta_perplexity"] == summary.delta_perplexity("downsampling", 3.0)
    assert flat["downsampled_paper_3x3_delta_perplexity"] == summary.delta_perplexity("downsampling_paper", 3.0)
    labels = [label for label, _ in analysis_rows(summary)]
    assert labels == [
        "Δ perplexity, sheets downsampled φ × φ with per-unit gains",
        "Δ perplexity, sheets downsampled φ × φ (the paper's layer, no gains)",
    ]
    with pytest.raises(ValueError, match=r"Unknown downsampling variant 'l2'"):
        SweepSummary("downsampling", "φ", [], variant="l2")
    with pytest.raises(ValueError, match=r"A noise sweep has no variant"):
        SweepSummary("noise", "σ", [], variant="gains")


def test_model_card_says_which_variant(make_gpt2):
    from hf_topo.hub.card import toponet_card

    model = make_gpt2()
    TopoRegularizer(TopoConfig(target_modules=["mlp.c_fc"], tau=5.0)).config_for(model).attach_to(model.config)
    cards = {
        variant: str(toponet_card(downsample_model(model, 2, gains=gains)))
        for variant, gains in (("gains", True), ("paper", False))
    }
    assert "**downsampled** on its cortical sheets by φ = 2 × 2" in cards["gains"]
    assert "**with per-unit gains**" in cards["gains"] and "set in closed form" in cards["gains"]
    assert "**no per-unit gains**" in cards["paper"] and "per-unit gains**" not in cards["paper"].replace("no p", "")
    assert "downsampled" not in str(toponet_card(model)).split("## Topography")[0]


@pytest.mark.slow
def test_downsample_command_end_to_end(tmp_path):
    """`hf-topo downsample` through the installed console script: least-squares gains, distillation, held-out Δ."""
    from hf_topo.data import train_bpe_tokenizer

    corpus = "".join(
        f"Line {i}: the {['cat', 'dog', 'bird'][i % 3]} saw {i % 7} boats by the river.\n" for i in range(300)
    )
    tokenizer = train_bpe_tokenizer([corpus], vocab_size=300)
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=32, n_layer=2, n_head=2)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    (tmp_path / "train.txt").write_text(corpus[: len(corpus) // 2])
    (tmp_path / "heldout.txt").write_text(corpus[len(corpus) // 2 :])
    argv = ["downsample", "--model", str(tmp_path / "model"), "--factor", "2", "--gains", "least_squares",
            "--distill_steps", "3", "--text_file", str(tmp_path / "train.txt"), "--eval_text_file",
            str(tmp_path / "heldout.txt"), "--block_size", "16", "--calibration_blocks", "4", "--eval_blocks", "4",
            "--output_dir", str(tmp_path / "small")]  # fmt: skip
    command = os.path.join(os.path.dirname(sys.executable), "hf-topo")
    result = subprocess.run([command, *argv], env=offline_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "variant 'gains' (gains: least_squares, distillation steps: 3)" in result.stdout
    summary = json.loads((tmp_path / "small" / "downsampling.json").read_text())
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "small").eval()
    assert (
        summary["parameters"] == parameter_count(loaded) == loaded.config.topographic_downsampling["parameter_count"]
    )
    assert loaded.config.topographic_downsampling["gains"] == "least_squares"
    from hf_topo.evaluation import evaluate_perplexity, load_text_blocks

    held_out = load_text_blocks(tokenizer, 16, text_file=str(tmp_path / "heldout.txt"), max_blocks=4)
    assert summary["perplexity"] == pytest.approx(evaluate_perplexity(loaded, held_out, progress=False), rel=1e-5)
    assert summary["perplexity_original"] == pytest.approx(
        evaluate_perplexity(model, held_out, progress=False), rel=1e-5
    )
    # bad input is refused before any model is loaded
    bad = subprocess.run([command, "downsample", "--model", str(tmp_path / "model"), "--gains", "least_squares",
                          "--output_dir", str(tmp_path / "x")], env=offline_env(), capture_output=True, text=True)  # fmt: skip
    assert bad.returncode != 0 and "give --text_file" in bad.stderr
