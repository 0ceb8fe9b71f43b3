"""Effective dimensionality of a layer's representations (TopoNets §2.3, §3.2).

    ED = (Σ_i λ_i)² / Σ_i λ_i²

over the eigenvalues ``λ_i`` of the covariance of the ``(n_samples, n_units)`` activations (Del Giudice, 2021;
Elmoznino & Bonner, 2024; Margalit et al., 2024). ED is ``n`` for ``n`` equal, independent directions of variance
and 1 when all variance lies along one direction. Since ``Σλ = tr(C)`` and ``Σλ² = ‖C‖_F²`` no eigendecomposition
is needed, and the smaller of the two Gram matrices ``XᵀX`` / ``XXᵀ`` (same non-zero eigenvalues) is used.
"""

from __future__ import annotations

import torch

__all__ = ["effective_dimensionality"]


def effective_dimensionality(samples: torch.Tensor) -> float:
    """``(Σλ)² / Σλ²`` of the covariance eigenvalues of ``samples`` (``(n_samples, n_features)``), in float64."""
    if samples.ndim != 2:
        raise ValueError(f"Expected samples of shape (n_samples, n_features), got {tuple(samples.shape)}.")
    if samples.shape[0] < 2:
        raise ValueError(f"A covariance needs at least 2 samples, got {samples.shape[0]}: give more text.")
    x = samples.double()
    x = x - x.mean(dim=0)
    gram = x.T @ x if x.shape[1] <= x.shape[0] else x @ x.T  # covariance up to the factor 1/(n − 1), which cancels
    trace = torch.diagonal(gram).sum()
    frobenius_sq = gram.pow(2).sum()
    if frobenius_sq == 0:
        raise ValueError(
            "The samples do not vary (all covariance eigenvalues are 0): effective dimensionality is undefined."
        )
    return float(trace**2 / frobenius_sq)
