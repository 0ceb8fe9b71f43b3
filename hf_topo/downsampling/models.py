"""The registered model classes of downsampled models: one ``TopoDownsampled*`` config and causal LM per family.

Each class is its family's causal LM with the layers that the config's downsampling record names swapped for
:class:`~hf_topo.downsampling.layer.TopoDownsampledLinear` (with gains when the record says so) before the weights
are initialized, so ``from_pretrained`` builds the reduced shapes and loads the saved tensors into them. Importing
this module (which ``import hf_topo`` does) registers every class with ``AutoConfig``/``AutoModelForCausalLM``.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoConfig,
    GPTNeoForCausalLM,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers import initialization as hf_init

from ..sheet import units_and_inputs
from .layer import TopoDownsampledLinear
from .record import DownsampledLayer, read_record

__all__ = [
    "DOWNSAMPLED_MODEL_CLASSES",
    "TopoDownsampledCausalLM",
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
]


class TopoDownsampledCausalLM:
    """Mixin of the registered classes: swap in :class:`TopoDownsampledLinear` layers as the config records them.

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
        if (n_units, depth) != (sheet.n_units, sheet.depth):
            raise ValueError(
                f"The downsampling record says {name!r} is a {sheet.height}x{sheet.width} sheet of depth {sheet.depth}, "
                f"but {type(self).__name__} has a {type(original).__name__} there with {n_units} outputs and {depth} "
                "inputs. The config.json does not match its architecture: re-create the downsampled model."
            )
        small = TopoDownsampledLinear(
            sheet.depth,
            sheet.height,
            sheet.width,
            float(record["factor_h"]),
            float(record["factor_w"]),
            bias=layer.bias,
            interpolation=record.get("interpolation", "bilinear"),
            layer_type=sheet.layer_type,
            gain=layer.gain,
            device=original.weight.device,
            dtype=original.weight.dtype,
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
        # which does not know TopoDownsampledLinear: initialize those here, as the family does its linear layers. The
        # hf_init functions skip tensors that from_pretrained has loaded.
        std = getattr(self.config, "initializer_range", 0.02)
        for module in self.modules():
            if isinstance(module, TopoDownsampledLinear):
                hf_init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    hf_init.zeros_(module.bias)
                if module.gain is not None:
                    hf_init.ones_(module.gain)


class TopoDownsampledGPT2Config(GPT2Config):
    """``GPT2Config`` of a downsampled GPT-2 (model type ``hf_topo_downsampled_gpt2``)."""

    model_type = "hf_topo_downsampled_gpt2"


class TopoDownsampledGPT2LMHeadModel(TopoDownsampledCausalLM, GPT2LMHeadModel):
    """``GPT2LMHeadModel`` whose topographic layers (``mlp.c_fc``) are :class:`TopoDownsampledLinear`."""

    config_class = TopoDownsampledGPT2Config


class TopoDownsampledGPTNeoConfig(GPTNeoConfig):
    """``GPTNeoConfig`` of a downsampled GPT-Neo (model type ``hf_topo_downsampled_gpt_neo``)."""

    model_type = "hf_topo_downsampled_gpt_neo"


class TopoDownsampledGPTNeoForCausalLM(TopoDownsampledCausalLM, GPTNeoForCausalLM):
    """``GPTNeoForCausalLM`` whose topographic layers (``mlp.c_fc``) are :class:`TopoDownsampledLinear`."""

    config_class = TopoDownsampledGPTNeoConfig


class TopoDownsampledGPTNeoXConfig(GPTNeoXConfig):
    """``GPTNeoXConfig`` of a downsampled GPT-NeoX/Pythia (model type ``hf_topo_downsampled_gpt_neox``)."""

    model_type = "hf_topo_downsampled_gpt_neox"


class TopoDownsampledGPTNeoXForCausalLM(TopoDownsampledCausalLM, GPTNeoXForCausalLM):
    """``GPTNeoXForCausalLM`` whose topographic layers (``mlp.dense_h_to_4h``) are :class:`TopoDownsampledLinear`."""

    config_class = TopoDownsampledGPTNeoXConfig


class TopoDownsampledLlamaConfig(LlamaConfig):
    """``LlamaConfig`` of a downsampled Llama (model type ``hf_topo_downsampled_llama``)."""

    model_type = "hf_topo_downsampled_llama"


class TopoDownsampledLlamaForCausalLM(TopoDownsampledCausalLM, LlamaForCausalLM):
    """``LlamaForCausalLM`` whose topographic layers (``mlp.up_proj``) are :class:`TopoDownsampledLinear`."""

    config_class = TopoDownsampledLlamaConfig


class TopoDownsampledQwen2Config(Qwen2Config):
    """``Qwen2Config`` of a downsampled Qwen2 (model type ``hf_topo_downsampled_qwen2``)."""

    model_type = "hf_topo_downsampled_qwen2"


class TopoDownsampledQwen2ForCausalLM(TopoDownsampledCausalLM, Qwen2ForCausalLM):
    """``Qwen2ForCausalLM`` whose topographic layers (``mlp.up_proj``) are :class:`TopoDownsampledLinear`."""

    config_class = TopoDownsampledQwen2Config


class TopoDownsampledMistralConfig(MistralConfig):
    """``MistralConfig`` of a downsampled Mistral (model type ``hf_topo_downsampled_mistral``)."""

    model_type = "hf_topo_downsampled_mistral"


class TopoDownsampledMistralForCausalLM(TopoDownsampledCausalLM, MistralForCausalLM):
    """``MistralForCausalLM`` whose topographic layers (``mlp.up_proj``) are :class:`TopoDownsampledLinear`."""

    config_class = TopoDownsampledMistralConfig


#: ``{base model_type: (base causal-LM class, downsampled config class, downsampled model class)}``.
DOWNSAMPLED_MODEL_CLASSES: dict[str, tuple[type[PreTrainedModel], type[PreTrainedConfig], type[PreTrainedModel]]] = {
    "gpt2": (GPT2LMHeadModel, TopoDownsampledGPT2Config, TopoDownsampledGPT2LMHeadModel),
    "gpt_neo": (GPTNeoForCausalLM, TopoDownsampledGPTNeoConfig, TopoDownsampledGPTNeoForCausalLM),
    "gpt_neox": (GPTNeoXForCausalLM, TopoDownsampledGPTNeoXConfig, TopoDownsampledGPTNeoXForCausalLM),
    "llama": (LlamaForCausalLM, TopoDownsampledLlamaConfig, TopoDownsampledLlamaForCausalLM),
    "qwen2": (Qwen2ForCausalLM, TopoDownsampledQwen2Config, TopoDownsampledQwen2ForCausalLM),
    "mistral": (MistralForCausalLM, TopoDownsampledMistralConfig, TopoDownsampledMistralForCausalLM),
}

# Registration makes AutoConfig/AutoModelForCausalLM resolve the "hf_topo_downsampled_*" model types once hf_topo is
# imported, with no trust_remote_code (exist_ok: re-importing this module must not fail).
for _base_class, _config_class, _model_class in DOWNSAMPLED_MODEL_CLASSES.values():
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
    AutoModelForCausalLM.register(_config_class, _model_class, exist_ok=True)
