"""Effective dimensionality of z-scored units and without the first positions of each block, against numpy's
eigenvalues and planted data whose true dimensionality is known; and the three numbers in an analysis report."""

import numpy as np
import pytest
import torch

from hf_topo.analysis import (
    AnalysisSettings,
    analyze_model,
    collect_activations,
    effective_dimensionalities,
    effective_dimensionality,
    token_positions,
    topographic_layers,
)
from hf_topo.evaluation import TokenBatch


def _participation_ratio(eigenvalues: np.ndarray) -> float:
    return float(eigenvalues.sum() ** 2 / (eigenvalues**2).sum())


def test_z_scored_dimensionality_is_that_of_numpys_correlation_matrix():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 20, generator=g, dtype=torch.float64) @ torch.randn(20, 20, generator=g, dtype=torch.float64)
    x = x * torch.logspace(-2, 2, 20, dtype=torch.float64)  # scales over four decades: covariance ≠ correlation
    expected = _participation_ratio(np.linalg.eigvalsh(np.corrcoef(x.numpy(), rowvar=False)))
    assert effective_dimensionality(x, standardize=True) == pytest.approx(expected, rel=1e-9)
    covariance = _participation_ratio(np.linalg.eigvalsh(np.cov(x.numpy(), rowvar=False)))
    assert effective_dimensionality(x) == pytest.approx(covariance, rel=1e-9)
    assert abs(expected - covariance) > 1.0  # the two variants differ on such data
    x[:, 3] = 7.0  # a constant unit has no correlation: left out
    kept = np.delete(x.numpy(), 3, axis=1)
    expected = _participation_ratio(np.linalg.eigvalsh(np.corrcoef(kept, rowvar=False)))
    assert effective_dimensionality(x, standardize=True) == pytest.approx(expected, rel=1e-9)


def test_excluding_the_first_positions_recovers_the_planted_dimensionality():
    # blocks of 32 tokens: positions 0 and 1 are huge along two fixed directions (an attention sink), the rest
    # isotropic in 10 of 64 units: true dimensionality 10
    g = torch.Generator().manual_seed(1)
    n_blocks, length, n_units, true_dim = 400, 32, 64, 10
    basis = torch.linalg.qr(torch.randn(n_units, n_units, generator=g, dtype=torch.float64))[0]
    content = torch.randn(n_blocks, length, true_dim, generator=g, dtype=torch.float64) @ basis[:, :true_dim].T
    sink = torch.randn(n_blocks, 2, 2, generator=g, dtype=torch.float64) * 30 @ basis[:, -2:].T
    content[:, :2] = sink
    samples = content.reshape(-1, n_units)
    positions = torch.arange(length).repeat(n_blocks)
    result = effective_dimensionalities(samples, positions, exclude_positions=4)
    assert result.covariance < 2.5  # the two sink directions dominate the covariance
    assert result.late_positions == pytest.approx(true_dim, rel=0.03)
    assert result.n_late_samples == n_blocks * (length - 4) and result.n_samples == n_blocks * length
    eigenvalues = np.linalg.eigvalsh(np.cov(samples[positions >= 4].numpy(), rowvar=False))
    assert result.late_positions == pytest.approx(_participation_ratio(eigenvalues), rel=1e-9)
    assert effective_dimensionalities(samples, None).late_positions is None  # positions unknown (images)
    with pytest.raises(ValueError, match="one position per sample"):
        effective_dimensionalities(samples, positions[:-1])


def test_the_report_carries_the_three_dimensionalities_and_the_smoothness_floors(tiny_gpt2):
    input_ids = torch.randint(0, tiny_gpt2.config.vocab_size, (12, 16), generator=torch.Generator().manual_seed(2))
    text = TokenBatch(input_ids)
    settings = AnalysisSettings(
        max_tokens=160, batch_size=4, n_bins=6, min_pairs_per_bin=5, morans_permutations=0, eval_blocks=2, sweeps=[],
        exclude_positions=3, smoothness_bootstrap=50, smoothness_shuffles=4,
    )  # fmt: skip
    analysis = analyze_model(tiny_gpt2, None, text, settings, progress=False)
    layers = topographic_layers(tiny_gpt2)
    acts = collect_activations(tiny_gpt2, text, layers, max_samples=160, progress=False)
    positions, blocks = token_positions(text, 160)
    assert positions[-1] == 15 and blocks[-1] == 9  # 160 tokens: ten blocks of 16
    summary = analysis.analysis_summary()
    late, zscored = [], []
    for layer in layers:
        variants = analysis.dimensionality_variants[layer.name]
        expected = acts[layer.name].double()[positions >= 3]
        assert variants.late_positions == pytest.approx(effective_dimensionality(expected), rel=1e-6)
        assert variants.correlation == pytest.approx(effective_dimensionality(acts[layer.name], True), rel=1e-6)
        assert variants.covariance == analysis.effective_dimensionality[layer.name]
        curve = analysis.smoothness[layer.name]
        assert curve.bootstrap_unit == "group" and curve.n_bootstrap_units == 10 and curve.n_shuffles == 4
        per_layer = analysis.to_dict()["layers"][layer.name]
        assert per_layer["smoothness_interval"] == curve.score_interval
        assert per_layer["effective_dimensionality_variants"]["late_positions"] == variants.late_positions
        late.append(variants.late_positions)
        zscored.append(variants.correlation)
    assert summary.effective_dimensionality_late_positions == pytest.approx(np.mean(late))
    assert summary.effective_dimensionality_zscored == pytest.approx(np.mean(zscored))
    assert summary.smoothness_shuffle == pytest.approx(
        np.mean([r.shuffle_score for r in analysis.smoothness.values()])
    )
