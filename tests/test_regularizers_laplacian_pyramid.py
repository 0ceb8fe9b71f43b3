"""The TopoLoss math (hf_topo.regularizers.laplacian_pyramid) against the authors' reference package `topoloss` 0.0.2 and the paper's formula.

Parity: values to 1e-6 in float32; gradients relative to their largest entry to GRAD_TOL (both sides are float32
computations of the same quantity in a different order, so they differ by float32 rounding, ~1e-6 … 1e-5).
"""

import pytest
import torch
import torch.nn.functional as F
from topoloss.losses.laplacian_pyramid import laplacian_pyramid_loss as reference_loss

from hf_topo import blur_sheet, laplacian_pyramid_loss, sheet_cosine_loss
from hf_topo.regularizers import laplacian_pyramid
from hf_topo.regularizers.laplacian_pyramid import INTERPOLATION_MODES, blur_matrices

GRAD_TOL = 2e-5
MODES = ["bilinear", "bicubic", "nearest", "nearest-exact", "area"]


@pytest.fixture(params=["sparse", "dense"])
def kernel(request, monkeypatch):
    """Run a test on each of the two kernels: the sparse blur (chosen for every geometry below by default) and the
    dense separable GEMMs (chosen for wide-support blurs), by moving the threshold between them."""
    threshold = 10**9 if request.param == "sparse" else 0
    monkeypatch.setattr(laplacian_pyramid, "_SPARSE_MAX_ROW_ENTRIES", threshold)
    return request.param


def _value_and_grad(fn, sheet):
    leaf = sheet.detach().clone().requires_grad_(True)
    value = fn(leaf)
    value.backward()
    return value.detach(), leaf.grad


@pytest.mark.parametrize(
    "shape, factor_h, factor_w",
    [
        ((8, 8, 10), 3, 3),  # 64 units: square sheet
        ((48, 64, 768), 3, 3),  # GPT-2 c_fc, 3072 units; large enough to be blurred in several depth chunks
        ((10, 12, 9), 2.5, 1.7),  # 120 units, non-integer factors
        ((10, 12, 9), 1.7, 2.5),
        ((16, 32, 16), 2, 4),  # different factors per axis
        ((24, 32, 7), 1, 3),  # no blur along the height
    ],
)
def test_value_and_gradient_match_the_reference(shape, factor_h, factor_w, rel_err, kernel):
    torch.manual_seed(sum(shape))
    sheet = torch.randn(shape)
    ref_value, ref_grad = _value_and_grad(
        lambda s: reference_loss(s, factor_h=factor_h, factor_w=factor_w, interpolation="bilinear"), sheet
    )
    value, grad = _value_and_grad(lambda s: laplacian_pyramid_loss(s, factor_h=factor_h, factor_w=factor_w), sheet)
    assert value.dtype == torch.float32
    assert abs(value.item() - ref_value.item()) <= 1e-6
    assert rel_err(grad, ref_grad) < GRAD_TOL


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("factors", [(3, 3), (2.5, 1.7)])
def test_interpolation_modes_match_the_reference(mode, factors, rel_err, kernel):
    factor_h, factor_w = factors
    torch.manual_seed(11)
    sheet = torch.randn(12, 15, 8)
    ref_value, ref_grad = _value_and_grad(
        lambda s: reference_loss(s, factor_h=factor_h, factor_w=factor_w, interpolation=mode), sheet
    )
    value, grad = _value_and_grad(
        lambda s: laplacian_pyramid_loss(s, factor_h=factor_h, factor_w=factor_w, interpolation=mode), sheet
    )
    assert abs(value.item() - ref_value.item()) <= 1e-6
    assert 0.05 < value.item() < 1.0  # a real blur, not an identity
    assert rel_err(grad, ref_grad) < GRAD_TOL


def test_prime_sheet_with_a_real_blur_matches_the_paper_formula(paper_formula, rel_err):
    # Reference quirk: its asserts compare factor_h with the sheet *depth* and factor_w with the sheet *height*
    # (its grid is (1, e, h, w) and it checks grid.shape[1], grid.shape[2]), so on a prime 1×p sheet it refuses any
    # factor_w > 1 although only factor_h is constrained by the height of 1. The real comparison is with the formula
    # itself: F.interpolate(scale_factor=(1/φh, 1/φw)) then F.interpolate(size=(h, w)) and F.cosine_similarity, in
    # float64.
    torch.manual_seed(2)
    sheet = torch.randn(1, 17, 5)  # 17 units
    with pytest.raises(AssertionError, match="factor_w"):
        reference_loss(sheet, factor_h=1, factor_w=3)
    expected, expected_grad = _value_and_grad(lambda s: paper_formula(s, 1, 3), sheet.double())
    value, grad = _value_and_grad(lambda s: laplacian_pyramid_loss(s, factor_h=1, factor_w=3), sheet)
    assert expected.item() > 0.05
    assert abs(value.item() - expected.item()) <= 1e-6
    assert rel_err(grad, expected_grad) < GRAD_TOL


@pytest.mark.parametrize("mode", MODES)
def test_units_last_layout_is_the_same_loss(mode, rel_err, kernel):
    # Conv1D weights are (depth, h, w): the loss of that layout equals the loss of the permuted (h, w, depth) sheet.
    torch.manual_seed(3)
    sheet = torch.randn(9, 12, 40)
    units_first_value, units_first_grad = _value_and_grad(lambda s: sheet_cosine_loss(s, True, 2.5, 3, mode), sheet)
    depth_first_value, depth_first_grad = _value_and_grad(
        lambda s: sheet_cosine_loss(s, False, 2.5, 3, mode), sheet.permute(2, 0, 1).contiguous()
    )
    assert abs(units_first_value.item() - depth_first_value.item()) <= 1e-6
    assert rel_err(depth_first_grad.permute(1, 2, 0), units_first_grad) < GRAD_TOL


def test_many_depth_chunks_match_the_formula(paper_formula, rel_err, kernel, monkeypatch):
    # 32×64 units × 150 depth = 307200 elements: two dense depth chunks of uneven size (128 + 22), in both layouts;
    # the sparse kernel's chunks are made 2048 × 64 here, three of them (64 + 64 + 22).
    monkeypatch.setattr(laplacian_pyramid, "_SPARSE_CHUNK_ELEMENTS", 2048 * 64)
    torch.manual_seed(4)
    sheet = torch.randn(32, 64, 150)
    expected, expected_grad = _value_and_grad(lambda s: paper_formula(s, 3, 3), sheet.double())
    value, grad = _value_and_grad(lambda s: sheet_cosine_loss(s, True), sheet)
    assert abs(value.item() - expected.item()) <= 1e-6
    assert rel_err(grad, expected_grad) < GRAD_TOL
    value, grad = _value_and_grad(lambda s: sheet_cosine_loss(s, False), sheet.permute(2, 0, 1).contiguous())
    assert abs(value.item() - expected.item()) <= 1e-6
    assert rel_err(grad.permute(1, 2, 0), expected_grad) < GRAD_TOL


def test_gradient_matches_finite_differences():
    torch.manual_seed(5)
    sheet = torch.randn(6, 9, 4, dtype=torch.float64)
    # float64 input is computed in float32; check d loss / d C against central differences of the float64 formula.
    leaf = sheet.clone().requires_grad_(True)
    laplacian_pyramid_loss(leaf, factor_h=2, factor_w=3).backward()
    torch.manual_seed(6)
    direction = torch.randn_like(sheet)
    eps = 1e-3
    plus = laplacian_pyramid_loss(sheet + eps * direction, factor_h=2, factor_w=3).double()
    minus = laplacian_pyramid_loss(sheet - eps * direction, factor_h=2, factor_w=3).double()
    numeric = (plus - minus) / (2 * eps)
    analytic = (leaf.grad * direction).sum()
    assert leaf.grad.dtype == torch.float64
    assert abs(numeric.item() - analytic.item()) < 1e-3 * max(1.0, abs(analytic.item()))
    assert abs(analytic.item()) > 1e-3


@pytest.mark.parametrize("mode", MODES)
def test_blur_sheet_equals_interpolate(mode):
    torch.manual_seed(6)
    sheet = torch.randn(12, 20, 7)
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    grid = sheet.permute(2, 0, 1).unsqueeze(0)
    down = F.interpolate(grid, scale_factor=(1 / 3, 1 / 2.5), mode=mode, **kwargs)
    expected = F.interpolate(down, size=(12, 20), mode=mode, **kwargs)[0].permute(1, 2, 0)
    blurred = blur_sheet(sheet, factor_h=3, factor_w=2.5, interpolation=mode)
    assert blurred.shape == sheet.shape
    assert torch.allclose(blurred, expected, atol=1e-6)
    assert not torch.allclose(blurred, sheet, atol=1e-2)


def test_blur_matrices():
    down_h, up_h, down_w, up_w = blur_matrices(12, 20, 3, 2.5)
    assert (down_h.shape, up_h.shape, down_w.shape, up_w.shape) == ((4, 12), (12, 4), (8, 20), (20, 8))
    assert down_h.dtype == torch.float32
    for matrix in (down_h, up_h, down_w, up_w):  # bilinear weights sum to one along each output
        assert torch.allclose(matrix.sum(dim=1), torch.ones(matrix.shape[0]), atol=1e-6)
    # Area downsampling by an integer factor averages disjoint groups.
    area_down_h = blur_matrices(12, 12, 3, 3, "area")[0]
    expected = torch.kron(torch.eye(4), torch.full((1, 3), 1 / 3))
    assert torch.allclose(area_down_h, expected, atol=1e-7)
    assert blur_matrices(12, 12, 3, 3, dtype=torch.float64)[0].dtype == torch.float64


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(interpolation="linear"), r"interpolation='linear' is not supported"),
        (dict(factor_h=0.5), r"factor_h=0.5 must be a finite number >= 1"),
        (dict(factor_w=float("nan")), r"factor_w=nan must be a finite number >= 1"),
        (dict(factor_h=13), r"A 12x20 cortical sheet cannot be downsampled by factor_h=13"),
        (dict(factor_w=21), r"cannot be downsampled by factor_h=3.0, factor_w=21"),
    ],
)
def test_bad_blur_arguments(kwargs, message):
    settings = dict(factor_h=3.0, factor_w=3.0, interpolation="bilinear") | kwargs
    with pytest.raises(ValueError, match=message):
        blur_matrices(12, 20, **settings)
    with pytest.raises(ValueError, match=message):
        laplacian_pyramid_loss(torch.randn(12, 20, 3), **settings)


def test_sheet_must_be_3d():
    with pytest.raises(ValueError, match=r"Expected a 3D sheet tensor, got shape \(12, 20\)"):
        sheet_cosine_loss(torch.randn(12, 20))


def test_sheet_exactly_as_large_as_the_factor():
    # F.interpolate sizes its output floor(size · (1/factor)) in double precision, and 49 · (1/49) < 1: a 49-row
    # sheet downsampled by 49 would have 0 rows. The argument check must refuse it with its ValueError (a check on
    # 49/49 = 1 let it through, and F.interpolate then failed with a RuntimeError at the first training step).
    assert 7 * (1 / 7) == 1.0 and 49 * (1 / 49) < 1.0
    assert blur_matrices(7, 7, 7, 7)[0].shape == (1, 7)  # the exact case works
    with pytest.raises(ValueError, match="cannot be downsampled"):
        blur_matrices(49, 2, 49, 1)


def test_factors_cannot_be_swapped_by_positional_calls():
    # The reference's positional order is (cortical_sheet, factor_w, factor_h); ours would be (factor_h, factor_w).
    # Code ported from the reference must not get its factors silently swapped, so they are keyword-only here.
    torch.manual_seed(7)
    sheet = torch.randn(8, 16, 5)
    expected = reference_loss(sheet, 2, 4)  # factor_w=2, factor_h=4
    assert abs(expected.item() - reference_loss(sheet, factor_h=4, factor_w=2).item()) < 1e-7
    assert abs(expected.item() - reference_loss(sheet, factor_h=2, factor_w=4).item()) > 1e-3  # the order matters
    for function in (laplacian_pyramid_loss, blur_sheet):
        with pytest.raises(TypeError, match="positional argument"):
            function(sheet, 2, 4)
    assert abs(laplacian_pyramid_loss(sheet, factor_h=4, factor_w=2).item() - expected.item()) <= 1e-6


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_other_dtypes_are_computed_in_float32(dtype, kernel):
    torch.manual_seed(8)
    sheet = torch.randn(24, 32, 64).to(dtype)
    leaf = sheet.clone().requires_grad_(True)
    value = laplacian_pyramid_loss(leaf)
    expected = laplacian_pyramid_loss(sheet.float())  # the float32 copy of the same (rounded) values
    assert value.dtype == torch.float32
    assert abs(value.item() - expected.item()) <= 1e-6
    value.backward()
    assert leaf.grad.dtype == dtype
    float_leaf = sheet.float().requires_grad_(True)
    laplacian_pyramid_loss(float_leaf).backward()
    assert torch.allclose(leaf.grad.float(), float_leaf.grad, rtol=1e-2, atol=1e-2 * float_leaf.grad.abs().max())


def test_autocast_does_not_lower_the_precision():
    torch.manual_seed(9)
    sheet = torch.randn(24, 32, 64)
    expected = laplacian_pyramid_loss(sheet).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = laplacian_pyramid_loss(sheet)
    assert value.dtype == torch.float32 and abs(value.item() - expected) <= 1e-6


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("units_first", [True, False])
def test_half_precision_weights_match_the_float64_formula(dtype, units_first, kernel, paper_formula, rel_err):
    # A bf16/fp16 weight is read chunk by chunk into float32: the loss equals the float64 formula on the same rounded
    # values, and the gradient (rounded to the weight's dtype once, at the end) equals its float64 gradient.
    torch.manual_seed(10)
    sheet = torch.randn(24, 32, 100).to(dtype)
    expected, expected_grad = _value_and_grad(lambda s: paper_formula(s, 3, 3), sheet.double())
    layout = sheet if units_first else sheet.permute(2, 0, 1).contiguous()
    value, grad = _value_and_grad(lambda s: sheet_cosine_loss(s, units_first), layout)
    grad = grad if units_first else grad.permute(1, 2, 0)
    assert value.dtype == torch.float32 and grad.dtype == dtype
    assert abs(value.item() - expected.item()) <= 1e-6
    resolution = 2**-8 if dtype == torch.bfloat16 else 2**-10  # twice the unit roundoff of the format
    assert rel_err(grad, expected_grad) <= resolution


def test_wide_blurs_take_the_dense_kernel(paper_formula, rel_err):
    # Area downsampling by 8 averages 8 × 8 blocks: 64 entries per row of the sparse blur, above the threshold, so
    # the dense GEMMs run; a narrow bilinear blur of the same sheet takes the sparse kernel. Both match the formula.
    assert laplacian_pyramid._sparse_blur(16, 24, 8.0, 8.0, "area") is None
    assert laplacian_pyramid._sparse_blur(16, 24, 3.0, 3.0, "bilinear").row_entries == 4
    torch.manual_seed(12)
    sheet = torch.randn(16, 24, 6)
    for factor, mode in ((8, "area"), (3, "bilinear")):
        expected, expected_grad = _value_and_grad(
            lambda s, factor=factor, mode=mode: paper_formula(s, factor, factor, mode), sheet.double()
        )
        value, grad = _value_and_grad(
            lambda s, factor=factor, mode=mode: laplacian_pyramid_loss(
                s, factor_h=factor, factor_w=factor, interpolation=mode
            ),
            sheet,
        )
        assert abs(value.item() - expected.item()) <= 1e-6
        assert rel_err(grad, expected_grad) < GRAD_TOL


def test_sparse_blur_is_the_blur_matrix(monkeypatch):
    monkeypatch.setattr(laplacian_pyramid, "_SPARSE_MAX_ROW_ENTRIES", 10**9)  # bicubic here has wide rows
    # The CSR rows of B and of Bᵀ + I, expanded to dense, equal kron(up_h·down_h, up_w·down_w) and its transpose.
    down_h, up_h, down_w, up_w = blur_matrices(10, 12, 2.5, 1.7, "bicubic", dtype=torch.float64)
    dense = torch.kron(up_h @ down_h, up_w @ down_w)
    sparse = laplacian_pyramid._sparse_blur(10, 12, 2.5, 1.7, "bicubic")
    identity = torch.eye(120)
    assert torch.allclose(sparse.apply(identity), dense.float(), atol=1e-6)
    ones = torch.ones(120)
    assert torch.allclose(sparse.apply_transposed(identity, ones, ones), (dense.T + identity).float(), atol=1e-6)
    assert sparse.row_entries == int((dense != 0).sum(1).max()) < 120


def test_supported_modes_are_exactly_the_tested_ones():
    assert set(INTERPOLATION_MODES) == set(MODES)
