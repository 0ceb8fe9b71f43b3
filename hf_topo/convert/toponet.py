"""One entry point for the authors' four TopoNet families: read a checkpoint safely, tell its family, convert it.

========  ===============================================  ===================================================
family    the file holds                                   converted to (topographic layers recorded)
========  ===============================================  ===================================================
resnet    torchvision ResNet state dict (``conv1``,        ``BlurPoolResNetForImageClassification`` (plain
          ``layer1.0...``, ``fc``), blur-pool or not       ``ResNetForImageClassification`` without blur filters):
                                                           every residual-block convolution, shortcuts included
vit       torchvision ViT state dict (``conv_proj``,        ``ViTForImageClassification``: ``mlp.fc2`` of every
          ``encoder.layers...``), bare or as ``"model"``    layer (torchvision's ``mlp.3``)
nanogpt   nanoGPT checkpoint (``transformer.wte...``)       ``GPT2LMHeadModel``: ``mlp.c_fc``
========  ===============================================  ===================================================

The family is read from the keys; a Hub repo's name (``family`` argument) must agree. The vision models get
ImageNet's 1000 class names as ``id2label`` (:mod:`hf_topo.vision.imagenet`) when they have 1000 classes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from ..presets import vision_targets
from .checkpoint import check_tau, load_checkpoint, strip_wrapper_prefixes
from .nanogpt import convert_nanogpt, is_nanogpt_state_dict
from .record import CONVERSION_KEY, attach_topography, plain_settings
from .resnet import build_resnet, is_resnet_state_dict
from .vit import build_vit, is_vit_state_dict

__all__ = ["FAMILIES", "detect_family", "convert_toponet"]

#: The families :func:`convert_toponet` reads.
FAMILIES = ("resnet", "vit", "nanogpt")
_EXPECTED = (
    "a torchvision ResNet state dict (the authors' all_topo_tau_<τ>.pt), a torchvision ViT checkpoint whose 'model' "
    "holds its state dict (tau_<τ>.pt of murtylab/topo-vit-b-32-imagenet), or a nanoGPT checkpoint"
)


def _state_dict_of(checkpoint: Any) -> dict[str, Any] | None:
    """The state dict inside a checkpoint (itself, or its ``"model"``/``"state_dict"`` entry), or ``None``."""
    if not isinstance(checkpoint, dict):
        return None
    for key in ("model", "state_dict"):
        if isinstance(checkpoint.get(key), dict):
            return strip_wrapper_prefixes(checkpoint[key])
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return strip_wrapper_prefixes(checkpoint)
    return None


def detect_family(checkpoint: Any) -> str | None:
    """``"resnet"``, ``"vit"`` or ``"nanogpt"`` from a loaded checkpoint's keys, else ``None``."""
    state_dict = _state_dict_of(checkpoint)
    if state_dict is None:
        return None
    if is_nanogpt_state_dict(state_dict):
        return "nanogpt"
    if is_resnet_state_dict(state_dict):
        return "resnet"
    if is_vit_state_dict(state_dict):
        return "vit"
    return None


def _describe(checkpoint: Any) -> str:
    if not isinstance(checkpoint, dict):
        return f"a {type(checkpoint).__name__}"
    state_dict = _state_dict_of(checkpoint)
    keys = sorted(state_dict if state_dict is not None else checkpoint)
    return f"a dict with keys {keys[:6]}" + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")


def convert_toponet(
    checkpoint_path: str | os.PathLike,
    tau: float | None = None,
    family: str | None = None,
    n_head: int | None = None,
    target_modules: str | list[str] | None = None,
    source: str | None = None,
    checkpoint: Any = None,
) -> PreTrainedModel:
    """Convert one of the authors' TopoNet checkpoints (or any file of the same layout) to a ``transformers`` model.

    Args:
        checkpoint_path: the file (read with :func:`~hf_topo.convert.checkpoint.load_checkpoint`: no arbitrary
            unpickling).
        tau: τ the model was trained with; default: read from the file name (``tau_<τ>``); when neither says, the
            sheets are recorded as inferred (``inferred: true``, ``tau: 0``).
        family: the family that the source says (e.g. from a Hub repo id); the file's keys must agree. Default: read
            from the keys.
        n_head: attention heads of a ViT or of a bare nanoGPT state dict, when the file does not say.
        target_modules: the topographic layers recorded (default: the paper's, :func:`hf_topo.presets.vision_targets`
            for the vision families, ``mlp.c_fc`` for nanoGPT).
        source: where the file came from when not a local path (a Hub repo id), recorded in ``config.conversion``.
        checkpoint: the file's content when already read with :func:`~hf_topo.convert.checkpoint.load_checkpoint`
            (default: read ``checkpoint_path``).

    Returns:
        The model in float32 and eval mode, with its ``topography`` record and ``config.conversion``
        (``family``, ``checkpoint`` file name, ``source``, and what the file says of its training).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a checkpoint, needs arbitrary unpickling, is of no known family, of another family
            than ``family``, or its weights do not fit the architecture read off them.
    """
    check_tau(tau)
    if family is not None and family not in FAMILIES:
        raise ValueError(f"family={family!r} is not one of {FAMILIES}.")
    if checkpoint is None:
        checkpoint = load_checkpoint(checkpoint_path)
    found = detect_family(checkpoint)
    if found is None:
        raise ValueError(
            f"{checkpoint_path} is not a TopoNet checkpoint of a known family: it holds {_describe(checkpoint)}; "
            f"expected {_EXPECTED}."
        )
    if family is not None and found != family:
        raise ValueError(
            f"{checkpoint_path} holds a {found} model, but its source says {family}: check the repo and the file "
            "(--filename)."
        )
    if found == "nanogpt":
        return convert_nanogpt(
            checkpoint_path,
            tau=tau,
            n_head=n_head,
            target_modules=target_modules,
            source=source,
            checkpoint=checkpoint,
        )

    state_dict = _state_dict_of(checkpoint)
    args = checkpoint.get("args") if isinstance(checkpoint, dict) else None
    settings = plain_settings(args)
    if found == "resnet":
        if n_head is not None:
            raise ValueError("n_head is for ViT and nanoGPT checkpoints; this file holds a ResNet.")
        model = build_resnet(state_dict)
    else:
        model = build_vit(state_dict, n_head=n_head, model_name=(settings or {}).get("model"))
    epoch = checkpoint.get("epoch") if isinstance(checkpoint, dict) else None
    epoch = epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None
    attach_topography(model, target_modules or vision_targets(model), tau, checkpoint_path)

    record: dict[str, Any] = {
        "from": f"torchvision-{found}",
        "checkpoint": Path(checkpoint_path).name,
        **({"source": str(source)} if source is not None else {}),
    }
    if found == "resnet":
        record["blurpool"] = model.config.model_type == "hf_topo_blurpool_resnet"
    if epoch is not None:
        record["epoch"] = epoch
    if settings:
        record["training_config"] = settings
    setattr(model.config, CONVERSION_KEY, record)
    return model
