"""The config classes of downsampled models, registered with ``AutoConfig`` when this module is imported.

One ``TopoDownsampled*Config`` per family: the family's config with its own ``model_type`` (``hf_topo_downsampled_*``),
whose ``config.json`` carries the downsampling record. They live apart from the model classes
(:mod:`hf_topo.downsampling.models`) so that ``AutoConfig`` can resolve them as soon as transformers' configuration
Auto module loads, without the model code (:mod:`hf_topo._import_hooks`).
"""

from __future__ import annotations

from transformers import (
    AutoConfig,
    GPT2Config,
    GPTNeoConfig,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
    ResNetConfig,
    ViTConfig,
)

__all__ = [
    "TopoDownsampledGPT2Config",
    "TopoDownsampledGPTNeoConfig",
    "TopoDownsampledGPTNeoXConfig",
    "TopoDownsampledLlamaConfig",
    "TopoDownsampledQwen2Config",
    "TopoDownsampledMistralConfig",
    "TopoDownsampledResNetConfig",
    "TopoDownsampledViTConfig",
]


class TopoDownsampledGPT2Config(GPT2Config):
    """``GPT2Config`` of a downsampled GPT-2 (model type ``hf_topo_downsampled_gpt2``)."""

    model_type = "hf_topo_downsampled_gpt2"


class TopoDownsampledGPTNeoConfig(GPTNeoConfig):
    """``GPTNeoConfig`` of a downsampled GPT-Neo (model type ``hf_topo_downsampled_gpt_neo``)."""

    model_type = "hf_topo_downsampled_gpt_neo"


class TopoDownsampledGPTNeoXConfig(GPTNeoXConfig):
    """``GPTNeoXConfig`` of a downsampled GPT-NeoX/Pythia (model type ``hf_topo_downsampled_gpt_neox``)."""

    model_type = "hf_topo_downsampled_gpt_neox"


class TopoDownsampledLlamaConfig(LlamaConfig):
    """``LlamaConfig`` of a downsampled Llama (model type ``hf_topo_downsampled_llama``)."""

    model_type = "hf_topo_downsampled_llama"


class TopoDownsampledQwen2Config(Qwen2Config):
    """``Qwen2Config`` of a downsampled Qwen2 (model type ``hf_topo_downsampled_qwen2``)."""

    model_type = "hf_topo_downsampled_qwen2"


class TopoDownsampledMistralConfig(MistralConfig):
    """``MistralConfig`` of a downsampled Mistral (model type ``hf_topo_downsampled_mistral``)."""

    model_type = "hf_topo_downsampled_mistral"


class TopoDownsampledResNetConfig(ResNetConfig):
    """``ResNetConfig`` of a downsampled ResNet (model type ``hf_topo_downsampled_resnet``)."""

    model_type = "hf_topo_downsampled_resnet"


class TopoDownsampledViTConfig(ViTConfig):
    """``ViTConfig`` of a downsampled ViT (model type ``hf_topo_downsampled_vit``)."""

    model_type = "hf_topo_downsampled_vit"


#: Every downsampled config class, by the ``model_type`` of the family it downsamples.
DOWNSAMPLED_CONFIG_CLASSES: dict[str, type] = {
    "gpt2": TopoDownsampledGPT2Config,
    "gpt_neo": TopoDownsampledGPTNeoConfig,
    "gpt_neox": TopoDownsampledGPTNeoXConfig,
    "llama": TopoDownsampledLlamaConfig,
    "qwen2": TopoDownsampledQwen2Config,
    "mistral": TopoDownsampledMistralConfig,
    "resnet": TopoDownsampledResNetConfig,
    "vit": TopoDownsampledViTConfig,
}

# exist_ok: re-importing this module must not fail.
for _config_class in DOWNSAMPLED_CONFIG_CLASSES.values():
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
