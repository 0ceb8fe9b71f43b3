"""Neighbour-similarity regularizers on a cortical sheet (Truong & Hasson, "Beyond topography").

Both regularizers lay a layer's units out on the same sheet as TopoLoss (unit ``u`` at row ``u // width``,
column ``u % width``) and penalize the mean distance between the vectors of neighbouring units:

* **Weight Similarity (WS)**: a unit's vector is its incoming weight vector (the sheet depth of
  :mod:`hf_topo.sheet`). Smooth weight maps; a pure function of the weights, like TopoLoss.
* **Activation Similarity (AS)**: a unit's vector is its pre-activation response over the samples of the
  current batch (every non-padding token position). Depends on the batch, so it is computed from the layer
  outputs of each forward pass.

``loss = mean over ordered neighbour pairs (u, v) of dist(x_u, x_v)``, where the neighbours of ``u`` are the
units within Chebyshev distance ``radius`` on the sheet (``radius=1``: the 3×3 "queen" neighbourhood, up to 8
neighbours, fewer at the border). Distances: ``"euclidean"`` ``‖x_u − x_v‖₂``, ``"cosine"``
``1 − cos(x_u, x_v)``, ``"correlation"`` ``1 − Pearson r(x_u, x_v)`` (the one Truong & Hasson's experiments use).

Vectorized over the sheet: the distance is symmetric, so the mean over ordered pairs equals the mean over
unordered pairs, and each of the ``((2r+1)² − 1) / 2`` half-plane offsets ``(dy, dx)`` is one elementwise
operation between the sheet and its shifted self. No loop runs over units.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .registry import ActivationSheet, RegularizerSpec, WeightSheet, register_regularizer

__all__ = ["DISTANCES", "neighbour_offsets", "neighbour_pair_count", "neighbour_distance_loss"]

#: Distances between two units' vectors.
DISTANCES = ("euclidean", "cosine", "correlation")

# Vectors with a norm below this are treated as zero for cosine/correlation (their similarity to anything is 0).
_NORM_EPS = 1e-8


def neighbour_offsets(radius: int) -> list[tuple[int, int]]:
    """The half-plane offsets ``(dy, dx)`` of a Chebyshev neighbourhood: one per unordered neighbour pair."""
    if not isinstance(radius, int) or radius < 1:
        raise ValueError(f"neighbourhood radius must be an integer >= 1 (1 = 3x3 queen neighbours), got {radius!r}.")
    return [
        (dy, dx)
        for dy in range(0, radius + 1)
        for dx in range(-radius, radius + 1)
        if (dy, dx) != (0, 0) and (dy > 0 or dx > 0)
    ]


def neighbour_pair_count(height: int, width: int, radius: int = 1) -> int:
    """Number of unordered neighbour pairs on a ``height × width`` sheet (ordered pairs: twice this)."""
    return sum(max(height - dy, 0) * max(width - abs(dx), 0) for dy, dx in neighbour_offsets(radius))


def _prepare(sheet: torch.Tensor, distance: str) -> torch.Tensor:
    if distance == "euclidean":
        return sheet
    if distance == "correlation":
        sheet = sheet - sheet.mean(dim=-1, keepdim=True)
    return F.normalize(sheet, dim=-1, eps=_NORM_EPS)


def neighbour_distance_loss(sheet: torch.Tensor, distance: str = "correlation", radius: int = 1) -> torch.Tensor:
    """Mean distance between the vectors of neighbouring units of ``sheet``.

    Args:
        sheet: ``(height, width, depth)``: the vector of the unit at ``(i, j)`` is ``sheet[i, j]`` (a weight
            row for WS, responses over samples for AS). A strided view is fine (no copy is needed for Conv1D's
            ``(depth, height, width)`` storage permuted to this order).
        distance: ``"euclidean"``, ``"cosine"`` or ``"correlation"`` (see the module docstring).
        radius: Chebyshev radius of the neighbourhood (1 = 3×3).

    Returns:
        A float32 scalar, differentiable w.r.t. ``sheet``. 0 when all neighbours are identical (for
        correlation: identical up to an affine map).
    """
    if sheet.ndim != 3:
        raise ValueError(f"Expected a (height, width, depth) sheet, got a tensor of shape {tuple(sheet.shape)}.")
    if distance not in DISTANCES:
        raise ValueError(f"distance={distance!r} is not supported; choose one of {DISTANCES}.")
    height, width, depth = sheet.shape
    pairs = neighbour_pair_count(height, width, radius)
    if pairs == 0:
        raise ValueError(f"A {height}x{width} sheet has no neighbouring units; it needs at least two units.")
    if distance == "correlation" and depth < 2:
        raise ValueError("Correlation distance needs vectors of at least 2 entries (depth >= 2).")
    with torch.autocast(sheet.device.type, enabled=False):
        vectors = _prepare(sheet.float(), distance)
        total = vectors.new_zeros(())
        for dy, dx in neighbour_offsets(radius):
            # unit (i, j) paired with (i + dy, j + dx): both slices have shape (height - dy, width - |dx|, depth)
            first = vectors[: height - dy, max(-dx, 0) : width - max(dx, 0)]
            second = vectors[dy:, max(dx, 0) : width + min(dx, 0)]
            if distance == "euclidean":
                total = total + torch.linalg.vector_norm(first - second, dim=-1).sum()
            else:
                total = total + (1.0 - (first * second).sum(dim=-1)).sum()
        return total / pairs


# ---- registration ------------------------------------------------------------------------------------------------


def _check_two_units(sheet, _module, _config) -> None:
    if sheet.n_units < 2:
        raise ValueError("a similarity loss needs at least two units on the sheet.")


def _weight_similarity_of_layer(weights: WeightSheet, config) -> torch.Tensor:
    return neighbour_distance_loss(weights.units, config.distance, config.neighbourhood)


def _activation_similarity_of_layer(activations: ActivationSheet, config) -> torch.Tensor:
    return neighbour_distance_loss(activations.units, config.distance, config.neighbourhood)


register_regularizer(
    RegularizerSpec(
        name="weight_similarity",
        display_name="Weight Similarity",
        reads="weights",
        layer_loss=_weight_similarity_of_layer,
        settings=("distance", "neighbourhood"),
        check_layer=_check_two_units,
        formula="mean neighbour distance",
        description="Truong & Hasson: mean distance between neighbouring units' incoming weights.",
    )
)
register_regularizer(
    RegularizerSpec(
        name="activation_similarity",
        display_name="Activation Similarity",
        reads="activations",
        layer_loss=_activation_similarity_of_layer,
        settings=("distance", "neighbourhood"),
        check_layer=_check_two_units,
        formula="mean neighbour distance",
        description="Truong & Hasson: mean distance between neighbouring units' responses over the batch.",
    )
)
