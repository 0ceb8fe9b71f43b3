"""The registered model classes of downsampled models: one ``TopoDownsampled*`` model per family.

Each class is its family's causal LM or image classifier with the layers that the config's downsampling record
names swapped for :class:`~hf_topo.downsampling.layer.TopoDownsampledLinear` (Linear, Conv1D) or
:class:`~hf_topo.downsampling.layer.TopoDownsampledConv2d` (Conv2d), with gains when the record says so, before the
weights are initialized, so ``from_pretrained`` builds the reduced shapes and loads the saved tensors into them.
Importing this module (which ``import hf_topo`` does) registers every class with ``AutoConfig`` and
``AutoModelForCausalLM`` (language) or ``AutoModelForImageClassification`` (vision).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    GPT2LMHeadModel,
    GPTNeoForCausalLM,
    GPTNeoXForCausalLM,
    LlamaForCausalLM,
    MistralForCausalLM,
    PreTrainedModel,
    Qwen2ForCausalLM,
    ResNetForImageClassification,
    ViTForImageClassification,
)
from transformers import initialization as hf_init

from ..sheet import units_and_inputs
from .configs import (
    TopoDownsampledGPT2Config,
    TopoDownsampledGPTNeoConfig,
    TopoDownsampledGPTNeoXConfig,
    TopoDownsampledLlamaConfig,
    TopoDownsampledMistralConfig,
    TopoDownsampledQwen2Config,
    TopoDownsampledResNetConfig,
    TopoDownsampledViTConfig,
)
from .layer import TopoDownsampledConv2d, TopoDownsampledLinear
from .record import DownsampledLayer, read_record

__all__ = [
    "DOWNSAMPLED_MODEL_CLASSES",
    "TopoDownsampledModel",
    "TopoDownsampledGPT2Config",
    "TopoDownsampledGPT2LMHeadModel",
    "TopoDownsampledGPTNeoConfig",
    "TopoDownsampledGPTNeoForCausalLM",
    "TopoDownsampledGPTNeoXConfig",
    "TopoDownsampledGPTNeoXForCausalLM",
    "TopoDownsampledLlamaConfig",
    "TopoDownsampledLlamaForCausalLM",
    "TopoDownsampledQwen2Config",
    "TopoDownsampledQwen2ForCausalLM",
    "TopoDownsampledMistralConfig",
    "TopoDownsampledMistralForCausalLM",
    "TopoDownsampledResNetConfig",
    "TopoDownsampledResNetForImageClassification",
    "TopoDownsampledViTConfig",
    "TopoDownsampledViTForImageClassification",
]


class TopoDownsampledModel:
    """Mixin of the registered classes: swap in the downsampled layers that the config records.

    The family's ``__init__`` builds the full architecture and ends with ``self.post_init()``; the swap happens
    there, before the weights are initialized and tied, so ``from_pretrained`` (which builds on the meta device)
    sees the reduced parameter shapes and loads the saved weights into them.
    """

    def post_init(self):
        record, layers = read_record(self.config)
        for name, layer in layers.items():
            self._swap_in(name, layer, record)
        super().post_init()

    def _swap_in(self, name: str, layer: DownsampledLayer, record: dict[str, Any]) -> None:
        parent_name, _, child_name = name.rpartition(".")
        try:
            original = self.get_submodule(name)
        except AttributeError:
            raise ValueError(
                f"The downsampling record names layer {name!r}, which {type(self).__name__} does not have. The "
                "config.json was edited or comes from another architecture: re-create the downsampled model."
            ) from None
        sheet = layer.sheet
        try:
            n_units, depth = units_and_inputs(original)
        except TypeError:  # not a Linear/Conv1D/Conv2d layer at all
            n_units = depth = None
        is_conv = isinstance(original, nn.Conv2d)
        if (n_units, depth) != (sheet.n_units, sheet.depth) or is_conv != (sheet.layer_type == "Conv2d"):
            raise ValueError(
                f"The downsampling record says {name!r} is a {sheet.height}x{sheet.width} sheet of depth {sheet.depth}, "
                f"but {type(self).__name__} has a {type(original).__name__} there with {n_units} outputs and {depth} "
                "inputs. The config.json does not match its architecture: re-create the downsampled model."
            )
        common = {
            "factor_h": float(record["factor_h"]),
            "factor_w": float(record["factor_w"]),
            "bias": layer.bias,
            "interpolation": record.get("interpolation", "bilinear"),
            "gain": layer.gain,
            "device": original.weight.device,
            "dtype": original.weight.dtype,
        }
        if is_conv:  # the geometry of the convolution itself comes from the architecture
            small = TopoDownsampledConv2d(
                original.in_channels,
                sheet.height,
                sheet.width,
                original.kernel_size,
                original.stride,
                original.padding,
                original.dilation,
                groups=original.groups,
                **common,
            )
        else:
            small = TopoDownsampledLinear(
                sheet.depth, sheet.height, sheet.width, layer_type=sheet.layer_type, **common
            )
        if (small.reduced_height, small.reduced_width) != (layer.reduced_height, layer.reduced_width):
            raise ValueError(
                f"{name!r}: the record's reduced sheet ({layer.reduced_height}, {layer.reduced_width}) is not what "
                f"F.interpolate gives for a {sheet.height}x{sheet.width} sheet and factors ({record['factor_h']}, "
                f"{record['factor_w']}): ({small.reduced_height}, {small.reduced_width}). Re-create the model."
            )
        setattr(self.get_submodule(parent_name) if parent_name else self, child_name, small)

    @torch.no_grad()
    def initialize_weights(self) -> None:
        super().initialize_weights()
        # transformers hands the modules inside a sub-model (e.g. GPT2Model) to that sub-model's own _init_weights,
        # which does not know the downsampled layers: initialize those here, as the family does its linear layers and
        # convolutions. The hf_init functions skip tensors that from_pretrained has loaded.
        std = getattr(self.config, "initializer_range", 0.02)
        for module in self.modules():
            if isinstance(module, (TopoDownsampledLinear, TopoDownsampledConv2d)):
                if isinstance(module, TopoDownsampledConv2d):
                    hf_init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                else:
                    hf_init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    hf_init.zeros_(module.bias)
                if module.gain is not None:
                    hf_init.ones_(module.gain)


class TopoDownsampledGPT2LMHeadModel(TopoDownsampledModel, GPT2LMHeadModel):
    """``GPT2LMHeadModel`` whose topographic layers (``mlp.c_fc``) are :class:`TopoDownsampledLinear`."""

    config_class = TopoDownsampledGPT2Config


class TopoDownsampledGPTNeoForCausalLM(TopoDownsampledModel, GPTNeoForCausalLM):
    """``GPTNeoForCausalLM`` whose topographic layers (``mlp.c_fc``) are :class:`TopoDownsampledLinear`."""

    config_class = TopoDownsampledGPTNeoConfig


class TopoDownsampledGPTNeoXForCausalLM(TopoDownsampledModel, GPTNeoXForCausalLM):
    """``GPTNeoXForCausalLM`` whose topographic layers (``mlp.dense_h_to_4h``) are :class:`TopoDownsampledLinear`."""

    config_class = TopoDownsampledGPTNeoXConfig


class TopoDownsampledLlamaForCausalLM(TopoDownsampledModel, LlamaForCausalLM):
    """``LlamaForCausalLM`` whose topographic layers (``mlp.up_proj``) are :class:`TopoDownsampledLinear`."""

    config_class = TopoDownsampledLlamaConfig


class TopoDownsampledQwen2ForCausalLM(TopoDownsampledModel, Qwen2ForCausalLM):
    """``Qwen2ForCausalLM`` whose topographic layers (``mlp.up_proj``) are :class:`TopoDownsampledLinear`."""

    config_class = TopoDownsampledQwen2Config


class TopoDownsampledMistralForCausalLM(TopoDownsampledModel, MistralForCausalLM):
    """``MistralForCausalLM`` whose topographic layers (``mlp.up_proj``) are :class:`TopoDownsampledLinear`."""

    config_class = TopoDownsampledMistralConfig


class TopoDownsampledResNetForImageClassification(TopoDownsampledModel, ResNetForImageClassification):
    """``ResNetForImageClassification`` whose topographic convolutions are :class:`TopoDownsampledConv2d`."""

    config_class = TopoDownsampledResNetConfig


class TopoDownsampledViTForImageClassification(TopoDownsampledModel, ViTForImageClassification):
    """``ViTForImageClassification`` whose topographic layers (the MLPs' linears) are :class:`TopoDownsampledLinear`."""

    config_class = TopoDownsampledViTConfig


#: ``{base model_type: (base model class, downsampled config class, downsampled model class)}``.
DOWNSAMPLED_MODEL_CLASSES: dict[str, tuple[type[PreTrainedModel], type, type[PreTrainedModel]]] = {
    "gpt2": (GPT2LMHeadModel, TopoDownsampledGPT2Config, TopoDownsampledGPT2LMHeadModel),
    "gpt_neo": (GPTNeoForCausalLM, TopoDownsampledGPTNeoConfig, TopoDownsampledGPTNeoForCausalLM),
    "gpt_neox": (GPTNeoXForCausalLM, TopoDownsampledGPTNeoXConfig, TopoDownsampledGPTNeoXForCausalLM),
    "llama": (LlamaForCausalLM, TopoDownsampledLlamaConfig, TopoDownsampledLlamaForCausalLM),
    "qwen2": (Qwen2ForCausalLM, TopoDownsampledQwen2Config, TopoDownsampledQwen2ForCausalLM),
    "mistral": (MistralForCausalLM, TopoDownsampledMistralConfig, TopoDownsampledMistralForCausalLM),
    "resnet": (ResNetForImageClassification, TopoDownsampledResNetConfig, TopoDownsampledResNetForImageClassification),
    "vit": (ViTForImageClassification, TopoDownsampledViTConfig, TopoDownsampledViTForImageClassification),
}


def auto_class_for(model_class: type[PreTrainedModel]) -> type:
    """The Auto class that loads ``model_class``: ``AutoModelForImageClassification`` for image classifiers,
    ``AutoModelForCausalLM`` for causal LMs."""
    return AutoModelForImageClassification if model_class.main_input_name == "pixel_values" else AutoModelForCausalLM


# Registration makes the Auto model classes resolve the "hf_topo_downsampled_*" model types once hf_topo is imported
# and transformers' Auto classes are loaded (hf_topo._import_hooks), with no trust_remote_code (exist_ok: re-importing
# this module must not fail). The configs register themselves in hf_topo.downsampling.configs.
for _base_class, _config_class, _model_class in DOWNSAMPLED_MODEL_CLASSES.values():
    auto_class_for(_model_class).register(_config_class, _model_class, exist_ok=True)
