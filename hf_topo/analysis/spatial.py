"""Moran's I: spatial autocorrelation of activation maps on the cortical sheet.

For one map ``x`` of ``N`` units, centred (``x' = x − mean(x)``), with queen neighbours (the 3×3 neighbourhood,
clipped at the border; weight ``w_ij = 1`` for neighbours, else 0) and ``W = Σ_ij w_ij``::

    I = (N / W) · Σ_ij w_ij x'_i x'_j / Σ_i x'_i²

computed for many maps at once as ``Σ x' · (K ∗ x')`` with ``K`` a 3×3 kernel of ones with a zero centre and zero
padding. ``I ≈ 1`` for a smooth map, ``≈ 0`` (exactly ``−1/(N − 1)`` in expectation) for a spatially random one and
negative for a checkerboard. The layer's score is the mean over inputs (Truong & Hasson; the definition restated in
``beyond_topography_notes.md``).

**Permutation test** (:func:`morans_i_permutation_test`): is the observed mean I larger than the layout of the
units on the sheet allows by chance? Each of ``n_permutations`` seeded draws shuffles the units' positions — one
permutation of the ``N`` units, the same for every map, so each map's values and the units' correlations across
maps are kept and only *where* units sit changes — and recomputes the mean I. The one-sided p-value is

    p = (1 + #{permutations with mean I ≥ observed}) / (1 + n_permutations)

(never 0: the observed layout is one of the layouts; the smallest reachable p is ``1 / (1 + n_permutations)``).
Over all ``N!`` layouts the mean of I of one map is exactly ``−1/(N − 1)`` (Cliff & Ord), which the null's mean
approaches.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..sheet import CorticalSheet
from .maps import as_sheet_map

__all__ = ["MoranTest", "morans_i", "mean_morans_i", "morans_i_permutation_test"]

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


@dataclass(frozen=True)
class MoranTest:
    """A permutation test of the mean Moran's I of maps on one sheet.

    Attributes:
        value: the observed mean I over the non-constant maps.
        p_value: one-sided (``I`` larger than chance), ``(1 + #{null ≥ value}) / (1 + n_permutations)``.
        null_mean, null_sd: mean and standard deviation of the mean I over the shuffled layouts.
        expected: ``−1/(N − 1)``, the exact mean of I over all layouts of ``N`` units.
        n_permutations, n_maps, seed: how the test was run (maps: the non-constant ones used).
    """

    value: float
    p_value: float
    null_mean: float
    null_sd: float
    expected: float
    n_permutations: int
    n_maps: int
    seed: int

    def to_dict(self) -> dict:
        return asdict(self)


def morans_i_permutation_test(
    maps: torch.Tensor, n_permutations: int = 999, seed: int = 0, chunk_elements: int = 1 << 24
) -> MoranTest:
    """Seeded permutation test of the mean Moran's I of ``maps`` (``(height, width)`` or ``(n_maps, height, width)``).

    Every permutation shuffles the unit positions once for all maps (see the module docstring). Constant maps are
    left out. Work is done ``chunk_elements`` map values at a time.
    """
    if not isinstance(n_permutations, int) or n_permutations < 1:
        raise ValueError(f"n_permutations={n_permutations!r} must be a positive integer (e.g. 999).")
    if maps.ndim == 2:
        maps = maps.unsqueeze(0)
    if maps.ndim != 3:
        raise ValueError(
            f"Expected maps of shape (height, width) or (n_maps, height, width), got {tuple(maps.shape)}."
        )
    n_maps, height, width = maps.shape
    observed = morans_i(maps)
    keep = ~observed.isnan()
    if not bool(keep.any()):
        raise ValueError("Every map is constant: Moran's I is undefined and cannot be tested.")
    flat = maps[keep].reshape(-1, height * width).double()  # (n_kept, N)
    value = float(observed[keep].mean())
    generator = torch.Generator().manual_seed(seed)
    per_chunk = max(1, chunk_elements // flat.numel())
    null = []
    for start in range(0, n_permutations, per_chunk):
        count = min(per_chunk, n_permutations - start)
        order = torch.stack([torch.randperm(height * width, generator=generator) for _ in range(count)])
        shuffled = flat[:, order]  # (n_kept, count, N)
        null.append(morans_i(shuffled.reshape(-1, count, height, width)).mean(dim=0))
    null_values = torch.cat(null)
    n_units = height * width
    return MoranTest(
        value=value,
        p_value=(1 + int((null_values >= value).sum())) / (1 + n_permutations),
        null_mean=float(null_values.mean()),
        null_sd=float(null_values.std()) if n_permutations > 1 else 0.0,
        expected=-1.0 / (n_units - 1),
        n_permutations=n_permutations,
        n_maps=int(flat.shape[0]),
        seed=seed,
    )
