"""Cortical-sheet geometry (hf_topo.sheet): shapes, layouts per layer type, LoRA effective weights, sheet errors."""

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from topoloss.cortical_sheet.common import find_cortical_sheet_size
from topoloss.cortical_sheet.output import get_cortical_sheet_conv, get_cortical_sheet_linear
from torch import nn
from transformers.pytorch_utils import Conv1D

from hf_topo import CorticalSheet, TopoConfig, TopoRegularizer, as_cortical_sheet, most_square_shape
from hf_topo.sheet import effective_weight, layer_type_name, sheet_for_module, sheet_view


@pytest.mark.parametrize(
    "n_units, expected",
    [(3072, (48, 64)), (768, (24, 32)), (64, (8, 8)), (120, (10, 12)), (7, (1, 7)), (13, (1, 13)), (1, (1, 1))],
)
def test_most_square_shape(n_units, expected):
    assert most_square_shape(n_units) == expected
    ref = find_cortical_sheet_size(n_units)  # the reference package's factorization
    assert (ref.height, ref.width) == expected


@pytest.mark.parametrize("n_units", [0, -4])
def test_most_square_shape_needs_a_unit(n_units):
    with pytest.raises(ValueError, match="at least one unit"):
        most_square_shape(n_units)


def test_sheet_per_layer_type():
    linear = sheet_for_module("fc", nn.Linear(768, 3072))
    assert (linear.layer_type, linear.shape, linear.n_units) == ("Linear", (48, 64, 768), 3072)
    conv1d = sheet_for_module("c_fc", Conv1D(3072, 768))  # GPT-2: nf=3072 outputs, nx=768 inputs, weight (768, 3072)
    assert (conv1d.layer_type, conv1d.shape) == ("Conv1D", (48, 64, 768))
    conv2d = sheet_for_module("conv", nn.Conv2d(3, 64, 3))  # depth = in · k · k
    assert (conv2d.layer_type, conv2d.shape) == ("Conv2d", (8, 8, 27))
    conv2d = sheet_for_module("conv", nn.Conv2d(4, 96, (5, 3)))
    assert conv2d.shape == (8, 12, 60)
    assert sheet_for_module("p", nn.Linear(5, 7)).shape == (1, 7, 5)


def test_fixed_sheet_shape():
    assert sheet_for_module("fc", nn.Linear(16, 128), sheet_shape=(4, 32)).shape == (4, 32, 16)
    assert sheet_for_module("fc", nn.Linear(16, 128), sheet_shape=(16, 8)).shape == (16, 8, 16)  # h > w allowed
    with pytest.raises(
        ValueError, match=r"sheet_shape=\(5, 25\) has 125 positions but 'fc' has 128 output units.*\(8, 16\)"
    ):
        sheet_for_module("fc", nn.Linear(16, 128), sheet_shape=(5, 25))


def test_sheet_shape_through_topoloss_config(tiny_gpt2):
    layers = TopoRegularizer(TopoConfig(sheet_shape=(4, 32), factor_h=2)).layers(tiny_gpt2)
    assert [layer.sheet.shape for layer in layers] == [(4, 32, 32), (4, 32, 32)]
    with pytest.raises(ValueError, match=r"'transformer.h.0.mlp.c_fc' has 128 output units"):
        TopoRegularizer(TopoConfig(sheet_shape=(5, 25))).layers(tiny_gpt2)


def test_unsupported_layer_types():
    with pytest.raises(TypeError, match="Cannot lay out a Embedding on a cortical sheet"):
        sheet_for_module("emb", nn.Embedding(10, 4))
    with pytest.raises(TypeError, match="Cannot lay out a LayerNorm"):
        layer_type_name(nn.LayerNorm(4))
    model = nn.ModuleDict({"emb": nn.Embedding(10, 4), "fc": nn.Linear(4, 9)})
    with pytest.raises(TypeError, match=r"cannot carry a cortical sheet: emb \(Embedding\)"):
        TopoRegularizer(target_modules=["emb"]).layers(model)


def test_sheet_too_small_for_the_factors_names_the_layer():
    model = nn.ModuleDict({"proj": nn.Linear(4, 13)})  # prime: 1×13 sheet, cannot be downsampled 3× in height
    with pytest.raises(ValueError, match=r"Layer 'proj' \(13 units\): A 1x13 cortical sheet cannot be downsampled"):
        TopoRegularizer(target_modules=["proj"]).layers(model)
    # With φh = 1 the same sheet is fine.
    layers = TopoRegularizer(TopoConfig(target_modules=["proj"], factor_h=1)).layers(model)
    assert layers[0].sheet.shape == (1, 13, 4)
    with pytest.raises(ValueError, match=r"Layer 'proj' \(16 units\): A 4x4 cortical sheet"):
        TopoRegularizer(TopoConfig(target_modules=["proj"], factor_w=5)).layers(
            nn.ModuleDict({"proj": nn.Linear(4, 16)})
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(factor_h=0.5), r"factor_h=0.5 must be a finite number >= 1"),
        (dict(factor_w=0.99), r"factor_w=0.99 must be a finite number >= 1"),
        (dict(factor_w=float("inf")), r"factor_w=inf must be a finite number >= 1"),
        (dict(tau=-0.5), r"tau=-0.5 must be a finite number >= 0"),
        (dict(tau=float("nan")), r"tau=nan must be a finite number >= 0"),
    ],
)
def test_bad_factors_and_tau(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TopoConfig(**kwargs)


def test_sheet_layouts_match_the_reference():
    torch.manual_seed(0)
    linear = nn.Linear(9, 120)
    ref = get_cortical_sheet_linear(linear, strict_layer_type=True)
    assert torch.equal(as_cortical_sheet(linear), ref)
    view, units_first = sheet_view(linear.weight, sheet_for_module("fc", linear))
    assert units_first and view.data_ptr() == linear.weight.data_ptr()  # a view, not a copy

    conv = nn.Conv2d(3, 30, 3)
    assert torch.equal(as_cortical_sheet(conv), get_cortical_sheet_conv(conv, strict_layer_type=True))

    conv1d = Conv1D(120, 9)  # weight (9, 120): unit u is column u
    conv1d.weight.data.copy_(linear.weight.data.T)
    assert torch.equal(as_cortical_sheet(conv1d), ref)
    view, units_first = sheet_view(conv1d.weight, sheet_for_module("c_fc", conv1d))
    assert not units_first and view.shape == (9, 10, 12) and view.data_ptr() == conv1d.weight.data_ptr()
    assert torch.equal(view.permute(1, 2, 0), ref)


def test_corticalsheet_dict_round_trip():
    sheet = CorticalSheet("transformer.h.0.mlp.c_fc", "Conv1D", 48, 64, 768)
    data = sheet.to_dict()
    assert data == {"layer_type": "Conv1D", "height": 48, "width": 64, "depth": 768, "units": "output"}
    assert CorticalSheet.from_dict("transformer.h.0.mlp.c_fc", data) == sheet
    del data["units"]  # a record of schema version 1 or 2: an output sheet
    assert CorticalSheet.from_dict("transformer.h.0.mlp.c_fc", data) == sheet
    assert sheet.n_units == 3072 and sheet.shape == (48, 64, 768)
    with pytest.raises(ValueError, match=r"Sheet metadata of layer 'x' lacks the key 'depth'"):
        CorticalSheet.from_dict("x", {"layer_type": "Linear", "height": 1, "width": 2})


def test_lora_layers_are_seen_through(tiny_gpt2):
    peft_model = get_peft_model(
        copy.deepcopy(tiny_gpt2), LoraConfig(r=2, target_modules=["c_fc"], fan_in_fan_out=True)
    )
    lora_fc = peft_model.base_model.model.transformer.h[0].mlp.c_fc
    assert layer_type_name(lora_fc) == "Conv1D"
    assert sheet_for_module("c_fc", lora_fc).shape == (8, 16, 32)
    # lora_B starts at zero: the effective weight is the base weight.
    assert torch.equal(effective_weight(lora_fc), lora_fc.base_layer.weight)
    torch.nn.init.normal_(lora_fc.lora_B["default"].weight, std=0.5)
    delta = (lora_fc.lora_B["default"].weight @ lora_fc.lora_A["default"].weight).T * lora_fc.scaling["default"]
    assert delta.abs().max() > 0.01
    assert torch.allclose(effective_weight(lora_fc), lora_fc.base_layer.weight + delta, atol=1e-6)
    # Disabled adapters add nothing.
    with peft_model.disable_adapter():
        assert torch.equal(effective_weight(lora_fc), lora_fc.base_layer.weight)


# ---- layer kinds (hf_topo.sheet.register_layer_kind): the built-ins, topoloss main's cases, one from outside ----------


class KernelLinear(nn.Module):
    """A Linear-like layer that keeps its (out, in) weight as `kernel` (topoloss main's custom_weight_attribute_name)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(d_out, d_in) * 0.1)
        self.bias = nn.Parameter(torch.zeros(d_out))

    def forward(self, x):
        return x @ self.kernel.T + self.bias


class KernelConv(nn.Module):
    """A convolution that keeps its (out, in, kh, kw) filters as `filters`."""

    def __init__(self, c_in: int, c_out: int, k: int):
        super().__init__()
        self.filters = nn.Parameter(torch.randn(c_out, c_in, k, k))

    def forward(self, x):
        return nn.functional.conv2d(x, self.filters)


@pytest.fixture
def kernel_kinds():
    from hf_topo.sheet import register_layer_kind, unregister_layer_kind

    register_layer_kind("KernelLinear", KernelLinear, weight_attribute="kernel", input_sheet=True, bias_map=True)
    register_layer_kind("KernelConv", KernelConv, weight_attribute="filters", channels_first_activations=True)
    yield
    unregister_layer_kind("KernelLinear")
    unregister_layer_kind("KernelConv")


def _reference_value_and_grad(param, sheet, factor_h, factor_w):
    """topoloss 0.0.2's loss of ``sheet`` (a function of ``param``), with the gradient it sends to ``param``."""
    from topoloss.losses.laplacian_pyramid import laplacian_pyramid_loss as reference_loss

    param.grad = None
    value = reference_loss(sheet, factor_w=factor_w, factor_h=factor_h)
    value.backward()
    grad = param.grad.clone()
    param.grad = None
    return value.item(), grad


def _our_value_and_grad(model, names, param, factor_h, factor_w):
    param.grad = None
    value = TopoRegularizer(TopoConfig(target_modules=names, factor_h=factor_h, factor_w=factor_w))(model)
    value.backward()
    grad = param.grad.clone()
    param.grad = None
    return value.item(), grad


def test_builtin_layer_kinds():
    from hf_topo.sheet import get_layer_kind, layer_kinds

    assert [kind.name for kind in layer_kinds()][:4] == ["Linear", "Conv1D", "Conv2d", "RNN"]
    assert [k.name for k in layer_kinds() if k.input_sheet] == ["Linear", "Conv1D"]
    assert get_layer_kind("RNN").weight_attribute == "weight_hh_l0"
    assert sheet_for_module("rnn", nn.RNN(12, 48)).to_dict() == {
        "layer_type": "RNN",
        "height": 6,
        "width": 8,
        "depth": 48,
        "units": "output",
    }


def test_rnn_weight_hh_matches_topoloss_main(rel_err):
    """topoloss main: `LaplacianPyramid(..., custom_weight_attribute_name="weight_hh_l0")` on an nn.RNN lays the
    recurrent weight (hidden, hidden) out as `weight.reshape(h, w, hidden)` over the most-square sheet."""
    torch.manual_seed(4)
    model = nn.ModuleDict({"rnn": nn.RNN(12, 48)})
    weight = model["rnn"].weight_hh_l0
    ref_value, ref_grad = _reference_value_and_grad(weight, weight.reshape(6, 8, 48), 2, 2)
    value, grad = _our_value_and_grad(model, ["rnn"], weight, 2, 2)
    assert abs(value - ref_value) <= 1e-6 and value > 0.05
    assert rel_err(grad, ref_grad) < 1e-4
    with pytest.raises(ValueError, match="'rnn' is a RNN layer: an input sheet is defined for Linear and Conv1D"):
        sheet_for_module("rnn", model["rnn"], units="input")


def test_custom_weight_attributes_match_topoloss_main(kernel_kinds, rel_err):
    """topoloss main's custom_weight_attribute_name: a 2D weight `(out, in)` is `reshape(h, w, in)`, a 4D one
    `rearrange("(h w) i kh kw -> h w (i kh kw)")`."""
    from einops import rearrange

    torch.manual_seed(5)
    model = nn.ModuleDict({"fc": KernelLinear(20, 96), "conv": KernelConv(3, 30, 3)})
    kernel, filters = model["fc"].kernel, model["conv"].filters
    ref_fc = _reference_value_and_grad(kernel, kernel.reshape(8, 12, 20), 2.5, 1.7)
    ours_fc = _our_value_and_grad(model, ["fc"], kernel, 2.5, 1.7)
    sheet = rearrange(filters, "(h w) i kh kw -> h w (i kh kw)", h=5, w=6)
    ref_conv = _reference_value_and_grad(filters, sheet, 2, 2)
    ours_conv = _our_value_and_grad(model, ["conv"], filters, 2, 2)
    for (value, grad), (ref_value, ref_grad) in ((ours_fc, ref_fc), (ours_conv, ref_conv)):
        assert abs(value - ref_value) <= 1e-6 and value > 0.05
        assert rel_err(grad, ref_grad) < 1e-4
    layers = TopoRegularizer(TopoConfig(target_modules=["fc", "conv"], factor_h=2, factor_w=2)).layers(model)
    assert [(layer.sheet.layer_type, layer.sheet.shape) for layer in layers] == [
        ("KernelLinear", (8, 12, 20)),
        ("KernelConv", (5, 6, 27)),
    ]
    # The input sheet of a 2D custom weight: (out, h·w) -> (h, w, out), as topoloss's LaplacianPyramidOnInput.
    assert sheet_for_module("fc", model["fc"], units="input").shape == (4, 5, 96)


def test_layer_kind_registered_from_outside_trains_through_topo_trainer(tmp_path, kernel_kinds, token_dataset):
    """GPT-2 whose mlp.c_fc layers are KernelLinear: TopoLoss trains them through the real TopoTrainer, and the logged
    topo_loss is the reference's on the kernels the step starts from (the initial ones, then the saved checkpoint's)."""
    from _training import training_args
    from conftest import build_gpt2
    from safetensors.torch import load_file
    from topoloss.losses.laplacian_pyramid import laplacian_pyramid_loss as reference_loss

    from hf_topo import TopoTrainer

    model = build_gpt2()
    for block in model.transformer.h:
        block.mlp.c_fc = KernelLinear(32, 128)
    names = [f"transformer.h.{i}.mlp.c_fc.kernel" for i in range(2)]
    initial = {n: p.detach().clone() for n, p in model.named_parameters() if n in names}

    def expected(kernels):
        return sum(reference_loss(kernels[n].reshape(8, 16, 32), factor_w=3, factor_h=3).item() for n in names) / 2

    args = training_args(tmp_path, max_steps=2, save_strategy="steps", save_steps=1)
    trainer = TopoTrainer(model=model, args=args, train_dataset=token_dataset(64))
    trainer.train()
    logs = {h["step"]: h for h in trainer.state.log_history if "loss" in h}
    assert logs[1]["topo_loss"] == pytest.approx(expected(initial), rel=1e-5)
    saved = load_file(str(tmp_path / "checkpoint-1" / "model.safetensors"))
    assert logs[2]["topo_loss"] == pytest.approx(expected(saved), rel=1e-5)
    assert not torch.equal(saved[names[0]], initial[names[0]])  # the kernels were trained
    record = model.config.topography["layers"]
    assert {name: sheet["layer_type"] for name, sheet in record.items()} == {
        "transformer.h.0.mlp.c_fc": "KernelLinear",
        "transformer.h.1.mlp.c_fc": "KernelLinear",
    }


def test_layer_kind_registration_errors(kernel_kinds):
    from hf_topo.sheet import LayerKind, get_layer_kind, register_layer_kind

    with pytest.raises(ValueError, match=r"'Linear' is already registered \(torch.nn.Linear\)"):
        register_layer_kind("Linear", KernelConv)
    with pytest.raises(ValueError, match=r"\['Linear'\] already belong to the layer kind 'Linear'"):
        register_layer_kind("MyLinear", nn.Linear)
    with pytest.raises(TypeError, match="must be nn.Module classes"):
        register_layer_kind("Tensorish", torch.Tensor)
    with pytest.raises(ValueError, match="other than 'Activations'"):
        register_layer_kind(LayerKind("Activations", (KernelLinear,)))
    with pytest.raises(ValueError, match=r"No layer kind named 'Dense' is registered .*register_layer_kind"):
        get_layer_kind("Dense")
    with pytest.raises(ValueError, match="No layer kind named 'Dense'"):
        sheet_view(torch.zeros(4, 4), CorticalSheet("x", "Dense", 2, 2, 4))
    broken = KernelLinear(4, 8)
    del broken.kernel
    with pytest.raises(TypeError, match="has no tensor attribute 'kernel'.*weight_attribute="):
        sheet_for_module("broken", broken)
    with pytest.raises(TypeError, match=r"Cannot lay out a Embedding .*register_layer_kind"):
        layer_type_name(nn.Embedding(4, 4))
