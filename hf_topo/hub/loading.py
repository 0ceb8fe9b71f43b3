"""Loading a TopoNet (a causal LM or an image classifier) with its ``topography`` metadata (:func:`load_toponet`)."""

from __future__ import annotations

import logging
import os

from ..config import TOPOGRAPHY_KEY, TopoConfig
from ..loading import check_model_source
from ..topo_regularizer import attach_inferred_topography

__all__ = ["load_toponet", "is_image_classifier_config"]

logger = logging.getLogger(__name__)


def is_image_classifier_config(config) -> bool:
    """Whether a ``PreTrainedConfig`` names an image-classification architecture (``*ForImageClassification``), or a
    model is one (a model not saved yet has no ``architectures`` in its config)."""
    if type(config).__name__.endswith("ForImageClassification"):
        return True
    architectures = getattr(getattr(config, "config", config), "architectures", None) or []
    return any(name.endswith("ForImageClassification") for name in architectures)


def load_toponet(
    source: str | os.PathLike,
    infer_if_missing: bool = True,
    target_modules: list[str] | str | None = None,
    **from_pretrained_kwargs,
):
    """A TopoNet with its topographic metadata: ``AutoModelForCausalLM.from_pretrained`` (an image classifier, whose
    ``config.json`` names a ``*ForImageClassification`` architecture: ``AutoModelForImageClassification``) plus a
    check of the sheets.

    Args:
        source: Hub repo id or local directory.
        infer_if_missing: for a model without ``topography`` metadata (a Hub GPT-2, a GPT-Neo TopoNet published
            without metadata), attach the most-square sheets of its family's MLP expansion layer
            (:func:`hf_topo.attach_inferred_topography`, recorded ``inferred: true``, ``tau: 0``). When ``False``,
            such a model is an error.
        target_modules: layers for the inferred sheets (default: the family's preset, :data:`hf_topo.TARGET_PRESETS`).
        **from_pretrained_kwargs: passed to ``from_pretrained`` (``revision``, ``token``, ``dtype``, ...).

    Returns the model; ``hf_topo.TopoConfig.from_pretrained(model)`` gives its setup. Stored metadata that
    contradicts the weights, or a ``topography`` entry that is not a valid record, is an error, never re-derived.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageClassification

    hub_kwargs = {k: v for k, v in from_pretrained_kwargs.items() if k in ("revision", "token")}
    check_model_source(source, **hub_kwargs)
    image_classifier = is_image_classifier_config(AutoConfig.from_pretrained(source, **hub_kwargs))
    auto_class = AutoModelForImageClassification if image_classifier else AutoModelForCausalLM
    model = auto_class.from_pretrained(source, **from_pretrained_kwargs)
    # Any stored entry is validated (a malformed one raises TopoConfig's error); only an absent one is inferred.
    if getattr(model.config, TOPOGRAPHY_KEY, None) is not None:
        TopoConfig.from_pretrained(model)  # raises if the record is malformed or its sheets do not fit the weights
    elif infer_if_missing:
        config = attach_inferred_topography(model, target_modules)
        logger.info("%s has no topography metadata: attached inferred sheets over %s", source, config.target_modules)
    else:
        raise ValueError(
            f"{source} has no '{TOPOGRAPHY_KEY}' metadata in its config.json. Load it with infer_if_missing=True "
            "(hf-topo push: --infer_topography) to attach inferred most-square sheets, or train it with TopoTrainer."
        )
    return model
