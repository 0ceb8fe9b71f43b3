"""The paper's vision architectures as ``transformers`` configs: ResNet-18, ResNet-50 and ViT-B/32 at torchvision's
shapes (the models of Deb, Deb & Murty's vision TopoNets), to train from scratch or to convert the authors' weights
into.

============  ==================================================  ===============================================
preset        architecture (``transformers`` class)                the paper's topographic layers
============  ==================================================  ===============================================
``resnet-18``  ``ResNetForImageClassification``: basic blocks      every convolution of the residual blocks: 16
              2-2-2-2, widths 64-128-256-512, stem 64 (11.7M      block convolutions + 3 shortcut projections =
              parameters); v1.5 (stride on the 3×3 convolution)    19 layers, sheets 8×8 … 16×32
``resnet-50``  bottleneck blocks 3-4-6-3, widths 256-512-1024-     the same: 48 + 4 = 52 layers
              2048 (25.6M parameters), v1.5
``vit-b-32``   ``ViTForImageClassification``: 224×224 images in     ``mlp.fc2`` of every layer (torchvision's
              32×32 patches, 12 layers × 768, 12 heads, MLP 3072,  ``mlp.3``, the MLP's second linear): 768 units
              LayerNorm eps 1e-6, exact GELU (88.2M parameters)    → 24×32, depth 3072
============  ==================================================  ===============================================

All have 1000 classes by default, named after ImageNet's (:func:`hf_topo.vision.imagenet.imagenet_id2label`).
``blurpool=True`` gives a ResNet the blur-pool convolutions of the authors' FFCV training
(:class:`~hf_topo.vision.blurpool_resnet.BlurPoolResNetConfig`). Where to put TopoLoss: :func:`hf_topo.presets.vision_targets`.
"""

from __future__ import annotations

from transformers import PreTrainedConfig, ResNetConfig, ViTConfig

from .blurpool_resnet_config import BlurPoolResNetConfig
from .imagenet import imagenet_id2label

__all__ = ["PAPER_VISION_PRESETS", "paper_vision_config", "resnet_config", "vit_config"]

#: The paper's vision architectures (torchvision's shapes).
PAPER_VISION_PRESETS = ("resnet-18", "resnet-50", "vit-b-32")

# torchvision's resnet18 / resnet50: (block type, blocks per stage, output channels per stage)
_RESNETS = {
    "resnet-18": ("basic", [2, 2, 2, 2], [64, 128, 256, 512]),
    "resnet-50": ("bottleneck", [3, 4, 6, 3], [256, 512, 1024, 2048]),
}


def _label_names(labels: list[str] | None) -> dict:
    id2label = imagenet_id2label() if labels is None else dict(enumerate(labels))
    label2id: dict[str, int] = {}
    for index, name in id2label.items():
        label2id.setdefault(name, index)  # ImageNet names one bird and one machine "crane": the first keeps the name
    return {"id2label": id2label, "label2id": label2id}


def resnet_config(
    layer_type: str,
    depths: list[int],
    hidden_sizes: list[int],
    embedding_size: int = 64,
    labels: list[str] | None = None,
    blurpool: bool = False,
) -> ResNetConfig:
    """A torchvision-style (v1.5) ResNet config: ``layer_type`` ``"basic"`` or ``"bottleneck"``, blocks per stage,
    output channels per stage, stem width; ``labels`` (default ImageNet's 1000); ``blurpool``: a
    :class:`BlurPoolResNetConfig` (blur before every strided convolution with ≥ 16 input channels)."""
    config_class = BlurPoolResNetConfig if blurpool else ResNetConfig
    return config_class(
        num_channels=3,
        embedding_size=embedding_size,
        hidden_sizes=list(hidden_sizes),
        depths=list(depths),
        layer_type=layer_type,
        hidden_act="relu",
        downsample_in_first_stage=False,
        downsample_in_bottleneck=False,  # v1.5: a bottleneck strides in its 3×3 convolution, as torchvision's
        **_label_names(labels),
    )


def vit_config(
    image_size: int = 224,
    patch_size: int = 32,
    hidden_size: int = 768,
    num_hidden_layers: int = 12,
    num_attention_heads: int = 12,
    intermediate_size: int = 3072,
    labels: list[str] | None = None,
) -> ViTConfig:
    """A torchvision-style ViT config (``vit_b_32`` by default): LayerNorm eps 1e-6, exact GELU, biased q/k/v,
    class token, learned position embeddings; ``labels`` (default ImageNet's 1000)."""
    return ViTConfig(
        image_size=image_size,
        patch_size=patch_size,
        num_channels=3,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        hidden_act="gelu",  # torchvision's nn.GELU(): the exact (erf) GELU
        layer_norm_eps=1e-6,  # torchvision's partial(nn.LayerNorm, eps=1e-6)
        qkv_bias=True,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **_label_names(labels),
    )


def paper_vision_config(
    preset: str, labels: list[str] | None = None, image_size: int = 224, blurpool: bool = False
) -> PreTrainedConfig:
    """The config of one of :data:`PAPER_VISION_PRESETS`.

    Args:
        preset: ``"resnet-18"``, ``"resnet-50"`` or ``"vit-b-32"``.
        labels: class names in class-index order (default: ImageNet's 1000).
        image_size: ViT's input side in pixels (a multiple of 32; a ResNet takes any size).
        blurpool: ResNets only: the authors' blur-pool convolutions.

    Raises:
        ValueError: an unknown preset, ``blurpool`` for ViT, or an image size ViT-B/32 cannot cut into patches.
    """
    if preset in _RESNETS:
        layer_type, depths, hidden_sizes = _RESNETS[preset]
        return resnet_config(layer_type, depths, hidden_sizes, labels=labels, blurpool=blurpool)
    if preset == "vit-b-32":
        if blurpool:
            raise ValueError("blurpool=True is for the ResNet presets; vit-b-32 has no strided convolutions to blur.")
        if image_size % 32:
            raise ValueError(
                f"vit-b-32 cuts images into 32×32 patches: image_size={image_size} is not a multiple of 32."
            )
        return vit_config(image_size=image_size, labels=labels)
    raise ValueError(f"Unknown vision preset {preset!r}; choose one of {PAPER_VISION_PRESETS}.")
