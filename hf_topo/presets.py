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
resnet        every convolution of     (none)
              the residual blocks
vit           ``mlp.fc2``              (none)
============  =======================  =============================================

The topographic layer is the MLP expansion layer (the paper's choice); ``llama_gate`` names Llama's other expansion
layer, ``mlp.gate_proj``. The model presets are the architectures that ``hf-topo pretrain --model_preset`` builds from
scratch (:func:`hf_topo.models.preset_config`).

TopoLM's placement (:data:`TOPOLM_TARGETS`, :func:`topolm_targets`) puts its spatial-correlation loss on two sites per
block, each laid out on a sheet of the hidden size:

* ``"residual"`` (TopoLM's main models): the residual stream after the attention (``x + attn``) and after the MLP
  (``x + attn + mlp``), read as the hidden states entering the next LayerNorm (``sheet="input"``): the block's
  post-attention norm, the next block's input norm, and the final norm after the last block. GPT-NeoX with
  ``use_parallel_residual`` (the default) adds attention and MLP in one step: only the block outputs exist there.
* ``"outputs"``: the attention module's and the MLP's outputs, before they join the residual stream
  (``sheet="output"``).
"""

from __future__ import annotations

from torch import nn
from transformers import PretrainedConfig

__all__ = [
    "TARGET_PRESETS",
    "ATTENTION_TARGETS",
    "MODEL_PRESETS",
    "VISION_MODEL_PRESETS",
    "TOPOLM_TARGETS",
    "VISION_TARGETS",
    "default_target_modules",
    "topolm_targets",
    "vision_targets",
]

# Every convolution inside a residual block, shortcut projections included (also matched inside a bare ResNetModel).
_RESNET_BLOCK_CONVS = r"(?:resnet\.)?encoder\.stages\.\d+\.layers\.\d+\.(?:layer\.\d+|shortcut)\.convolution"

#: The MLP expansion layer of GPT-style families, the paper's layers of vision families (pass as ``target_modules``).
TARGET_PRESETS: dict[str, list[str]] = {
    "gpt2": ["mlp.c_fc"],
    "gpt_neo": ["mlp.c_fc"],
    "gpt_neox": ["mlp.dense_h_to_4h"],
    "llama": ["mlp.up_proj"],
    "llama_gate": ["mlp.gate_proj"],
    "qwen2": ["mlp.up_proj"],
    "mistral": ["mlp.up_proj"],
    # Vision: the paper's placements of VISION_TARGETS below (every convolution of a ResNet's residual blocks,
    # shortcut projections included; a ViT's MLP output linear, torchvision's `mlp.3`), as `["re:REGEX"]` entries.
    "resnet": [f"re:{_RESNET_BLOCK_CONVS}"],
    "hf_topo_blurpool_resnet": [f"re:{_RESNET_BLOCK_CONVS}"],
    "vit": ["mlp.fc2"],
}

#: The attention projections LoRA adapts by default (as in the paper), per ``config.model_type``.
ATTENTION_TARGETS: dict[str, list[str]] = {
    "gpt2": ["attn.c_attn"],
    "gpt_neo": ["attention.q_proj", "attention.v_proj"],
    "gpt_neox": ["attention.query_key_value"],
    "llama": ["self_attn.q_proj", "self_attn.v_proj"],
    "qwen2": ["self_attn.q_proj", "self_attn.v_proj"],
    "mistral": ["self_attn.q_proj", "self_attn.v_proj"],
    "vit": ["attention.q_proj", "attention.v_proj"],
}

#: Architectures to pretrain from scratch (``tiny-gpt2``: GPT-2 4 × 128 for CPU demos; ``gpt2-124m``: GPT-2 small;
#: ``gpt-neo-125m``: the shapes of the paper's language TopoNets; ``tiny-gpt-neo``, ``tiny-gpt-neox``,
#: ``tiny-llama``: the other families at tiny-gpt2's size, 512 MLP units per layer; ``tiny-resnet``, ``tiny-vit``:
#: image classifiers for CPU demos and tests, built by :func:`hf_topo.vision.models.vision_preset_config`).
MODEL_PRESETS = (
    "tiny-gpt2", "gpt2-124m", "gpt-neo-125m", "tiny-gpt-neo", "tiny-gpt-neox", "tiny-llama",
    "tiny-resnet", "tiny-vit", "resnet-18", "resnet-50", "vit-b-32",
)  # fmt: skip
#: The image-classification presets among :data:`MODEL_PRESETS` (the last three: the paper's shapes,
#: :mod:`hf_topo.vision.paper_models`).
VISION_MODEL_PRESETS = ("tiny-resnet", "tiny-vit", "resnet-18", "resnet-50", "vit-b-32")


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


#: TopoLM's sites per ``config.model_type`` and placement: ``(target_modules, sheet)`` (a regex string or suffixes).
TOPOLM_TARGETS: dict[str, dict[str, tuple[str | list[str], str]]] = {
    "gpt2": {
        "residual": (r"transformer\.h\.\d+\.ln_2|transformer\.h\.[1-9]\d*\.ln_1|transformer\.ln_f", "input"),
        "outputs": (["attn", "mlp"], "output"),
    },
    "gpt_neo": {
        "residual": (r"transformer\.h\.\d+\.ln_2|transformer\.h\.[1-9]\d*\.ln_1|transformer\.ln_f", "input"),
        "outputs": (["attn", "mlp"], "output"),
    },
    "gpt_neox": {
        "residual": (
            r"gpt_neox\.layers\.\d+\.post_attention_layernorm|gpt_neox\.layers\.[1-9]\d*\.input_layernorm"
            r"|gpt_neox\.final_layer_norm",
            "input",
        ),
        "outputs": (["attention", "mlp"], "output"),
    },
    "llama": {
        "residual": (
            r"model\.layers\.\d+\.post_attention_layernorm|model\.layers\.[1-9]\d*\.input_layernorm|model\.norm",
            "input",
        ),
        "outputs": (["self_attn", "mlp"], "output"),
    },
}
# GPT-NeoX with a parallel residual: x + attn never exists, the block outputs do.
_NEOX_PARALLEL_RESIDUAL = r"gpt_neox\.layers\.[1-9]\d*\.input_layernorm|gpt_neox\.final_layer_norm"


def topolm_targets(model: nn.Module | PretrainedConfig, placement: str = "residual") -> dict[str, str | list[str]]:
    """TopoLM's sites in ``model``: ``{"target_modules": ..., "sheet": ...}``, to pass to :class:`~hf_topo.TopoConfig`
    with ``loss="spatial_correlation"`` (on the command line: ``--topo_target_modules re:REGEX --topo_sheet input``).

    Args:
        model: a GPT-2, GPT-Neo, GPT-NeoX or Llama model, or its config (by ``model_type``).
        placement: ``"residual"`` (TopoLM's main models) or ``"outputs"`` (see the module docstring).

    Raises:
        ValueError: an unknown family or placement.
    """
    config = model if isinstance(model, PretrainedConfig) else getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in TOPOLM_TARGETS:
        raise ValueError(
            f"No TopoLM placement is known for model_type={model_type!r} (known: {', '.join(sorted(TOPOLM_TARGETS))}); "
            "pass target_modules=... and sheet=... yourself."
        )
    if placement not in TOPOLM_TARGETS[model_type]:
        raise ValueError(f"placement={placement!r} is not one of {sorted(TOPOLM_TARGETS[model_type])}.")
    targets, sheet = TOPOLM_TARGETS[model_type][placement]
    if model_type == "gpt_neox" and placement == "residual" and getattr(config, "use_parallel_residual", True):
        targets = _NEOX_PARALLEL_RESIDUAL
    return {"target_modules": targets if isinstance(targets, str) else list(targets), "sheet": sheet}


# ---- vision: the paper's placements (hf_topo.vision) ----------------------------------------------------------------
# The last convolution of each residual block (basic: layer.1, bottleneck: layer.2), whose output is the block's.
_RESNET_LAST_CONV = r"(?:resnet\.)?encoder\.stages\.\d+\.layers\.\d+\.layer\.{last}\.convolution"
_RESNET_PLACEMENTS = {"paper": _RESNET_BLOCK_CONVS, "tdann": _RESNET_LAST_CONV}


#: The vision placements per ``config.model_type``: ``{placement: target_modules}`` (a regex string or suffixes).
#:
#: ============================  ===========  ===================================================================
#: model_type                    placement    layers
#: ============================  ===========  ===================================================================
#: ``resnet``,                   ``paper``    every convolution of the residual blocks, the stride-2 shortcut
#: ``hf_topo_blurpool_resnet``                projections included (the paper's "every convolutional layer within
#:                                            the ResNet sub-blocks (19 in total)" in ResNet-18: 16 + 3; 52 in
#:                                            ResNet-50); the stem convolution is not in a block and is left out
#: (same)                        ``tdann``    the last convolution of each residual block (8 in ResNet-18, 16 in
#:                                            ResNet-50): the paper's A.3 comparison with TDANN, whose topography
#:                                            sits on the outputs of the 8 sub-blocks; the layer that writes a
#:                                            block's output is the weight sheet closest to that site
#: ``vit``                       ``paper``    ``mlp.fc2`` of every encoder layer: torchvision's ``mlp.3``, the
#:                                            MLP's second linear (the paper's ViT-B/32 layer)
#: ``vit``                       ``mlp_input``  ``mlp.fc1``, the MLP's first linear (torchvision's ``mlp.0``)
#: ============================  ===========  ===================================================================
VISION_TARGETS: dict[str, dict[str, str | list[str]]] = {
    "resnet": _RESNET_PLACEMENTS,
    "hf_topo_blurpool_resnet": _RESNET_PLACEMENTS,
    "vit": {"paper": ["mlp.fc2"], "mlp_input": ["mlp.fc1"]},
}


def vision_targets(model: nn.Module | PretrainedConfig, placement: str = "paper") -> str | list[str]:
    """The paper's topographic layers of a vision model, as ``target_modules`` for :class:`~hf_topo.TopoConfig`.

    Args:
        model: a ``transformers`` ResNet (plain or blur-pool) or ViT, or its config (by ``model_type``).
        placement: ``"paper"`` (the paper's TopoNets: every residual-block convolution of a ResNet, 19 layers in
            ResNet-18; ``mlp.fc2`` in every ViT layer), ``"tdann"`` (ResNets: the last convolution of each block, the
            8 sites of the paper's A.3 comparison in ResNet-18) or ``"mlp_input"`` (ViT: ``mlp.fc1``). See
            :data:`VISION_TARGETS`.

    Returns:
        One regex (ResNets) or a list of name suffixes (ViT).

    Raises:
        ValueError: an unknown family or placement.
    """
    config = model if isinstance(model, PretrainedConfig) else getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in VISION_TARGETS:
        raise ValueError(
            f"No vision placement is known for model_type={model_type!r} (known: {', '.join(sorted(VISION_TARGETS))}); "
            "pass target_modules=... yourself."
        )
    placements = VISION_TARGETS[model_type]
    if placement not in placements:
        raise ValueError(f"placement={placement!r} is not one of {sorted(placements)} for model_type={model_type!r}.")
    targets = placements[placement]
    if isinstance(targets, str):
        return targets.replace("{last}", "2" if getattr(config, "layer_type", "basic") == "bottleneck" else "1")
    return list(targets)
