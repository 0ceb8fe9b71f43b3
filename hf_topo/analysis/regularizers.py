"""The topographic regularizers as measurements: TopoLoss, Weight / Activation Similarity and TopoLM of any model.

During training each model sees only its own regularizer, with its own settings. To compare models trained with
different regularizers (or none), every one of them is measured here with the *same* settings on the *same*
sheets: TopoLoss with the default blur (φ = 3, bilinear), Weight Similarity and Activation Similarity with one
distance and neighbourhood (default: correlation distance, 3×3 queen neighbours, Truong & Hasson's choice).

Activation Similarity is a function of a batch; here the "batch" is the activation samples given
(:func:`~hf_topo.analysis.activations.collect_activations`: one sample per real token of held-out text), so its
value is the mean correlation distance of neighbouring units' responses over that text. TopoLM's spatial-correlation
loss is measured on the same responses, on up to :data:`POSTHOC_NEIGHBOURHOODS` neighbourhoods per layer drawn with a
fixed seed (all of them on small sheets), with the settings' radius clipped to the largest that fits every sheet (the
radius used is recorded with the value).

Example::

    layers = topographic_layers(model)
    acts = collect_activations(model, blocks, layers, max_samples=4096)
    values = regularizer_values(layers, acts)
    values["weight_similarity"].mean, values["laplacian_pyramid"].per_layer
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from ..config import LOSSES, TopoConfig
from ..regularizers.model import TopoLoss
from ..regularizers.spatial_correlation import (
    neighbourhood_centres,
    neighbourhood_generator,
    sample_neighbourhoods,
    spatial_correlation_loss,
)
from ..targets import TopoLayer

__all__ = ["POSTHOC_NEIGHBOURHOODS", "RegularizerValue", "regularizer_values"]

#: At most this many TopoLM neighbourhoods per layer in a post-hoc measurement (a fixed, seeded draw).
POSTHOC_NEIGHBOURHOODS = 64

logger = logging.getLogger(__name__)


@dataclass
class RegularizerValue:
    """One regularizer measured on a model: ``mean`` over the layers and ``per_layer`` ``{layer name: value}``."""

    loss: str
    mean: float
    per_layer: dict[str, float]
    settings: dict

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def regularizer_values(
    layers: Sequence[TopoLayer],
    activations: dict[str, torch.Tensor] | None = None,
    losses: Sequence[str] = LOSSES,
    settings: TopoConfig | None = None,
) -> dict[str, RegularizerValue]:
    """The value of each regularizer in ``losses`` on ``layers`` (not multiplied by τ, no gradient).

    Args:
        layers: the topographic layers (:func:`~hf_topo.analysis.activations.topographic_layers`); give every
            compared model the same sheets (e.g. the baseline's ``TopoConfig``) so the values are comparable.
        activations: ``{layer name: (n_samples, n_units)}`` responses, needed for ``"activation_similarity"`` and
            ``"spatial_correlation"``.
        losses: among ``"laplacian_pyramid"`` (TopoLoss), ``"weight_similarity"``, ``"activation_similarity"``,
            ``"spatial_correlation"`` (TopoLM).
        settings: a :class:`TopoConfig` whose blur factors, interpolation, distance, neighbourhood, radius and
            accumulation are used for every loss (its ``loss``, ``tau`` and layers are ignored); default
            ``TopoConfig()``.

    Returns:
        ``{loss: RegularizerValue}`` in the order of ``losses``.
    """
    unknown = [loss for loss in losses if loss not in LOSSES]
    if unknown:
        raise ValueError(f"Unknown regularizers {unknown}; choose among {LOSSES}.")
    if not layers:
        raise ValueError("No topographic layer to measure: pass the layers from topographic_layers(model).")
    settings = settings or TopoConfig()
    results: dict[str, RegularizerValue] = {}
    for loss in losses:
        if loss == "spatial_correlation":
            results[loss] = _spatial_correlation_value(layers, activations, settings)
            continue
        config = TopoConfig(
            loss=loss,
            factor_h=settings.factor_h,
            factor_w=settings.factor_w,
            interpolation=settings.interpolation,
            distance=settings.distance,
            neighbourhood=settings.neighbourhood,
        )
        regularizer = TopoLoss(config)
        per_layer: dict[str, float] = {}
        for layer in layers:
            if regularizer.needs_activations:
                if activations is None or layer.name not in activations:
                    raise ValueError(
                        f"activation_similarity needs the activations of {layer.name!r}: pass "
                        "activations=collect_activations(model, text, layers)."
                    )
                value = regularizer.layer_loss(layer, activations[layer.name])
            else:
                value = regularizer.layer_loss(layer)
            per_layer[layer.name] = float(value)
        used = {"distance": config.distance, "neighbourhood": config.neighbourhood}
        if loss == "laplacian_pyramid":
            used = {"factor_h": config.factor_h, "factor_w": config.factor_w, "interpolation": config.interpolation}
        results[loss] = RegularizerValue(
            loss=loss, mean=sum(per_layer.values()) / len(per_layer), per_layer=per_layer, settings=used
        )
        logger.info("%s: %.4f (mean over %d layers)", loss, results[loss].mean, len(per_layer))
    return results


def _spatial_correlation_value(
    layers: Sequence[TopoLayer], activations: dict[str, torch.Tensor] | None, settings: TopoConfig
) -> RegularizerValue:
    """TopoLM's loss of the given responses, on a fixed draw of neighbourhoods of every layer."""
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
        value = spatial_correlation_loss(activations[layer.name], width, windows, settings.accumulation)
        per_layer[layer.name] = float(value)
        counts.append(count)
    used = {"radius": radius, "neighbourhoods": max(counts), "accumulation": settings.accumulation}
    mean = sum(per_layer.values()) / len(per_layer)
    logger.info("spatial_correlation: %.4f (mean over %d layers)", mean, len(per_layer))
    return RegularizerValue(loss="spatial_correlation", mean=mean, per_layer=per_layer, settings=used)
