"""The topographic regularizers as measurements: TopoLoss, Weight / Activation Similarity and TopoLM of any model.

During training each model sees only its own regularizer, with its own settings. To compare models trained with
different regularizers (or none), every one of them is measured here with the *same* settings on the *same*
sheets: TopoLoss with the default blur (φ = 3, bilinear), Weight Similarity and Activation Similarity with one
distance and neighbourhood (default: correlation distance, 3×3 queen neighbours, Truong & Hasson's choice).

Every registered regularizer (:func:`hf_topo.regularizers.register_regularizer`) is measured the same way: its layer
function with the shared settings on every layer, unless its spec brings its own post-hoc measurement
(``measure_posthoc``, as TopoLM's does).

Activation Similarity is a function of a batch; here the "batch" is the activation samples given
(:func:`~hf_topo.analysis.activations.collect_activations`: one sample per real token of held-out text), so its
value is the mean correlation distance of neighbouring units' responses over that text. TopoLM's spatial-correlation
loss is measured on the same responses, on up to
:data:`~hf_topo.regularizers.spatial_correlation.POSTHOC_NEIGHBOURHOODS` neighbourhoods per layer drawn with a fixed seed (all of them on small sheets), with the settings' radius clipped to the largest that fits every sheet (the
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

from ..config import TopoConfig
from ..regularizers.registry import get_regularizer, registered_regularizers
from ..targets import TopoLayer
from ..topo_regularizer import TopoRegularizer

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
    losses: Sequence[str] | None = None,
    settings: TopoConfig | None = None,
) -> dict[str, RegularizerValue]:
    """The value of each regularizer in ``losses`` on ``layers`` (not multiplied by τ, no gradient).

    Args:
        layers: the topographic layers (:func:`~hf_topo.analysis.activations.topographic_layers`); give every
            compared model the same sheets (e.g. the baseline's ``TopoConfig``) so the values are comparable.
        activations: ``{layer name: (n_samples, n_units)}`` responses, needed for the regularizers that read
            activations (``"activation_similarity"``, ``"spatial_correlation"``).
        losses: registered regularizer names (default: every registered one, the four built-ins first:
            ``"laplacian_pyramid"`` (TopoLoss), ``"weight_similarity"``, ``"activation_similarity"``,
            ``"spatial_correlation"`` (TopoLM)).
        settings: a :class:`TopoConfig` whose settings (blur factors, interpolation, distance, neighbourhood, radius,
            accumulation, ...) are used for every loss (its ``loss``, ``tau`` and layers are ignored); default
            ``TopoConfig()``.

    Returns:
        ``{loss: RegularizerValue}`` in the order of ``losses``; each value's ``settings`` are those of its spec.
    """
    losses = registered_regularizers() if losses is None else tuple(losses)
    unknown = [loss for loss in losses if loss not in registered_regularizers()]
    if unknown:
        raise ValueError(
            f"Unknown regularizers {unknown}; choose among the registered ones {registered_regularizers()} "
            "(hf_topo.regularizers.register_regularizer adds one)."
        )
    if not layers:
        raise ValueError("No topographic layer to measure: pass the layers from topographic_layers(model).")
    settings = settings or TopoConfig()
    results: dict[str, RegularizerValue] = {}
    for loss in losses:
        spec = get_regularizer(loss)
        if spec.measure_posthoc is not None:
            per_layer, used = spec.measure_posthoc(layers, activations, settings)
        else:
            config = TopoConfig(loss=loss, **{name: getattr(settings, name) for name in spec.settings})
            regularizer = TopoRegularizer(config)
            per_layer = {}
            for layer in layers:
                if spec.reads_activations:
                    if activations is None or layer.name not in activations:
                        raise ValueError(
                            f"{loss} needs the activations of {layer.name!r}: pass "
                            "activations=collect_activations(model, text, layers)."
                        )
                    value = regularizer.layer_loss(layer, activations[layer.name])
                else:
                    value = regularizer.layer_loss(layer)
                per_layer[layer.name] = float(value)
            used = {name: getattr(config, name) for name in spec.settings}
        results[loss] = RegularizerValue(
            loss=loss, mean=sum(per_layer.values()) / len(per_layer), per_layer=per_layer, settings=used
        )
        logger.info("%s: %.4f (mean over %d layers)", loss, results[loss].mean, len(per_layer))
    return results
