"""Neighbour correlations on the sheet and the bimodality statistics, against brute-force loops, scipy.stats and
scikit-learn (both installed with the test and vision-demo extras)."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from hf_topo.analysis.neighbours import (
    BIMODALITY_THRESHOLD,
    bimodality_coefficient,
    gaussian_mixture_delta_bic,
    neighbour_correlation_summary,
    neighbour_correlations,
    neighbour_pairs,
)
from hf_topo.regularizers.similarity import neighbour_pair_count


def _brute_force_pairs(height, width, radius):
    pairs = set()
    for u in range(height * width):
        for v in range(u + 1, height * width):
            if max(abs(u // width - v // width), abs(u % width - v % width)) <= radius:
                pairs.add((u, v))
    return pairs


@pytest.mark.parametrize(("height", "width", "radius"), [(11, 11, 1), (3, 5, 1), (4, 6, 2), (1, 7, 1)])
def test_neighbour_pairs_are_every_pair_within_the_radius_once(height, width, radius):
    first, second = neighbour_pairs((height, width), radius)
    found = [tuple(sorted(p)) for p in zip(first.tolist(), second.tolist(), strict=True)]
    assert len(found) == len(set(found)) == neighbour_pair_count(height, width, radius)
    assert set(found) == _brute_force_pairs(height, width, radius)


def test_an_eleven_by_eleven_queen_sheet_has_420_pairs():
    assert neighbour_pairs((11, 11))[0].numel() == 11 * 10 * 2 + 10 * 10 * 2 == 420


def test_neighbour_correlations_match_a_loop_over_pairs_with_numpy():
    generator = torch.Generator().manual_seed(0)
    responses = torch.randn(50, 4 * 5, generator=generator)
    responses[:, 1] += 2 * responses[:, 0]  # a strongly correlated neighbour pair
    r = neighbour_correlations(responses, (4, 5))
    first, second = neighbour_pairs((4, 5))
    x = responses.double().numpy()
    expected = [np.corrcoef(x[:, u], x[:, v])[0, 1] for u, v in zip(first.tolist(), second.tolist(), strict=True)]
    np.testing.assert_allclose(r.numpy(), expected, rtol=0, atol=1e-12)
    assert r[(first == 0) & (second == 1)].item() > 0.85


def test_a_constant_unit_gives_undefined_correlations_that_the_summary_leaves_out():
    generator = torch.Generator().manual_seed(1)
    responses = torch.randn(40, 9, generator=generator)
    responses[:, 4] = 3.0  # the centre of a 3x3 sheet: a neighbour of every other unit
    r = neighbour_correlations(responses, (3, 3))
    first, second = neighbour_pairs((3, 3))
    touches_centre = (first == 4) | (second == 4)
    assert bool(r[touches_centre].isnan().all()) and not bool(r[~touches_centre].isnan().any())
    summary = neighbour_correlation_summary(responses, (3, 3))
    assert summary["n_pairs"] == int((~touches_centre).sum()) == 20 - 8
    assert summary["values"].count(None) == 8


def test_wrong_shapes_are_refused_with_the_expected_shape():
    with pytest.raises(ValueError, match=r"\(n_samples, 121\)"):
        neighbour_correlations(torch.zeros(5, 120), (11, 11))
    with pytest.raises(ValueError, match="at least 2 samples"):
        neighbour_correlations(torch.zeros(1, 121), (11, 11))


def _scipy_bimodality(values):
    n = len(values)
    g = stats.skew(values, bias=False)
    kappa = stats.kurtosis(values, bias=False)  # excess (Fisher) kurtosis
    return (g**2 + 1) / (kappa + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))


def _samples(seed):
    rng = np.random.default_rng(seed)
    unimodal = rng.normal(0.3, 0.2, size=400)
    bimodal = np.concatenate([rng.normal(-0.5, 0.12, size=200), rng.normal(0.6, 0.15, size=220)])
    return unimodal, bimodal


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bimodality_coefficient_matches_scipy_and_separates_one_mode_from_two(seed):
    unimodal, bimodal = _samples(seed)
    for sample in (unimodal, bimodal, np.random.default_rng(seed).exponential(size=30)):
        assert bimodality_coefficient(torch.from_numpy(sample)) == pytest.approx(_scipy_bimodality(sample), rel=1e-10)
    assert bimodality_coefficient(unimodal) < BIMODALITY_THRESHOLD < bimodality_coefficient(bimodal)
    assert bimodality_coefficient(unimodal) == pytest.approx(1 / 3, abs=0.05)  # a normal sample's BC is about 1/3


def test_bimodality_coefficient_of_a_uniform_sample_is_near_five_ninths():
    sample = np.random.default_rng(3).uniform(size=20000)
    assert bimodality_coefficient(sample) == pytest.approx(5 / 9, abs=0.01)


def test_bimodality_coefficient_refuses_what_it_cannot_measure():
    with pytest.raises(ValueError, match="at least 4 values"):
        bimodality_coefficient([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="all values are equal"):
        bimodality_coefficient([2.0] * 10)
    with pytest.raises(ValueError, match="non-finite"):
        bimodality_coefficient([1.0, 2.0, float("nan"), 3.0, 4.0])


@pytest.mark.parametrize("seed", [0, 1])
def test_gaussian_mixture_delta_bic_matches_scikit_learn(seed):
    from sklearn.mixture import GaussianMixture

    unimodal, bimodal = _samples(seed)
    for sample in (unimodal, bimodal):
        column = sample.reshape(-1, 1)
        bics = [
            GaussianMixture(k, n_init=5, random_state=seed, tol=1e-8, max_iter=1000).fit(column).bic(column)
            for k in (1, 2)
        ]
        expected = bics[0] - bics[1]
        ours = gaussian_mixture_delta_bic(sample)
        if sample is bimodal:
            assert ours == pytest.approx(expected, abs=0.05 + 1e-4 * abs(expected))
        else:  # one mode: the two-component likelihood is flat and EM creeps; ours fits at least as well
            assert expected - 0.05 <= ours < 0
    assert gaussian_mixture_delta_bic(unimodal) < 0 < 10 < gaussian_mixture_delta_bic(bimodal)


def test_the_summary_of_a_two_block_sheet_is_bimodal():
    """Neighbours within a block share a signal (r near 1), neighbours across the boundary do not (r near 0)."""
    generator = torch.Generator().manual_seed(4)
    signals = torch.randn(200, 2, generator=generator)
    block = (torch.arange(36) % 6 >= 3).long()  # left and right halves of a 6x6 sheet
    responses = signals[:, block] + 0.1 * torch.randn(200, 36, generator=generator)
    summary = neighbour_correlation_summary(responses, (6, 6))
    assert summary["bimodal"] and summary["bimodality_coefficient"] > BIMODALITY_THRESHOLD
    assert summary["gmm_delta_bic"] > 10
    assert summary["n_pairs"] == len(summary["values"]) == neighbour_pair_count(6, 6, 1)
    assert math.isclose(summary["mean"], float(np.mean(summary["values"])), rel_tol=1e-12)
