"""Per-family defaults, by ``config.model_type``: the topographic layer, the layers LoRA adapts, the model presets.

============  =======================  =============================================
model_type    topographic layer        LoRA targets (attention projections)
============  =======================  =============================================
gpt2          ``mlp.c_fc``             ``attn.c_attn``
gpt_neo       ``mlp.c_fc``             ``attention.q_proj``, ``attention.v_proj``
gpt_neox      ``mlp.dense_h_to_4h``    ``attention.query_key_value``
llama         ``mlp.up_proj``          ``self_attn.q_proj``, ``self_attn.v_proj``
qwen2         ``mlp.up_proj``          ``self_attn.q_proj``, ``self_attn.v_proj``
mistral       ``mlp.up_proj``          ``self_attn.q_proj``, ``self_attn.v_proj``
============  =======================  =============================================

The topographic layer is the MLP expansion layer (the paper's choice); ``llama_gate`` names Llama's other expansion
layer, ``mlp.gate_proj``. The model presets are the architectures that ``hf-topo pretrain --model_preset`` builds from
scratch (:func:`hf_topo.models.preset_config`).
"""

from __future__ import annotations

from torch import nn

__all__ = ["TARGET_PRESETS", "ATTENTION_TARGETS", "MODEL_PRESETS", "default_target_modules"]

#: The MLP expansion layer of common GPT-style families (pass these as ``target_modules``).
TARGET_PRESETS: dict[str, list[str]] = {
    "gpt2": ["mlp.c_fc"],
    "gpt_neo": ["mlp.c_fc"],
    "gpt_neox": ["mlp.dense_h_to_4h"],
    "llama": ["mlp.up_proj"],
    "llama_gate": ["mlp.gate_proj"],
    "qwen2": ["mlp.up_proj"],
    "mistral": ["mlp.up_proj"],
}

#: The attention projections LoRA adapts by default (as in the paper), per ``config.model_type``.
ATTENTION_TARGETS: dict[str, list[str]] = {
    "gpt2": ["attn.c_attn"],
    "gpt_neo": ["attention.q_proj", "attention.v_proj"],
    "gpt_neox": ["attention.query_key_value"],
    "llama": ["self_attn.q_proj", "self_attn.v_proj"],
    "qwen2": ["self_attn.q_proj", "self_attn.v_proj"],
    "mistral": ["self_attn.q_proj", "self_attn.v_proj"],
}

#: Architectures to pretrain from scratch (``tiny-gpt2``: GPT-2 4 × 128 for CPU demos; ``gpt2-124m``: GPT-2 small;
#: ``gpt-neo-125m``: the shapes of the paper's language TopoNets).
MODEL_PRESETS = ("tiny-gpt2", "gpt2-124m", "gpt-neo-125m")


def default_target_modules(model: nn.Module) -> list[str]:
    """The topographic layer of ``model``'s family (:data:`TARGET_PRESETS` of its ``config.model_type``).

    Raises:
        ValueError: no default is known for the family; the message lists the known ones.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in TARGET_PRESETS:
        raise ValueError(
            f"No default topographic layer is known for model_type={model_type!r}; pass target_modules=... "
            f"(known families: {', '.join(sorted(TARGET_PRESETS))})."
        )
    return list(TARGET_PRESETS[model_type])
