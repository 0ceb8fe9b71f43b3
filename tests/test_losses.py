"""TopoLoss math (hf_topo.losses, hf_topo.sheet) against the authors' reference package `topoloss` 0.0.2."""

import pytest
import torch
import torch.nn.functional as F
from topoloss import LaplacianPyramid
from topoloss import TopoLoss as ReferenceTopoLoss
from torch import nn
from transformers.pytorch_utils import Conv1D

from hf_topo import TopoConfig, TopoLoss, blur_sheet, laplacian_pyramid_loss, most_square_shape


def _reference(layer: nn.Module, factor_h, factor_w, mode="bilinear"):
    model = nn.Sequential(layer)
    loss = ReferenceTopoLoss([LaplacianPyramid("0", factor_h=factor_h, factor_w=factor_w, interpolation=mode)])
    value = loss.compute(model)
    value.backward()
    grad = layer.weight.grad.clone()
    layer.weight.grad = None
    return value.item(), grad


def _ours(layer: nn.Module, factor_h, factor_w, mode="bilinear"):
    config = TopoConfig(target_modules=["0"], factor_h=factor_h, factor_w=factor_w, interpolation=mode)
    value = TopoLoss(config)(nn.Sequential(layer))
    value.backward()
    grad = layer.weight.grad.clone()
    layer.weight.grad = None
    return value.item(), grad


def _assert_grad_close(ours, ref, tol=2e-5):
    scale = ref.abs().max()
    assert scale > 0
    assert ((ours - ref).abs().max() / scale).item() < tol


@pytest.mark.parametrize(
    "units, inputs, factor_h, factor_w",
    [
        (64, 10, 3, 3),  # square sheet 8×8
        (3072, 768, 3, 3),  # GPT-2 c_fc: 48×64
        (120, 9, 2.5, 1.7),  # non-square sheet 10×12, non-integer factors
        (512, 16, 2, 4),  # 16×32, different factors per axis
        (13, 6, 1, 1),  # prime unit count: 1×13 (the reference accepts only factors ≤ 1 there, see below)
    ],
)
def test_linear_parity_with_reference(units, inputs, factor_h, factor_w):
    torch.manual_seed(units)
    layer = nn.Linear(inputs, units)
    ref_value, ref_grad = _reference(layer, factor_h, factor_w)
    value, grad = _ours(layer, factor_h, factor_w)
    assert abs(value - ref_value) <= 1e-6
    if ref_value > 1e-4:  # identity blur (prime case) has a zero loss and a gradient of pure rounding noise
        _assert_grad_close(grad, ref_grad)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "nearest", "nearest-exact", "area"])
def test_interpolation_modes_match_reference(mode):
    torch.manual_seed(1)
    layer = nn.Linear(8, 144)
    ref_value, ref_grad = _reference(layer, 3, 3, mode)
    value, grad = _ours(layer, 3, 3, mode)
    assert abs(value - ref_value) <= 1e-6
    _assert_grad_close(grad, ref_grad)


@pytest.mark.parametrize("out_channels, in_channels, kernel", [(64, 3, 3), (96, 4, 5), (30, 2, 1)])
def test_conv2d_parity_with_reference(out_channels, in_channels, kernel):
    torch.manual_seed(out_channels)
    layer = nn.Conv2d(in_channels, out_channels, kernel)
    ref_value, ref_grad = _reference(layer, 2, 2)
    value, grad = _ours(layer, 2, 2)
    assert abs(value - ref_value) <= 1e-6
    _assert_grad_close(grad, ref_grad)


def test_prime_unit_count_with_real_blur_matches_the_formula():
    # The reference's own checks compare factor_h with the sheet depth and factor_w with its height, so on a 1×p
    # sheet it refuses factor_w > 1. Check against the paper's formula written out with F.interpolate in float64.
    torch.manual_seed(2)
    weight = torch.randn(17, 5, dtype=torch.float64)  # 17 units → sheet 1×17
    grid = weight.reshape(1, 17, 5).permute(2, 0, 1).unsqueeze(0)
    down = F.interpolate(grid, scale_factor=(1 / 1, 1 / 3), mode="bilinear")
    up = F.interpolate(down, size=(1, 17), mode="bilinear")
    expected = 1 - F.cosine_similarity(grid[0].reshape(5, -1).T, up[0].reshape(5, -1).T, dim=-1).mean()
    value = laplacian_pyramid_loss(weight.float().reshape(1, 17, 5), factor_h=1, factor_w=3)
    assert abs(value.item() - expected.item()) <= 1e-6


def test_conv1d_orientation_is_over_outputs():
    torch.manual_seed(3)
    linear = nn.Linear(32, 96)
    conv = Conv1D(96, 32)  # GPT-2 layout: weight (in, out)
    conv.weight.data.copy_(linear.weight.data.T)
    ref_value, ref_grad = _reference(linear, 3, 3)
    value, grad = _ours(conv, 3, 3)
    assert abs(value - ref_value) <= 1e-6
    _assert_grad_close(grad.T, ref_grad)


def test_bf16_weights_are_computed_in_float32():
    torch.manual_seed(4)
    layer = nn.Linear(64, 768).to(torch.bfloat16)
    value = TopoLoss(target_modules=["0"])(nn.Sequential(layer))
    assert value.dtype == torch.float32
    expected = laplacian_pyramid_loss(layer.weight.detach().float().reshape(24, 32, 64))
    assert abs(value.item() - expected.item()) <= 1e-6
    value.backward()
    assert layer.weight.grad.dtype == torch.bfloat16 and layer.weight.grad.abs().sum() > 0


def test_autocast_does_not_lower_precision():
    torch.manual_seed(7)
    layer = nn.Linear(64, 768)
    topo = TopoLoss(target_modules=["0"])
    expected = topo(nn.Sequential(layer)).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = topo(nn.Sequential(layer))
    assert value.dtype == torch.float32 and abs(value.item() - expected) <= 1e-6


def test_blur_equals_interpolate():
    torch.manual_seed(5)
    sheet = torch.randn(12, 20, 7)
    grid = sheet.permute(2, 0, 1).unsqueeze(0)
    expected = F.interpolate(
        F.interpolate(grid, scale_factor=(1 / 3, 1 / 3), mode="bilinear"), size=(12, 20), mode="bilinear"
    )
    assert torch.allclose(blur_sheet(sheet), expected[0].permute(1, 2, 0), atol=1e-6)


def test_topoloss_decreases_when_optimized():
    torch.manual_seed(6)
    layer = nn.Linear(16, 256)
    topo = TopoLoss(target_modules=["0"])
    model = nn.Sequential(layer)
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-2)
    start = topo(model).item()
    for _ in range(30):
        optimizer.zero_grad()
        topo(model).backward()
        optimizer.step()
    assert topo(model).item() < 0.5 * start


def test_most_square_shape():
    assert most_square_shape(3072) == (48, 64)
    assert most_square_shape(768) == (24, 32)
    assert most_square_shape(64) == (8, 8)
    assert most_square_shape(7) == (1, 7)
    assert most_square_shape(1) == (1, 1)
    with pytest.raises(ValueError, match="at least one unit"):
        most_square_shape(0)
