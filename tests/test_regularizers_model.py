"""TopoLoss on modules (hf_topo.topo_regularizer) against the reference `topoloss` 0.0.2, on Linear/Conv2d/GPT-2 Conv1D,
bf16 weights, PEFT LoRA models and watched layers."""

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from topoloss import LaplacianPyramid
from topoloss import TopoLoss as ReferenceTopoLoss
from topoloss.losses.laplacian_pyramid import laplacian_pyramid_loss as reference_loss
from torch import nn
from transformers.pytorch_utils import Conv1D

from hf_topo import TopoConfig, TopoRegularizer
from hf_topo.targets import resolve_sheets

GRAD_TOL = 2e-5  # gradient error relative to max |grad|: float32 rounding of two computation orders
C_FC = ["transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc"]


def _reference(model, names, factor_h, factor_w, mode="bilinear", scales=None):
    """Reference value of ``model`` (a module holding nn.Linear/nn.Conv2d) and the gradients of the named layers."""
    scales = scales or {}
    loss = ReferenceTopoLoss(
        [
            LaplacianPyramid(
                name, factor_h=factor_h, factor_w=factor_w, interpolation=mode, scale=scales.get(name, 1.0)
            )
            for name in names
        ]
    )
    value = loss.compute(model)
    value.backward()
    grads = {name: model.get_submodule(name).weight.grad.clone() for name in names if scales.get(name, 1.0)}
    model.zero_grad(set_to_none=True)
    return value.item(), grads


def _ours(model, names, factor_h, factor_w, mode="bilinear", **config):
    topo = TopoRegularizer(
        TopoConfig(target_modules=names, factor_h=factor_h, factor_w=factor_w, interpolation=mode, **config)
    )
    value = topo(model)
    value.backward()
    grads = {name: model.get_submodule(name).weight.grad.clone() for name in names}
    model.zero_grad(set_to_none=True)
    return value.item(), grads


@pytest.mark.parametrize(
    "units, inputs, factor_h, factor_w",
    [
        (64, 10, 3, 3),  # 8×8
        (3072, 768, 3, 3),  # GPT-2 c_fc as nn.Linear: 48×64
        (120, 9, 3, 3),  # 10×12
        (120, 9, 2.5, 1.7),  # non-integer factors
        (512, 16, 2, 4),  # 16×32
        (13, 6, 1, 1),  # prime: 1×13; the reference accepts only factor_w <= 1 here (see the formula test)
    ],
)
def test_linear_parity(units, inputs, factor_h, factor_w, rel_err):
    torch.manual_seed(units)
    model = nn.ModuleDict({"fc": nn.Linear(inputs, units)})
    ref_value, ref_grads = _reference(model, ["fc"], factor_h, factor_w)
    value, grads = _ours(model, ["fc"], factor_h, factor_w)
    assert abs(value - ref_value) <= 1e-6
    if units == 13:  # φ = 1: the blur is the identity, the loss is 0 and its gradient is rounding noise
        assert abs(value) <= 1e-6
    else:
        assert value > 0.05
        assert rel_err(grads["fc"], ref_grads["fc"]) < GRAD_TOL


def test_prime_unit_count_with_a_real_blur(paper_formula, rel_err):
    # Reference quirk: its asserts compare factor_h with the sheet *depth* and factor_w with the sheet *height*
    # (grid (1, e, h, w), checks on grid.shape[1] and grid.shape[2]), so for a prime 1×p sheet it rejects factor_w=3
    # although only the height of 1 limits factor_h. Compare with the formula computed here instead
    # (F.interpolate(scale_factor=(1/φh, 1/φw)), F.interpolate(size=(h, w)), F.cosine_similarity, float64).
    torch.manual_seed(17)
    model = nn.ModuleDict({"fc": nn.Linear(5, 17)})
    with pytest.raises(AssertionError, match="factor_w"):
        _reference(model, ["fc"], 1, 3)
    weight = model["fc"].weight.detach().double().requires_grad_(True)
    expected = paper_formula(weight.reshape(1, 17, 5), 1, 3)
    expected.backward()
    value, grads = _ours(model, ["fc"], 1, 3)
    assert expected.item() > 0.05
    assert abs(value - expected.item()) <= 1e-6
    assert rel_err(grads["fc"], weight.grad) < GRAD_TOL


@pytest.mark.parametrize(
    "out_channels, in_channels, kernel, factor_h, factor_w",
    [
        (64, 3, 3, 3, 3),  # 8×8 sheet of depth 27
        (96, 4, 5, 2, 2),  # 8×12, depth 100
        (30, 2, 1, 2, 2),  # 5×6, 1×1 kernels
        (30, 3, 3, 2.5, 1.7),  # non-square, non-integer factors
    ],
)
def test_conv2d_parity(out_channels, in_channels, kernel, factor_h, factor_w, rel_err):
    torch.manual_seed(out_channels + kernel)
    model = nn.ModuleDict({"conv": nn.Conv2d(in_channels, out_channels, kernel)})
    ref_value, ref_grads = _reference(model, ["conv"], factor_h, factor_w)
    value, grads = _ours(model, ["conv"], factor_h, factor_w)
    assert TopoRegularizer(target_modules=["conv"]).layers(model)[0].sheet.depth == in_channels * kernel * kernel
    assert abs(value - ref_value) <= 1e-6 and value > 0.05
    assert rel_err(grads["conv"], ref_grads["conv"]) < GRAD_TOL


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "nearest", "nearest-exact", "area"])
def test_interpolation_modes_parity(mode, rel_err):
    torch.manual_seed(1)
    model = nn.ModuleDict({"fc": nn.Linear(8, 144), "conv": nn.Conv2d(2, 96, 3)})
    ref_value, ref_grads = _reference(model, ["fc", "conv"], 2.5, 1.7, mode)
    value, grads = _ours(model, ["fc", "conv"], 2.5, 1.7, mode)
    assert abs(value - ref_value) <= 1e-6
    for name in ("fc", "conv"):
        assert rel_err(grads[name], ref_grads[name]) < GRAD_TOL


def test_several_layers_mean_and_per_layer(rel_err):
    torch.manual_seed(2)
    model = nn.ModuleDict({"a": nn.Linear(16, 64), "b": nn.Linear(16, 120), "c": nn.Conv2d(3, 30, 3)})
    names = ["a", "b", "c"]
    per_layer_ref = ReferenceTopoLoss([LaplacianPyramid(n, factor_h=2, factor_w=2) for n in names]).compute(
        model, reduce_mean=False
    )
    topo = TopoRegularizer(TopoConfig(target_modules=names, factor_h=2, factor_w=2))
    mean, per_layer = topo.compute(model)
    assert list(per_layer) == names
    for name in names:
        assert abs(per_layer[name].item() - per_layer_ref[name].item()) <= 1e-6
    assert abs(mean.item() - sum(v.item() for v in per_layer_ref.values()) / 3) <= 1e-6
    ref_value, ref_grads = _reference(model, names, 2, 2)
    mean.backward()
    for name in names:
        assert rel_err(model[name].weight.grad, ref_grads[name]) < GRAD_TOL


@pytest.mark.parametrize("nf, nx, factor_h, factor_w", [(3072, 768, 3, 3), (120, 9, 2.5, 1.7)])
def test_gpt2_conv1d_equals_the_reference_on_the_transposed_linear(nf, nx, factor_h, factor_w, rel_err):
    torch.manual_seed(3)
    conv = Conv1D(nf, nx)  # GPT-2 layout: weight (in, out) = (nx, nf)
    nn.init.normal_(conv.weight, std=0.02)
    linear = nn.Linear(nx, nf)
    linear.weight.data.copy_(conv.weight.data.T)
    ref_value, ref_grads = _reference(nn.ModuleDict({"fc": linear}), ["fc"], factor_h, factor_w)
    value, grads = _ours(nn.ModuleDict({"fc": conv}), ["fc"], factor_h, factor_w)
    assert abs(value - ref_value) <= 1e-6
    assert grads["fc"].shape == (nx, nf)
    assert rel_err(grads["fc"].T, ref_grads["fc"]) < GRAD_TOL


@pytest.mark.parametrize("layer_type", ["Linear", "Conv1D"])
def test_bf16_weights(layer_type):
    torch.manual_seed(4)
    layer = nn.Linear(64, 768) if layer_type == "Linear" else Conv1D(768, 64)
    layer = layer.to(torch.bfloat16)
    model = nn.ModuleDict({"fc": layer})
    topo = TopoRegularizer(target_modules=["fc"])
    value = topo(model)
    assert value.dtype == torch.float32
    float_model = copy.deepcopy(model).float()  # the float32 copy of the bf16-rounded weights
    float_value = topo(float_model)
    assert abs(value.item() - float_value.item()) <= 1e-6
    value.backward()
    float_value.backward()
    grad = layer.weight.grad
    assert grad.dtype == torch.bfloat16 and grad.shape == layer.weight.shape
    float_grad = float_model["fc"].weight.grad
    assert torch.allclose(grad.float(), float_grad, rtol=1e-2, atol=1e-2 * float_grad.abs().max())


def test_topoloss_decreases_when_optimized():
    torch.manual_seed(6)
    model = nn.ModuleDict({"fc": nn.Linear(16, 256)})
    topo = TopoRegularizer(target_modules=["fc"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    start = topo(model).item()
    history = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = topo(model)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    end = topo(model).item()
    assert start > 0.7  # a random sheet is far from its blur
    assert end < 0.5 * start
    assert history[-1] < history[0]


def test_peft_lora_on_other_layers_leaves_the_value_unchanged(tiny_gpt2):
    topo = TopoRegularizer(target_modules=["mlp.c_fc"])
    plain_value = topo(tiny_gpt2).item()
    peft_model = get_peft_model(
        copy.deepcopy(tiny_gpt2), LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True)
    )
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(param, std=0.5)
    assert topo(peft_model).item() == pytest.approx(plain_value, abs=1e-7)
    layers = topo.layers(peft_model)
    assert [layer.name for layer in layers] == ["base_model.model." + n for n in C_FC]
    assert [layer.sheet.module_name for layer in layers] == C_FC  # base-model names, as config.json records


def test_peft_lora_on_the_target_uses_the_effective_weight(tiny_gpt2, rel_err):
    topo = TopoRegularizer(target_modules=["mlp.c_fc"])
    plain_value = topo(tiny_gpt2).item()
    peft_model = get_peft_model(
        copy.deepcopy(tiny_gpt2), LoraConfig(r=2, lora_alpha=4, target_modules=["c_fc"], fan_in_fan_out=True)
    )
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(param, std=0.5)
    value = topo(peft_model)
    merged = copy.deepcopy(peft_model).merge_and_unload()  # a plain GPT-2 whose c_fc weight is W + ΔW
    assert type(merged.transformer.h[0].mlp.c_fc) is Conv1D
    assert value.item() == pytest.approx(topo(merged).item(), abs=1e-6)
    assert abs(value.item() - plain_value) > 1e-3

    # Gradients reach lora_A/lora_B and equal those of the reference on W + scaling·(B·A)ᵀ; the frozen base gets none.
    value.backward()
    leaves, ref_terms = [], []
    for name in C_FC:
        lora = peft_model.base_model.model.get_submodule(name)
        a = lora.lora_A["default"].weight.detach().clone().requires_grad_(True)
        b = lora.lora_B["default"].weight.detach().clone().requires_grad_(True)
        w = lora.base_layer.weight.detach() + lora.scaling["default"] * (b @ a).T  # Conv1D: (in, out)
        ref_terms.append(reference_loss(w.T.reshape(8, 16, 32), factor_h=3, factor_w=3))
        leaves.append((lora, a, b))
    torch.stack(ref_terms).mean().backward()
    for lora, a, b in leaves:
        assert lora.base_layer.weight.grad is None
        assert rel_err(lora.lora_A["default"].weight.grad, a.grad) < GRAD_TOL
        assert rel_err(lora.lora_B["default"].weight.grad, b.grad) < GRAD_TOL


def test_peft_modules_to_save_uses_the_trainable_copy(tiny_gpt2):
    # modules_to_save=["mlp.c_fc"] trains a full copy of c_fc next to the frozen original: TopoLoss shapes the copy
    # the forward uses, names stay base-model names, and with adapters disabled it reads the original again.
    topo = TopoRegularizer(target_modules=["mlp.c_fc"])
    plain_value = topo(tiny_gpt2).item()
    peft_model = get_peft_model(
        copy.deepcopy(tiny_gpt2),
        LoraConfig(r=2, target_modules=["c_attn"], modules_to_save=["mlp.c_fc"], fan_in_fan_out=True),
    )
    assert [layer.sheet.module_name for layer in topo.layers(peft_model)] == C_FC
    for name in C_FC:
        wrapper = peft_model.base_model.model.get_submodule(name)
        with torch.no_grad():
            wrapper.modules_to_save["default"].weight.normal_()
    value = topo(peft_model)
    assert abs(value.item() - plain_value) > 1e-3
    value.backward()
    for name in C_FC:
        wrapper = peft_model.base_model.model.get_submodule(name)
        assert wrapper.modules_to_save["default"].weight.grad is not None
        assert wrapper.original_module.weight.grad is None
    with peft_model.disable_adapter():
        assert topo(peft_model).item() == pytest.approx(plain_value, abs=1e-7)


def test_peft_dora_uses_the_weight_the_layer_applies(tiny_llama, rel_err):
    # DoRA (LoraConfig(use_dora=True)) applies m · (W + ΔW) / ||W + ΔW|| per output unit: TopoLoss must see that
    # weight (the merged model's), not W + ΔW alone.
    topo = TopoRegularizer(target_modules=["mlp.up_proj"])
    peft_model = get_peft_model(copy.deepcopy(tiny_llama), LoraConfig(r=2, target_modules=["up_proj"], use_dora=True))
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(param, std=0.5)
        if "lora_magnitude_vector" in name:
            param.data.mul_(torch.rand_like(param) * 2)
    merged = copy.deepcopy(peft_model).merge_and_unload()
    ids = torch.randint(0, 64, (2, 8))
    with torch.no_grad():  # the merged model applies the same weights as the DoRA model
        assert torch.allclose(peft_model.eval()(ids).logits, merged.eval()(ids).logits, atol=1e-5)
    value = topo(peft_model)
    assert value.item() == pytest.approx(topo(merged).item(), abs=1e-6)

    # Gradients reach A, B and the magnitude m, as through the reference on m · (W + s·B·A) / ||W + s·B·A||
    # (the norm treated as a constant, as PEFT's DoRA does).
    value.backward()
    leaves, ref_terms = [], []
    for i in range(2):
        dora = peft_model.base_model.model.model.layers[i].mlp.up_proj
        a = dora.lora_A["default"].weight.detach().clone().requires_grad_(True)
        b = dora.lora_B["default"].weight.detach().clone().requires_grad_(True)
        m = dora.lora_magnitude_vector["default"].weight.detach().clone().requires_grad_(True)
        combined = dora.base_layer.weight.detach() + dora.scaling["default"] * (b @ a)  # Linear: (out, in)
        applied = (m / combined.norm(dim=1).detach())[:, None] * combined
        ref_terms.append(reference_loss(applied.reshape(10, 12, 32), factor_h=3, factor_w=3))
        leaves.append((dora, a, b, m))
    torch.stack(ref_terms).mean().backward()
    for dora, a, b, m in leaves:
        assert rel_err(dora.lora_A["default"].weight.grad, a.grad) < GRAD_TOL
        assert rel_err(dora.lora_B["default"].weight.grad, b.grad) < GRAD_TOL
        assert rel_err(dora.lora_magnitude_vector["default"].weight.grad, m.grad) < GRAD_TOL


def test_watched_layers_are_logged_not_optimized(tiny_gpt2):
    topo = TopoRegularizer(TopoConfig(target_modules=["h.0.mlp.c_fc"], watch_modules=["h.1.mlp.c_fc", "attn.c_proj"]))
    mean, per_layer = topo.compute(tiny_gpt2)
    assert list(per_layer) == [
        "transformer.h.0.mlp.c_fc",
        "transformer.h.0.attn.c_proj",
        "transformer.h.1.attn.c_proj",
        "transformer.h.1.mlp.c_fc",
    ]
    assert [layer.role for layer in topo.layers(tiny_gpt2)] == ["target", "watch", "watch", "watch"]
    assert mean.item() == pytest.approx(per_layer["transformer.h.0.mlp.c_fc"].item(), abs=1e-7)
    assert all(not per_layer[n].requires_grad for n in per_layer if n != "transformer.h.0.mlp.c_fc")
    mean.backward()
    h = tiny_gpt2.transformer.h
    assert h[0].mlp.c_fc.weight.grad.abs().sum() > 0
    assert h[1].mlp.c_fc.weight.grad is None and h[0].attn.c_proj.weight.grad is None
    # The same as the reference's watch-only layers (scale=None): left out of the optimized mean.
    linears = nn.ModuleDict({"a": nn.Linear(32, 128), "b": nn.Linear(32, 128)})
    ref_value, _ = _reference(linears, ["a", "b"], 3, 3, scales={"b": None})
    ours = TopoRegularizer(TopoConfig(target_modules=["a"], watch_modules=["b"]))
    assert abs(ours(linears).item() - ref_value) <= 1e-6
    roles = {n: d["role"] for n, d in topo.config_for(tiny_gpt2).to_dict()["layers"].items()}
    assert roles == {
        "transformer.h.0.mlp.c_fc": "target",
        "transformer.h.0.attn.c_proj": "watch",
        "transformer.h.1.attn.c_proj": "watch",
        "transformer.h.1.mlp.c_fc": "watch",
    }
    with pytest.raises(ValueError, match="matched by both target_modules and watch_modules"):
        TopoRegularizer(TopoConfig(watch_modules=["mlp.c_fc"])).layers(tiny_gpt2)


def test_compute_without_grad(tiny_gpt2):
    topo = TopoRegularizer(TopoConfig())
    with_grad, per_layer = topo.compute(tiny_gpt2)
    without, per_layer_no_grad = topo.compute(tiny_gpt2, with_grad=False)
    assert with_grad.requires_grad and not without.requires_grad
    assert without.item() == with_grad.item()
    assert all(not v.requires_grad for v in per_layer_no_grad.values())
    with torch.no_grad():
        assert not topo(tiny_gpt2).requires_grad


def test_layers_are_cached_per_model(make_gpt2):
    topo = TopoRegularizer(TopoConfig())
    small, wide = make_gpt2(n_embd=32), make_gpt2(n_embd=48)
    first = topo.layers(small)
    assert topo.layers(small) is first
    assert [layer.sheet.shape for layer in topo.layers(wide)] == [(12, 16, 48), (12, 16, 48)]
    assert [layer.sheet.shape for layer in first] == [(8, 16, 32), (8, 16, 32)]
    assert topo.per_layer(small).keys() == set(C_FC)


def test_config_and_keyword_arguments():
    assert TopoRegularizer(tau=2.0, target_modules=["x"]).config == TopoConfig(tau=2.0, target_modules=["x"])
    with pytest.raises(ValueError, match="either a TopoConfig or its keyword arguments"):
        TopoRegularizer(TopoConfig(), tau=2.0)


def test_config_for_records_every_sheet(tiny_gpt2):
    topo = TopoRegularizer(TopoConfig(tau=3.0, factor_w=2.0))
    config = topo.config_for(tiny_gpt2)
    assert topo.config.layers is None  # the original config is left alone
    assert config.tau == 3.0 and config.factor_w == 2.0
    assert {n: s.shape for n, s in config.layers.items()} == {n: (8, 16, 32) for n in C_FC}
    assert [layer.name for layer in resolve_sheets(tiny_gpt2, config)] == C_FC  # consistent with the model
