"""Smoothness: how fast the correlation of two units falls off with their distance on the sheet.

After Margalit et al. (2024), as used by TopoNets (§2.3, A.6): for pairs of units ``(i, j)`` of a layer, take the
Pearson correlation ``r_ij`` of their activations over a set of stimuli (tokens of text, or images) and the
Euclidean distance ``d_ij`` of their positions on the cortical sheet; average ``r`` in distance bins. A topographic
layer has highly correlated neighbours and weakly correlated distant units:

    smoothness = max_b mean(r | d ∈ bin b) − min_b mean(r | d ∈ bin b)

over the bins holding at least ``min_pairs_per_bin`` pairs (the paper's definition: "the difference between the
highest and lowest correlation values from pairwise correlation versus distance plots"). Because the bins are of
equal width, the far bins of a sheet hold few pairs (on a 16 × 32 sheet the last of 20 bins holds 42 of 130,816
pairs) and their noisy means can set the maximum or the minimum. So every result also carries the pairs per bin,
the bins that set the maximum and the minimum (``max_bin``, ``min_bin``) and a **robust variant**, near minus far,
in which no bin is on its own:

    robust_score = mean(r_ij | d_ij ≤ near_distance) − mean(r_ij | d_ij ≥ median(d))

the mean correlation of all pairs within ``near_distance`` sheet spacings (default 2: the 12 nearest positions of
a unit) minus that of the farther half of the pairs (distance at or above the median pair distance, the lower
median). Both are means over pairs, not over bins, so each is weighted by how many pairs it holds (a ``ValueError``
says so when one holds fewer than ``min_pairs_per_bin``). A smooth map scores ≈ its near correlation; a shuffled
one ≈ 0.

**Pairs.** By default every pair of units: the correlation matrix is computed a block of rows at a time
(``Zᵀ Z / n`` of the standardized activations, memory bounded by the block) and binned by the squared sheet
distance with ``bincount``, so a 1,024-unit sheet's 523,776 pairs cost two ``(n × 1024) · (1024 × 1024)``
products. With ``max_pairs`` the pairs are a stratified random sample instead: every distance bin holds
``min(PAIRS_PER_BIN, its pairs)`` pairs or more (500; the rest of ``max_pairs`` shared in proportion to the bins'
sizes), and the near and far means weight each pair by the inverse of its bin's sampling rate.

**Floors.** Two numbers say how much of a score is noise:

- a **bootstrap interval** (``n_bootstrap`` replicates, seeded, percentile interval at ``confidence``) of both
  scores, resampling the *stimuli* (rows of ``samples``), the unit of replication: a new experiment draws new
  text or images, not new units. Tokens of one block of text are not independent, so ``groups`` (a block id per
  row) resamples whole blocks, as :func:`~hf_topo.analysis.report.analyze_model` does. Each replicate is the
  first-order (delta-method) expansion of every bin mean around the full data: the influence of stimulus ``t`` on
  a pair's correlation is ``z_ti z_tj − r_ij (z_ti² + z_tj²) / 2``, summed over the bin's pairs with one FFT
  autocorrelation of the stimulus's map on the sheet, so a replicate costs a ``(n_units · bins)``-sized sum,
  not a new correlation matrix (checked against recomputing the correlations on resampled rows in the tests);
- a **shuffle control** (``n_shuffles`` seeded permutations of the units over their positions on the sheet): the
  same activations and the same correlations with the spatial layout destroyed. Its ``shuffle_score`` is the
  score that max − min gives with no topography at all (the floor of the paper's score; near − far's is ≈ 0).

The weight-based variant correlates the units' incoming weight vectors instead of their activations (its
bootstrap resamples the input dimensions).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field

import torch

from ..sheet import CorticalSheet
from ..targets import TopoLayer
from .maps import unit_weights

__all__ = [
    "PAIRS_PER_BIN",
    "SmoothnessResult",
    "correlation_vs_distance",
    "smoothness",
    "weight_smoothness",
    "sheet_distances",
]

logger = logging.getLogger(__name__)

#: Pairs every distance bin holds at least in a stratified sample (``max_pairs``), or all of its pairs if fewer.
PAIRS_PER_BIN = 500

_CHUNK_ELEMENTS = 1 << 22  # ~32 MB of float64 per block of the correlation matrix or of FFT maps


@dataclass
class SmoothnessResult:
    """The correlation-vs-distance curve of a layer, its smoothness scores and their floors.

    Attributes:
        score: highest minus lowest binned mean correlation (bins with ``min_pairs_per_bin`` pairs or more): the
            paper's smoothness.
        distances: bin centres, in units of sheet spacing.
        correlations: mean Pearson ``r`` of the pairs in each bin (``nan`` for a bin without pairs).
        pair_counts: pairs per bin (those used: all of them, or the stratified sample's).
        n_pairs, n_samples, n_units: pairs used, samples per unit (tokens, images or weight dimensions), units with
            non-zero variance (constant units have no correlation and are left out).
        robust_score: ``near_correlation − far_correlation``, the robust variant (see the module docstring).
        near_correlation, near_pairs, near_distance: mean ``r`` of the pairs at distance ``≤ near_distance``, and
            how many there are.
        far_correlation, far_pairs, far_distance: mean ``r`` of the pairs at distance ``≥ far_distance`` (the
            lower median distance of all pairs), and how many there are.
        max_bin, min_bin: the bins (indices into ``distances``) whose means set the maximum and the minimum of
            ``score``: a sparse far bin setting either is visible with its ``pair_counts``.
        sampling: ``"all"`` (every pair) or ``"stratified"`` (``max_pairs``, ≥ :data:`PAIRS_PER_BIN` per bin).
        n_bootstrap, bootstrap_unit, n_bootstrap_units, confidence: the bootstrap: replicates, what was resampled
            (``"sample"``: rows; ``"group"``: the ``groups`` given, e.g. blocks of text) and how many there were.
        score_interval, robust_score_interval: ``[low, high]`` percentile intervals at ``confidence`` (``None``
            without a bootstrap).
        n_shuffles, shuffle_scores, shuffle_robust_scores: the shuffle control: both scores of the same
            activations with the units randomly permuted over their sheet positions, once per shuffle.
        shuffle_score, shuffle_robust_score: their means (``None`` without shuffles): the floor of each score.
    """

    score: float
    distances: list[float]
    correlations: list[float]
    pair_counts: list[int]
    n_pairs: int
    n_samples: int
    n_units: int
    robust_score: float
    near_correlation: float
    near_pairs: int
    near_distance: float
    far_correlation: float
    far_pairs: int
    far_distance: float
    max_bin: int = -1
    min_bin: int = -1
    sampling: str = "all"
    n_bootstrap: int = 0
    bootstrap_unit: str = "sample"
    n_bootstrap_units: int = 0
    confidence: float = 0.95
    score_interval: list[float] | None = None
    robust_score_interval: list[float] | None = None
    n_shuffles: int = 0
    shuffle_score: float | None = None
    shuffle_robust_score: float | None = None
    shuffle_scores: list[float] = field(default_factory=list)
    shuffle_robust_scores: list[float] = field(default_factory=list)

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


def _squared_distances(first: torch.Tensor, second: torch.Tensor, width: int) -> torch.Tensor:
    """Integer squared sheet distances between sheet indices ``first`` and ``second`` (broadcast)."""
    return (first // width - second // width).pow(2) + (first % width - second % width).pow(2)


@dataclass
class _Groups:
    """Which distance bin, and whether the near / far group, each squared distance ``0 … D − 1`` belongs to:
    ``matrix`` is ``(D + 1, n_bins + 2)`` (columns: the bins, near, far; the last row, for a unit with itself, 0)."""

    matrix: torch.Tensor
    n_bins: int
    far_distance: float

    @property
    def near(self) -> int:
        return self.n_bins

    @property
    def far(self) -> int:
        return self.n_bins + 1


def _group_matrix(pair_counts_by_d2: torch.Tensor, edges: torch.Tensor, near_distance: float) -> _Groups:
    """The groups of every squared distance, the far threshold being the lower median distance of the pairs counted
    in ``pair_counts_by_d2`` (``(D,)``, pairs at each squared distance)."""
    n_d2 = pair_counts_by_d2.numel()
    distance = torch.arange(n_d2, dtype=torch.float64).sqrt()
    cumulative = pair_counts_by_d2.cumsum(0)
    median_rank = (int(cumulative[-1]) - 1) // 2  # 0-based rank of the lower median
    far_distance = float(distance[int(torch.searchsorted(cumulative, median_rank, right=True))])
    n_bins = edges.numel() - 1
    matrix = torch.zeros(n_d2 + 1, n_bins + 2, dtype=torch.float64)
    index = torch.bucketize(distance, edges[1:-1], right=True)  # 0..n_bins-1; the diagonal falls in the last bin
    rows = torch.arange(1, n_d2)  # d² = 0 is a unit with itself
    matrix[rows, index[1:]] = 1.0
    matrix[rows, n_bins] = (distance[1:] <= near_distance).double()
    matrix[rows, n_bins + 1] = (distance[1:] >= far_distance).double()
    return _Groups(matrix, n_bins, far_distance)


def _all_pair_counts(positions: torch.Tensor, width: int, n_d2: int) -> torch.Tensor:
    """Unordered pairs of units at each squared distance (``(n_d2,)``, int64) for units at sheet ``positions``."""
    counts = torch.zeros(n_d2 + 1, dtype=torch.int64)
    chunk = max(1, _CHUNK_ELEMENTS // positions.numel())
    for start in range(0, positions.numel(), chunk):
        d2 = _squared_distances(positions[start : start + chunk, None], positions[None, :], width)
        counts += torch.bincount(d2.flatten(), minlength=n_d2 + 1)
    counts[0] -= positions.numel()  # each unit with itself
    return counts[:n_d2] // 2


def _all_pairs(
    standardized: torch.Tensor,
    layouts: list[torch.Tensor],
    width: int,
    n_d2: int,
    groups: _Groups | None,
) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Correlations of every pair of units, summed by squared distance for each layout (the units' sheet positions).

    Returns ``[(n_d2,) sums of r over unordered pairs, one per layout]`` and, with ``groups``, ``(n_units, groups)``
    ``a_ig = ½ Σ_{j ≠ i in group g} r_ij`` for the first layout (the bootstrap's second-order term).
    """
    n_samples, n_units = standardized.shape
    sums = [torch.zeros(n_d2 + 1, dtype=torch.float64) for _ in layouts]
    row_terms = torch.zeros(n_units, groups.matrix.shape[1], dtype=torch.float64) if groups is not None else None
    chunk = max(1, _CHUNK_ELEMENTS // max(n_units, n_d2 + 1))
    for start in range(0, n_units, chunk):
        stop = min(start + chunk, n_units)
        r = (standardized[:, start:stop].T @ standardized).double() / n_samples  # (chunk, n_units)
        local = torch.arange(stop - start)
        for k, positions in enumerate(layouts):
            d2 = _squared_distances(positions[start:stop, None], positions[None, :], width)
            d2[local, local + start] = n_d2  # a unit with itself: the spare last slot
            sums[k] += torch.bincount(d2.flatten(), weights=r.flatten(), minlength=n_d2 + 1)
            if k == 0 and row_terms is not None:
                by_d2 = torch.bincount(
                    (local[:, None] * (n_d2 + 1) + d2).flatten(),
                    weights=r.flatten(),
                    minlength=local.numel() * (n_d2 + 1),
                ).view(-1, n_d2 + 1)  # (chunk, n_d2 + 1): each row's correlations by squared distance
                row_terms[start:stop] = by_d2 @ groups.matrix / 2
    return [s[:n_d2] / 2 for s in sums], row_terms  # ordered pairs counted each pair twice


def _all_pairs_sample_terms(
    standardized: torch.Tensor, positions: torch.Tensor, height: int, width: int, groups: _Groups
) -> torch.Tensor:
    """``(n_samples, groups)``: ``Σ_{pairs (i, j) in group g} z_ti z_tj`` over every pair, per sample ``t``, from
    the autocorrelation of the sample's map on the sheet (zero-padded FFT: no wrap-around)."""
    n_samples = standardized.shape[0]
    dy = torch.arange(2 * height)
    dy = torch.where(dy < height, dy, dy - 2 * height)  # index H is |dy| = H: no pair that far
    dx = torch.arange(2 * width)
    dx = torch.where(dx < width, dx, dx - 2 * width)
    d2 = (dy[:, None] ** 2 + dx[None, :] ** 2).flatten()
    possible = (dy.abs() < height)[:, None] & (dx.abs() < width)[None, :]
    n_d2 = groups.matrix.shape[0] - 1
    d2 = torch.where(possible.flatten() & (d2 > 0), d2, torch.full_like(d2, n_d2))  # itself / impossible: zero row
    by_displacement = groups.matrix[d2].float()  # (4HW, groups)
    out = torch.empty(n_samples, groups.matrix.shape[1], dtype=torch.float64)
    chunk = max(1, _CHUNK_ELEMENTS // (4 * height * width))
    for start in range(0, n_samples, chunk):
        maps = torch.zeros(min(chunk, n_samples - start), height * width)
        maps[:, positions] = standardized[start : start + chunk]
        spectrum = torch.fft.rfft2(maps.view(-1, height, width), s=(2 * height, 2 * width))
        auto = torch.fft.irfft2(spectrum.real.square() + spectrum.imag.square(), s=(2 * height, 2 * width))
        out[start : start + chunk] = (auto.flatten(1) @ by_displacement).double() / 2  # ordered pairs → unordered
    return out


def _stratified_pairs(
    varying: torch.Tensor,
    height: int,
    width: int,
    groups: _Groups,
    bin_totals: torch.Tensor,
    max_pairs: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random sample of pairs of varying units, every bin with ``max(PAIRS_PER_BIN, its share of max_pairs)``
    pairs or all of its pairs when it holds fewer. Returns indices into ``varying`` (first, second) and each pair's
    weight, the inverse of its bin's sampling rate."""
    index_of = torch.full((height * width,), -1, dtype=torch.int64)
    index_of[varying] = torch.arange(varying.numel())
    dy, dx = torch.meshgrid(torch.arange(height), torch.arange(-width + 1, width), indexing="ij")
    dy, dx = dy.flatten(), dx.flatten()
    keep = (dy > 0) | (dx > 0)  # each unordered displacement once
    dy, dx = dy[keep], dx[keep]
    bin_of = groups.matrix[dy**2 + dx**2, : groups.n_bins].argmax(1)
    full_grid_pairs = (height - dy) * (width - dx.abs())
    total = int(bin_totals.sum())
    firsts, seconds, weights = [], [], []
    for b in range(groups.n_bins):
        available = int(bin_totals[b])
        if available == 0:
            continue
        quota = min(available, max(PAIRS_PER_BIN, round(max_pairs * available / total)))
        in_bin = torch.nonzero(bin_of == b).squeeze(1)
        if quota == available:  # every pair of the bin
            parts = []
            for v in in_bin.tolist():
                rows = torch.arange(height - dy[v])
                cols = torch.arange(max(0, -dx[v]), width - max(0, dx[v]))
                a = (rows[:, None] * width + cols[None, :]).flatten()
                parts.append(torch.stack([a, a + dy[v] * width + dx[v]]))
            pairs = torch.cat(parts, dim=1)
        else:  # uniform over the bin's pairs of the full grid, with replacement, then the varying ones
            chosen = []
            n_chosen = 0
            while n_chosen < quota:
                v = in_bin[torch.multinomial(full_grid_pairs[in_bin].double(), 2 * quota, True, generator=generator)]
                row = (torch.rand(v.numel(), generator=generator) * (height - dy[v])).long()
                low = (-dx[v]).clamp_min(0)
                col = low + (torch.rand(v.numel(), generator=generator) * (width - dx[v].abs())).long()
                a = row * width + col
                drawn = torch.stack([a, a + dy[v] * width + dx[v]])
                drawn = drawn[:, (index_of[drawn] >= 0).all(0)]
                chosen.append(drawn)
                n_chosen += drawn.shape[1]
            pairs = torch.cat(chosen, dim=1)[:, :quota]
        pairs = index_of[pairs]
        pairs = pairs[:, (pairs >= 0).all(0)]
        firsts.append(pairs[0])
        seconds.append(pairs[1])
        weights.append(torch.full((pairs.shape[1],), available / pairs.shape[1], dtype=torch.float64))
    return torch.cat(firsts), torch.cat(seconds), torch.cat(weights)


def _pair_correlations(by_unit: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Pearson ``r`` of the pairs ``(first, second)`` from ``by_unit``, the standardized samples transposed
    (``(n_units, n_samples)``, so that a pair's two rows are contiguous)."""
    n_samples = by_unit.shape[1]
    chunk = max(1, _CHUNK_ELEMENTS // n_samples)
    out = torch.empty(first.numel(), dtype=torch.float64)
    for start in range(0, first.numel(), chunk):
        i, j = first[start : start + chunk], second[start : start + chunk]
        out[start : start + chunk] = (by_unit[i] * by_unit[j]).sum(dim=1).double() / n_samples
    return out


def _sampled_pairs_sample_terms(
    by_unit: torch.Tensor, first: torch.Tensor, second: torch.Tensor, pair_groups: torch.Tensor
) -> torch.Tensor:
    """``(n_samples, groups)``: ``Σ_{sampled pairs in group g} w z_ti z_tj`` per sample ``t`` (``by_unit``: the
    standardized samples transposed; ``pair_groups``: ``(n_pairs, groups)``, each pair's weight in each group)."""
    out = torch.zeros(by_unit.shape[1], pair_groups.shape[1], dtype=torch.float64)
    chunk = max(1, _CHUNK_ELEMENTS // by_unit.shape[1])
    for start in range(0, first.numel(), chunk):
        i, j = first[start : start + chunk], second[start : start + chunk]
        out += (by_unit[i] * by_unit[j]).double().T @ pair_groups[start : start + chunk]
    return out


def _scores(means: torch.Tensor, usable: torch.Tensor, groups: _Groups) -> tuple[torch.Tensor, torch.Tensor]:
    """Both scores of ``(..., groups)`` group means: max − min over the usable bins, and near − far."""
    bins = means[..., : groups.n_bins][..., usable]
    return bins.max(-1).values - bins.min(-1).values, means[..., groups.near] - means[..., groups.far]


def correlation_vs_distance(
    samples: torch.Tensor,
    sheet: CorticalSheet | tuple[int, int],
    n_bins: int = 20,
    max_pairs: int | None = None,
    min_pairs_per_bin: int = 20,
    seed: int = 0,
    near_distance: float = 2.0,
    n_bootstrap: int = 200,
    confidence: float = 0.95,
    groups: torch.Tensor | None = None,
    n_shuffles: int = 10,
) -> SmoothnessResult:
    """Binned Pearson correlation of unit pairs against their distance on the sheet, the smoothness scores and
    their floors (a bootstrap interval and a shuffle control).

    Args:
        samples: ``(n_samples, n_units)``, one column per unit in sheet order (activations, or weights transposed).
        sheet: the layer's :class:`~hf_topo.sheet.CorticalSheet` or ``(height, width)``.
        n_bins: equal-width distance bins between 1 (neighbours) and the sheet's diagonal ``hypot(h − 1, w − 1)``,
            the same for every model with this sheet so that curves can be overlaid.
        max_pairs: ``None`` (default) for every pair; else, when there are more pairs than this, a stratified random
            sample of about this many (``seed``-ed): every bin keeps ``min(PAIRS_PER_BIN, its pairs)`` pairs or more,
            so the sample can exceed ``max_pairs`` by up to ``n_bins × PAIRS_PER_BIN``.
        min_pairs_per_bin: bins with fewer pairs are plotted but not used for the score; the near and far groups
            of the robust score must hold at least this many pairs.
        seed: seeds the pair sample, the bootstrap and the shuffles.
        near_distance: the robust score's near group: pairs at most this far apart (sheet spacings, ``≥ 1``).
        n_bootstrap: bootstrap replicates of both scores (``0``: no interval).
        confidence: the coverage of the percentile intervals.
        groups: ``(n_samples,)`` integer ids of the units of replication the bootstrap resamples (e.g. the block of
            text each token comes from); ``None``: each sample (row) is its own.
        n_shuffles: random permutations of the units over their sheet positions (``0``: no shuffle control).
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
    if not near_distance >= 1.0:
        raise ValueError(f"near_distance={near_distance} must be at least 1 (the distance of adjacent units).")
    if n_bootstrap < 0 or n_shuffles < 0:
        raise ValueError(f"n_bootstrap={n_bootstrap} and n_shuffles={n_shuffles} must be 0 (none) or more.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence} must lie strictly between 0 and 1 (e.g. 0.95).")
    if max_pairs is not None and max_pairs < 1:
        raise ValueError(f"max_pairs={max_pairs} must be a positive number of pairs, or None for every pair.")
    if groups is not None and (groups.ndim != 1 or groups.numel() != samples.shape[0]):
        raise ValueError(f"groups must hold one id per sample ({samples.shape[0]}), got shape {tuple(groups.shape)}.")
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
    n_samples, n_units = standardized.shape

    generator = torch.Generator().manual_seed(seed)
    n_d2 = (height - 1) ** 2 + (width - 1) ** 2 + 1
    diagonal = math.hypot(height - 1, width - 1)
    edges = torch.linspace(1.0, max(diagonal, 1.0 + 1e-9), n_bins + 1, dtype=torch.float64)
    all_counts = _all_pair_counts(varying, width, n_d2)  # every pair, whether all or a sample is used
    group_of = _group_matrix(all_counts, edges, near_distance)
    all_group_counts = all_counts.double() @ group_of.matrix[:n_d2]
    total_pairs = n_units * (n_units - 1) // 2
    shuffles = [torch.randperm(n_units, generator=generator) for _ in range(n_shuffles)]
    sampled = max_pairs is not None and total_pairs > max_pairs

    if not sampled:
        layouts = [varying] + [varying[perm] for perm in shuffles]
        sums_by_d2, row_terms = _all_pairs(standardized, layouts, width, n_d2, group_of if n_bootstrap else None)
        group_sums = [s @ group_of.matrix[:n_d2] for s in sums_by_d2]
        weights_per_group = used_counts = all_group_counts
        n_pairs = total_pairs
    else:
        first, second, pair_weight = _stratified_pairs(
            varying, height, width, group_of, all_group_counts[:n_bins], max_pairs, generator
        )
        by_unit = standardized.T.contiguous()  # (n_units, n_samples)
        correlations = _pair_correlations(by_unit, first, second)
        pair_groups = group_of.matrix[_squared_distances(varying[first], varying[second], width)]  # (n_pairs, groups)
        group_sums = [(pair_weight * correlations) @ pair_groups]
        weights_per_group = pair_weight @ pair_groups
        used_counts = pair_groups.sum(0)
        n_pairs = int(first.numel())

    means = group_sums[0] / weights_per_group
    bin_counts = used_counts[:n_bins].round().long()
    usable = bin_counts >= min_pairs_per_bin
    if int(usable.sum()) < 2:
        raise ValueError(
            f"Fewer than 2 distance bins hold {min_pairs_per_bin} pairs or more (pairs per bin: {bin_counts.tolist()}): "
            "use fewer bins, more pairs or a lower min_pairs_per_bin."
        )
    near_pairs, far_pairs = int(used_counts[group_of.near]), int(used_counts[group_of.far])
    for name, size in (("near", near_pairs), ("far", far_pairs)):
        if size < min_pairs_per_bin:
            raise ValueError(
                f"The robust score's {name} group holds {size} pairs, fewer than min_pairs_per_bin="
                f"{min_pairs_per_bin}: use more pairs (max_pairs), a larger near_distance or a lower min_pairs_per_bin."
            )
    bin_means = torch.where(bin_counts > 0, means[:n_bins], torch.full((n_bins,), math.nan, dtype=torch.float64))
    score, robust = _scores(means, usable, group_of)
    usable_index = torch.nonzero(usable).squeeze(1)
    result = SmoothnessResult(
        score=float(score),
        distances=((edges[:-1] + edges[1:]) / 2).tolist(),
        correlations=bin_means.tolist(),
        pair_counts=bin_counts.tolist(),
        n_pairs=n_pairs,
        n_samples=n_samples,
        n_units=n_units,
        robust_score=float(robust),
        near_correlation=float(means[group_of.near]),
        near_pairs=near_pairs,
        near_distance=float(near_distance),
        far_correlation=float(means[group_of.far]),
        far_pairs=far_pairs,
        far_distance=group_of.far_distance,
        max_bin=int(usable_index[means[:n_bins][usable].argmax()]),
        min_bin=int(usable_index[means[:n_bins][usable].argmin()]),
        sampling="stratified" if sampled else "all",
        confidence=float(confidence),
    )

    if n_shuffles:
        if sampled:  # a new stratified sample on each shuffled layout
            kwargs = dict(n_bins=n_bins, max_pairs=max_pairs, min_pairs_per_bin=min_pairs_per_bin, seed=seed)
            shuffled = [
                correlation_vs_distance(
                    _shuffled_columns(samples, varying, perm), (height, width), **kwargs,
                    near_distance=near_distance, n_bootstrap=0, n_shuffles=0,
                )
                for perm in shuffles
            ]  # fmt: skip
            result.shuffle_scores = [r.score for r in shuffled]
            result.shuffle_robust_scores = [r.robust_score for r in shuffled]
        else:
            for sums in group_sums[1:]:
                shuffle_score, shuffle_robust = _scores(sums / all_group_counts, usable, group_of)
                result.shuffle_scores.append(float(shuffle_score))
                result.shuffle_robust_scores.append(float(shuffle_robust))
        result.n_shuffles = n_shuffles
        result.shuffle_score = sum(result.shuffle_scores) / n_shuffles
        result.shuffle_robust_score = sum(result.shuffle_robust_scores) / n_shuffles

    if n_bootstrap:
        if sampled:
            weighted = pair_groups * pair_weight[:, None]
            sample_terms = _sampled_pairs_sample_terms(by_unit, first, second, weighted)
            row_terms = torch.zeros(n_units, weighted.shape[1], dtype=torch.float64)
            half = weighted * correlations[:, None] / 2
            row_terms.index_add_(0, first, half).index_add_(0, second, half)
        else:
            sample_terms = _all_pairs_sample_terms(standardized, varying, height, width, group_of)
        # the influence of each sample on each group's mean correlation (mean 0 over the samples)
        influence = (sample_terms - standardized.double().square() @ row_terms) / weights_per_group.clamp_min(1e-300)
        unit_ids = torch.arange(n_samples) if groups is None else torch.unique(groups, return_inverse=True)[1]
        n_replicated = int(unit_ids.max()) + 1
        unit_influence = torch.zeros(n_replicated, influence.shape[1], dtype=torch.float64).index_add_(
            0, unit_ids, influence
        )
        unit_sizes = torch.bincount(unit_ids, minlength=n_replicated).double()
        draws = torch.randint(n_replicated, (n_bootstrap, n_replicated), generator=generator)
        times_drawn = torch.zeros(n_bootstrap, n_replicated, dtype=torch.float64).scatter_add_(
            1, draws, torch.ones(n_bootstrap, n_replicated, dtype=torch.float64)
        )
        replicate_means = means + (times_drawn @ unit_influence) / (times_drawn @ unit_sizes)[:, None]
        replicate_scores, replicate_robust = _scores(replicate_means, usable, group_of)
        tails = torch.tensor([(1 - confidence) / 2, (1 + confidence) / 2], dtype=torch.float64)
        result.n_bootstrap = n_bootstrap
        result.bootstrap_unit = "sample" if groups is None else "group"
        result.n_bootstrap_units = n_replicated
        result.score_interval = torch.quantile(replicate_scores, tails).tolist()
        result.robust_score_interval = torch.quantile(replicate_robust, tails).tolist()
    return result


def _shuffled_columns(samples: torch.Tensor, varying: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """``samples`` with the varying units permuted over the varying units' positions (constant units stay)."""
    shuffled = samples.clone()
    shuffled[:, varying] = samples[:, varying[perm]]
    return shuffled


def smoothness(activations: torch.Tensor, sheet: CorticalSheet | tuple[int, int], **kwargs) -> SmoothnessResult:
    """Activation smoothness of a layer: :func:`correlation_vs_distance` of its ``(n_samples, n_units)`` activations."""
    return correlation_vs_distance(activations, sheet, **kwargs)


def weight_smoothness(layer: TopoLayer, **kwargs) -> SmoothnessResult:
    """Weight smoothness of a layer: the Pearson correlation of two units' incoming weight vectors (over the
    ``depth`` input dimensions) against their distance on the sheet, scored as :func:`correlation_vs_distance`
    (``groups`` does not apply: the bootstrap resamples the input dimensions)."""
    kwargs.pop("groups", None)
    return correlation_vs_distance(unit_weights(layer).cpu().T, layer.sheet, **kwargs)
