"""Topographic downsampling (TopoNets paper, §3.3 and appendix A.5): smaller models that save and load as usual.

A topographic layer with ``o = h·w`` output units keeps its weight on a cortical sheet ``C ∈ R^{h×w×d}``
(:mod:`hf_topo.sheet`). Because TopoLoss made the sheet smooth, it survives being downsampled along its two
sheet axes by factors ``(φh, φw)``: the reduced sheet ``C' = down(C) ∈ R^{h'×w'×d}`` has ``h'·w'`` units
(``h' = floor(h / φh)``, ``w' = floor(w / φw)``, as ``F.interpolate`` sizes it) and the layer computes

    y = g ⊙ flatten(up(reshape(x · C'ᵀ, (h', w')), (h, w))) + b     # (..., in) → (..., h'·w') → (..., h·w)

where ``down``/``up`` are the same ``F.interpolate`` maps as TopoLoss's blur (bilinear, ``align_corners=False``
by default), ``b`` is the layer's full bias and ``g`` one gain per unit. The paper's layer has ``g = 1``
(``gains=False``); by default ``g_u = ‖C_u‖ / ‖B_u‖`` with ``B = U·D·C`` the rows the layer effectively applies,
which gives every unit back the weight norm that the blur changed (TopoLoss shapes directions, not norms). The
weight shrinks to ``h'·w'/(h·w)`` of its size and the matmul with it; the upsampling is two small matmuls with the
``(h, h')`` and ``(w, w')`` interpolation matrices read off ``F.interpolate`` (:func:`hf_topo.regularizers.laplacian_pyramid.blur_matrices`),
so no full-size weight is ever materialized.

==============  ====================================================================================================
module          what it holds
==============  ====================================================================================================
``layer``       :class:`TopoDownsampledLinear` (the layer, its closed-form gains)
``record``      the ``"topographic_downsampling"`` record in ``config.json`` (:class:`DownsampledLayer`)
``models``      the registered ``TopoDownsampled*`` config and causal-LM classes of six families
``api``         :func:`downsample_model`, :func:`parameter_count`
``fitting``     least-squares gains and a short distillation on a little text
==============  ====================================================================================================

Orientation: :class:`TopoDownsampledLinear` stores its reduced weight ``(h'·w', in)`` in ``nn.Linear``
orientation whatever the original layer was. Output unit ``u = i·w + j`` sits at sheet row ``i``, column ``j``
(row-major), for ``nn.Linear`` and transformers ``Conv1D`` alike (:func:`hf_topo.sheet.as_cortical_sheet`), so the
downsampled layer is a drop-in replacement for either.

:func:`downsample_model` returns a new model whose topographic layers are replaced. It is an instance of a
registered class (``TopoDownsampledGPT2LMHeadModel``, model type ``"hf_topo_downsampled_gpt2"``, and likewise for
GPT-Neo, GPT-NeoX, Llama, Qwen2 and Mistral) whose config records the downsampling under
``"topographic_downsampling"``::

    "topographic_downsampling": {
      "schema_version": 2, "library": "hf_topo", "library_version": "0.1.0",
      "base_model_type": "gpt2", "factor_h": 2.0, "factor_w": 2.0, "interpolation": "bilinear",
      "variant": "gains", "gains": "closed_form", "distill_steps": 0,
      "original_parameter_count": 124439808, "parameter_count": 103242240,
      "layers": {"transformer.h.0.mlp.c_fc": {"layer_type": "Conv1D", "height": 48, "width": 64, "depth": 768,
                                              "reduced_height": 24, "reduced_width": 32, "bias": true,
                                              "gain": true}, ...}
    }

so ``model.save_pretrained(dir)`` writes ordinary safetensors and, after ``import hf_topo``,
``AutoModelForCausalLM.from_pretrained(dir)`` rebuilds the same structure without ``trust_remote_code``. Models
saved before gains existed (schema version 1) load as the paper's variant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes

#: public name → the module that defines it; imported on first use, so `import hf_topo.downsampling.models` (what
#: `import hf_topo` does to register the model classes) does not load the fitting and downsampling code.
_LAZY_NAMES: dict[str, str] = {
    "downsample_model": "hf_topo.downsampling.api",
    "parameter_count": "hf_topo.downsampling.api",
    "resolve_gains": "hf_topo.downsampling.api",
    "distill_downsampled_": "hf_topo.downsampling.fitting",
    "fit_least_squares_gains_": "hf_topo.downsampling.fitting",
    "TopoDownsampledConv2d": "hf_topo.downsampling.layer",
    "TopoDownsampledLinear": "hf_topo.downsampling.layer",
    "as_factors": "hf_topo.downsampling.layer",
    "closed_form_gains": "hf_topo.downsampling.layer",
    "DOWNSAMPLED_CONFIG_CLASSES": "hf_topo.downsampling.configs",
    "TopoDownsampledGPT2Config": "hf_topo.downsampling.configs",
    "TopoDownsampledGPTNeoConfig": "hf_topo.downsampling.configs",
    "TopoDownsampledGPTNeoXConfig": "hf_topo.downsampling.configs",
    "TopoDownsampledLlamaConfig": "hf_topo.downsampling.configs",
    "TopoDownsampledMistralConfig": "hf_topo.downsampling.configs",
    "TopoDownsampledQwen2Config": "hf_topo.downsampling.configs",
    "TopoDownsampledResNetConfig": "hf_topo.downsampling.configs",
    "TopoDownsampledViTConfig": "hf_topo.downsampling.configs",
    "DOWNSAMPLED_MODEL_CLASSES": "hf_topo.downsampling.models",
    "TopoDownsampledModel": "hf_topo.downsampling.models",
    "TopoDownsampledGPT2LMHeadModel": "hf_topo.downsampling.models",
    "TopoDownsampledGPTNeoForCausalLM": "hf_topo.downsampling.models",
    "TopoDownsampledGPTNeoXForCausalLM": "hf_topo.downsampling.models",
    "TopoDownsampledLlamaForCausalLM": "hf_topo.downsampling.models",
    "TopoDownsampledMistralForCausalLM": "hf_topo.downsampling.models",
    "TopoDownsampledQwen2ForCausalLM": "hf_topo.downsampling.models",
    "TopoDownsampledResNetForImageClassification": "hf_topo.downsampling.models",
    "TopoDownsampledViTForImageClassification": "hf_topo.downsampling.models",
    "DOWNSAMPLING_KEY": "hf_topo.downsampling.record",
    "DOWNSAMPLING_SCHEMA_VERSION": "hf_topo.downsampling.record",
    "DownsampledLayer": "hf_topo.downsampling.record",
    "GAIN_METHODS": "hf_topo.downsampling.record",
    "downsampling_variant": "hf_topo.downsampling.record",
    "read_record": "hf_topo.downsampling.record",
}

__all__ = [
    "DOWNSAMPLED_CONFIG_CLASSES",
    "DOWNSAMPLED_MODEL_CLASSES",
    "DOWNSAMPLING_KEY",
    "DOWNSAMPLING_SCHEMA_VERSION",
    "GAIN_METHODS",
    "as_factors",
    "closed_form_gains",
    "distill_downsampled_",
    "downsample_model",
    "downsampling_variant",
    "fit_least_squares_gains_",
    "parameter_count",
    "read_record",
    "resolve_gains",
    "DownsampledLayer",
    "TopoDownsampledConv2d",
    "TopoDownsampledGPT2Config",
    "TopoDownsampledGPT2LMHeadModel",
    "TopoDownsampledGPTNeoConfig",
    "TopoDownsampledGPTNeoForCausalLM",
    "TopoDownsampledGPTNeoXConfig",
    "TopoDownsampledGPTNeoXForCausalLM",
    "TopoDownsampledLinear",
    "TopoDownsampledLlamaConfig",
    "TopoDownsampledLlamaForCausalLM",
    "TopoDownsampledMistralConfig",
    "TopoDownsampledMistralForCausalLM",
    "TopoDownsampledModel",
    "TopoDownsampledQwen2Config",
    "TopoDownsampledQwen2ForCausalLM",
    "TopoDownsampledResNetConfig",
    "TopoDownsampledResNetForImageClassification",
    "TopoDownsampledViTConfig",
    "TopoDownsampledViTForImageClassification",
]

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY_NAMES)

if TYPE_CHECKING:
    from .api import (
        downsample_model,
        parameter_count,
        resolve_gains,
    )
    from .configs import (
        DOWNSAMPLED_CONFIG_CLASSES,
        TopoDownsampledGPT2Config,
        TopoDownsampledGPTNeoConfig,
        TopoDownsampledGPTNeoXConfig,
        TopoDownsampledLlamaConfig,
        TopoDownsampledMistralConfig,
        TopoDownsampledQwen2Config,
        TopoDownsampledResNetConfig,
        TopoDownsampledViTConfig,
    )
    from .fitting import (
        distill_downsampled_,
        fit_least_squares_gains_,
    )
    from .layer import (
        TopoDownsampledConv2d,
        TopoDownsampledLinear,
        as_factors,
        closed_form_gains,
    )
    from .models import (
        DOWNSAMPLED_MODEL_CLASSES,
        TopoDownsampledGPT2LMHeadModel,
        TopoDownsampledGPTNeoForCausalLM,
        TopoDownsampledGPTNeoXForCausalLM,
        TopoDownsampledLlamaForCausalLM,
        TopoDownsampledMistralForCausalLM,
        TopoDownsampledModel,
        TopoDownsampledQwen2ForCausalLM,
        TopoDownsampledResNetForImageClassification,
        TopoDownsampledViTForImageClassification,
    )
    from .record import (
        DOWNSAMPLING_KEY,
        DOWNSAMPLING_SCHEMA_VERSION,
        GAIN_METHODS,
        DownsampledLayer,
        downsampling_variant,
        read_record,
    )
