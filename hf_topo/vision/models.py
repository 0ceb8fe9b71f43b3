"""Image-classification presets to pretrain vision TopoNets from scratch (``transformers`` classes, random init).

===============  ===============================================  ===============================================
preset           architecture                                     topographic layers (default, by ``model_type``)
===============  ===============================================  ===============================================
``tiny-resnet``  ``ResNetForImageClassification``: basic blocks,  every convolution of the residual blocks,
                 stem 32, stages 64 / 128 / 256 × 1 block (CPU)   shortcuts included: 9 Conv2d layers, sheets
                                                                  8×8 (64 channels) … 16×16 (256 channels)
``tiny-vit``     ``ViTForImageClassification``: 4 layers × 64,    ``mlp.fc2`` (the MLP's second linear, the
                 4 heads, MLP 256, patches of ``image_size/4``    paper's ViT layer): 64 units → 8×8
``resnet-18``,   the paper's shapes (torchvision's ResNet-18/50   as above: 19 / 52 residual-block convolutions;
``resnet-50``,   v1.5 and ``vit_b_32``,                           ViT-B/32's 12 ``mlp.fc2``
``vit-b-32``     :func:`~hf_topo.vision.paper_models.paper_vision_config`; ViT's ``image_size`` a multiple of 32)
===============  ===============================================  ===============================================

Both load back with ``AutoModelForImageClassification.from_pretrained``; the label names (``id2label``) are the
class folders' names. ``image_size`` sets ViT's position embeddings (a ResNet takes any size).
"""

from __future__ import annotations

from transformers import AutoModelForImageClassification, PreTrainedModel, ResNetConfig, ViTConfig

from ..errors import InputError, parameter
from ..presets import VISION_MODEL_PRESETS
from .paper_models import PAPER_VISION_PRESETS, paper_vision_config

__all__ = ["VISION_MODEL_PRESETS", "vision_preset_config", "build_vision_model"]


def vision_preset_config(preset: str, labels: list[str], image_size: int = 32):
    """The ``PreTrainedConfig`` of an image-classification preset for the classes ``labels`` (in label-id order).

    Args:
        preset: one of :data:`VISION_MODEL_PRESETS`.
        labels: class names; ``id2label[i] = labels[i]``.
        image_size: side of the square input images in pixels (ViT needs it to be a multiple of 4).

    Raises:
        ValueError: an unknown preset, or an ``image_size`` the preset cannot take.
    """
    names = {
        "id2label": {i: name for i, name in enumerate(labels)},
        "label2id": {name: i for i, name in enumerate(labels)},
    }
    if preset == "tiny-resnet":
        return ResNetConfig(
            num_channels=3,
            embedding_size=32,
            hidden_sizes=[64, 128, 256],
            depths=[1, 1, 1],
            layer_type="basic",
            hidden_act="relu",
            downsample_in_first_stage=False,
            **names,
        )
    if preset == "tiny-vit":
        if image_size % 4:
            raise InputError(
                f"tiny-vit cuts the image into 4×4 patches of image_size/4 pixels: {parameter('image_size', image_size)} "
                f"is not a multiple of 4; pass e.g. {max(4, image_size // 4 * 4)}."
            )
        return ViTConfig(
            image_size=image_size,
            patch_size=image_size // 4,
            num_channels=3,
            hidden_size=64,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=256,
            **names,
        )
    if preset in PAPER_VISION_PRESETS:
        return paper_vision_config(preset, labels=labels, image_size=image_size)
    raise InputError(
        f"Unknown image-classification preset {parameter('model_preset', repr(preset))}; choose one of "
        f"{VISION_MODEL_PRESETS}."
    )


def build_vision_model(
    preset: str | None,
    labels: list[str],
    image_size: int = 32,
    model_name_or_path: str | None = None,
    config_overrides: str | None = None,
) -> PreTrainedModel:
    """An image classifier for ``labels``: ``from_pretrained(model_name_or_path)`` when given (its classifier head
    replaced when its classes differ: ``ignore_mismatched_sizes``), else a freshly initialized preset."""
    from ..models import apply_overrides

    if model_name_or_path is not None:
        return AutoModelForImageClassification.from_pretrained(
            model_name_or_path,
            num_labels=len(labels),
            id2label={i: name for i, name in enumerate(labels)},
            label2id={name: i for i, name in enumerate(labels)},
            ignore_mismatched_sizes=True,
        )
    config = apply_overrides(vision_preset_config(preset or "tiny-resnet", labels, image_size), config_overrides)
    return AutoModelForImageClassification.from_config(config)
