"""Neighbour correlations on the cortical sheet and how bimodal their distribution is (Truong & Hasson).

Truong & Hasson report that Weight Similarity (WS) gives smooth maps with correlated neighbourhoods, while
Activation Similarity (AS) gives a *bimodal* correlation structure without spatial smoothness. This module measures
the distribution those statements are about:

=================================  =================================================================================
:func:`neighbour_pairs`            the unordered neighbour pairs ``(u, v)`` of a ``height × width`` sheet: units at
                                   Chebyshev distance ``≤ radius`` (``radius=1``: the 3×3 queen neighbourhood, the
                                   neighbourhood of :mod:`hf_topo.regularizers.similarity`); unit ``u`` sits at row
                                   ``u // width``, column ``u % width``
:func:`neighbour_correlations`     Pearson ``r`` of each neighbour pair's responses over the samples
                                   (``(n_samples, n_units)`` → one ``r`` per pair)
:func:`bimodality_coefficient`     Sarle's bimodality coefficient of a sample (below)
:func:`gaussian_mixture_delta_bic` BIC of one Gaussian minus BIC of a two-component Gaussian mixture (1-D EM in
                                   torch, no scikit-learn): ``> 0`` favours two components
:func:`neighbour_correlation_summary`  the above for one layer's responses, as a plain dict
=================================  =================================================================================

**Sarle's bimodality coefficient** of ``n`` values with sample skewness ``g`` and sample excess kurtosis ``κ``::

    BC = (g² + 1) / (κ + 3 (n − 1)² / ((n − 2)(n − 3)))

where ``g`` and ``κ`` are the bias-adjusted estimators (SAS's, ``scipy.stats.skew(x, bias=False)`` and
``scipy.stats.kurtosis(x, bias=False)``): with central moments ``m_k = mean((x − x̄)^k)``,
``g = √(n(n − 1)) / (n − 2) · m₃ / m₂^{3/2}`` and ``κ = (n − 1) / ((n − 2)(n − 3)) · ((n + 1)(m₄ / m₂² − 3) + 6)``.
``BC`` of a normal sample is ``≈ 1/3``, of a uniform one ``5/9``; ``BC > 5/9 ≈ 0.555`` (:data:`BIMODALITY_THRESHOLD`)
suggests a bimodal (or very skewed) distribution. It needs ``n ≥ 4`` values that are not all equal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..regularizers.similarity import neighbour_offsets
from ..sheet import CorticalSheet

__all__ = [
    "BIMODALITY_THRESHOLD",
    "bimodality_coefficient",
    "gaussian_mixture_delta_bic",
    "neighbour_correlation_summary",
    "neighbour_correlations",
    "neighbour_pairs",
]

#: Sarle's coefficient of a uniform distribution: larger values suggest bimodality.
BIMODALITY_THRESHOLD = 5.0 / 9.0


def _sheet_hw(sheet: CorticalSheet | tuple[int, int]) -> tuple[int, int]:
    if isinstance(sheet, CorticalSheet):
        return sheet.height, sheet.width
    if len(sheet) != 2 or not all(isinstance(v, int) and v > 0 for v in sheet):
        raise ValueError(f"sheet={sheet!r} must be a CorticalSheet or (height, width) of two positive integers.")
    return int(sheet[0]), int(sheet[1])


def neighbour_pairs(sheet: CorticalSheet | tuple[int, int], radius: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The unordered neighbour pairs of a sheet: ``(first, second)``, two int64 index tensors of equal length.

    Units ``u`` and ``v`` are neighbours when their rows and their columns each differ by at most ``radius`` (and
    ``u ≠ v``). Each pair appears once, ordered by the offset ``(dy, dx)`` of
    :func:`hf_topo.regularizers.similarity.neighbour_offsets` and then by the first unit's row and column. A 11 × 11
    sheet with ``radius=1`` has 420 pairs.
    """
    height, width = _sheet_hw(sheet)
    rows = torch.arange(height).view(-1, 1)
    cols = torch.arange(width).view(1, -1)
    firsts, seconds = [], []
    for dy, dx in neighbour_offsets(radius):
        # (row, col) paired with (row + dy, col + dx), both on the sheet
        r = rows[: max(height - dy, 0)]
        c = cols[:, max(-dx, 0) : width - max(dx, 0)]
        first = (r * width + c).reshape(-1)
        firsts.append(first)
        seconds.append(first + dy * width + dx)
    return torch.cat(firsts), torch.cat(seconds)


def neighbour_correlations(
    responses: torch.Tensor, sheet: CorticalSheet | tuple[int, int], radius: int = 1
) -> torch.Tensor:
    """Pearson ``r`` of every neighbour pair's responses over the samples.

    Args:
        responses: ``(n_samples, n_units)``, one column per unit in sheet order (e.g. a layer's activations to the
            test images from :func:`~hf_topo.analysis.collect_image_activations`).
        sheet: the layer's :class:`~hf_topo.sheet.CorticalSheet` or ``(height, width)``.
        radius: Chebyshev radius of the neighbourhood (1 = 3×3 queen neighbours).

    Returns:
        float64 ``(n_pairs,)``, in the order of :func:`neighbour_pairs`; ``nan`` for a pair with a unit whose
        response is constant over the samples (its correlation is undefined).
    """
    height, width = _sheet_hw(sheet)
    if responses.ndim != 2 or responses.shape[1] != height * width:
        raise ValueError(
            f"Expected responses of shape (n_samples, {height * width}) for a {height}x{width} sheet, got "
            f"{tuple(responses.shape)}: one row per sample, one column per unit in sheet order."
        )
    if responses.shape[0] < 2:
        raise ValueError(f"A correlation needs at least 2 samples per unit, got {responses.shape[0]}.")
    x = responses.detach().double().cpu()
    x = x - x.mean(dim=0)
    norm = x.pow(2).sum(dim=0).sqrt()
    scale = norm.max().clamp_min(1e-300)
    constant = norm <= 1e-12 * scale
    standardized = x / torch.where(constant, torch.ones_like(norm), norm)
    first, second = neighbour_pairs((height, width), radius)
    r = (standardized[:, first] * standardized[:, second]).sum(dim=0).clamp(-1.0, 1.0)
    return torch.where(constant[first] | constant[second], torch.full_like(r, float("nan")), r)


def _as_values(values: torch.Tensor | Sequence[float], minimum: int, what: str) -> torch.Tensor:
    x = torch.as_tensor(values, dtype=torch.float64).detach().cpu().reshape(-1)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{what} got non-finite values (nan or inf): drop them first, e.g. values[~values.isnan()].")
    if x.numel() < minimum:
        raise ValueError(f"{what} needs at least {minimum} values, got {x.numel()}.")
    return x


def bimodality_coefficient(values: torch.Tensor | Sequence[float]) -> float:
    """Sarle's bimodality coefficient ``(g² + 1) / (κ + 3(n − 1)² / ((n − 2)(n − 3)))`` of ``values`` (any shape,
    flattened; see the module docstring for ``g`` and ``κ``). ``> 5/9`` (:data:`BIMODALITY_THRESHOLD`) suggests
    bimodality.

    Raises:
        ValueError: fewer than 4 values, a non-finite value, or all values equal.
    """
    x = _as_values(values, 4, "bimodality_coefficient")
    n = x.numel()
    centered = x - x.mean()
    m2, m3, m4 = (centered.pow(k).mean() for k in (2, 3, 4))
    if float(m2) <= 1e-300:
        raise ValueError("bimodality_coefficient: all values are equal; skewness and kurtosis are undefined.")
    skewness = math.sqrt(n * (n - 1)) / (n - 2) * float(m3 / m2**1.5)
    excess_kurtosis = (n - 1) / ((n - 2) * (n - 3)) * ((n + 1) * float(m4 / m2**2 - 3.0) + 6.0)
    return (skewness**2 + 1.0) / (excess_kurtosis + 3.0 * (n - 1) ** 2 / ((n - 2) * (n - 3)))


def _normal_log_density(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    return -0.5 * (math.log(2 * math.pi) + var.log() + (x - mean).pow(2) / var)


def gaussian_mixture_delta_bic(
    values: torch.Tensor | Sequence[float], n_init: int = 5, max_iter: int = 2000, tol: float = 1e-8, seed: int = 0
) -> float:
    """``BIC(one Gaussian) − BIC(two-component Gaussian mixture)`` of 1-D ``values``: ``> 0`` favours two components
    (by convention ``> 10`` is strong evidence).

    ``BIC = −2 log L + p log n`` with ``p = 2`` (one Gaussian: mean, variance, fitted exactly) and ``p = 5`` (two
    means, two variances, one weight). The mixture is fitted by EM from ``n_init`` starts, the best log-likelihood
    kept: the first start splits the sorted values at their median, the others draw two values as means (seeded by
    ``seed``); EM stops when the log-likelihood gains less than ``tol``. Each component's variance is floored at
    ``1e-6`` of the data's variance (scikit-learn's ``reg_covar`` plays this part), so that a component cannot collapse
    onto one value.
    """
    x = _as_values(values, 6, "gaussian_mixture_delta_bic")
    n = x.numel()
    variance = x.var(unbiased=False)
    if float(variance) <= 1e-300:
        raise ValueError("gaussian_mixture_delta_bic: all values are equal; no Gaussian can be fitted.")
    floor = 1e-6 * variance
    one = _normal_log_density(x, x.mean(), variance).sum()
    bic_one = -2.0 * float(one) + 2 * math.log(n)

    generator = torch.Generator().manual_seed(seed)
    ordered = x.sort().values
    starts = [(ordered[: n // 2].mean(), ordered[n // 2 :].mean())]
    for _ in range(max(n_init, 1) - 1):
        pick = torch.randperm(n, generator=generator)[:2]
        starts.append((x[pick[0]], x[pick[1]]))
    best = -math.inf
    for mean_a, mean_b in starts:
        means = torch.stack([mean_a, mean_b]).double()
        variances = torch.stack([variance, variance]).clone()
        weights = torch.tensor([0.5, 0.5], dtype=torch.float64)
        previous = -math.inf
        for _ in range(max_iter):
            log_joint = weights.log() + _normal_log_density(x[:, None], means, variances)  # (n, 2)
            log_likelihood = torch.logsumexp(log_joint, dim=1)
            total = float(log_likelihood.sum())
            responsibilities = (log_joint - log_likelihood[:, None]).exp()
            counts = responsibilities.sum(dim=0).clamp_min(1e-12)
            weights = counts / n
            means = (responsibilities * x[:, None]).sum(dim=0) / counts
            variances = (responsibilities * (x[:, None] - means).pow(2)).sum(dim=0) / counts + floor
            if total - previous < tol:  # EM never lowers the log-likelihood
                break
            previous = total
        log_joint = weights.log() + _normal_log_density(x[:, None], means, variances)
        best = max(best, float(torch.logsumexp(log_joint, dim=1).sum()))
    bic_two = -2.0 * best + 5 * math.log(n)
    return bic_one - bic_two


def neighbour_correlation_summary(
    responses: torch.Tensor, sheet: CorticalSheet | tuple[int, int], radius: int = 1, keep_values: bool = True
) -> dict:
    """One layer's neighbour correlations and their bimodality, as a plain (JSON-ready) dict.

    Keys: ``n_pairs`` (pairs with a defined ``r``; pairs with a constant unit are left out), ``mean``, ``median``,
    ``sd`` (of ``r``), ``bimodality_coefficient`` (Sarle's), ``bimodal`` (``BC > 5/9``),
    ``gmm_delta_bic`` (:func:`gaussian_mixture_delta_bic`), and ``values`` (every ``r``, in the order of
    :func:`neighbour_pairs`, ``None`` for an undefined one) when ``keep_values``.
    """
    r = neighbour_correlations(responses, sheet, radius)
    defined = r[~r.isnan()]
    summary = {
        "n_pairs": int(defined.numel()),
        "mean": float(defined.mean()),
        "median": float(defined.median()),
        "sd": float(defined.std()),
        "bimodality_coefficient": bimodality_coefficient(defined),
        "gmm_delta_bic": gaussian_mixture_delta_bic(defined),
    }
    summary["bimodal"] = summary["bimodality_coefficient"] > BIMODALITY_THRESHOLD
    if keep_values:
        summary["values"] = [None if math.isnan(v) else v for v in r.tolist()]
    return summary
