"""torchvision ResNets (the authors' TopoNet-ResNet-18/50, with or without FFCV's blur-pool convolutions) →
``ResNetForImageClassification`` / :class:`~hf_topo.vision.blurpool_resnet.BlurPoolResNetForImageClassification`.

The authors' files (``all_topo_tau_<τ>.pt``) are bare state dicts of torchvision's ``resnet18``/``resnet50`` (v1.5)
whose strided convolutions with ≥ 16 input channels are wrapped in their ``BlurPoolConv2d`` (``X.conv.weight`` and
the buffer ``X.blur_filter``). The architecture is read off the weights: stem width, blocks per stage, block type
(a ``conv3`` means bottleneck), widths, number of classes, and which convolutions blur.

=================================  ==============================================================
torchvision                        ``transformers``
=================================  ==============================================================
``conv1``, ``bn1``                 ``resnet.embedder.embedder.convolution``, ``.normalization``
``layer{s}.{b}.conv{j}``           ``resnet.encoder.stages.{s-1}.layers.{b}.layer.{j-1}.convolution``
``layer{s}.{b}.bn{j}``             ``resnet.encoder.stages.{s-1}.layers.{b}.layer.{j-1}.normalization``
``layer{s}.{b}.downsample.0/1``    ``resnet.encoder.stages.{s-1}.layers.{b}.shortcut.convolution/normalization``
``X.conv.weight``, ``X.blur_filter``  ``Y.weight``, ``Y.blur_filter`` (:class:`BlurPoolConv2d` is a Conv2d)
``fc``                             ``classifier.1``
=================================  ==============================================================
"""

from __future__ import annotations

import re
from typing import Any

import torch
from transformers import AutoModelForImageClassification, PreTrainedModel
from transformers.initialization import no_init_weights

from ..vision.blurpool_resnet import BLUR_KERNEL
from ..vision.paper_models import resnet_config

__all__ = ["is_resnet_state_dict", "resnet_config_from_state_dict", "resnet_state_dict_to_hf", "build_resnet"]

_BLOCK_KEY = re.compile(r"layer(\d+)\.(\d+)\.")
_WRAPPED_CONV = re.compile(r"\.conv\.(weight|bias)$")  # the authors' BlurPoolConv2d keeps the convolution as .conv
_TOP_LEVEL = {
    "conv1": "resnet.embedder.embedder.convolution",
    "bn1": "resnet.embedder.embedder.normalization",
    "fc": "classifier.1",
}
_BLOCK_MODULE = re.compile(r"layer(\d+)\.(\d+)\.(conv\d+|bn\d+|downsample\.[01])\.(.+)")


def is_resnet_state_dict(state_dict: dict[str, Any]) -> bool:
    """Whether a state dict has torchvision's ResNet layout (``conv1``, ``layer1.0...``, ``fc``)."""
    return (
        ("conv1.weight" in state_dict or "conv1.conv.weight" in state_dict)
        and "fc.weight" in state_dict
        and any(key.startswith("layer1.0.") for key in state_dict)
    )


def _conv_weight(state_dict: dict[str, torch.Tensor], name: str) -> torch.Tensor | None:
    return state_dict.get(f"{name}.weight", state_dict.get(f"{name}.conv.weight"))


def resnet_config_from_state_dict(state_dict: dict[str, torch.Tensor], labels: list[str] | None = None):
    """The (blur-pool) ResNet config of a torchvision ResNet state dict, read off its keys and shapes.

    Raises:
        ValueError: the state dict is not a torchvision ResNet's (a missing stem, block or classifier).
    """
    stem = _conv_weight(state_dict, "conv1")
    if stem is None or stem.dim() != 4 or tuple(stem.shape[1:]) != (3, 7, 7):
        raise ValueError(
            f"Not a torchvision ResNet: conv1 should be a 7×7 convolution of 3 input channels, found "
            f"{None if stem is None else tuple(stem.shape)}."
        )
    blocks: dict[int, set[int]] = {}
    for key in state_dict:
        match = _BLOCK_KEY.match(key)
        if match:
            blocks.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    stages = sorted(blocks)
    if stages != list(range(1, len(stages) + 1)) or any(blocks[s] != set(range(len(blocks[s]))) for s in stages):
        raise ValueError(f"Not a torchvision ResNet: its stages and blocks are not numbered 1.. and 0..: {blocks}.")
    layer_type = "bottleneck" if _conv_weight(state_dict, "layer1.0.conv3") is not None else "basic"
    last_conv = "conv3" if layer_type == "bottleneck" else "conv2"
    hidden_sizes = []
    for stage in stages:
        weight = _conv_weight(state_dict, f"layer{stage}.0.{last_conv}")
        if weight is None:
            raise ValueError(f"Not a torchvision ResNet: layer{stage}.0.{last_conv} is missing ({layer_type} blocks).")
        hidden_sizes.append(int(weight.shape[0]))
    num_classes = int(state_dict["fc.weight"].shape[0])
    if labels is not None and len(labels) != num_classes:
        labels = None
    if labels is None and num_classes != 1000:
        labels = [f"LABEL_{i}" for i in range(num_classes)]
    blurpool = any(key.endswith(".blur_filter") for key in state_dict)
    return resnet_config(
        layer_type,
        [len(blocks[s]) for s in stages],
        hidden_sizes,
        embedding_size=int(stem.shape[0]),
        labels=labels,
        blurpool=blurpool,
    )


def _hf_name(key: str) -> str | None:
    """The ``transformers`` key of a torchvision ResNet key (``None``: not a key of that layout)."""
    key = _WRAPPED_CONV.sub(r".\1", key)
    head, _, rest = key.partition(".")
    if head in _TOP_LEVEL:
        return f"{_TOP_LEVEL[head]}.{rest}"
    match = _BLOCK_MODULE.fullmatch(key)
    if match is None:
        return None
    stage, block, module, rest = int(match.group(1)) - 1, int(match.group(2)), match.group(3), match.group(4)
    if module.startswith("conv"):
        inner = f"layer.{int(module[4:]) - 1}.convolution"
    elif module.startswith("bn"):
        inner = f"layer.{int(module[2:]) - 1}.normalization"
    else:
        inner = "shortcut.convolution" if module.endswith("0") else "shortcut.normalization"
    return f"resnet.encoder.stages.{stage}.layers.{block}.{inner}.{rest}"


def resnet_state_dict_to_hf(state_dict: dict[str, torch.Tensor], model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """Map a torchvision ResNet state dict onto ``model``'s (a ``ResNetForImageClassification`` or its blur-pool
    subclass, built from :func:`resnet_config_from_state_dict`).

    Raises:
        ValueError: a key that the layout does not have, a missing key, a shape that disagrees, a blur filter that is
            not FFCV's [1 2 1]ᵀ[1 2 1]/16, or blur-pool convolutions elsewhere than before every strided convolution
            with ≥ 16 input channels.
    """
    expected = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in state_dict.items():
        name = _hf_name(key)
        if name is None or name not in expected:
            unknown.append(key)
            continue
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(
                f"{key} has shape {tuple(tensor.shape)}, but the ResNet read off the file's weights needs "
                f"{tuple(expected[name].shape)} at {name}: not a torchvision ResNet (v1.5) state dict."
            )
        if name.endswith(".blur_filter"):
            kernel = BLUR_KERNEL.to(tensor.dtype).expand_as(tensor)
            if not torch.allclose(tensor, kernel):
                raise ValueError(f"{key} is not FFCV's blur filter [1 2 1]ᵀ[1 2 1]/16 on every channel.")
        converted[name] = tensor.detach().to(expected[name].dtype).contiguous()
    missing = sorted(set(expected) - set(converted))
    blur_unknown = [k for k in unknown if k.endswith(".blur_filter")]
    blur_missing = [k for k in missing if k.endswith(".blur_filter")]
    if blur_unknown or blur_missing:
        raise ValueError(
            "The file's blur-pool convolutions are not where FFCV's recipe (and the authors' models) put them, "
            "before every strided convolution with >= 16 input channels: "
            + (f"extra at {blur_unknown[:4]}; " if blur_unknown else "")
            + (f"missing at {blur_missing[:4]}." if blur_missing else "")
        )
    if unknown or missing:
        raise ValueError(
            "Not a torchvision ResNet state dict of the shape read off its weights: "
            + (
                f"unexpected keys {unknown[:6]}" + (f" (+{len(unknown) - 6} more)" if len(unknown) > 6 else "")
                if unknown
                else ""
            )
            + ("; " if unknown and missing else "")
            + (f"missing {missing[:6]}" if missing else "")
            + "."
        )
    return converted


def build_resnet(state_dict: dict[str, torch.Tensor], labels: list[str] | None = None) -> PreTrainedModel:
    """The ``transformers`` ResNet (blur-pool when the file has blur filters) with a torchvision ResNet's weights,
    in float32 and eval mode."""
    config = resnet_config_from_state_dict(state_dict, labels)
    with no_init_weights():  # every parameter and buffer is loaded below (strict): a random init would be wasted
        model = AutoModelForImageClassification.from_config(config)
    model.load_state_dict(resnet_state_dict_to_hf(state_dict, model), strict=True)
    return model.eval()
