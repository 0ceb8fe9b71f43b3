"""Moran's I: spatial autocorrelation of activation maps on the cortical sheet.

For one map ``x`` of ``N`` units, centred (``x' = x − mean(x)``), with queen neighbours (the 3×3 neighbourhood,
clipped at the border; weight ``w_ij = 1`` for neighbours, else 0) and ``W = Σ_ij w_ij``::

    I = (N / W) · Σ_ij w_ij x'_i x'_j / Σ_i x'_i²

computed for many maps at once as ``Σ x' · (K ∗ x')`` with ``K`` a 3×3 kernel of ones with a zero centre and zero
padding. ``I ≈ 1`` for a smooth map, ``≈ 0`` (exactly ``−1/(N − 1)`` in expectation) for a spatially random one and
negative for a checkerboard. The layer's score is the mean over inputs (Truong & Hasson; the definition restated in
``beyond_topography_notes.md``).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from ..sheet import CorticalSheet
from .maps import as_sheet_map

__all__ = ["morans_i", "mean_morans_i"]

logger = logging.getLogger(__name__)

_QUEEN = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]])


def morans_i(maps: torch.Tensor) -> torch.Tensor:
    """Moran's I (queen neighbours) of each map in ``maps`` (``(..., height, width)``) → ``(...)``, float64.

    A constant map has no variance and gets ``nan``.
    """
    if maps.ndim < 2:
        raise ValueError(f"Expected maps of shape (..., height, width), got {tuple(maps.shape)}.")
    height, width = maps.shape[-2:]
    if height * width < 2:
        raise ValueError("Moran's I needs a sheet of at least 2 units.")
    lead = maps.shape[:-2]
    x = maps.reshape(-1, 1, height, width).double()
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    kernel = _QUEEN.to(x).view(1, 1, 3, 3)
    lagged = F.conv2d(x, kernel, padding=1)  # Σ_j w_ij x'_j for every unit i
    total_weight = F.conv2d(torch.ones(1, 1, height, width, dtype=x.dtype), kernel, padding=1).sum()
    numerator = (x * lagged).sum(dim=(-3, -2, -1))
    denominator = x.pow(2).sum(dim=(-3, -2, -1))
    n_units = height * width
    value = (n_units / total_weight) * numerator / denominator
    value = torch.where(denominator > 0, value, torch.full_like(value, float("nan")))
    return value.reshape(lead)


def mean_morans_i(
    activations: torch.Tensor, sheet: CorticalSheet | tuple[int, int], max_maps: int | None = None
) -> float:
    """Moran's I of each sample's activation map on the sheet, averaged over samples (constant maps skipped).

    Args:
        activations: ``(n_samples, n_units)``; each row is one input's map.
        max_maps: use the first ``max_maps`` samples only.
    """
    values = morans_i(as_sheet_map(activations[:max_maps], sheet))
    valid = values[~values.isnan()]
    if valid.numel() == 0:
        raise ValueError("Every activation map is constant: Moran's I is undefined.")
    if valid.numel() < values.numel():
        logger.info("Moran's I: %d constant maps skipped", values.numel() - valid.numel())
    return float(valid.mean())
