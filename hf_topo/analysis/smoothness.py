"""Smoothness: how fast the correlation of two units falls off with their distance on the sheet.

After Margalit et al. (2024), as used by TopoNets (§2.3, A.6): for pairs of units ``(i, j)`` of a layer, take the
Pearson correlation ``r_ij`` of their activations over a text sample and the Euclidean distance ``d_ij`` of their
positions on the cortical sheet; average ``r`` in distance bins. A topographic layer has highly correlated
neighbours and weakly correlated distant units:

    smoothness = max_b mean(r | d ∈ bin b) − min_b mean(r | d ∈ bin b)

over the bins holding at least ``min_pairs_per_bin`` pairs. The weight-based variant correlates the units'
incoming weight vectors instead of their activations. For large layers a seeded random subset of ``max_pairs``
unit pairs keeps time and memory bounded (3072 units have 4.7M pairs).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import torch

from ..sheet import CorticalSheet
from ..targets import TopoLayer
from .maps import unit_weights

__all__ = ["SmoothnessResult", "correlation_vs_distance", "smoothness", "weight_smoothness", "sheet_distances"]

logger = logging.getLogger(__name__)


@dataclass
class SmoothnessResult:
    """The correlation-vs-distance curve of a layer and its smoothness score.

    Attributes:
        score: highest minus lowest binned mean correlation (bins with ``min_pairs_per_bin`` pairs or more).
        distances: bin centres, in units of sheet spacing.
        correlations: mean Pearson ``r`` of the pairs in each bin (``nan`` for a bin without pairs).
        pair_counts: pairs per bin.
        n_pairs, n_samples, n_units: pairs used, samples per unit (tokens, or weight dimensions), units with non-zero
            variance (constant units have no correlation and are left out).
    """

    score: float
    distances: list[float]
    correlations: list[float]
    pair_counts: list[int]
    n_pairs: int
    n_samples: int
    n_units: int

    def to_dict(self) -> dict:
        data = asdict(self)
        data["correlations"] = [None if math.isnan(c) else c for c in self.correlations]
        return data


def _sheet_hw(sheet: CorticalSheet | tuple[int, int]) -> tuple[int, int]:
    return (sheet.height, sheet.width) if isinstance(sheet, CorticalSheet) else (int(sheet[0]), int(sheet[1]))


def sheet_distances(width: int, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Euclidean distances on a sheet of ``width`` columns between units ``first`` and ``second`` (index tensors);
    unit ``u`` sits at row ``u // width``, column ``u % width``."""
    rows_a, cols_a = first // width, first % width
    rows_b, cols_b = second // width, second % width
    return torch.hypot((rows_a - rows_b).double(), (cols_a - cols_b).double())


def _unit_pairs(n_units: int, max_pairs: int | None, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    total = n_units * (n_units - 1) // 2
    if max_pairs is None or total <= max_pairs:
        first, second = torch.triu_indices(n_units, n_units, offset=1)
        return first, second
    first = torch.randint(n_units, (max_pairs,), generator=generator)
    second = torch.randint(n_units - 1, (max_pairs,), generator=generator)
    second = second + (second >= first).long()  # uniform over ordered pairs with i != j
    return first, second


def _pair_correlations(standardized: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    n_samples = standardized.shape[0]
    chunk = max(1, (1 << 22) // n_samples)  # ~16 MB of products at a time
    out = torch.empty(first.numel(), dtype=torch.float64)
    for start in range(0, first.numel(), chunk):
        i, j = first[start : start + chunk], second[start : start + chunk]
        out[start : start + chunk] = (standardized[:, i] * standardized[:, j]).mean(dim=0).double()
    return out


def correlation_vs_distance(
    samples: torch.Tensor,
    sheet: CorticalSheet | tuple[int, int],
    n_bins: int = 20,
    max_pairs: int | None = 200_000,
    min_pairs_per_bin: int = 20,
    seed: int = 0,
) -> SmoothnessResult:
    """Binned Pearson correlation of unit pairs against their distance on the sheet, and the smoothness score.

    Args:
        samples: ``(n_samples, n_units)``, one column per unit in sheet order (activations, or weights transposed).
        sheet: the layer's :class:`~hf_topo.sheet.CorticalSheet` or ``(height, width)``.
        n_bins: equal-width distance bins between 1 (neighbours) and the sheet's diagonal ``hypot(h − 1, w − 1)``,
            the same for every model with this sheet so that curves can be overlaid.
        max_pairs: use every pair when there are at most this many, else this many random pairs (drawn with
            replacement, ``seed``-ed); ``None`` for every pair.
        min_pairs_per_bin: bins with fewer pairs are plotted but not used for the score.
    """
    height, width = _sheet_hw(sheet)
    if samples.ndim != 2 or samples.shape[1] != height * width:
        raise ValueError(
            f"Expected samples of shape (n_samples, {height * width}) for a {height}x{width} sheet, got "
            f"{tuple(samples.shape)}."
        )
    if samples.shape[0] < 2:
        raise ValueError(f"A correlation needs at least 2 samples per unit, got {samples.shape[0]}: give more text.")
    if n_bins < 2:
        raise ValueError(f"n_bins={n_bins} must be at least 2 (smoothness compares bins).")
    x = samples.float()
    x = x - x.mean(dim=0)
    std = x.pow(2).mean(dim=0).sqrt()
    varying = torch.nonzero(std > 1e-12 * std.max().clamp_min(1e-30)).squeeze(1)
    if varying.numel() < 2:
        raise ValueError("Fewer than 2 units vary over the samples: no correlation can be computed; give more text.")
    if varying.numel() < height * width:
        logger.info(
            "%d of %d units are constant over the samples and left out",
            height * width - varying.numel(),
            height * width,
        )
    standardized = x[:, varying] / std[varying]  # (n_samples, n_varying)

    generator = torch.Generator().manual_seed(seed)
    first, second = _unit_pairs(varying.numel(), max_pairs, generator)
    correlations = _pair_correlations(standardized, first, second)
    distances = sheet_distances(width, varying[first], varying[second])

    diagonal = math.hypot(height - 1, width - 1)
    edges = torch.linspace(1.0, max(diagonal, 1.0 + 1e-9), n_bins + 1, dtype=torch.float64)
    index = torch.bucketize(distances, edges[1:-1], right=True)  # 0..n_bins-1; the diagonal falls in the last bin
    counts = torch.bincount(index, minlength=n_bins)
    sums = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, correlations)
    means = torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, float("nan")))
    usable = means[counts >= min_pairs_per_bin]
    if usable.numel() < 2:
        raise ValueError(
            f"Fewer than 2 distance bins hold {min_pairs_per_bin} pairs or more (pairs per bin: {counts.tolist()}): "
            "use fewer bins, more pairs or a lower min_pairs_per_bin."
        )
    return SmoothnessResult(
        score=float(usable.max() - usable.min()),
        distances=((edges[:-1] + edges[1:]) / 2).tolist(),
        correlations=means.tolist(),
        pair_counts=counts.tolist(),
        n_pairs=int(first.numel()),
        n_samples=int(samples.shape[0]),
        n_units=int(varying.numel()),
    )


def smoothness(activations: torch.Tensor, sheet: CorticalSheet | tuple[int, int], **kwargs) -> SmoothnessResult:
    """Activation smoothness of a layer: :func:`correlation_vs_distance` of its ``(n_samples, n_units)`` activations."""
    return correlation_vs_distance(activations, sheet, **kwargs)


def weight_smoothness(layer: TopoLayer, **kwargs) -> SmoothnessResult:
    """Weight smoothness of a layer: the Pearson correlation of two units' incoming weight vectors (over the
    ``depth`` input dimensions) against their distance on the sheet, scored as :func:`correlation_vs_distance`."""
    return correlation_vs_distance(unit_weights(layer).cpu().T, layer.sheet, **kwargs)
