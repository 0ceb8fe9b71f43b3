"""The topographic regularizers as measurements: TopoLoss, Weight Similarity and Activation Similarity of any model.

During training each model sees only its own regularizer, with its own settings. To compare models trained with
different regularizers (or none), every one of them is measured here with the *same* settings on the *same*
sheets: TopoLoss with the default blur (φ = 3, bilinear), Weight Similarity and Activation Similarity with one
distance and neighbourhood (default: correlation distance, 3×3 queen neighbours, Truong & Hasson's choice).

Activation Similarity is a function of a batch; here the "batch" is the activation samples given
(:func:`~hf_topo.analysis.activations.collect_activations`: one sample per real token of held-out text), so its
value is the mean correlation distance of neighbouring units' responses over that text.

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
from ..targets import TopoLayer

__all__ = ["RegularizerValue", "regularizer_values"]

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
        activations: ``{layer name: (n_samples, n_units)}`` responses, needed for ``"activation_similarity"``.
        losses: among ``"laplacian_pyramid"`` (TopoLoss), ``"weight_similarity"``, ``"activation_similarity"``.
        settings: a :class:`TopoConfig` whose blur factors, interpolation, distance and neighbourhood are used for
            every loss (its ``loss``, ``tau`` and layers are ignored); default ``TopoConfig()``.

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
