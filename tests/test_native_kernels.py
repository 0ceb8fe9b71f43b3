"""hf_topo's CPU TopoLoss kernels (``hf_topo/regularizers/csrc``) against dense float64 products, in both weight
layouts, several dtypes and the shapes that exercise their tails (units not a multiple of 8, depths not a multiple of
the 32-column tile or below 8), operators with every row length the kernels special-case, and the depth-chunked walk;
the group operators against float64 autograd; their errors; and their loading in fresh processes: from the build
cache, switched off by ``HF_TOPO_NATIVE_KERNELS=0``, and the fallback when the build fails."""

import os
import subprocess
import sys

import pytest
import torch

from hf_topo.regularizers.grouped import grouped_blur
from hf_topo.regularizers.native import NATIVE_KERNELS_ENV, native_kernels_available, native_kernels_status


@pytest.fixture(scope="module", autouse=True)
def kernels():
    os.environ.pop(NATIVE_KERNELS_ENV, None)
    # No skip: a machine that runs the tests builds the kernels (a C++ compiler and ninja, see the README).
    assert native_kernels_available(), native_kernels_status()


def _dense(offsets: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, units: int) -> torch.Tensor:
    """The float64 ``units × units`` matrix of a bag-layout operator."""
    counts = torch.diff(offsets, append=offsets.new_tensor([indices.numel()]))
    rows = torch.repeat_interleave(torch.arange(units), counts)
    dense = torch.zeros(units, units, dtype=torch.float64)
    dense.index_put_((rows, indices), values.double(), accumulate=True)
    return dense


SHAPES = [
    (8, 12, 10),  # 96 units, one partial depth tile
    (7, 9, 70),  # 63 units (not a multiple of 8), depth tiles 32 + 32 + 6
    (16, 16, 64),  # full tiles only
    (1, 13, 5),  # a prime unit count, depth below 8
    (4, 8, 40),  # depth 40: one full tile and an 8-column tail
]


@pytest.mark.parametrize("height, width, depth", SHAPES)
@pytest.mark.parametrize("units_first", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_sums_and_apply_match_dense_float64(height, width, depth, units_first, dtype):
    torch.manual_seed(height * 100 + depth)
    units = height * width
    blur = grouped_blur(height, width, 3.0 if height > 1 else 1.0, 3.0)
    sheet = torch.randn(units, depth).to(dtype)  # (units, depth), rounded to the dtype
    weight = sheet if units_first else sheet.T.contiguous()
    table = sheet.double()

    sums = torch.ops.hf_topo.sheet_cosine_sums(weight, units_first, blur.offsets, blur.indices, blur.values)
    blurred = _dense(blur.offsets, blur.indices, blur.values, units) @ table
    expected = torch.stack([(table * blurred).sum(1), (table * table).sum(1), (blurred * blurred).sum(1)])
    assert sums.dtype == torch.float32 and sums.shape == (3, units)
    assert ((sums.double() - expected).abs().max() / expected.abs().max()).item() < 1e-5

    values = torch.randn(blur.g_entries)
    applied = torch.ops.hf_topo.sheet_sparse_apply(weight, units_first, blur.g_offsets, blur.g_indices, values)
    expected_apply = _dense(blur.g_offsets, blur.g_indices, values, units) @ table
    assert applied.dtype == dtype and applied.shape == weight.shape and applied.is_contiguous()
    got = applied.double() if units_first else applied.double().T
    # float32 accumulation, then one rounding to the weight's dtype
    tol = {torch.float32: 1e-5, torch.float64: 1e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}[dtype]
    assert ((got - expected_apply).abs().max() / expected_apply.abs().max()).item() < tol


@pytest.mark.parametrize("units_first", [True, False])
def test_results_do_not_depend_on_the_thread_count(units_first):
    torch.manual_seed(0)
    blur = grouped_blur(16, 24)
    weight = torch.randn(384, 100) if units_first else torch.randn(100, 384)  # split across threads
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            sums = torch.ops.hf_topo.sheet_cosine_sums(weight, units_first, blur.offsets, blur.indices, blur.values)
            applied = torch.ops.hf_topo.sheet_sparse_apply(
                weight, units_first, blur.offsets, blur.indices, blur.values
            )
            results.append((sums, applied))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_bad_inputs_are_refused_with_the_reason():
    blur = grouped_blur(8, 12)
    weight = torch.randn(10, 96)
    with pytest.raises(RuntimeError, match="contiguous 2-D weight"):
        torch.ops.hf_topo.sheet_cosine_sums(weight.T, True, blur.offsets, blur.indices, blur.values)
    with pytest.raises(RuntimeError, match="expected 10 offsets"):
        torch.ops.hf_topo.sheet_cosine_sums(weight, True, blur.offsets, blur.indices, blur.values)
    with pytest.raises(RuntimeError, match="int64 offsets"):
        torch.ops.hf_topo.sheet_sparse_apply(weight, False, blur.offsets.int(), blur.indices, blur.values)


_CHILD = """
import logging, sys, torch
logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(message)s")
from hf_topo.regularizers.grouped import grouped_blur, grouped_sheet_cosine_losses, use_native_kernels
from hf_topo.regularizers.native import native_kernels_status
torch.manual_seed(0)
weight = torch.randn(64, 96, requires_grad=True)  # a Conv1D-layout (depth, units) weight
sheets = [weight.view(64, 8, 12)]
print("native", use_native_kernels(sheets), native_kernels_status())
loss = grouped_sheet_cosine_losses(sheets, False, grouped_blur(8, 12))
loss.sum().backward()
print("value %.7f grad %.7f" % (loss.item(), weight.grad.abs().sum().item()))
"""


def _child(**env) -> str:
    environment = {key: value for key, value in os.environ.items() if key != NATIVE_KERNELS_ENV}
    environment.update(env)
    result = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, env=environment, timeout=600, check=True
    )
    return result.stdout


@pytest.mark.slow
def test_fresh_processes_load_disable_and_fall_back():
    cached = _child()  # the build this session made, loaded from the cache
    assert "native True loaded" in cached
    disabled = _child(**{NATIVE_KERNELS_ENV: "0"})
    assert "native False disabled by HF_TOPO_NATIVE_KERNELS=0" in disabled
    # A build that cannot happen (an extensions directory that cannot be created): a warning, then PyTorch operators.
    failed = _child(TORCH_EXTENSIONS_DIR="/proc/hf_topo_cannot_create")
    assert "native False the build failed" in failed
    assert "WARNING hf_topo's CPU TopoLoss kernels are not used" in failed
    values = {line for line in (cached, disabled, failed) for line in line.splitlines() if line.startswith("value")}
    # Same loss to 7 decimals on both paths (the gradient sums agree to float32 rounding).
    assert len({line.split(" grad ")[0] for line in values}) == 1
    grads = [float(line.split(" grad ")[1]) for line in values]
    assert max(grads) - min(grads) <= 1e-5 * max(grads)


_GENERIC_CHILD = """
import sys, torch
from torch.utils import cpp_extension
from hf_topo.regularizers import native
from hf_topo.regularizers.grouped import grouped_blur
# The portable build (no AVX2 flags: what ARM and older x86 machines compile), under its own name.
cpp_extension.load(name="hf_topo_sheet_cosine_generic_test", sources=[str(native._SOURCE)], extra_cflags=["-O2"],
                   is_python_module=False)
worst = 0.0
for height, width, depth in [(7, 9, 70), (8, 12, 64), (1, 13, 5)]:
    for units_first in (True, False):
        torch.manual_seed(depth)
        units = height * width
        blur = grouped_blur(height, width, 3.0 if height > 1 else 1.0, 3.0)
        sheet = torch.randn(units, depth)
        weight = sheet if units_first else sheet.T.contiguous()
        dense_b = torch.zeros(units, units, dtype=torch.float64)
        counts = torch.diff(blur.offsets, append=blur.offsets.new_tensor([blur.indices.numel()]))
        dense_b.index_put_((torch.repeat_interleave(torch.arange(units), counts), blur.indices), blur.values.double(),
                           accumulate=True)
        table = sheet.double()
        blurred = dense_b @ table
        expected = torch.stack([(table * blurred).sum(1), (table * table).sum(1), (blurred * blurred).sum(1)])
        sums = torch.ops.hf_topo.sheet_cosine_sums(weight, units_first, blur.offsets, blur.indices, blur.values)
        worst = max(worst, ((sums.double() - expected).abs().max() / expected.abs().max()).item())
        applied = torch.ops.hf_topo.sheet_sparse_apply(weight, units_first, blur.offsets, blur.indices, blur.values)
        got = applied.double() if units_first else applied.double().T
        worst = max(worst, ((got - blurred).abs().max() / blurred.abs().max()).item())
        # The group operator's loss from the same sums.
        losses, _ = torch.ops.hf_topo.sheet_cosine_forward([weight], units_first, blur.offsets, blur.indices,
                                                           blur.values, 1e-8)
        cosines = expected[0] / (expected[1].sqrt().clamp_min(1e-8) * expected[2].sqrt().clamp_min(1e-8))
        worst = max(worst, abs(losses[0].item() - (1 - cosines.mean().item())))
print("worst", worst)
"""


@pytest.mark.slow
def test_the_portable_build_matches_dense_float64():
    result = subprocess.run(
        [sys.executable, "-c", _GENERIC_CHILD], capture_output=True, text=True, timeout=600, check=True
    )
    worst = float(result.stdout.split("worst")[1])
    assert worst < 1e-5


def _random_operator(units: int, counts: list[int], seed: int):
    """A bag-layout operator whose rows have the given entry counts (cycled), sorted distinct columns per row."""
    generator = torch.Generator().manual_seed(seed)
    offsets, indices = [], []
    for unit in range(units):
        offsets.append(len(indices))
        count = min(counts[unit % len(counts)], units)
        indices.extend(sorted(torch.randperm(units, generator=generator)[:count].tolist()))
    values = torch.randn(len(indices), generator=generator)
    return torch.tensor(offsets), torch.tensor(indices, dtype=torch.long), values


# Row lengths that reach every code path: empty rows, each fixed length 1..8, the general loop, and rows longer than
# the kernels' 64-entry batch (added in several passes).
ENTRY_COUNTS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 37, 64, 65, 70]


@pytest.mark.parametrize("units, depth", [(150, 37), (96, 70), (90, 5)])
@pytest.mark.parametrize("units_first", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_any_sparse_operator_matches_dense_float64(units, depth, units_first, dtype):
    offsets, indices, values = _random_operator(units, ENTRY_COUNTS, seed=units + depth)
    sheet = torch.randn(units, depth, generator=torch.Generator().manual_seed(depth)).to(dtype)
    weight = sheet if units_first else sheet.T.contiguous()
    table = sheet.double()
    operator = _dense(offsets, indices, values, units)
    blurred = operator @ table
    expected = torch.stack([(table * blurred).sum(1), (table * table).sum(1), (blurred * blurred).sum(1)])
    sums = torch.ops.hf_topo.sheet_cosine_sums(weight, units_first, offsets, indices, values)
    assert ((sums.double() - expected).abs().max() / expected.abs().max()).item() < 1e-5
    applied = torch.ops.hf_topo.sheet_sparse_apply(weight, units_first, offsets, indices, values)
    got = applied.double() if units_first else applied.double().T
    assert ((got - blurred).abs().max() / blurred.abs().max()).item() < 1e-5


def test_long_rows_are_walked_in_depth_chunks_with_the_same_result():
    # A 16 × 32 sheet's gradient operator reaches ±66 units: with 2,051 floats per unit the 133 rows in use exceed
    # 1 MiB, so the units-first gradient is computed in depth chunks (960 + 960 + 131 floats).
    blur = grouped_blur(16, 32)
    weight = torch.randn(512, 2051, generator=torch.Generator().manual_seed(3))
    values = torch.randn(blur.g_entries, generator=torch.Generator().manual_seed(4))
    applied = torch.ops.hf_topo.sheet_sparse_apply(weight, True, blur.g_offsets, blur.g_indices, values)
    expected = _dense(blur.g_offsets, blur.g_indices, values, 512) @ weight.double()
    assert ((applied.double() - expected).abs().max() / expected.abs().max()).item() < 1e-5


def _loss_float64(sheets: list[torch.Tensor], blur) -> torch.Tensor:
    """Per-sheet ``1 − mean_u cos(C_u, (BC)_u)`` in float64 with a dense blur (norms clamped like the kernels')."""
    units = sheets[0].shape[0]
    dense = _dense(blur.offsets, blur.indices, blur.values, units)
    losses = []
    for table in sheets:
        blurred = dense @ table
        norm_c = table.norm(dim=1).clamp_min(1e-8)
        norm_b = blurred.norm(dim=1).clamp_min(1e-8)
        losses.append(1 - ((table * blurred).sum(1) / (norm_c * norm_b)).mean())
    return torch.stack(losses)


def _backward_operators(blur) -> tuple[torch.Tensor, ...]:
    """``sheet_cosine_backward``'s operator arguments: ``B`` (bag layout) and ``G``'s pattern and triplets."""
    blur_operator = (blur.offsets, blur.indices, blur.values)
    return (*blur_operator, blur.g_offsets, blur.g_indices, blur.g_entry_offsets, blur.g_source, blur.g_coef)


@pytest.mark.parametrize("units_first", [True, False])
def test_group_operators_match_float64_autograd(units_first):
    torch.manual_seed(11)
    blur = grouped_blur(8, 12)
    depths = [10, 40, 33]  # depths may differ within a group
    tables = [torch.randn(96, depth, dtype=torch.float64) for depth in depths]
    tables[1][5] = 0.0  # a dead unit: its norm is clamped
    weights = [(t if units_first else t.T).float().contiguous() for t in tables]
    losses, stats = torch.ops.hf_topo.sheet_cosine_forward(
        weights, units_first, blur.offsets, blur.indices, blur.values, 1e-8
    )
    leaves = [t.clone().requires_grad_(True) for t in tables]
    expected = _loss_float64(leaves, blur)
    assert losses.shape == (3,) and stats.shape == (3, 3, 96)
    assert (losses.double() - expected.detach()).abs().max().item() < 1e-6
    upstream = torch.tensor([0.5, -2.0, 1.25])
    (expected * upstream.double()).sum().backward()
    args = _backward_operators(blur)
    grads = torch.ops.hf_topo.sheet_cosine_backward(weights, units_first, stats, upstream, *args)
    for grad, leaf, weight in zip(grads, leaves, weights, strict=True):
        assert grad.shape == weight.shape and grad.dtype == torch.float32
        got = grad.double() if units_first else grad.double().T
        assert ((got - leaf.grad).abs().max() / leaf.grad.abs().max()).item() < 1e-5
    # A subset of the sheets (the others need no gradient): their stats rows and upstream values, same gradients.
    subset = torch.ops.hf_topo.sheet_cosine_backward([weights[2]], units_first, stats[[2]], upstream[[2]], *args)
    assert torch.equal(subset[0], grads[2])


@pytest.mark.parametrize(("factor", "interpolation"), [(3.0, "bilinear"), (3.0, "bicubic"), (2.0, "bilinear")])
def test_large_sheet_gradients_match_float64_autograd_at_any_thread_count(factor, interpolation):
    # 32 x 48 = 1536 units: at factor 3 the units-first float32 backward takes the scatter walk (B reads only the 160
    # coarse points; bilinear rows of <= 4 entries in vector steps, bicubic's 16 one float at a time), at factor 2 B
    # reads every unit and the G walk runs; all against float64.
    blur = grouped_blur(32, 48, factor, factor, interpolation)
    torch.manual_seed(12)
    depths = [40, 19, 64]  # vector steps of 16 floats and scalar tails
    tables = [torch.randn(1536, depth, dtype=torch.float64) for depth in depths]
    coarse = int(blur.indices[0])  # a unit B reads, dead: its norm is clamped and its gradient waits for its readers
    tables[0][coarse] = 0.0
    tables[2][7] = 0.0
    weights = [t.float().contiguous() for t in tables]
    _, stats = torch.ops.hf_topo.sheet_cosine_forward(weights, True, blur.offsets, blur.indices, blur.values, 1e-8)
    leaves = [t.clone().requires_grad_(True) for t in tables]
    upstream = torch.tensor([1.5, -0.25, 2.0])
    (_loss_float64(leaves, blur) * upstream.double()).sum().backward()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = torch.ops.hf_topo.sheet_cosine_backward(weights, True, stats, upstream, *_backward_operators(blur))
        torch.set_num_threads(2)
        # One sheet and two threads: its depth is split between them.
        two = torch.ops.hf_topo.sheet_cosine_backward(
            weights[:1], True, stats[:1], upstream[:1], *_backward_operators(blur)
        )
    finally:
        torch.set_num_threads(threads)
    for grad, leaf in zip(one, leaves, strict=True):
        assert ((grad.double() - leaf.grad).abs().max() / leaf.grad.abs().max()).item() < 1e-5
    assert torch.equal(two[0], one[0])  # the same arithmetic per element, however the work is split


def test_long_rows_are_summed_in_chunks_with_the_same_values_at_any_thread_count():
    # Units-first rows longer than 1536 floats are summed in equal chunks (3091 floats: 3 chunks of 1040, 1040 and
    # 1011, the last with a scalar tail); a depth-0 sheet has zero sums. Against float64, 1 vs 2 threads bitwise.
    blur = grouped_blur(8, 12)
    torch.manual_seed(13)
    tables = [torch.randn(96, 3091, dtype=torch.float64), torch.randn(96, 1537, dtype=torch.float64)]
    tables[0][4] = 0.0
    weights = [t.float().contiguous() for t in tables]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        losses, stats = torch.ops.hf_topo.sheet_cosine_forward(
            weights, True, blur.offsets, blur.indices, blur.values, 1e-8
        )
        torch.set_num_threads(2)
        _, stats_two = torch.ops.hf_topo.sheet_cosine_forward(
            weights, True, blur.offsets, blur.indices, blur.values, 1e-8
        )
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(stats, stats_two)
    assert (losses.double() - _loss_float64(tables, blur)).abs().max().item() < 1e-6
    dense = _dense(blur.offsets, blur.indices, blur.values, 96)
    for table, sums in zip(tables, stats, strict=True):
        blurred = dense @ table
        assert torch.allclose(sums[0].double(), (table * blurred).sum(1), rtol=1e-5, atol=1e-4)
        assert torch.allclose(sums[1].double(), table.norm(dim=1).clamp_min(1e-8), rtol=1e-5)
    empty = torch.ops.hf_topo.sheet_cosine_sums(torch.empty(96, 0), True, blur.offsets, blur.indices, blur.values)
    assert torch.equal(empty, torch.zeros(3, 96))


@pytest.mark.parametrize(
    ("height", "width", "factor", "interpolation"),
    [(12, 16, 3.0, "bilinear"), (12, 16, 2.0, "bilinear"), (9, 24, 3.0, "bicubic"), (8, 12, 3.0, "bilinear")],
)
def test_depth_first_forward_through_the_blur_factors_matches_float64(height, width, factor, interpolation):
    # Depth-first float32 sheets with B's separable factors are read one sheet image per depth row (the image walk):
    # a plain subsample (factor 3) or a mix (factor 2) of coarse rows, 4-entry bicubic rows with 3 coarse rows (padded
    # to 8), and a width of 12 (not a multiple of 8: the tile walk). 139 rows: a 128-row task and 11 more (a batch of
    # 8 and a tail of 3). Against float64, against the call without factors, and 1 vs 2 threads bitwise.
    blur = grouped_blur(height, width, factor, factor, interpolation)
    units = height * width
    torch.manual_seed(14)
    tables = [torch.randn(units, 139, dtype=torch.float64), torch.randn(units, 9, dtype=torch.float64)]
    tables[0][3] = 0.0
    weights = [t.T.float().contiguous() for t in tables]
    factors = (blur.down_h, blur.up_h, blur.blur_w)
    forward = torch.ops.hf_topo.sheet_cosine_forward
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        losses, stats = forward(weights, False, blur.offsets, blur.indices, blur.values, 1e-8, *factors)
        torch.set_num_threads(2)
        _, stats_two = forward(weights, False, blur.offsets, blur.indices, blur.values, 1e-8, *factors)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(stats, stats_two)
    assert (losses.double() - _loss_float64(tables, blur)).abs().max().item() < 1e-6
    dense = _dense(blur.offsets, blur.indices, blur.values, units)
    for table, sums in zip(tables, stats, strict=True):
        expected = (table * (dense @ table)).sum(1)
        assert ((sums[0].double() - expected).abs().max() / expected.abs().max()).item() < 1e-5
    _, tiled = forward(weights, False, blur.offsets, blur.indices, blur.values, 1e-8)
    assert torch.allclose(stats, tiled, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("height", "width", "factor", "interpolation"),
    [
        (12, 16, 3.0, "bilinear"),
        (12, 16, 2.0, "bilinear"),
        (9, 24, 3.0, "bicubic"),
        (16, 16, 4.0, "bilinear"),
        (8, 12, 3.0, "bilinear"),
    ],
)
def test_depth_first_backward_through_the_blur_factors_matches_float64(height, width, factor, interpolation):
    # The image walk of the gradient: B^T X through the factors, the rows the coarse grid was taken from waiting
    # for Z. A plain subsample (factor 3: a third of the rows wait), a mix of coarse rows (factor 2: every row
    # waits), bicubic rows of 4 entries and a width of 24 (a half line at the end of each row), factor 4 (even: the
    # coarse grid mixes rows), and a width of 12 (not a multiple of 8: G through the tiles). 139 depth rows (a
    # 128-row task, a batch of 8 and a tail of 3) and 9. Against float64 autograd, against G, 1 vs 2 threads bitwise.
    blur = grouped_blur(height, width, factor, factor, interpolation)
    units = height * width
    torch.manual_seed(15)
    tables = [torch.randn(units, 139, dtype=torch.float64), torch.randn(units, 9, dtype=torch.float64)]
    tables[0][3] = 0.0  # a dead unit: its norm is clamped
    weights = [t.T.float().contiguous() for t in tables]
    factors = (blur.down_h, blur.up_h, blur.blur_w)
    _, stats = torch.ops.hf_topo.sheet_cosine_forward(
        weights, False, blur.offsets, blur.indices, blur.values, 1e-8, *factors
    )
    leaves = [t.clone().requires_grad_(True) for t in tables]
    upstream = torch.tensor([0.75, -1.5])
    (_loss_float64(leaves, blur) * upstream.double()).sum().backward()
    backward = torch.ops.hf_topo.sheet_cosine_backward
    args = _backward_operators(blur)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = backward(weights, False, stats, upstream, *args, *factors)
        torch.set_num_threads(2)
        two = backward(weights, False, stats, upstream, *args, *factors)
    finally:
        torch.set_num_threads(threads)
    for grad, grad_two, leaf, weight in zip(one, two, leaves, weights, strict=True):
        assert grad.shape == weight.shape and grad.dtype == torch.float32 and grad.is_contiguous()
        assert ((grad.double().T - leaf.grad).abs().max() / leaf.grad.abs().max()).item() < 1e-5
        assert torch.equal(grad, grad_two)
    through_g = backward(weights, False, stats, upstream, *args)
    for grad, other in zip(one, through_g, strict=True):
        assert ((grad - other).abs().max() / other.abs().max()).item() < 1e-5


def test_blur_factors_are_checked():
    blur = grouped_blur(12, 16)
    weights = [torch.randn(10, 192)]
    forward = torch.ops.hf_topo.sheet_cosine_forward
    with pytest.raises(RuntimeError, match="all three of the blur's factors"):
        forward(weights, False, blur.offsets, blur.indices, blur.values, 1e-8, blur.down_h, blur.up_h, None)
    other = grouped_blur(16, 12)
    with pytest.raises(RuntimeError, match="describe a 16 x 16 sheet, but the sheets have 192 units"):
        forward(weights, False, blur.offsets, blur.indices, blur.values, 1e-8, other.down_h, other.up_h, blur.blur_w)
    with pytest.raises(RuntimeError, match=r"expected down_h \(h', h\)"):
        forward(weights, False, blur.offsets, blur.indices, blur.values, 1e-8, blur.up_h, blur.up_h, blur.blur_w)
    # The backward checks them alike.
    _, stats = forward(weights, False, blur.offsets, blur.indices, blur.values, 1e-8)
    backward = torch.ops.hf_topo.sheet_cosine_backward
    args = (weights, False, stats, torch.ones(1), *_backward_operators(blur))
    with pytest.raises(RuntimeError, match="all three of the blur's factors"):
        backward(*args, blur.down_h, None, blur.blur_w)
    with pytest.raises(RuntimeError, match="describe a 16 x 16 sheet, but the sheets have 192 units"):
        backward(*args, other.down_h, other.up_h, blur.blur_w)


def test_group_operators_read_weights_of_any_shape_as_their_matrix():
    # A Conv2d-shaped weight (96, 2, 5) is the (96, 10) matrix, a (5, 8, 12) sheet view the (5, 96) one: the same
    # losses and stats, and gradients of the weights' own shapes. A size that is no whole sheet is refused.
    blur = grouped_blur(8, 12)
    torch.manual_seed(16)
    forward, backward = torch.ops.hf_topo.sheet_cosine_forward, torch.ops.hf_topo.sheet_cosine_backward
    factors = (blur.down_h, blur.up_h, blur.blur_w)
    for units_first, shaped in ((True, torch.randn(96, 2, 5)), (False, torch.randn(5, 8, 12))):
        matrix = shaped.reshape(96, -1) if units_first else shaped.reshape(-1, 96)
        extra = () if units_first else factors
        losses, stats = forward([shaped], units_first, blur.offsets, blur.indices, blur.values, 1e-8, *extra)
        losses_m, stats_m = forward([matrix], units_first, blur.offsets, blur.indices, blur.values, 1e-8, *extra)
        assert torch.equal(losses, losses_m) and torch.equal(stats, stats_m)
        args = (stats, torch.tensor([1.5]), *_backward_operators(blur), *extra)
        (grad,), (grad_m,) = backward([shaped], units_first, *args), backward([matrix], units_first, *args)
        assert grad.shape == shaped.shape and torch.equal(grad.reshape(grad_m.shape), grad_m)
    with pytest.raises(RuntimeError, match=r"shape \[7, 2, 5\] \(70 elements\) is not a sheet of 96 units"):
        forward([torch.randn(7, 2, 5)], True, blur.offsets, blur.indices, blur.values, 1e-8)


def test_group_operators_refuse_inconsistent_inputs():
    blur = grouped_blur(8, 12)
    weights = [torch.randn(96, 10), torch.randn(96, 7)]
    forward = torch.ops.hf_topo.sheet_cosine_forward
    with pytest.raises(RuntimeError, match="one number of units"):
        forward([weights[0], torch.randn(95, 10)], True, blur.offsets, blur.indices, blur.values, 1e-8)
    bad = blur.indices.clone()
    bad[3] = 96
    with pytest.raises(RuntimeError, match="index 96 at position 3 is not a unit"):
        forward(weights, True, blur.offsets, bad, blur.values, 1e-8)
    falling = blur.offsets.clone()
    falling[10] = falling[12]
    with pytest.raises(RuntimeError, match="offsets must rise"):
        torch.ops.hf_topo.sheet_sparse_apply(weights[0], True, falling, blur.indices, blur.values)
    _, stats = forward(weights, True, blur.offsets, blur.indices, blur.values, 1e-8)
    args = _backward_operators(blur)
    with pytest.raises(RuntimeError, match=r"stats of shape \(1, 3, 96\)"):
        torch.ops.hf_topo.sheet_cosine_backward(weights[:1], True, stats, torch.ones(1), *args)
    with pytest.raises(RuntimeError, match="grad_output of 2 values"):
        torch.ops.hf_topo.sheet_cosine_backward(weights, True, stats, torch.ones(3), *args)
