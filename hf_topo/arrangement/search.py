"""Finding the arrangement of a layer's units on its sheet that minimises a topographic objective.

A layer's units are the rows of ``units`` (``n × d``: unit ``k``'s incoming weights). An arrangement is a permutation
``perm`` of them: position ``p`` of the ``height × width`` sheet (row ``p // width``, column ``p % width``) holds unit
``perm[p]``. The search is

1. an **initial layout**: classical MDS of the units' similarities (the top two principal components of the
   normalised weight vectors), assigned to the grid by sorting: the first component along the width (the longer
   axis), the second along the height inside each column; with ``init="auto"`` the better of it and the identity;
2. **vectorized pairwise-swap refinement**: every round proposes, for every position ``p``, three swaps (the unit
   that best fits ``p``'s neighbourhood, a random unit nearby, a random unit anywhere), computes every candidate's
   exact change of the objective from local terms, and applies the improving swaps greedily, best first, among those
   whose affected positions do not overlap (so their changes add up exactly and the objective never rises).

The exact local changes come from two ``n × n`` matrices kept per round:

==========================  ==========================================================================================
objective                   what a swap of positions ``p, q`` changes
==========================  ==========================================================================================
``"topoloss"``              ``1 − mean_r cos(C_r, B_r)`` with ``B = M C`` the blurred sheet (``M = M_h ⊗ M_w``, the
                            separable blur of :func:`hf_topo.regularizers.laplacian_pyramid.blur_matrices`). Only positions ``r`` in the
                            support of ``M[:, p]`` or ``M[:, q]`` (and ``p, q``) change, and with
                            ``G = C Cᵀ`` and ``H = B Cᵀ = M G``: ``B'_r·C'_r = H[r, σr] + c_r (G[σr, q] − G[σr, p])``,
                            ``|B'_r|² = |B_r|² + 2 c_r (H[r, q] − H[r, p]) + c_r² |C_q − C_p|²``, ``c_r = M[r, p] −
                            M[r, q]``, ``σ`` the swap.
``"weight_similarity"``     mean over neighbouring position pairs of ``D[perm[p], perm[r]]`` (the unit distance of
                            :mod:`hf_topo.regularizers.similarity`): ``Σ_{r ∈ N(p)∖q} (D_qr − D_pr) + Σ_{r ∈ N(q)∖p} (D_pr − D_qr)``.
==========================  ==========================================================================================

Everything is float64 on the CPU; ``G``/``H`` (or ``D``) cost ``8·n²`` bytes each (75 MB for GPT-2's 3072 units).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..regularizers.laplacian_pyramid import blur_matrices, check_blur_arguments
from ..regularizers.similarity import DISTANCES, neighbour_offsets, neighbour_pair_count

__all__ = ["ARRANGE_OBJECTIVES", "ARRANGE_INITS", "SearchResult", "find_arrangement", "mds_layout", "sheet_objective"]

logger = logging.getLogger(__name__)

#: Objectives an arrangement minimises: TopoLoss (blur-and-cosine) and Weight Similarity (neighbour distance).
ARRANGE_OBJECTIVES = ("topoloss", "weight_similarity")
#: Initial layouts: ``"auto"`` (the better of ``"mds"`` and ``"identity"``), ``"mds"``, ``"identity"``, ``"random"``.
ARRANGE_INITS = ("auto", "mds", "identity", "random")

# Norms below this count as this value, as torch.nn.functional.cosine_similarity and hf_topo.regularizers do.
COSINE_EPS = 1e-8
# A swap is applied only when it lowers the objective by more than this (float64 rounding of the local terms).
_MIN_GAIN = 1e-13


@dataclass
class SearchResult:
    """What :func:`find_arrangement` found for one sheet.

    Attributes:
        permutation: ``(n,)`` int64: position ``p`` holds unit ``permutation[p]``.
        identity: the objective of the units where they are (the identity arrangement).
        initial: the objective of the initial layout the swaps started from.
        final: the objective of ``permutation``.
        rounds: swap rounds run; swaps: swaps applied.
        history: the objective of the initial layout, then after every round (``history[k]``: after ``k`` rounds).
    """

    permutation: torch.Tensor
    identity: float
    initial: float
    final: float
    rounds: int
    swaps: int
    history: list[float] = field(default_factory=list)


def _prepared_vectors(units: torch.Tensor, objective: str, distance: str) -> torch.Tensor:
    """The unit vectors whose geometry the objective sees: unit-norm (cosine), centred unit-norm (correlation)."""
    vectors = units.double()
    if objective == "weight_similarity" and distance == "euclidean":
        return vectors
    if objective == "weight_similarity" and distance == "correlation":
        vectors = vectors - vectors.mean(dim=1, keepdim=True)
    return F.normalize(vectors, dim=1, eps=COSINE_EPS)


def mds_layout(vectors: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Grid layout of ``vectors`` (``n × d``) from their first two principal components (classical MDS).

    The units are sorted by the first component into ``width`` columns of ``height`` units (the longer axis gets the
    component with the most variance), and each column by the second component from top to bottom. Returns the
    permutation (position ``p`` holds unit ``perm[p]``). Deterministic (an eigendecomposition, no random start).
    """
    n = vectors.shape[0]
    if n != height * width:
        raise ValueError(f"{n} units do not fill a {height}x{width} sheet.")
    centred = vectors.double() - vectors.double().mean(dim=0)
    if centred.shape[1] >= 2:
        _, eigenvectors = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
        coords = centred @ eigenvectors[:, [-1, -2]]  # (n, 2)
    else:
        coords = torch.cat([centred, torch.zeros_like(centred)], dim=1)
    by_first = torch.argsort(coords[:, 0], stable=True)
    columns = by_first.view(width, height)  # column j holds the j-th slice of `height` units along component 1
    order = torch.argsort(coords[columns, 1], dim=1, stable=True)
    columns = torch.gather(columns, 1, order)  # (width, height), sorted top to bottom by component 2
    return columns.T.reshape(-1).contiguous()  # position (i, j) = i * width + j


class _BlurCosine:
    """TopoLoss ``1 − mean_r cos(C_r, B_r)`` of the arranged sheet, with exact swap changes (module docstring).

    The blur ``B = Up · Down · C`` is kept as its two sparse factors (a few taps per row for every interpolation
    mode), so a round costs ``O(n · m)`` for ``m = (h/φh)·(w/φw)`` downsampled positions, not ``O(n²)``:
    ``E = Down · G`` (``m × n``, columns in unit order) gives ``H[r, s] = Σ_k Up[r, k] E[k, perm[s]]``.
    """

    def __init__(self, units, height, width, factor_h, factor_w, interpolation):
        check_blur_arguments(height, width, factor_h, factor_w, interpolation)
        self.n, self.height, self.width = height * width, height, width
        self.units = units.double()  # (n, d), unit order
        self.gram = self.units @ self.units.T  # (n, n), unit order
        self.norm_c = self.gram.diagonal().clamp_min(0).sqrt().clamp_min(COSINE_EPS)  # per unit
        down_h, up_h, down_w, up_w = blur_matrices(
            height, width, factor_h, factor_w, interpolation, dtype=torch.float64
        )
        self.m_h, self.m_w = up_h @ down_h, up_w @ down_w  # (h, h), (w, w): M = M_h ⊗ M_w
        self.down_idx, self.down_val = _kron_taps(down_h, down_w, width)  # (m, A): positions and weights
        self.up_idx, self.up_val = _kron_taps(up_h, up_w, down_w.shape[0])  # (n, B): downsampled positions
        # Positions whose blurred vector moves when the unit at p changes: the support of column p of M, plus p.
        rows = [torch.nonzero(self.m_h[:, i]).flatten() for i in range(height)]
        cols = [torch.nonzero(self.m_w[:, j]).flatten() for j in range(width)]
        pad = self.n
        rows_t, cols_t = _padded(rows, pad), _padded(cols, pad)  # (h, Sh), (w, Sw), padded with n
        i, j = torch.arange(self.n) // width, torch.arange(self.n) % width
        r, c = rows_t[i][:, :, None], cols_t[j][:, None, :]
        support = torch.where((r < pad) & (c < pad), r * width + c, torch.full_like(r * c, pad)).flatten(1)
        self.affected = torch.cat([support, torch.arange(self.n)[:, None]], dim=1)  # (n, Sh·Sw + 1)

    def refresh(self, perm: torch.Tensor) -> float:
        """Set the state for arrangement ``perm``; returns its objective."""
        self.perm = perm
        taps = perm[self.down_idx]  # (m, A): units under each downsampling tap
        self.e = (self.down_val[:, :, None] * self.gram[taps]).sum(1)  # (m, n): E[k, u] = (Down C)_k · X_u
        down = (self.down_val[:, :, None] * self.units[taps]).sum(1)  # (m, d) = Down C
        blurred = (self.up_val[:, :, None] * down[self.up_idx]).sum(1)  # (n, d) = B
        self.norm_b = blurred.square().sum(1).sqrt()
        self.cos = self._h(torch.arange(self.n), perm) / (self.norm_c[perm] * self.norm_b.clamp_min(COSINE_EPS))
        return float(1.0 - self.cos.mean())

    def _h(self, r: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        """``B_r · X_u`` for positions ``r`` and units ``units`` of the same shape."""
        return (self.up_val[r] * self.e[self.up_idx[r], units.unsqueeze(-1)]).sum(-1)

    def best_fits(self, positions: torch.Tensor) -> torch.Tensor:
        """For each of ``positions``, the position whose unit is closest in angle to the blurred sheet there."""
        score = torch.zeros(len(positions), self.n, dtype=torch.float64)  # (positions, units): B_p · X_u
        for tap in range(self.up_idx.shape[1]):
            score.addcmul_(self.e[self.up_idx[positions, tap]], self.up_val[positions, tap, None])
        score /= self.norm_c
        score[torch.arange(len(positions)), self.perm[positions]] = -math.inf
        return torch.argsort(self.perm)[score.argmax(dim=1)]

    def _m(self, r: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        w = self.width
        return self.m_h[r // w, p // w] * self.m_w[r % w, p % w]

    def swap_gains(self, p: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(decrease of the objective, affected positions padded with n)`` of swapping positions ``p[k], q[k]``."""
        n, perm, gram = self.n, self.perm, self.gram
        claims = _unique_rows(torch.cat([self.affected[p], self.affected[q]], dim=1), n)  # (K, L)
        k, slot = torch.nonzero(claims < n, as_tuple=True)  # one entry per (candidate, affected position)
        r, pk, qk = claims[k, slot], p[k], q[k]
        sigma = torch.where(r == pk, qk, torch.where(r == qk, pk, r))  # whose unit sits at r after the swap
        u_s, u_p, u_q = perm[sigma], perm[pk], perm[qk]
        coef = self._m(r, pk) - self._m(r, qk)
        dot = self._h(r, u_s) + coef * (gram[u_s, u_q] - gram[u_s, u_p])
        delta2 = gram[u_p, u_p] + gram[u_q, u_q] - 2 * gram[u_p, u_q]
        norm_b2 = self.norm_b[r].square() + 2 * coef * (self._h(r, u_q) - self._h(r, u_p)) + coef.square() * delta2
        cos = dot / (self.norm_c[u_s] * norm_b2.clamp_min(0).sqrt().clamp_min(COSINE_EPS))
        gain = torch.zeros(p.shape[0], dtype=torch.float64).index_add_(0, k, cos - self.cos[r]) / n
        return gain, claims


class _NeighbourDistance:
    """Weight Similarity: mean over neighbouring position pairs of the distance between their units."""

    def __init__(self, units, height, width, distance, radius):
        if distance not in DISTANCES:
            raise ValueError(f"distance={distance!r} is not supported; choose one of {DISTANCES}.")
        self.n, self.height, self.width = height * width, height, width
        self.pairs = neighbour_pair_count(height, width, radius)
        if self.pairs == 0:
            raise ValueError(f"A {height}x{width} sheet has no neighbouring positions; it needs at least two units.")
        vectors = _prepared_vectors(units, "weight_similarity", distance)
        if distance == "euclidean":
            self.dist = torch.cdist(vectors, vectors)
        else:
            self.dist = 1.0 - vectors @ vectors.T
        self.dist.fill_diagonal_(0.0)  # (n, n), unit order
        offsets = neighbour_offsets(radius)
        offsets = offsets + [(-dy, -dx) for dy, dx in offsets]
        i, j = torch.arange(self.n) // width, torch.arange(self.n) % width
        neighbours = []
        for dy, dx in offsets:
            ii, jj = i + dy, j + dx
            inside = (ii >= 0) & (ii < height) & (jj >= 0) & (jj < width)
            neighbours.append(torch.where(inside, ii * width + jj, torch.full_like(ii, self.n)))
        self.neighbours = torch.stack(neighbours, dim=1)  # (n, K), padded with n

    def refresh(self, perm: torch.Tensor) -> float:
        self.perm = perm
        valid = self.neighbours < self.n
        p = torch.arange(self.n)[:, None].expand_as(self.neighbours)[valid]
        total = self.dist[perm[p], perm[self.neighbours[valid]]].sum()
        return float(total / 2 / self.pairs)

    def best_fits(self, positions: torch.Tensor) -> torch.Tensor:
        """For each of ``positions``, the position whose unit is closest on average to that position's neighbours."""
        score = torch.zeros(len(positions), self.n, dtype=torch.float64)  # (positions, units)
        for column in self.neighbours[positions].T:
            inside = column < self.n
            score[inside] += self.dist[self.perm[column[inside]]]
        score[torch.arange(len(positions)), self.perm[positions]] = math.inf
        return torch.argsort(self.perm)[score.argmin(dim=1)]

    def swap_gains(self, p: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, perm, dist = self.n, self.perm, self.dist
        n_p, n_q = self.neighbours[p], self.neighbours[q]  # (K, Kn)
        u_p, u_q = perm[p][:, None], perm[q][:, None]
        use_p, use_q = (n_p < n) & (n_p != q[:, None]), (n_q < n) & (n_q != p[:, None])
        r_p, r_q = perm[n_p.clamp_max(n - 1)], perm[n_q.clamp_max(n - 1)]
        change = torch.where(use_p, dist[u_q, r_p] - dist[u_p, r_p], 0).sum(1) + torch.where(
            use_q, dist[u_p, r_q] - dist[u_q, r_q], 0
        ).sum(1)
        claims = _unique_rows(torch.cat([n_p, n_q, p[:, None], q[:, None]], dim=1), n)
        return -change / self.pairs, claims


def _kron_taps(first: torch.Tensor, second: torch.Tensor, second_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The nonzero taps of ``first ⊗ second`` row by row: ``(index, weight)``, padded with index 0 and weight 0."""
    taps_1 = [torch.nonzero(row).flatten() for row in first]
    taps_2 = [torch.nonzero(row).flatten() for row in second]
    idx_1, idx_2 = _padded(taps_1, -1), _padded(taps_2, -1)  # (rows_1, A1), (rows_2, A2)
    i = torch.arange(first.shape[0]).repeat_interleave(second.shape[0])
    j = torch.arange(second.shape[0]).repeat(first.shape[0])
    a, b = idx_1[i][:, :, None], idx_2[j][:, None, :]  # (rows, A1, 1), (rows, 1, A2)
    valid = (a >= 0) & (b >= 0)
    weight = torch.where(
        valid, first[i[:, None, None], a.clamp_min(0)] * second[j[:, None, None], b.clamp_min(0)], 0.0
    )
    index = torch.where(valid, a * second_size + b, 0)
    return index.flatten(1), weight.flatten(1).to(torch.float64)


def _padded(lists: list[torch.Tensor], pad: int) -> torch.Tensor:
    size = max(1, max(len(x) for x in lists))
    out = torch.full((len(lists), size), pad, dtype=torch.long)
    for k, x in enumerate(lists):
        out[k, : len(x)] = x
    return out


def _unique_rows(indices: torch.Tensor, pad: int) -> torch.Tensor:
    """Each row with repeated entries replaced by ``pad`` (rows come back sorted)."""
    ordered, _ = indices.sort(dim=1)
    repeated = torch.zeros_like(ordered, dtype=torch.bool)
    repeated[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    return ordered.masked_fill(repeated, pad)


def sheet_objective(
    units: torch.Tensor,
    height: int,
    width: int,
    objective: str = "topoloss",
    *,
    factor_h: float = 3.0,
    factor_w: float = 3.0,
    interpolation: str = "bilinear",
    distance: str = "correlation",
    neighbourhood: int = 1,
):
    """The search state of ``objective`` over ``units`` (``n × d``) on a ``height × width`` sheet; its ``refresh(perm)``
    returns the objective of an arrangement (used for the random-permutation null)."""
    if objective not in ARRANGE_OBJECTIVES:
        raise ValueError(f"objective={objective!r} is not supported; choose one of {ARRANGE_OBJECTIVES}.")
    if units.ndim != 2 or units.shape[0] != height * width:
        raise ValueError(
            f"units must be (height*width, depth) = ({height * width}, d) for a {height}x{width} sheet, got "
            f"{tuple(units.shape)}."
        )
    if objective == "topoloss":
        return _BlurCosine(units, height, width, factor_h, factor_w, interpolation)
    return _NeighbourDistance(units, height, width, distance, neighbourhood)


def find_arrangement(
    units: torch.Tensor,
    height: int,
    width: int,
    objective: str = "topoloss",
    *,
    factor_h: float = 3.0,
    factor_w: float = 3.0,
    interpolation: str = "bilinear",
    distance: str = "correlation",
    neighbourhood: int = 1,
    init: str = "auto",
    max_rounds: int = 200,
    patience: int = 3,
    local_radius: int = 4,
    fit_fraction: float = 0.25,
    generator: torch.Generator | None = None,
    progress: bool = True,
    description: str | None = None,
) -> SearchResult:
    """The arrangement of ``units`` on a ``height × width`` sheet that the search finds (see the module docstring).

    Args:
        units: ``(height·width, depth)``: row ``k`` is unit ``k``'s incoming weight vector.
        objective: ``"topoloss"`` (with ``factor_h``, ``factor_w``, ``interpolation``) or ``"weight_similarity"``
            (with ``distance`` and the Chebyshev radius ``neighbourhood``), as in :class:`hf_topo.TopoConfig`.
        init: the layout the swaps start from, one of :data:`ARRANGE_INITS`.
        max_rounds: the most swap rounds (0: the initial layout only).
        patience: stop after this many rounds in a row without an improving swap.
        local_radius: the Chebyshev radius of the "random unit nearby" proposals.
        fit_fraction: the share of positions (drawn anew each round) that get a "best-fitting unit" proposal.
        generator: the random proposals (and ``init="random"``) draw from it; a fresh one seeded 0 when ``None``.
        progress: a tqdm bar over rounds; description: its label.

    Returns:
        A :class:`SearchResult`; its ``final`` is never above its ``initial``, and with ``init="auto"`` never above
        its ``identity``.
    """
    if init not in ARRANGE_INITS:
        raise ValueError(f"init={init!r} is not supported; choose one of {ARRANGE_INITS}.")
    for name, value in (("max_rounds", max_rounds), ("patience", patience), ("local_radius", local_radius)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "max_rounds" else 1):
            raise ValueError(f"{name}={value!r} must be an integer >= {0 if name == 'max_rounds' else 1}.")
    if not 0 < fit_fraction <= 1:
        raise ValueError(f"fit_fraction={fit_fraction!r} must be in (0, 1].")
    state = sheet_objective(
        units, height, width, objective, factor_h=factor_h, factor_w=factor_w, interpolation=interpolation,
        distance=distance, neighbourhood=neighbourhood,
    )  # fmt: skip
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    n = height * width
    identity = torch.arange(n)
    identity_value = state.refresh(identity)
    perm, value = identity, identity_value
    if init in ("auto", "mds"):
        layout = mds_layout(_prepared_vectors(units, objective, distance), height, width)
        layout_value = state.refresh(layout)
        if init == "mds" or layout_value < value:
            perm, value = layout, layout_value
    elif init == "random":
        perm = torch.randperm(n, generator=generator)
    value = state.refresh(perm)  # the state of the layout the swaps start from
    initial, history, swaps, rounds, idle = value, [value], 0, 0, 0
    positions = torch.arange(n)
    row, col = positions // width, positions % width
    bar = tqdm(range(max_rounds), desc=description or f"arranging {height}x{width}", disable=not progress, leave=False)
    for _ in bar:
        rounds += 1
        dy = torch.randint(-local_radius, local_radius + 1, (n,), generator=generator)
        dx = torch.randint(-local_radius, local_radius + 1, (n,), generator=generator)
        nearby = (row + dy).clamp(0, height - 1) * width + (col + dx).clamp(0, width - 1)
        anywhere = torch.randint(0, n, (n,), generator=generator)
        fitted = torch.randperm(n, generator=generator)[: max(1, int(n * fit_fraction))]
        p = torch.cat([fitted, positions, positions])
        q = torch.cat([state.best_fits(fitted), nearby, anywhere])
        distinct = p != q
        p, q = p[distinct], q[distinct]
        gains, claims = state.swap_gains(p, q)
        chosen = _non_overlapping(gains, claims, n)
        if not chosen.numel():
            history.append(value)
            idle += 1
            if idle >= patience:
                break
            continue
        idle = 0
        first, second = p[chosen], q[chosen]
        new_perm = perm.clone()
        new_perm[first], new_perm[second] = perm[second], perm[first]
        expected = value - float(gains[chosen].sum())
        perm, value = new_perm, state.refresh(new_perm)
        if abs(value - expected) > 1e-9 + 1e-7 * abs(value):  # the local changes are exact: this is a bug
            logger.warning(
                "arrangement: objective %.10g after a round, its local changes predicted %.10g", value, expected
            )
        swaps += int(chosen.numel())
        history.append(value)
        bar.set_postfix(objective=f"{value:.5f}", swaps=swaps)
    bar.close()
    return SearchResult(
        permutation=perm, identity=identity_value, initial=initial, final=value, rounds=rounds, swaps=swaps,
        history=history,
    )  # fmt: skip


def _non_overlapping(gains: torch.Tensor, claims: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of improving candidates taken greedily, best first, whose affected positions are pairwise disjoint."""
    improving = torch.nonzero(gains > _MIN_GAIN).flatten()
    if not improving.numel():
        return improving
    order = improving[torch.argsort(gains[improving], descending=True, stable=True)].numpy()
    claims_np = claims.numpy()
    taken = np.zeros(n + 1, dtype=bool)
    chosen = []
    for k in order:
        rows = claims_np[k]
        if not taken[rows[rows < n]].any():
            taken[rows] = True
            chosen.append(k)
    return torch.as_tensor(np.asarray(chosen, dtype=np.int64))
