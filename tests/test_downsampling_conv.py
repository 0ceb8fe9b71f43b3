"""Downsampling of convolutional sheets (TopoNets A.5 for Conv2d) and of vision models (ResNet, ViT).

The reference for every number is an independent restatement of the paper's procedure with ``F.interpolate`` on the
sheet (no matrices from hf_topo): the reduced weight is the sheet bilinearly downsampled, and the layer's output is
the reduced convolution's output upsampled on the sheet.
"""

import json
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from _scripts import run_script
from torch import nn
from transformers import (
    AutoModelForImageClassification,
    ResNetConfig,
    ResNetForImageClassification,
    ViTConfig,
    ViTForImageClassification,
)

from hf_topo import TopoConfig, TopoRegularizer, downsample_model, parameter_count
from hf_topo.downsampling import TopoDownsampledConv2d

RESNET_TARGETS = r"resnet\.encoder\.stages\.\d+\.layers\.\d+\.(layer\.\d+|shortcut)\.convolution"


def _sheet_downsampled(weight: torch.Tensor, height: int, width: int, factor: float) -> torch.Tensor:
    """The paper's reduced weight: the (h, w, in·k·k) sheet downsampled by ``F.interpolate`` → (h'·w', in, k, k)."""
    out, *kernel = weight.shape
    sheet = weight.reshape(height, width, -1).permute(2, 0, 1)[None]  # (1, d, h, w)
    reduced = F.interpolate(sheet, scale_factor=1 / factor, mode="bilinear", align_corners=False)[0]
    return reduced.permute(1, 2, 0).reshape(-1, *kernel)


def _channels_upsampled(output: torch.Tensor, reduced: tuple[int, int], full: tuple[int, int]) -> torch.Tensor:
    """(batch, h'·w', H, W) → (batch, h·w, H, W) by bilinear upsampling of the channel grid (the paper's steps)."""
    batch, _, height, width = output.shape
    grid = output.reshape(batch, *reduced, height * width).permute(0, 3, 1, 2)  # (batch, H·W, h', w')
    up = F.interpolate(grid, size=full, mode="bilinear", align_corners=False)  # (batch, H·W, h, w)
    return up.permute(0, 2, 3, 1).reshape(batch, full[0] * full[1], height, width)


@pytest.mark.parametrize("stride,padding,dilation", [(1, 1, 1), (2, 1, 1), (1, 2, 2), (2, 0, 1)])
def test_conv_layer_is_the_papers_procedure(stride, padding, dilation):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 64, 3, stride=stride, padding=padding, dilation=dilation).double()
    x = torch.randn(2, 6, 11, 11, dtype=torch.float64)
    small = TopoDownsampledConv2d.from_layer(conv, 2, gain=False)
    assert small.weight.shape == (16, 6, 3, 3) and small.out_channels == 64
    expected_weight = _sheet_downsampled(conv.weight.detach(), 8, 8, 2)
    torch.testing.assert_close(small.weight.detach(), expected_weight, rtol=0, atol=1e-12)
    reduced_out = F.conv2d(x, expected_weight, None, stride, padding, dilation)  # (batch, h'·w', H, W)
    expected = _channels_upsampled(reduced_out, (4, 4), (8, 8)) + conv.bias.detach()[:, None, None]
    torch.testing.assert_close(small(x), expected, rtol=0, atol=1e-12)
    # the same output through the full weight the layer applies (convolution is linear in its weight)
    applied = F.conv2d(x, small.applied_weight(), small.bias, stride, padding, dilation)
    torch.testing.assert_close(small(x), applied, rtol=0, atol=1e-12)


def test_conv_layer_identity_gains_and_gradients():
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 24, 3, padding=1, bias=False).double()  # a 4 × 6 sheet
    x = torch.randn(3, 4, 7, 7, dtype=torch.float64)
    same = TopoDownsampledConv2d.from_layer(conv, 1, gain=False)
    torch.testing.assert_close(same(x), conv(x), rtol=0, atol=1e-12)
    small = TopoDownsampledConv2d.from_layer(conv, (2, 3), gain=True)
    assert (small.reduced_height, small.reduced_width) == (2, 2) and small.bias is None
    # closed-form gains give every output channel back its weight norm
    original_norms = conv.weight.detach().flatten(1).norm(dim=1)
    torch.testing.assert_close(small.applied_weight().flatten(1).norm(dim=1), original_norms)
    blurred = small.applied_weight(gains=False).flatten(1).norm(dim=1)
    torch.testing.assert_close(small.gain.detach(), original_norms / blurred)
    small(x).square().sum().backward()
    assert small.weight.grad is not None and small.gain.grad is not None
    assert small.weight.grad.abs().sum() > 0 and small.gain.grad.abs().sum() > 0


def test_conv_layer_refuses_grouped_and_non_zero_padding():
    with pytest.raises(ValueError, match=r"groups=4: only ungrouped convolutions"):
        TopoDownsampledConv2d.from_layer(nn.Conv2d(16, 16, 3, groups=4), 2)
    with pytest.raises(ValueError, match=r"padding_mode='reflect'"):
        TopoDownsampledConv2d.from_layer(nn.Conv2d(4, 16, 3, padding=1, padding_mode="reflect"), 2)
    with pytest.raises(TypeError, match=r"takes a torch.nn.Conv2d, got Linear"):
        TopoDownsampledConv2d.from_layer(nn.Linear(4, 16), 2)


def _tiny_resnet() -> ResNetForImageClassification:
    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[16, 36], depths=[1, 1], layer_type="basic", num_labels=3)
    model = ResNetForImageClassification(config).eval()
    for module in model.modules():  # batch-norm statistics that matter
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2.0)
    TopoRegularizer(TopoConfig(target_modules=RESNET_TARGETS, tau=1.0)).config_for(model).attach_to(model.config)
    return model


FRESH_LOAD = """
import sys, torch, hf_topo
from transformers import AutoModelForImageClassification
model = AutoModelForImageClassification.from_pretrained(sys.argv[1]).eval()
x, expected = torch.load(sys.argv[2])
assert type(model).__name__ == sys.argv[3], type(model).__name__
assert torch.equal(model(x).logits, expected), (model(x).logits - expected).abs().max()
print("ok")
"""


@pytest.mark.slow  # a fresh process or a training run: the fast lane leaves it to CI
def test_downsampled_resnet_saves_and_loads_in_a_fresh_process(tmp_path):
    model = _tiny_resnet()
    small = downsample_model(model, 2).eval()
    assert type(small).__name__ == "TopoDownsampledResNetForImageClassification"
    record = small.config.topographic_downsampling
    # the 6 residual-block convolutions (both stages change width, so both have a shortcut projection): 16-unit
    # sheets (4 × 4) and 36-unit ones (6 × 6), reduced by 2 × 2
    assert (
        sorted((layer["height"], layer["reduced_height"]) for layer in record["layers"].values())
        == [(4, 2)] * 3 + [(6, 3)] * 3
    )
    assert record["parameter_count"] == parameter_count(small) < parameter_count(model)
    modules = dict(model.named_modules())
    for name in record["layers"]:  # every recorded layer is the paper's procedure on that convolution
        layer, original = small.get_submodule(name), modules[name]
        side = int(original.out_channels**0.5)
        torch.testing.assert_close(
            layer.weight, _sheet_downsampled(original.weight.detach(), side, side, 2), rtol=1e-5, atol=1e-6
        )
    x = torch.randn(2, 3, 32, 32)
    same = downsample_model(model, 1, gains=False).eval()
    torch.testing.assert_close(same(x).logits, model(x).logits, rtol=0, atol=1e-5)
    small.save_pretrained(tmp_path / "small")
    torch.save((x, small(x).logits.detach()), tmp_path / "io.pt")
    result = run_script(
        [sys.executable, "-c", FRESH_LOAD, str(tmp_path / "small"), str(tmp_path / "io.pt"), type(small).__name__]
    )
    assert result.stdout.strip().endswith("ok")


@pytest.mark.slow  # a fresh process or a training run: the fast lane leaves it to CI
def test_downsampled_vit_mlp_saves_and_loads_in_a_fresh_process(tmp_path):
    torch.manual_seed(0)
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        num_labels=3,
    )
    model = ViTForImageClassification(config).eval()
    small = downsample_model(model, 2, target_modules=["mlp.fc1"]).eval()
    assert type(small).__name__ == "TopoDownsampledViTForImageClassification"
    assert small.get_submodule("vit.layers.0.mlp.fc1").weight.shape == (16, 32)  # 8 × 8 sheet → 4 × 4
    x = torch.randn(2, 3, 32, 32)
    small.save_pretrained(tmp_path / "small")
    torch.save((x, small(x).logits.detach()), tmp_path / "io.pt")
    run_script(
        [sys.executable, "-c", FRESH_LOAD, str(tmp_path / "small"), str(tmp_path / "io.pt"), type(small).__name__]
    )


def test_vision_models_refuse_text_fitting():
    with pytest.raises(ValueError, match=r"language models only; ResNetForImageClassification is an image model"):
        downsample_model(_tiny_resnet(), 2, gains="least_squares", calibration_tokens=torch.zeros(1, 4).long())


@pytest.mark.slow
def test_hf_topo_downsample_command_on_a_resnet(tmp_path):
    model = _tiny_resnet()
    model.save_pretrained(tmp_path / "resnet")
    command = os.path.join(os.path.dirname(sys.executable), "hf-topo")
    out = tmp_path / "small"
    result = run_script(
        [command, "downsample", "--model", str(tmp_path / "resnet"), "--factor", "2", "--output_dir", str(out)]
    )
    assert "Downsampled 6 layer(s) by 2 × 2" in result.stdout
    summary = json.loads((out / "downsampling.json").read_text())
    assert summary["parameters"] < summary["parameters_original"]
    loaded = AutoModelForImageClassification.from_pretrained(out).eval()
    expected = downsample_model(model, 2).eval()
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(loaded(x).logits, expected(x).logits, rtol=0, atol=1e-6)
