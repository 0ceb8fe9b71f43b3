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
``layer``       :class:`TopoDownsampledLinear`, :class:`TopoDownsampledConv2d` (the layers, closed-form gains)
``record``      the ``"topographic_downsampling"`` record in ``config.json`` (:class:`DownsampledLayer`)
``models``      the registered ``TopoDownsampled*`` config and model classes of eight families
``api``         :func:`downsample_model`, :func:`parameter_count`
``fitting``     least-squares gains and a short distillation on a little text
==============  ====================================================================================================

Orientation: :class:`TopoDownsampledLinear` stores its reduced weight ``(h'·w', in)`` in ``nn.Linear``
orientation whatever the original layer was. Output unit ``u = i·w + j`` sits at sheet row ``i``, column ``j``
(row-major), for ``nn.Linear`` and transformers ``Conv1D`` alike (:func:`hf_topo.sheet.as_cortical_sheet`), so the
downsampled layer is a drop-in replacement for either.

:func:`downsample_model` returns a new model whose topographic layers are replaced. It is an instance of a
registered class (``TopoDownsampledGPT2LMHeadModel``, model type ``"hf_topo_downsampled_gpt2"``, and likewise for
GPT-Neo, GPT-NeoX, Llama, Qwen2, Mistral, and the image classifiers ResNet and ViT) whose config records the downsampling under
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
``AutoModelForCausalLM.from_pretrained(dir)`` (``AutoModelForImageClassification`` for vision) rebuilds the same structure without ``trust_remote_code``. Models
saved before gains existed (schema version 1) load as the paper's variant.
"""

from .api import downsample_model, parameter_count, resolve_gains
from .fitting import distill_downsampled_, fit_least_squares_gains_
from .layer import TopoDownsampledConv2d, TopoDownsampledLinear, as_factors, closed_form_gains
from .models import (
    DOWNSAMPLED_MODEL_CLASSES,
    TopoDownsampledGPT2Config,
    TopoDownsampledGPT2LMHeadModel,
    TopoDownsampledGPTNeoConfig,
    TopoDownsampledGPTNeoForCausalLM,
    TopoDownsampledGPTNeoXConfig,
    TopoDownsampledGPTNeoXForCausalLM,
    TopoDownsampledLlamaConfig,
    TopoDownsampledLlamaForCausalLM,
    TopoDownsampledMistralConfig,
    TopoDownsampledMistralForCausalLM,
    TopoDownsampledModel,
    TopoDownsampledQwen2Config,
    TopoDownsampledQwen2ForCausalLM,
    TopoDownsampledResNetConfig,
    TopoDownsampledResNetForImageClassification,
    TopoDownsampledViTConfig,
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

# The former private names of the single-module version, for code that reached into it.
_read_record = read_record
_as_factors = as_factors

__all__ = [
    "DOWNSAMPLING_KEY",
    "DOWNSAMPLING_SCHEMA_VERSION",
    "DOWNSAMPLED_MODEL_CLASSES",
    "GAIN_METHODS",
    "DownsampledLayer",
    "TopoDownsampledModel",
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
    "TopoDownsampledQwen2Config",
    "TopoDownsampledQwen2ForCausalLM",
    "TopoDownsampledResNetConfig",
    "TopoDownsampledResNetForImageClassification",
    "TopoDownsampledViTConfig",
    "TopoDownsampledViTForImageClassification",
    "as_factors",
    "closed_form_gains",
    "distill_downsampled_",
    "downsample_model",
    "downsampling_variant",
    "fit_least_squares_gains_",
    "parameter_count",
    "read_record",
    "resolve_gains",
]
