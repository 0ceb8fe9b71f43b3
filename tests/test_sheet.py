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
