"""torchvision Vision Transformers (the authors' TopoNet-ViT-B/32) → ``ViTForImageClassification``.

The authors' file (``tau_10.0.pt``) is a checkpoint of torchvision's ImageNet reference script: a dict whose
``"model"`` holds the state dict of ``vit_b_32`` (with ``"args"``, an ``argparse.Namespace`` of its flags, ``"epoch"``,
``"optimizer"``, ``"lr_scheduler"``); a bare state dict converts too. The architecture is read off the weights
(width, patch size, image size, depth, MLP width, classes); the number of heads is not in them: it is ``n_head`` when
given, else that of torchvision's model named in ``args.model``, else that of torchvision's ViT of the width (768: 12;
1024: 16; 1280: 16).

===============================================  ===================================================
torchvision ``VisionTransformer``                ``ViTForImageClassification``
===============================================  ===================================================
``class_token``, ``encoder.pos_embedding``       ``vit.embeddings.cls_token``, ``.position_embeddings``
``conv_proj``                                    ``vit.embeddings.patch_embeddings.projection``
``encoder.layers.encoder_layer_{i}.ln_1``        ``vit.layers.{i}.layernorm_before``
``...self_attention.in_proj_weight/bias``        ``vit.layers.{i}.attention.q_proj/k_proj/v_proj`` (split in 3)
``...self_attention.out_proj``                   ``vit.layers.{i}.attention.o_proj``
``...ln_2``                                      ``vit.layers.{i}.layernorm_after``
``...mlp.0`` / ``mlp.3`` (older: ``linear_1/2``)  ``vit.layers.{i}.mlp.fc1`` / ``mlp.fc2`` (the paper's layer)
``encoder.ln``, ``heads.head``                   ``vit.layernorm``, ``classifier``
===============================================  ===================================================

Both use LayerNorm eps 1e-6, the exact GELU and the class token's final state for the head.
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from transformers import PreTrainedModel, ViTForImageClassification
from transformers.initialization import no_init_weights

from ..vision.paper_models import vit_config

__all__ = [
    "TORCHVISION_VIT_HEADS",
    "is_vit_state_dict",
    "vit_config_from_state_dict",
    "vit_state_dict_to_hf",
    "build_vit",
]

#: Attention heads of torchvision's named ViTs.
TORCHVISION_VIT_HEADS = {"vit_b_16": 12, "vit_b_32": 12, "vit_l_16": 16, "vit_l_32": 16, "vit_h_14": 16}
_HEADS_BY_WIDTH = {768: 12, 1024: 16, 1280: 16}
_LAYER_KEY = re.compile(r"encoder\.layers\.encoder_layer_(\d+)\.(.+)")
_LAYER_RENAMES = {
    "ln_1": "layernorm_before",
    "ln_2": "layernorm_after",
    "self_attention.out_proj": "attention.o_proj",
    "mlp.0": "mlp.fc1",
    "mlp.linear_1": "mlp.fc1",
    "mlp.3": "mlp.fc2",
    "mlp.linear_2": "mlp.fc2",
}
_TOP_LEVEL = {
    "class_token": "vit.embeddings.cls_token",
    "encoder.pos_embedding": "vit.embeddings.position_embeddings",
    "conv_proj.weight": "vit.embeddings.patch_embeddings.projection.weight",
    "conv_proj.bias": "vit.embeddings.patch_embeddings.projection.bias",
    "encoder.ln.weight": "vit.layernorm.weight",
    "encoder.ln.bias": "vit.layernorm.bias",
    "heads.head.weight": "classifier.weight",
    "heads.head.bias": "classifier.bias",
}


def is_vit_state_dict(state_dict: dict[str, Any]) -> bool:
    """Whether a state dict has torchvision's ``VisionTransformer`` layout."""
    return "conv_proj.weight" in state_dict and "encoder.pos_embedding" in state_dict and "class_token" in state_dict


def _n_head(hidden_size: int, n_head: int | None, model_name: str | None) -> int:
    if n_head is None and model_name in TORCHVISION_VIT_HEADS:
        n_head = TORCHVISION_VIT_HEADS[model_name]
    if n_head is None:
        n_head = _HEADS_BY_WIDTH.get(hidden_size)
    if n_head is None:
        raise ValueError(
            f"The number of attention heads of this ViT (width {hidden_size}) cannot be read off its weights, and the "
            "checkpoint does not name a torchvision model: pass n_head (--n_head)."
        )
    if hidden_size % n_head:
        raise ValueError(f"n_head={n_head} does not divide the ViT's width {hidden_size}.")
    return n_head


def vit_config_from_state_dict(
    state_dict: dict[str, torch.Tensor],
    n_head: int | None = None,
    model_name: str | None = None,
    labels: list[str] | None = None,
):
    """The ``ViTConfig`` of a torchvision ViT state dict (``model_name``: the ``args.model`` of its checkpoint).

    Raises:
        ValueError: a key the config needs is missing, a classifier other than one linear ``heads.head``, the
            position embeddings do not fit a square grid of patches, or the heads cannot be determined.
    """
    try:
        patch = state_dict["conv_proj.weight"]  # (hidden, 3, patch, patch)
        positions = state_dict["encoder.pos_embedding"]  # (1, 1 + patches, hidden)
        mlp_in = state_dict.get("encoder.layers.encoder_layer_0.mlp.0.weight")
        if mlp_in is None:
            mlp_in = state_dict["encoder.layers.encoder_layer_0.mlp.linear_1.weight"]
        head = state_dict["heads.head.weight"]
    except KeyError as err:
        raise ValueError(
            f"Not a torchvision VisionTransformer state dict: {err.args[0]!r} is missing"
            + (
                " (a pre-logits layer before the head is not supported)"
                if "heads.pre_logits.weight" in state_dict
                else ""
            )
            + "."
        ) from None
    hidden_size, patch_size = int(patch.shape[0]), int(patch.shape[-1])
    side = math.isqrt(positions.shape[1] - 1)
    if side * side != positions.shape[1] - 1:
        raise ValueError(f"encoder.pos_embedding has {positions.shape[1] - 1} patch positions: not a square grid.")
    depth = len({int(m.group(1)) for key in state_dict if (m := _LAYER_KEY.match(key))})
    num_classes = int(head.shape[0])
    if labels is not None and len(labels) != num_classes:
        labels = None
    if labels is None and num_classes != 1000:
        labels = [f"LABEL_{i}" for i in range(num_classes)]
    return vit_config(
        image_size=side * patch_size,
        patch_size=patch_size,
        hidden_size=hidden_size,
        num_hidden_layers=depth,
        num_attention_heads=_n_head(hidden_size, n_head, model_name),
        intermediate_size=int(mlp_in.shape[0]),
        labels=labels,
    )


def _hf_keys(key: str, tensor: torch.Tensor) -> dict[str, torch.Tensor] | None:
    if key in _TOP_LEVEL:
        return {_TOP_LEVEL[key]: tensor}
    match = _LAYER_KEY.fullmatch(key)
    if match is None:
        return None
    layer, rest = int(match.group(1)), match.group(2)
    prefix = f"vit.layers.{layer}."
    module, _, param = rest.rpartition(".")
    if module == "self_attention" and param in ("in_proj_weight", "in_proj_bias"):
        kind = "weight" if param == "in_proj_weight" else "bias"
        query, key_, value = tensor.chunk(3, dim=0)  # nn.MultiheadAttention packs q, k, v along the outputs
        return {
            f"{prefix}attention.q_proj.{kind}": query,
            f"{prefix}attention.k_proj.{kind}": key_,
            f"{prefix}attention.v_proj.{kind}": value,
        }
    if module in _LAYER_RENAMES:
        return {f"{prefix}{_LAYER_RENAMES[module]}.{param}": tensor}
    return None


def vit_state_dict_to_hf(state_dict: dict[str, torch.Tensor], model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """Map a torchvision ViT state dict onto ``model``'s (a ``ViTForImageClassification`` built from
    :func:`vit_config_from_state_dict`).

    Raises:
        ValueError: a key that the layout does not have, a missing key, or a shape that disagrees.
    """
    expected = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in state_dict.items():
        mapped = _hf_keys(key, tensor)
        if mapped is None or any(name not in expected for name in mapped):
            unknown.append(key)
            continue
        for name, value in mapped.items():
            if tuple(value.shape) != tuple(expected[name].shape):
                raise ValueError(
                    f"{key} gives {name} the shape {tuple(value.shape)}, but the ViT read off the file's weights "
                    f"needs {tuple(expected[name].shape)}: not a torchvision VisionTransformer state dict."
                )
            converted[name] = value.detach().to(expected[name].dtype).contiguous()
    missing = sorted(set(expected) - set(converted))
    if unknown or missing:
        raise ValueError(
            "Not a torchvision VisionTransformer state dict of the shape read off its weights: "
            + (f"unexpected keys {unknown[:6]}" if unknown else "")
            + ("; " if unknown and missing else "")
            + (f"missing {missing[:6]}" if missing else "")
            + "."
        )
    return converted


def build_vit(
    state_dict: dict[str, torch.Tensor],
    n_head: int | None = None,
    model_name: str | None = None,
    labels: list[str] | None = None,
) -> ViTForImageClassification:
    """The ``ViTForImageClassification`` with a torchvision ViT's weights, in float32 and eval mode."""
    config = vit_config_from_state_dict(state_dict, n_head, model_name, labels)
    with no_init_weights():  # every parameter is loaded below (strict): a random init would be wasted
        model = ViTForImageClassification(config)
    model.load_state_dict(vit_state_dict_to_hf(state_dict, model), strict=True)
    return model.eval()
