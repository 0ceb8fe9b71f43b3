"""Moran's I and smoothness against closed forms and a brute-force reference written here (a second, independent test
of each formula; ``test_analysis.py`` holds the first).

Moran's I in hf_topo uses **queen** neighbours (the 8 around a unit, clipped at the border, weight 1) and
``I = (N / W) Σ_ij w_ij x'_i x'_j / Σ_i x'_i²``. For a ±1 map with zero mean this is
``(Σ_like − Σ_unlike) / W`` over ordered neighbour pairs, which gives the closed forms below:

* checkerboard on ``H × W`` (``HW`` even): rook pairs (``R = 2[H(W−1) + W(H−1)]``) differ, diagonal pairs
  (``D = 4(H−1)(W−1)``) agree: ``I = (D − R) / (D + R)``, ``−1/(2n − 1)`` on an ``n × n`` sheet. (With rook
  neighbours it would be −1; the queen convention makes it only slightly negative.)
* vertical stripes (columns alternate, ``W`` even): vertical pairs agree, horizontal and diagonal ones differ.
* a ``1 × n`` ramp ``0, 1, …, n−1``: ``I = n/(n−1) · P/S`` with ``S = n(n²−1)/12`` and
  ``P = S − ((n−1)/2)² − (n−1)/2`` (``Σ y_i y_{i+1}`` of the centred ramp); ``1/3`` for ``n = 4``.
* a ``2 × 2`` (or ``1 × 2``) sheet: every unit neighbours every other, so ``I = −1/(N − 1)`` for any map.
* the mean of ``I`` over all ``N!`` layouts of one map is ``−1/(N − 1)`` (Cliff & Ord).
"""

import itertools
import math

import numpy as np
import pytest
import torch

from hf_topo.analysis.smoothness import correlation_vs_distance, smoothness
from hf_topo.analysis.spatial import mean_morans_i, morans_i, morans_i_permutation_test

# ---- Moran's I ------------------------------------------------------------------------------------------------------


def _brute_force_morans_i(grid: np.ndarray) -> float:
    """Moran's I with queen neighbours, by an explicit loop over every ordered pair of neighbouring cells."""
    height, width = grid.shape
    x = grid.astype(np.float64) - grid.mean()
    cross, weight = 0.0, 0
    for r, c in itertools.product(range(height), range(width)):
        for dr, dc in itertools.product((-1, 0, 1), repeat=2):
            rr, cc = r + dr, c + dc
            if (dr, dc) != (0, 0) and 0 <= rr < height and 0 <= cc < width:
                cross += x[r, c] * x[rr, cc]
                weight += 1
    return grid.size / weight * cross / float((x**2).sum())


def _checkerboard(height, width):
    return torch.tensor([[(-1.0) ** (r + c) for c in range(width)] for r in range(height)])


@pytest.mark.parametrize("height, width", [(8, 8), (4, 6), (2, 8), (5, 4)])
def test_checkerboard(height, width):
    rook = 2 * (height * (width - 1) + width * (height - 1))
    diagonal = 4 * (height - 1) * (width - 1)
    expected = (diagonal - rook) / (diagonal + rook)
    assert float(morans_i(_checkerboard(height, width))) == pytest.approx(expected, abs=1e-12)
    if height == width:
        assert expected == pytest.approx(-1 / (2 * height - 1), abs=1e-15)


@pytest.mark.parametrize("height, width", [(3, 4), (6, 8)])
def test_vertical_stripes(height, width):
    stripes = torch.tensor([[(-1.0) ** c for c in range(width)] for _ in range(height)])
    vertical, horizontal = 2 * width * (height - 1), 2 * height * (width - 1)
    diagonal = 4 * (height - 1) * (width - 1)
    expected = (vertical - horizontal - diagonal) / (vertical + horizontal + diagonal)
    assert float(morans_i(stripes)) == pytest.approx(expected, abs=1e-12)
    # horizontal stripes on the transposed sheet: the same pairs agree and differ
    assert float(morans_i(stripes.T.contiguous())) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("n", [2, 4, 7, 16])
def test_a_one_row_ramp(n):
    s = n * (n * n - 1) / 12
    p = s - ((n - 1) / 2) ** 2 - (n - 1) / 2
    expected = n / (n - 1) * p / s
    ramp = torch.arange(n, dtype=torch.float64).view(1, n)
    assert float(morans_i(ramp)) == pytest.approx(expected, abs=1e-12)
    assert float(morans_i(3.0 * ramp - 5.0)) == pytest.approx(expected, abs=1e-12)  # invariant to scale and shift
    if n == 4:
        assert expected == pytest.approx(1 / 3)
    if n == 2:
        assert expected == pytest.approx(-1.0)


def test_every_map_on_a_sheet_where_all_units_are_neighbours():
    maps = torch.randn(5, 2, 2, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(morans_i(maps), torch.full((5,), -1 / 3, dtype=torch.float64), atol=1e-12)


def test_two_dimensional_ramps_and_random_maps_equal_the_brute_force_reference():
    generator = torch.Generator().manual_seed(1)
    ramp = torch.arange(6, dtype=torch.float64).repeat(5, 1)  # 5 × 6, rising along the columns
    maps = [ramp, ramp.T.contiguous(), torch.randn(7, 9, generator=generator, dtype=torch.float64)]
    maps.append(torch.randn(4, 4, generator=generator, dtype=torch.float64).cumsum(0).cumsum(1))  # a smooth random map
    for grid in maps:
        assert float(morans_i(grid)) == pytest.approx(_brute_force_morans_i(grid.numpy()), abs=1e-12)
    assert float(morans_i(ramp)) > 0.5  # a ramp is smooth


def test_the_mean_over_all_layouts_is_minus_one_over_n_minus_one():
    values = torch.tensor([0.3, -1.2, 2.0, 0.0, 0.7, 5.0], dtype=torch.float64)
    layouts = torch.tensor(list(itertools.permutations(range(6))))  # all 720 layouts of a 2 × 3 sheet
    maps = values[layouts].view(-1, 2, 3)
    assert float(morans_i(maps).mean()) == pytest.approx(-1 / 5, abs=1e-12)
    test = morans_i_permutation_test(values.view(2, 3), n_permutations=50, seed=0)
    assert test.expected == pytest.approx(-1 / 5)


def test_a_constant_map_has_no_morans_i():
    maps = torch.stack([torch.full((4, 5), 3.0), _checkerboard(4, 5)])
    values = morans_i(maps)
    assert math.isnan(float(values[0])) and not math.isnan(float(values[1]))
    # the mean over samples skips the constant map: it is the checkerboard's value alone
    assert mean_morans_i(maps.view(2, 20), (4, 5)) == pytest.approx(float(values[1]), abs=1e-12)
    with pytest.raises(ValueError, match="Every activation map is constant"):
        mean_morans_i(torch.ones(3, 20), (4, 5))
    with pytest.raises(ValueError, match="Every map is constant"):
        morans_i_permutation_test(torch.ones(2, 4, 5), n_permutations=5)


def test_a_smooth_map_is_significant_and_a_checkerboard_is_not():
    ramp = torch.arange(8, dtype=torch.float64).repeat(8, 1) + torch.arange(8, dtype=torch.float64).view(8, 1)
    smooth = morans_i_permutation_test(ramp, n_permutations=99, seed=0)
    assert smooth.p_value == pytest.approx(1 / 100)  # no shuffled layout is as autocorrelated
    board = morans_i_permutation_test(_checkerboard(8, 8), n_permutations=99, seed=0)
    assert board.value == pytest.approx(-1 / 15) and board.p_value > 0.5  # below chance: not significant


# ---- smoothness -----------------------------------------------------------------------------------------------------


def _cosine_units(n_units: int, omega: float, n_samples: int = 12) -> torch.Tensor:
    """``(n_samples, n_units)`` activations whose Pearson correlation is exactly ``cos(ω (i − j))``: unit ``i`` is
    ``cos(ω i) a + sin(ω i) b`` with ``a``, ``b`` zero-mean, orthogonal and of equal norm over the samples."""
    t = torch.arange(n_samples, dtype=torch.float64) * 2 * math.pi / n_samples
    a, b = torch.cos(t), torch.sin(t)
    i = torch.arange(n_units, dtype=torch.float64)
    return torch.cos(omega * i)[None, :] * a[:, None] + torch.sin(omega * i)[None, :] * b[:, None]


def test_correlation_falling_as_a_cosine_of_distance_on_a_one_row_sheet():
    # 1 × 11 sheet: distances 1..10, distance d held by 11 − d pairs. 9 bins with edges 1, 2, ..., 10: bins 0-7 hold
    # d = 1..8, the last one d = 9 and 10 (the diagonal falls in the last bin).
    omega = math.pi / 10
    r = {d: math.cos(omega * d) for d in range(1, 11)}
    result = correlation_vs_distance(_cosine_units(11, omega), (1, 11), n_bins=9, max_pairs=None, min_pairs_per_bin=1)
    expected_bins = [r[d] for d in range(1, 9)] + [(2 * r[9] + r[10]) / 3]
    assert result.pair_counts == [10, 9, 8, 7, 6, 5, 4, 3, 3]
    assert result.correlations == pytest.approx(expected_bins, abs=1e-6)
    assert result.distances == pytest.approx([1.5 + k for k in range(9)])
    assert result.score == pytest.approx(r[1] - expected_bins[-1], abs=1e-6)
    # robust: near = d ≤ 2 (19 pairs); far = d ≥ the lower median of the 55 distances, the 28th smallest: d = 4
    near = (10 * r[1] + 9 * r[2]) / 19
    far = sum((11 - d) * r[d] for d in range(4, 11)) / sum(11 - d for d in range(4, 11))
    assert (result.near_pairs, result.far_pairs, result.far_distance) == (19, 28, 4.0)
    assert result.robust_score == pytest.approx(near - far, abs=1e-6)
    assert result.n_pairs == 55 and result.n_units == 11 and result.n_samples == 12


def _brute_force_smoothness(samples: np.ndarray, height: int, width: int, n_bins: int, near: float, min_pairs: int):
    """The definition written out with numpy: Pearson r of every pair of varying units (unit u at row u // width,
    column u % width), binned by distance between 1 and the diagonal, max − min of the bin means with enough pairs,
    and near (≤ near) minus far (≥ the lower median distance) over pairs."""
    varying = [u for u in range(samples.shape[1]) if samples[:, u].std() > 0]
    corr = np.corrcoef(samples[:, varying].T)
    pairs = [(i, j) for i in range(len(varying)) for j in range(i + 1, len(varying))]
    r = np.array([corr[i, j] for i, j in pairs])
    d = np.array(
        [
            math.hypot(varying[i] // width - varying[j] // width, varying[i] % width - varying[j] % width)
            for i, j in pairs
        ]
    )
    edges = np.linspace(1.0, math.hypot(height - 1, width - 1), n_bins + 1)
    index = np.clip(np.searchsorted(edges, d, side="right") - 1, 0, n_bins - 1)
    means = [r[index == k].mean() for k in range(n_bins) if (index == k).sum() >= min_pairs]
    median = np.sort(d)[(len(d) - 1) // 2]
    return max(means) - min(means), r[d <= near].mean() - r[d >= median].mean()


def test_a_rectangular_sheet_equals_the_brute_force_reference():
    generator = torch.Generator().manual_seed(2)
    # smooth along the sheet: each sample is a random map blurred by cumulative sums, then noise
    maps = torch.randn(40, 4, 6, generator=generator, dtype=torch.float64).cumsum(1).cumsum(2)
    samples = maps.reshape(40, 24) + 0.3 * torch.randn(40, 24, generator=generator, dtype=torch.float64)
    samples[:, 5] = 1.5  # a constant unit: left out
    result = smoothness(samples, (4, 6), n_bins=6, max_pairs=None, min_pairs_per_bin=5)
    score, robust = _brute_force_smoothness(samples.numpy(), 4, 6, 6, 2.0, 5)
    assert result.n_units == 23 and result.n_pairs == 23 * 22 // 2
    assert result.score == pytest.approx(score, abs=1e-5)
    assert result.robust_score == pytest.approx(robust, abs=1e-5)
    # the same data on the transposed sheet (6 × 4) is another layout: a row/column mix-up would pass only one
    transposed = smoothness(samples, (6, 4), n_bins=6, max_pairs=None, min_pairs_per_bin=5)
    assert transposed.robust_score == pytest.approx(
        _brute_force_smoothness(samples.numpy(), 6, 4, 6, 2.0, 5)[1], abs=1e-5
    )
    assert abs(transposed.robust_score - result.robust_score) > 1e-3


def test_identical_units_and_constant_maps():
    signal = torch.randn(10, 1, generator=torch.Generator().manual_seed(3))
    same = correlation_vs_distance(signal.repeat(1, 20), (4, 5), n_bins=4, min_pairs_per_bin=1)
    # every pair correlates perfectly: a flat curve at 1, no fall-off at all
    assert same.correlations == pytest.approx([1.0] * 4, abs=1e-6)
    assert same.score == pytest.approx(0.0, abs=1e-6) and same.robust_score == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="Fewer than 2 units vary"):
        correlation_vs_distance(torch.ones(10, 20), (4, 5))
