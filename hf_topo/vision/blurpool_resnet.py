"""The blur-pool ResNet of the authors' vision TopoNets, as a registered ``transformers`` model class.

The authors trained their ResNets with FFCV's ImageNet recipe, which puts a fixed blur before every strided
convolution that sees at least 16 input channels (anti-aliased downsampling): the convolution ``conv`` becomes
``conv(blur(x))``, where ``blur`` is a depthwise 3×3 convolution with the binomial filter

    [1 2 1]ᵀ [1 2 1] / 16 = [[1, 2, 1], [2, 4, 2], [1, 2, 1]] / 16      (stride 1, zero padding 1, no bias)

applied to each input channel on its own. In torchvision's ResNets that is, per strided stage (2, 3, 4), the first
block's strided convolution (``conv1`` of a basic block, ``conv2`` of a v1.5 bottleneck) and its stride-2 shortcut
projection (``downsample.0``); the stem (3 input channels) and every stride-1 convolution are left alone.

==================================  ==========================================================================
the authors' model (torchvision)    :class:`BlurPoolResNetForImageClassification`
==================================  ==========================================================================
``BlurPoolConv2d`` wrapping a conv  :class:`BlurPoolConv2d`: an ``nn.Conv2d`` (same weight, stride, padding)
                                    that blurs its input first
``layer2.0.conv1.conv.weight``      ``resnet.encoder.stages.1.layers.0.layer.0.convolution.weight``
``layer2.0.conv1.blur_filter``      ``resnet.encoder.stages.1.layers.0.layer.0.convolution.blur_filter``
which convolutions                  the same rule, read from ``config.blurpool_min_channels`` (16)
==================================  ==========================================================================

:class:`BlurPoolConv2d` *is* an ``nn.Conv2d`` (its forward blurs, then convolves), so the layer names are those of
``ResNetForImageClassification`` and everything that works on Conv2d layers (cortical sheets, TopoLoss targets,
analyses) works on it unchanged; the blur filter is a buffer saved with the weights, as the authors' is. Importing
this module registers ``model_type = "hf_topo_blurpool_resnet"`` with ``AutoConfig``, ``AutoModel`` and
``AutoModelForImageClassification``, so a saved model loads with ``AutoModelForImageClassification.from_pretrained``
after ``import hf_topo`` (no ``trust_remote_code``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForImageClassification,
    ResNetForImageClassification,
    ResNetModel,
)
from transformers import initialization as hf_init

from .blurpool_resnet_config import BlurPoolResNetConfig

__all__ = [
    "BLUR_KERNEL",
    "BlurPoolConv2d",
    "BlurPoolResNetModel",
    "BlurPoolResNetForImageClassification",
    "blurred_convolution_names",
]

#: The 3×3 binomial blur ([1 2 1]ᵀ[1 2 1] / 16) of FFCV's blur-pool convolutions.
BLUR_KERNEL = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16.0


def _blur_filter(channels: int) -> torch.Tensor:
    return BLUR_KERNEL.expand(channels, 1, 3, 3).clone()  # (in_channels, 1, 3, 3): one filter per channel


class BlurPoolConv2d(nn.Conv2d):
    """A convolution that blurs its input first: ``conv2d(blur(x))``, with ``blur`` the fixed depthwise 3×3 binomial
    filter :data:`BLUR_KERNEL` (stride 1, zero padding 1), as FFCV's and the authors' ``BlurPoolConv2d``.

    The filter is the buffer ``blur_filter`` of shape ``(in_channels, 1, 3, 3)``, saved in the state dict.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("blur_filter", _blur_filter(self.in_channels).to(self.weight.device, self.weight.dtype))

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> BlurPoolConv2d:
        """A blur-pool convolution with ``conv``'s settings (its weights are not copied: the model initializes them)."""
        return cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blurred = F.conv2d(x, self.blur_filter, stride=1, padding=1, groups=self.in_channels)  # (B, C_in, H, W)
        return super().forward(blurred)


def _wants_blur(conv: nn.Module, min_channels: int) -> bool:
    return type(conv) is nn.Conv2d and max(conv.stride) > 1 and conv.in_channels >= min_channels


class _BlurPoolMixin:
    """Swap every strided ``nn.Conv2d`` with ≥ ``config.blurpool_min_channels`` inputs for a :class:`BlurPoolConv2d`
    in ``post_init``, before the weights are initialized (so ``from_pretrained`` loads into the final modules)."""

    def post_init(self):
        min_channels = int(getattr(self.config, "blurpool_min_channels", 16))
        for name, module in list(self.named_modules()):
            if _wants_blur(module, min_channels):
                parent_name, _, child_name = name.rpartition(".")
                parent = self.get_submodule(parent_name) if parent_name else self
                setattr(parent, child_name, BlurPoolConv2d.from_conv(module))
        super().post_init()

    @torch.no_grad()
    def initialize_weights(self) -> None:
        super().initialize_weights()  # the convolutions' weights: as any ResNet Conv2d
        # transformers hands the modules of a sub-model (self.resnet) to that sub-model's own _init_weights, which
        # does not know the blur filter: set it here (hf_init skips a filter that from_pretrained has loaded).
        for module in self.modules():
            if isinstance(module, BlurPoolConv2d):
                hf_init.copy_(module.blur_filter, _blur_filter(module.in_channels))


class BlurPoolResNetModel(_BlurPoolMixin, ResNetModel):
    """``ResNetModel`` (no classification head) with blur-pool convolutions."""

    config_class = BlurPoolResNetConfig


class BlurPoolResNetForImageClassification(_BlurPoolMixin, ResNetForImageClassification):
    """``ResNetForImageClassification`` with blur-pool convolutions, the architecture of the authors' vision
    TopoNet ResNets (:mod:`hf_topo.vision.blurpool_resnet`)."""

    config_class = BlurPoolResNetConfig


def blurred_convolution_names(model: nn.Module) -> list[str]:
    """Names of the :class:`BlurPoolConv2d` layers of ``model``, in model order."""
    return [name for name, module in model.named_modules() if isinstance(module, BlurPoolConv2d)]


# AutoConfig / AutoModel* resolve "hf_topo_blurpool_resnet" once this module is imported (exist_ok: a re-import must
# not fail).
AutoModel.register(BlurPoolResNetConfig, BlurPoolResNetModel, exist_ok=True)
AutoModelForImageClassification.register(BlurPoolResNetConfig, BlurPoolResNetForImageClassification, exist_ok=True)
