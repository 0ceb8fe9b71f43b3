"""Smoothness from all pairs or a stratified sample, its bootstrap interval and its shuffle control, each checked
against a reference written out here (a double loop over pairs, corrections recomputed on resampled rows)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hf_topo.analysis import correlation_vs_distance, smoothness, token_positions
from hf_topo.analysis.smoothness import PAIRS_PER_BIN
from hf_topo.evaluation import TokenBatch


def smooth_maps(n_maps: int, height: int, width: int, sigma: float = 2.0, noise: float = 0.0, seed: int = 0):
    """``(n_maps, height·width)``: white noise blurred by a Gaussian of ``sigma`` spacings, plus independent noise."""
    g = torch.Generator().manual_seed(seed)
    pad = int(3 * sigma)
    x = torch.arange(-pad, pad + 1, dtype=torch.float64)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = (k[:, None] * k[None, :]) / k.sum() ** 2
    fields = torch.randn(n_maps, 1, height + 2 * pad, width + 2 * pad, generator=g, dtype=torch.float64)
    maps = F.conv2d(fields, kernel.view(1, 1, *kernel.shape)).reshape(n_maps, height * width)
    maps = maps / maps.std()
    return maps + noise * torch.randn(n_maps, height * width, generator=g, dtype=torch.float64)


def brute_force_curve(samples: np.ndarray, height: int, width: int, n_bins: int, near: float, min_pairs: int):
    """Bin means, counts, both scores and the argmax / argmin bins, by a double loop over the pairs of varying units."""
    varying = [u for u in range(samples.shape[1]) if samples[:, u].std() > 0]
    corr = np.corrcoef(samples[:, varying].T)
    edges = np.linspace(1.0, math.hypot(height - 1, width - 1), n_bins + 1)
    sums, counts, rs, ds = np.zeros(n_bins), np.zeros(n_bins, dtype=int), [], []
    for a in range(len(varying)):
        for b in range(a + 1, len(varying)):
            i, j = varying[a], varying[b]
            d = math.hypot(i // width - j // width, i % width - j % width)
            k = min(max(int(np.searchsorted(edges, d, side="right")) - 1, 0), n_bins - 1)
            sums[k] += corr[a, b]
            counts[k] += 1
            rs.append(corr[a, b])
            ds.append(d)
    rs, ds = np.array(rs), np.array(ds)
    means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    usable = np.flatnonzero(counts >= min_pairs)
    median = np.sort(ds)[(len(ds) - 1) // 2]
    robust = rs[ds <= near].mean() - rs[ds >= median].mean()
    return dict(
        means=means, counts=counts, score=means[usable].max() - means[usable].min(), robust=robust,
        max_bin=int(usable[np.argmax(means[usable])]), min_bin=int(usable[np.argmin(means[usable])]),
    )  # fmt: skip


# ---- all pairs -----------------------------------------------------------------------------------------------------


def test_all_pairs_equal_a_double_loop_with_the_bins_that_set_the_score():
    height, width = 5, 7
    samples = smooth_maps(80, height, width, noise=0.5, seed=1)
    samples[:, 9] = 3.0  # a constant unit: left out of every pair
    result = correlation_vs_distance(samples, (height, width), n_bins=7, min_pairs_per_bin=3)
    expected = brute_force_curve(samples.numpy(), height, width, 7, 2.0, 3)
    assert result.sampling == "all" and result.n_pairs == 34 * 33 // 2 == sum(result.pair_counts)
    assert result.pair_counts == expected["counts"].tolist()
    np.testing.assert_allclose(result.correlations, expected["means"], atol=1e-5)
    assert result.score == pytest.approx(expected["score"], abs=1e-5)
    assert result.robust_score == pytest.approx(expected["robust"], abs=1e-5)
    assert (result.max_bin, result.min_bin) == (expected["max_bin"], expected["min_bin"])


def test_the_shuffle_control_is_the_same_correlations_on_permuted_positions():
    height, width = 4, 6
    samples = smooth_maps(60, height, width, noise=0.3, seed=2)
    result = correlation_vs_distance(samples, (height, width), n_bins=5, min_pairs_per_bin=3, seed=11, n_shuffles=3)
    generator = torch.Generator().manual_seed(11)  # the shuffles are the seed's first draws: randperm per shuffle
    for k in range(3):
        perm = torch.randperm(height * width, generator=generator)
        moved = torch.empty_like(samples)
        moved[:, perm] = samples  # unit u now sits at position perm[u]
        expected = brute_force_curve(moved.numpy(), height, width, 5, 2.0, 3)
        assert result.shuffle_scores[k] == pytest.approx(expected["score"], abs=1e-5)
        assert result.shuffle_robust_scores[k] == pytest.approx(expected["robust"], abs=1e-5)
    assert result.shuffle_score == pytest.approx(np.mean(result.shuffle_scores))


def test_shuffle_control_is_near_zero_on_a_planted_smooth_sheet_and_the_score_far_above():
    samples = smooth_maps(400, 16, 16, sigma=2.0, noise=0.3, seed=3)
    result = smoothness(samples, (16, 16), n_shuffles=10, n_bootstrap=0)
    assert result.robust_score > 0.5 and result.score > 0.5
    assert abs(result.shuffle_robust_score) < 0.01  # near − far of a layout without topography: 0
    assert result.shuffle_score < 0.1  # max − min: a floor of bin noise, well below the planted map's score
    assert result.score > 5 * result.shuffle_score and len(result.shuffle_scores) == result.n_shuffles == 10


# ---- stratified sample -------------------------------------------------------------------------------------------


def test_a_stratified_sample_keeps_500_pairs_in_every_bin_and_its_means_unbiased():
    samples = smooth_maps(200, 24, 24, sigma=3.0, noise=0.5, seed=4)
    full = smoothness(samples, (24, 24), n_bootstrap=0, n_shuffles=0)
    sample = smoothness(samples, (24, 24), max_pairs=3000, seed=5, n_bootstrap=0, n_shuffles=0)
    again = smoothness(samples, (24, 24), max_pairs=3000, seed=5, n_bootstrap=0, n_shuffles=0)
    assert sample.sampling == "stratified" and sample.to_dict() == again.to_dict()
    assert min(full.pair_counts) < PAIRS_PER_BIN  # the far bins of the sheet hold fewer pairs than that: all kept
    for kept, available in zip(sample.pair_counts, full.pair_counts, strict=True):
        assert kept >= min(PAIRS_PER_BIN, available)
        assert kept <= available or kept >= PAIRS_PER_BIN
    assert sample.n_pairs == sum(sample.pair_counts) >= 3000
    np.testing.assert_allclose(sample.correlations, full.correlations, atol=0.03)
    # the near and far means weight each pair by its bin's inverse sampling rate: close to all pairs'
    assert sample.near_correlation == pytest.approx(full.near_correlation, abs=0.02)
    assert sample.far_correlation == pytest.approx(full.far_correlation, abs=0.02)
    assert sample.far_distance == full.far_distance  # the median of all pairs, not of the sample


# ---- bootstrap ---------------------------------------------------------------------------------------------------


def _exact_bootstrap(samples, sheet, n_replicates, blocks=None, seed=0, **kwargs):
    """Both scores recomputed from scratch on resampled rows (or resampled whole blocks of rows)."""
    g = torch.Generator().manual_seed(seed)
    scores, robust = [], []
    for _ in range(n_replicates):
        if blocks is None:
            rows = torch.randint(samples.shape[0], (samples.shape[0],), generator=g)
        else:
            ids = torch.unique(blocks)
            drawn = ids[torch.randint(ids.numel(), (ids.numel(),), generator=g)]
            rows = torch.cat([torch.nonzero(blocks == b).squeeze(1) for b in drawn])
        r = correlation_vs_distance(samples[rows], sheet, n_bootstrap=0, n_shuffles=0, **kwargs)
        scores.append(r.score)
        robust.append(r.robust_score)
    return np.array(scores), np.array(robust)


@pytest.mark.slow
@pytest.mark.parametrize("max_pairs", [None, 400])  # all pairs (FFT sums) and a stratified sample (gathered pairs)
def test_bootstrap_interval_matches_recomputing_correlations_on_resampled_rows(max_pairs):
    samples = smooth_maps(150, 6, 8, sigma=1.5, noise=1.0, seed=6)
    kwargs = dict(n_bins=6, min_pairs_per_bin=5, max_pairs=max_pairs)
    result = correlation_vs_distance(samples, (6, 8), n_bootstrap=2000, seed=1, **kwargs)
    scores, robust = _exact_bootstrap(samples, (6, 8), 300, **kwargs)
    assert result.n_bootstrap == 2000 and result.bootstrap_unit == "sample" and result.n_bootstrap_units == 150
    exact_score = np.quantile(scores, [0.025, 0.975])
    exact_robust = np.quantile(robust, [0.025, 0.975])
    width = exact_robust[1] - exact_robust[0]
    assert result.robust_score_interval == pytest.approx(exact_robust, abs=0.15 * width)
    assert result.score_interval == pytest.approx(exact_score, abs=0.2 * (exact_score[1] - exact_score[0]))


def test_bootstrap_is_seeded_and_contains_the_full_data_value():
    samples = smooth_maps(300, 12, 12, sigma=2.0, noise=0.5, seed=7)
    a = smoothness(samples, (12, 12), seed=3)
    b = smoothness(samples, (12, 12), seed=3)
    c = smoothness(samples, (12, 12), seed=4)
    assert a.to_dict() == b.to_dict() and a.score_interval != c.score_interval
    assert a.score_interval[0] < a.score < a.score_interval[1]
    assert a.robust_score_interval[0] < a.robust_score < a.robust_score_interval[1]
    assert a.robust_score_interval[1] - a.robust_score_interval[0] < 0.2  # 300 maps pin it down


@pytest.mark.slow
def test_resampling_blocks_widens_the_interval_of_dependent_rows_as_an_exact_block_bootstrap_does():
    # 20 blocks of 10 near-copies of one map: 200 rows but 20 independent stimuli
    maps = smooth_maps(20, 6, 6, sigma=1.5, noise=1.0, seed=8)
    samples = maps.repeat_interleave(10, dim=0) + 0.05 * torch.randn(
        200, 36, generator=torch.Generator().manual_seed(9)
    )
    blocks = torch.arange(20).repeat_interleave(10)
    kwargs = dict(n_bins=5, min_pairs_per_bin=5)
    rows = correlation_vs_distance(samples, (6, 6), n_bootstrap=2000, **kwargs)
    grouped = correlation_vs_distance(samples, (6, 6), n_bootstrap=2000, groups=blocks, **kwargs)
    assert grouped.bootstrap_unit == "group" and grouped.n_bootstrap_units == 20
    width = lambda interval: interval[1] - interval[0]  # noqa: E731
    assert width(grouped.robust_score_interval) > 2.5 * width(rows.robust_score_interval)
    _, robust = _exact_bootstrap(samples, (6, 6), 300, blocks=blocks, **kwargs)
    assert width(grouped.robust_score_interval) == pytest.approx(width(np.quantile(robust, [0.025, 0.975])), rel=0.3)


def test_floors_are_validated():
    with pytest.raises(ValueError, match="n_bootstrap"):
        smoothness(torch.randn(20, 30), (5, 6), n_bootstrap=-1)
    with pytest.raises(ValueError, match="confidence"):
        smoothness(torch.randn(20, 30), (5, 6), confidence=1.0)
    with pytest.raises(ValueError, match="groups"):
        smoothness(torch.randn(20, 30), (5, 6), groups=torch.zeros(19, dtype=torch.long))


def test_token_positions_follow_the_collected_order():
    ids = torch.arange(12).view(3, 4)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]])
    positions, blocks = token_positions(TokenBatch(ids, mask))
    assert positions.tolist() == [0, 1, 2, 3, 0, 1, 0, 1, 2]
    assert blocks.tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 2]
    positions, blocks = token_positions(TokenBatch(ids), n_samples=6)
    assert positions.tolist() == [0, 1, 2, 3, 0, 1] and blocks.tolist() == [0, 0, 0, 0, 1, 1]
