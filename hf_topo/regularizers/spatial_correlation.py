"""TopoLM's spatial-correlation loss (Rathi et al., ICLR 2025; after TDANN's spatial loss in vision).

Units sit on a sheet (unit ``u`` at row ``u // width``, column ``u % width``, as for every hf_topo sheet). Within a
local neighbourhood, the correlations of the units' activations over the samples of a batch should fall off with
distance on the sheet like ``1 / (1 + distance)``:

======================  ===========================================================================================
quantity                definition
======================  ===========================================================================================
neighbourhood           the units at Chebyshev distance ``< radius`` of a centre: a ``(2r − 1) × (2r − 1)`` window;
                        centres are drawn away from the edge (row in ``[r − 1, h − r]``, column in ``[r − 1, w − r]``),
                        so every window lies inside the sheet
``r_ij``                Pearson correlation of units ``i`` and ``j`` over the samples (every non-padding token)
``D_ij``                ``1 / (1 + ‖p_i − p_j‖₂)``, ``p`` the units' (row, column) positions
neighbourhood loss      ``0.5 · (1 − corr(r_ij, D_ij))`` over the pairs ``i > j`` of the neighbourhood
layer loss              the mean (or the max) of the neighbourhood losses of ``neighbourhoods_per_batch``
                        neighbourhoods drawn for the batch
======================  ===========================================================================================

This is ``local_spatial_loss`` / ``spatial_loss_fn`` of TopoLM's ``models/positions.py`` (github
``epflneuroailab/topolm``), with two differences, both stated where they matter: the neighbourhoods are drawn afresh
for each batch from a seeded generator (TopoLM draws 5 of 50 fixed neighbourhoods with ``torch.randperm`` on the
global RNG, after a swap pre-optimization of the unit positions, which hf_topo does not do: units keep their grid
positions), and a unit whose activations do not vary over the batch has correlation 0 with every other unit
(``torch.corrcoef`` returns NaN there). All neighbourhoods are evaluated at once (one batched product); no loop
runs over neighbourhoods or units.
"""

from __future__ import annotations

import hashlib

import torch

from .registry import ActivationSheet, RegularizerSpec, register_regularizer

__all__ = [
    "ACCUMULATIONS",
    "neighbourhood_centres",
    "neighbourhood_generator",
    "sample_neighbourhoods",
    "spatial_correlation_loss",
]

#: How the neighbourhood losses of a batch are combined: their mean (TopoLM's default) or their maximum.
ACCUMULATIONS = ("mean", "max")

# Activation vectors with a norm below this (after centring) count as constant: correlation 0 with anything.
_NORM_EPS = 1e-8


def _check_radius(height: int, width: int, radius: int) -> None:
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 2:
        raise ValueError(
            f"radius={radius!r} must be an integer >= 2 (TopoLM uses 5: a 9x9 window of units within Chebyshev "
            "distance < 5 of the centre)."
        )
    side = 2 * radius - 1
    if height < side or width < side:
        raise ValueError(
            f"radius={radius} needs a {side}x{side} window, but the sheet is only {height}x{width}. Use a radius of at "
            f"most {(min(height, width) + 1) // 2}, or a layer with more units."
        )


def neighbourhood_centres(height: int, width: int, radius: int) -> torch.Tensor:
    """Indices (``row · width + column``) of the units that can centre a neighbourhood of ``radius``: row in
    ``[radius − 1, height − radius]``, column in ``[radius − 1, width − radius]`` (TopoLM's ``get_center``)."""
    _check_radius(height, width, radius)
    rows = torch.arange(radius - 1, height - radius + 1)
    cols = torch.arange(radius - 1, width - radius + 1)
    return (rows[:, None] * width + cols[None, :]).flatten()


def neighbourhood_generator(*keys: int) -> torch.Generator:
    """A CPU generator seeded from ``keys`` (non-negative integers, e.g. training seed, optimizer step, micro-batch,
    layer), independent of the global RNG state: the same keys always draw the same neighbourhoods, so a resumed run
    draws what the uninterrupted run drew."""
    if not keys or any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in keys):
        raise ValueError(f"Neighbourhood seed keys must be non-negative integers, got {keys!r}.")
    digest = hashlib.sha256(",".join(str(int(k)) for k in keys).encode()).digest()
    seed = int.from_bytes(digest[:8], "little") >> 1  # a non-negative 63-bit seed
    return torch.Generator().manual_seed(seed)


def sample_neighbourhoods(
    height: int, width: int, radius: int, count: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``(count, (2·radius − 1)²)`` unit indices of ``count`` distinct neighbourhoods, drawn with ``generator``.

    Each row lists a window's units in row-major order (the order TopoLM's boolean masks select them in).

    Raises:
        ValueError: the sheet is smaller than a window, or there are fewer than ``count`` possible centres.
    """
    centres = neighbourhood_centres(height, width, radius)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= len(centres):
        raise ValueError(
            f"neighbourhoods_per_batch={count!r} must be an integer from 1 to {len(centres)}, the number of "
            f"neighbourhood centres of radius {radius} on a {height}x{width} sheet."
        )
    chosen = centres[torch.randperm(len(centres), generator=generator)[:count]]
    offsets = torch.arange(-(radius - 1), radius)
    window = (offsets[:, None] * width + offsets[None, :]).flatten()  # row-major offsets of the window
    return chosen[:, None] + window[None, :]


def spatial_correlation_loss(
    responses: torch.Tensor, width: int, neighbourhoods: torch.Tensor, accumulation: str = "mean"
) -> torch.Tensor:
    """TopoLM's spatial loss of one layer on the given neighbourhoods.

    Args:
        responses: ``(n_samples, n_units)``: each unit's activation at each sample (token position) of the batch.
        width: the sheet's width (unit ``u`` sits at ``(u // width, u % width)``).
        neighbourhoods: ``(n_neighbourhoods, k)`` unit indices (e.g. from :func:`sample_neighbourhoods`).
        accumulation: ``"mean"`` or ``"max"`` over the neighbourhoods.

    Returns:
        A scalar in ``[0, 1]`` (float32, or float64 for float64 responses), differentiable w.r.t. ``responses``:
        0 when the correlations fall off exactly like ``1 / (1 + distance)`` up to an affine map.
    """
    if responses.ndim != 2:
        raise ValueError(f"Expected responses of shape (n_samples, n_units), got {tuple(responses.shape)}.")
    if responses.shape[0] < 2:
        raise ValueError(f"Correlations over samples need at least 2 samples, got {responses.shape[0]}.")
    if neighbourhoods.ndim != 2 or neighbourhoods.shape[1] < 3:
        raise ValueError(
            f"Expected neighbourhoods of shape (n_neighbourhoods, k >= 3), got {tuple(neighbourhoods.shape)}."
        )
    if accumulation not in ACCUMULATIONS:
        raise ValueError(f"accumulation={accumulation!r} is not supported; choose one of {ACCUMULATIONS}.")
    dtype = torch.promote_types(responses.dtype, torch.float32)
    with torch.autocast(responses.device.type, enabled=False):
        neighbourhoods = neighbourhoods.to(responses.device)
        k = neighbourhoods.shape[1]
        pairs = torch.tril_indices(k, k, offset=-1, device=responses.device)  # i > j, as np.tril_indices(k, -1)
        # r_ij: correlations over the samples, (n_neighbourhoods, k, k)
        x = responses.to(dtype)[:, neighbourhoods]  # (n_samples, n_neighbourhoods, k)
        x = x - x.mean(dim=0, keepdim=True)
        x = x / torch.linalg.vector_norm(x, dim=0, keepdim=True).clamp_min(_NORM_EPS)
        r = torch.einsum("snk,snl->nkl", x, x)[:, pairs[0], pairs[1]]  # (n_neighbourhoods, pairs)
        # D_ij = 1 / (1 + euclidean distance of the positions), (n_neighbourhoods, pairs)
        rows = torch.div(neighbourhoods, width, rounding_mode="floor").to(dtype)
        cols = (neighbourhoods % width).to(dtype)
        dist = torch.hypot(
            rows[:, pairs[0]] - rows[:, pairs[1]],
            cols[:, pairs[0]] - cols[:, pairs[1]],
        )
        d = 1.0 / (1.0 + dist)
        # corr(r, D) over the pairs of each neighbourhood
        r = r - r.mean(dim=1, keepdim=True)
        d = d - d.mean(dim=1, keepdim=True)
        corr = (r * d).sum(dim=1) / (
            torch.linalg.vector_norm(r, dim=1).clamp_min(_NORM_EPS) * torch.linalg.vector_norm(d, dim=1)
        )
        losses = 0.5 * (1.0 - corr)
        return losses.mean() if accumulation == "mean" else losses.max()


# ---- registration ------------------------------------------------------------------------------------------------

#: At most this many TopoLM neighbourhoods per layer in a post-hoc measurement (a fixed, seeded draw).
POSTHOC_NEIGHBOURHOODS = 64


def _spatial_correlation_of_layer(activations: ActivationSheet, config) -> torch.Tensor:
    height, width = activations.sheet.height, activations.sheet.width
    generator = activations.generator if activations.generator is not None else neighbourhood_generator(0)
    neighbourhoods = sample_neighbourhoods(
        height, width, config.radius, config.neighbourhoods_per_batch, generator
    )  # (neighbourhoods_per_batch, (2r - 1)^2)
    return spatial_correlation_loss(activations.responses, width, neighbourhoods, config.accumulation)


def _check_spatial_correlation_layer(sheet, _module, config) -> None:
    centres = len(neighbourhood_centres(sheet.height, sheet.width, config.radius))
    if config.neighbourhoods_per_batch > centres:
        raise ValueError(
            f"neighbourhoods_per_batch={config.neighbourhoods_per_batch} exceeds the {centres} "
            f"neighbourhood centres of radius {config.radius} on its {sheet.height}x{sheet.width} "
            "sheet; draw fewer neighbourhoods or use a smaller radius."
        )


def _measure_spatial_correlation(layers, activations, settings) -> tuple[dict[str, float], dict]:
    """TopoLM's loss of the given responses on a fixed draw of up to :data:`POSTHOC_NEIGHBOURHOODS` neighbourhoods of
    every layer, with the settings' radius clipped to the largest that fits every sheet (the radius used is
    recorded with the value)."""
    radius = min([settings.radius] + [(min(layer.sheet.height, layer.sheet.width) + 1) // 2 for layer in layers])
    if radius < 2:
        raise ValueError("spatial_correlation needs sheets of at least 3x3 units to measure on.")
    per_layer: dict[str, float] = {}
    counts = []
    for index, layer in enumerate(layers):
        if activations is None or layer.name not in activations:
            raise ValueError(
                f"spatial_correlation needs the activations of {layer.name!r}: pass "
                "activations=collect_activations(model, text, layers)."
            )
        height, width = layer.sheet.height, layer.sheet.width
        count = min(POSTHOC_NEIGHBOURHOODS, len(neighbourhood_centres(height, width, radius)))
        windows = sample_neighbourhoods(height, width, radius, count, neighbourhood_generator(0, index))
        per_layer[layer.name] = float(
            spatial_correlation_loss(activations[layer.name], width, windows, settings.accumulation)
        )
        counts.append(count)
    return per_layer, {"radius": radius, "neighbourhoods": max(counts), "accumulation": settings.accumulation}


register_regularizer(
    RegularizerSpec(
        name="spatial_correlation",
        display_name="TopoLM spatial correlation",
        reads="activations",
        layer_loss=_spatial_correlation_of_layer,
        settings=("radius", "neighbourhoods_per_batch", "accumulation"),
        draws_neighbourhoods=True,
        check_layer=_check_spatial_correlation_layer,
        measure_posthoc=_measure_spatial_correlation,
        formula="0.5·(1 − corr(r, 1/(1+d)))",
        description="TopoLM (Rathi et al.): local activation correlations pushed to follow 1 / (1 + distance).",
    )
)
