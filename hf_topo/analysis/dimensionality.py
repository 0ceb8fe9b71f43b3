"""Effective dimensionality of a layer's representations (TopoNets §2.3, §3.2).

    ED = (Σ_i λ_i)² / Σ_i λ_i²

over the eigenvalues ``λ_i`` of the covariance of the ``(n_samples, n_units)`` activations (Del Giudice, 2021;
Elmoznino & Bonner, 2024; Margalit et al., 2024). ED is ``n`` for ``n`` equal, independent directions of variance
and 1 when all variance lies along one direction. Since ``Σλ = tr(C)`` and ``Σλ² = ‖C‖_F²`` no eigendecomposition
is needed, and the smaller of the two Gram matrices ``XᵀX`` / ``XXᵀ`` (same non-zero eigenvalues) is used.

A few directions of large variance pull ED towards 1 whatever the rest of the representation does. Two variants,
reported beside the paper's number by :func:`effective_dimensionalities`, say whether that happens:

==================  ==========================================================================================
variant             what it removes
==================  ==========================================================================================
``covariance``      nothing: the paper's measure
``correlation``     the units' scales: ED of the z-scored units (the correlation matrix), so that a few units
                    of large variance do not dominate (constant units are left out)
``late_positions``  the first ``exclude_positions`` tokens of every block of text: a causal LM's first
                    positions (no context; GPT-2's attention sink at position 0) have activations far from
                    the rest, a few directions of large variance that are about position, not content
==================  ==========================================================================================
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

__all__ = ["EffectiveDimensionality", "effective_dimensionality", "effective_dimensionalities", "EXCLUDED_POSITIONS"]

#: Default of ``exclude_positions``: the first tokens of each block left out by the ``late_positions`` variant
#: (docs/analysis.md shows on a trained 6 × 256 GPT-2 where the per-position variance settles).
EXCLUDED_POSITIONS = 4


def effective_dimensionality(samples: torch.Tensor, standardize: bool = False) -> float:
    """``(Σλ)² / Σλ²`` of the covariance eigenvalues of ``samples`` (``(n_samples, n_features)``), in float64.

    Args:
        standardize: z-score each feature first, i.e. the eigenvalues of the correlation matrix; features that do
            not vary are left out (they have no correlation).
    """
    if samples.ndim != 2:
        raise ValueError(f"Expected samples of shape (n_samples, n_features), got {tuple(samples.shape)}.")
    if samples.shape[0] < 2:
        raise ValueError(f"A covariance needs at least 2 samples, got {samples.shape[0]}: give more text.")
    x = samples.double()
    x = x - x.mean(dim=0)
    if standardize:
        std = x.pow(2).mean(dim=0).sqrt()
        varying = std > 1e-12 * std.max().clamp_min(1e-300)
        x = x[:, varying] / std[varying]
    gram = x.T @ x if x.shape[1] <= x.shape[0] else x @ x.T  # covariance up to the factor 1/(n − 1), which cancels
    trace = torch.diagonal(gram).sum()
    frobenius_sq = gram.pow(2).sum()
    if frobenius_sq == 0:
        raise ValueError(
            "The samples do not vary (all covariance eigenvalues are 0): effective dimensionality is undefined."
        )
    return float(trace**2 / frobenius_sq)


@dataclass
class EffectiveDimensionality:
    """The effective dimensionality of one layer, three ways (see the module docstring).

    Attributes:
        covariance: ED of the covariance (the paper's number).
        correlation: ED of the z-scored units.
        late_positions: ED of the covariance without the first ``excluded_positions`` tokens of each block
            (``None`` when the positions are unknown, e.g. images, or too few samples remain).
        excluded_positions: how many first positions of each block ``late_positions`` leaves out.
        n_samples, n_late_samples: samples used by the first two and by ``late_positions``.
    """

    covariance: float
    correlation: float
    late_positions: float | None
    excluded_positions: int
    n_samples: int
    n_late_samples: int

    def to_dict(self) -> dict:
        return asdict(self)


def effective_dimensionalities(
    samples: torch.Tensor, positions: torch.Tensor | None = None, exclude_positions: int = EXCLUDED_POSITIONS
) -> EffectiveDimensionality:
    """The three effective dimensionalities of ``samples`` (``(n_samples, n_units)``).

    Args:
        positions: ``(n_samples,)`` the position of each sample's token in its block of text
            (:func:`~hf_topo.analysis.activations.token_positions`); ``None`` (images, or unknown) skips the
            ``late_positions`` variant.
        exclude_positions: the samples at positions ``< exclude_positions`` are left out of ``late_positions``.
    """
    if exclude_positions < 0:
        raise ValueError(f"exclude_positions={exclude_positions} must be 0 or more.")
    late, n_late = None, 0
    if positions is not None:
        if positions.ndim != 1 or positions.numel() != samples.shape[0]:
            raise ValueError(
                f"positions must hold one position per sample ({samples.shape[0]}), got shape {tuple(positions.shape)}."
            )
        kept = samples[positions >= exclude_positions]
        n_late = kept.shape[0]
        late = effective_dimensionality(kept) if n_late >= 2 else None
    return EffectiveDimensionality(
        covariance=effective_dimensionality(samples),
        correlation=effective_dimensionality(samples, standardize=True),
        late_positions=late,
        excluded_positions=exclude_positions,
        n_samples=samples.shape[0],
        n_late_samples=n_late,
    )
