"""Topographic downsampling (TopoNets paper, §3.3 and appendix A.5): smaller models that save and load as usual.

A topographic layer with ``o = h·w`` output units keeps its weight on a cortical sheet ``C ∈ R^{h×w×d}``
(:mod:`hf_topo.sheet`). Because TopoLoss made the sheet smooth, it survives being downsampled along its two
sheet axes by factors ``(φh, φw)``: the reduced sheet ``C' = down(C) ∈ R^{h'×w'×d}`` has ``h'·w'`` units
(``h' = floor(h / φh)``, ``w' = floor(w / φw)``, as ``F.interpolate`` sizes it) and the layer computes

    y = flatten(up(reshape(x · C'ᵀ, (h', w')), (h, w))) + b          # (..., in) → (..., h'·w') → (..., h·w)

where ``down``/``up`` are the same ``F.interpolate`` maps as TopoLoss's blur (bilinear, ``align_corners=False``
by default), ``b`` is the layer's full bias. The weight shrinks to ``h'·w'/(h·w)`` of its size and the matmul with
it; the upsampling is two small matmuls with the ``(h, h')`` and ``(w, w')`` interpolation matrices read off
``F.interpolate`` (:func:`hf_topo.regularizers.laplacian_pyramid.blur_matrices`), so no full-size weight is ever materialized.

Orientation: :class:`TopoDownsampledLinear` stores its reduced weight ``(h'·w', in)`` in ``nn.Linear``
orientation whatever the original layer was. Output unit ``u = i·w + j`` sits at sheet row ``i``, column ``j``
(row-major), for ``nn.Linear`` (weight ``(out, in)``, sheet ``(h, w, in)``) and transformers ``Conv1D`` (weight
``(in, out)``, the sheet over its outputs) alike, so the downsampled layer is a drop-in replacement for either.

:func:`downsample_model` returns a new model whose topographic layers are replaced. It is an instance of a
registered class (``TopoDownsampledGPT2LMHeadModel``, model type ``"hf_topo_downsampled_gpt2"``, and likewise for
GPT-Neo, GPT-NeoX, Llama, Qwen2 and Mistral) whose config records the downsampling under
``"topographic_downsampling"``::

    "topographic_downsampling": {
      "schema_version": 1, "library": "hf_topo", "library_version": "0.1.0",
      "base_model_type": "gpt2", "factor_h": 2.0, "factor_w": 2.0, "interpolation": "bilinear",
      "original_parameter_count": 124439808, "parameter_count": 103205376,
      "layers": {"transformer.h.0.mlp.c_fc": {"layer_type": "Conv1D", "height": 48, "width": 64, "depth": 768,
                                              "reduced_height": 24, "reduced_width": 32, "bias": true}, ...}
    }

so ``model.save_pretrained(dir)`` writes ordinary safetensors and, after ``import hf_topo``,
``AutoModelForCausalLM.from_pretrained(dir)`` rebuilds the same structure without ``trust_remote_code``.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
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
from transformers.pytorch_utils import Conv1D

from ._version import __version__
from .config import TopoConfig
from .metadata import TOPOGRAPHY_KEY, stored_topography
from .presets import default_target_modules
from .regularizers.laplacian_pyramid import blur_matrices, is_cacheable
from .sheet import CorticalSheet, sheet_for_module, sheet_view
from .targets import resolve_sheets

__all__ = [
    "DOWNSAMPLING_KEY",
    "DOWNSAMPLED_MODEL_CLASSES",
    "DownsampledLayer",
    "TopoDownsampledLinear",
    "downsample_model",
    "parameter_count",
]

logger = logging.getLogger(__name__)

#: Key of the downsampling record in ``config.json``.
DOWNSAMPLING_KEY = "topographic_downsampling"
DOWNSAMPLING_SCHEMA_VERSION = 1


# ---- the layer --------------------------------------------------------------------------------------------------


class TopoDownsampledLinear(nn.Module):
    """A topographic linear layer downsampled on its cortical sheet (TopoNets appendix A.5).

    Holds the reduced weight ``(h'·w', in_features)`` (``nn.Linear`` orientation) and the full bias
    ``(h·w,)``. ``forward`` computes ``x · Wᵀ`` (``(..., h'·w')``), views it as the reduced sheet ``(..., h', w')``,
    upsamples it to ``(..., h, w)`` with ``F.interpolate``'s ``interpolation`` map and adds the bias: the output has
    the original ``out_features = h·w`` in the original unit order. With ``φ = (1, 1)`` it is the original layer.

    Build one from an existing layer with :meth:`from_layer`; the constructor makes an initialized layer of the
    given geometry (what ``from_pretrained`` fills with saved weights).

    Args:
        in_features: input size ``d`` (the sheet's depth).
        height, width: the full sheet ``(h, w)``; ``out_features = h·w``.
        factor_h, factor_w: downsampling factors ``φh, φw ≥ 1``; ``h' = floor(h / φh)``, ``w' = floor(w / φw)``.
        bias: whether the layer adds a (full-size) bias.
        interpolation: ``F.interpolate`` mode of both the weight's downsampling and the output's upsampling
            (``"bilinear"`` with ``align_corners=False``, as TopoLoss's blur).
        layer_type: the type of the layer this one replaces, ``"Linear"`` or ``"Conv1D"`` (recorded only: the
            weight is stored ``(h'·w', in)`` either way).
    """

    def __init__(
        self,
        in_features: int,
        height: int,
        width: int,
        factor_h: float = 2.0,
        factor_w: float = 2.0,
        bias: bool = True,
        interpolation: str = "bilinear",
        layer_type: str = "Linear",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        # Validates the factors, the mode and that the sheet is large enough (the same rules as the blur).
        down_h, _, down_w, _ = blur_matrices(height, width, factor_h, factor_w, interpolation, dtype=torch.float64)
        if layer_type not in ("Linear", "Conv1D"):
            raise ValueError(f"layer_type={layer_type!r}: a downsampled linear layer replaces 'Linear' or 'Conv1D'.")
        self.in_features = int(in_features)
        self.height, self.width = int(height), int(width)
        self.reduced_height, self.reduced_width = down_h.shape[0], down_w.shape[0]
        self.factor_h, self.factor_w = float(factor_h), float(factor_w)
        self.interpolation = interpolation
        self.layer_type = layer_type
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(self.reduced_height * self.reduced_width, self.in_features, **factory))
        self.bias = nn.Parameter(torch.empty(self.out_features, **factory)) if bias else None
        # Upsampling matrices per (device, dtype), derived from the geometry: not parameters, not saved.
        self._upsampling_cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        self.reset_parameters()

    @property
    def out_features(self) -> int:
        return self.height * self.width

    @property
    def reduced_units(self) -> int:
        return self.reduced_height * self.reduced_width

    def reset_parameters(self) -> None:
        """``nn.Linear``'s initialization for the reduced weight (fan-in ``in_features``) and the bias."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_layer(
        cls,
        layer: nn.Module,
        factors: float | tuple[float, float] = 2.0,
        sheet: CorticalSheet | None = None,
        interpolation: str = "bilinear",
    ) -> TopoDownsampledLinear:
        """Downsample ``layer`` (``nn.Linear`` or transformers ``Conv1D``) on its cortical sheet.

        The reduced weight is ``down(C)`` of the layer's sheet ``C (h, w, d)``, computed in float64 with the
        ``F.interpolate`` map ``interpolation`` (``scale_factor = 1/φ``) and stored in the layer's dtype; the bias is
        copied. ``sheet`` fixes the sheet (e.g. the one recorded in ``config.json``); by default it is the most-square
        one. ``layer`` is not modified.
        """
        if not isinstance(layer, (nn.Linear, Conv1D)):
            raise TypeError(
                f"Cannot downsample a {type(layer).__name__}: only torch.nn.Linear and transformers' Conv1D layers "
                "are supported (the paper finds downsampled convolution kernels lose all performance). Merge PEFT "
                "adapters first (model.merge_and_unload())."
            )
        factor_h, factor_w = _as_factors(factors)
        if sheet is None:
            sheet = sheet_for_module(type(layer).__name__, layer)
        else:
            sheet = sheet_for_module(sheet.module_name, layer, (sheet.height, sheet.width))
        weight = layer.weight
        small = cls(
            sheet.depth,
            sheet.height,
            sheet.width,
            factor_h,
            factor_w,
            bias=layer.bias is not None,
            interpolation=interpolation,
            layer_type=sheet.layer_type,
            device=weight.device,
            dtype=weight.dtype,
        )
        with torch.no_grad():
            down_h, _, down_w, _ = blur_matrices(
                sheet.height, sheet.width, factor_h, factor_w, interpolation, device=weight.device, dtype=torch.float64
            )
            view, units_first = sheet_view(weight.detach(), sheet)
            full_sheet = (view if units_first else view.permute(1, 2, 0)).to(torch.float64)  # (h, w, d)
            reduced = torch.einsum("ah,hwd,bw->abd", down_h, full_sheet, down_w)  # (h', w', d)
            small.weight.copy_(reduced.reshape(small.reduced_units, sheet.depth))
            if layer.bias is not None:
                small.bias.copy_(layer.bias)
        return small

    def _upsampling_matrices(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (device, dtype)
        cached = self._upsampling_cache.get(key)
        if cached is not None:
            return cached
        # Built outside inference mode and kept only when real (not meta, fake or inference tensors), so that a
        # forward under from_pretrained's meta device, a compiler trace or torch.inference_mode leaves nothing behind
        # that a later forward (or backward) could not use.
        with torch.inference_mode(False), torch.no_grad():
            _, up_h, _, up_w = blur_matrices(
                self.height, self.width, self.factor_h, self.factor_w, self.interpolation, device=device, dtype=dtype
            )
        if is_cacheable(up_h) and is_cacheable(up_w):
            self._upsampling_cache[key] = (up_h, up_w)
        return up_h, up_w  # (h, h'), (w, w')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        upsample_h = self.reduced_height != self.height
        upsample_w = self.reduced_width != self.width
        if not (upsample_h or upsample_w):  # φ = (1, 1): exactly nn.Linear
            return F.linear(x, self.weight, self.bias)
        up_h, up_w = self._upsampling_matrices(x.device, self.weight.dtype)
        grid = F.linear(x, self.weight).unflatten(-1, (self.reduced_height, self.reduced_width))  # (..., h', w')
        if upsample_w:
            grid = torch.matmul(grid, up_w.T)  # (..., h', w)
        if upsample_h:
            grid = torch.matmul(up_h, grid)  # (..., h, w)
        out = grid.flatten(-2)  # (..., h·w), unit u = i·w + j
        # In place: `out` is a fresh matmul result that autograd does not keep.
        return out.add_(self.bias) if self.bias is not None else out

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, sheet=({self.height}, {self.width}), "
            f"reduced_sheet=({self.reduced_height}, {self.reduced_width}), factors=({self.factor_h:g}, "
            f"{self.factor_w:g}), interpolation={self.interpolation!r}, bias={self.bias is not None}"
        )


# ---- the record in config.json ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DownsampledLayer:
    """One downsampled layer as recorded in ``config.json``: its full sheet, reduced sheet and whether it has a bias."""

    sheet: CorticalSheet
    reduced_height: int
    reduced_width: int
    bias: bool

    def to_dict(self) -> dict[str, Any]:
        return self.sheet.to_dict() | {
            "reduced_height": self.reduced_height,
            "reduced_width": self.reduced_width,
            "bias": self.bias,
        }

    @classmethod
    def from_dict(cls, module_name: str, data: dict[str, Any]) -> DownsampledLayer:
        try:
            return cls(
                sheet=CorticalSheet.from_dict(module_name, data),
                reduced_height=int(data["reduced_height"]),
                reduced_width=int(data["reduced_width"]),
                bias=bool(data["bias"]),
            )
        except KeyError as missing:
            raise ValueError(
                f"The downsampling record of layer {module_name!r} lacks the key {missing}; expected the sheet keys "
                "plus 'reduced_height', 'reduced_width', 'bias'. Re-create the model with hf_topo.downsample_model."
            ) from None


def _read_record(config: PreTrainedConfig) -> tuple[dict[str, Any], dict[str, DownsampledLayer]]:
    record = getattr(config, DOWNSAMPLING_KEY, None)
    if not isinstance(record, dict):
        raise ValueError(
            f"{type(config).__name__} has no '{DOWNSAMPLING_KEY}' record, so there is nothing to rebuild. Create "
            "downsampled models with hf_topo.downsampling.downsample_model(model, factors) and load them with "
            "AutoModelForCausalLM.from_pretrained."
        )
    version = record.get("schema_version")
    if not isinstance(version, int) or version > DOWNSAMPLING_SCHEMA_VERSION:
        raise ValueError(
            f"The '{DOWNSAMPLING_KEY}' record has schema_version={version!r}; this hf_topo reads versions up to "
            f"{DOWNSAMPLING_SCHEMA_VERSION}. Upgrade hf_topo (`pip install -U hf_topo`)."
        )
    missing = [key for key in ("factor_h", "factor_w", "layers") if key not in record]
    if missing:
        raise ValueError(
            f"The '{DOWNSAMPLING_KEY}' record lacks {missing}; it was edited or truncated. Re-create the model with "
            "hf_topo.downsampling.downsample_model."
        )
    layers = {name: DownsampledLayer.from_dict(name, data) for name, data in record["layers"].items()}
    return record, layers


# ---- registered model classes -----------------------------------------------------------------------------------


class _TopoDownsampledCausalLM:
    """Mixin of the registered classes: swap in :class:`TopoDownsampledLinear` layers as the config records them.

    The family's ``__init__`` builds the full architecture and ends with ``self.post_init()``; the swap happens
    there, before the weights are initialized and tied, so ``from_pretrained`` (which builds on the meta device)
    sees the reduced parameter shapes and loads the saved weights into them.
    """

    def post_init(self):
        record, layers = _read_record(self.config)
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
        if isinstance(original, Conv1D):
            depth, n_units = original.weight.shape  # (in, out)
        elif isinstance(original, nn.Linear):
            n_units, depth = original.weight.shape  # (out, in)
        else:
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


class TopoDownsampledGPT2Config(GPT2Config):
    """``GPT2Config`` of a downsampled GPT-2 (model type ``hf_topo_downsampled_gpt2``)."""

    model_type = "hf_topo_downsampled_gpt2"


class TopoDownsampledGPT2LMHeadModel(_TopoDownsampledCausalLM, GPT2LMHeadModel):
    """``GPT2LMHeadModel`` whose topographic layers (``mlp.c_fc``) are :class:`TopoDownsampledLinear`."""

    config_class = TopoDownsampledGPT2Config


class TopoDownsampledGPTNeoConfig(GPTNeoConfig):
    """``GPTNeoConfig`` of a downsampled GPT-Neo (model type ``hf_topo_downsampled_gpt_neo``)."""

    model_type = "hf_topo_downsampled_gpt_neo"


class TopoDownsampledGPTNeoForCausalLM(_TopoDownsampledCausalLM, GPTNeoForCausalLM):
    """``GPTNeoForCausalLM`` whose topographic layers (``mlp.c_fc``) are :class:`TopoDownsampledLinear`."""

    config_class = TopoDownsampledGPTNeoConfig


class TopoDownsampledGPTNeoXConfig(GPTNeoXConfig):
    """``GPTNeoXConfig`` of a downsampled GPT-NeoX/Pythia (model type ``hf_topo_downsampled_gpt_neox``)."""

    model_type = "hf_topo_downsampled_gpt_neox"


class TopoDownsampledGPTNeoXForCausalLM(_TopoDownsampledCausalLM, GPTNeoXForCausalLM):
    """``GPTNeoXForCausalLM`` whose topographic layers (``mlp.dense_h_to_4h``) are :class:`TopoDownsampledLinear`."""

    config_class = TopoDownsampledGPTNeoXConfig


class TopoDownsampledLlamaConfig(LlamaConfig):
    """``LlamaConfig`` of a downsampled Llama (model type ``hf_topo_downsampled_llama``)."""

    model_type = "hf_topo_downsampled_llama"


class TopoDownsampledLlamaForCausalLM(_TopoDownsampledCausalLM, LlamaForCausalLM):
    """``LlamaForCausalLM`` whose topographic layers (``mlp.up_proj``) are :class:`TopoDownsampledLinear`."""

    config_class = TopoDownsampledLlamaConfig


class TopoDownsampledQwen2Config(Qwen2Config):
    """``Qwen2Config`` of a downsampled Qwen2 (model type ``hf_topo_downsampled_qwen2``)."""

    model_type = "hf_topo_downsampled_qwen2"


class TopoDownsampledQwen2ForCausalLM(_TopoDownsampledCausalLM, Qwen2ForCausalLM):
    """``Qwen2ForCausalLM`` whose topographic layers (``mlp.up_proj``) are :class:`TopoDownsampledLinear`."""

    config_class = TopoDownsampledQwen2Config


class TopoDownsampledMistralConfig(MistralConfig):
    """``MistralConfig`` of a downsampled Mistral (model type ``hf_topo_downsampled_mistral``)."""

    model_type = "hf_topo_downsampled_mistral"


class TopoDownsampledMistralForCausalLM(_TopoDownsampledCausalLM, MistralForCausalLM):
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


# ---- model-level API --------------------------------------------------------------------------------------------


def parameter_count(model: nn.Module) -> int:
    """Number of parameters of ``model``, each shared (tied) parameter counted once."""
    return sum(p.numel() for p in model.parameters())


def _as_factors(factors: Any) -> tuple[float, float]:
    pair = (factors, factors) if not isinstance(factors, (tuple, list)) else tuple(factors)
    valid = len(pair) == 2 and all(
        isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f) and f >= 1 for f in pair
    )
    if not valid:
        raise ValueError(
            f"factors={factors!r} is not a valid downsampling factor: expected one number φ >= 1 or a pair "
            "(φh, φw) of numbers >= 1 (1 keeps a sheet axis whole, 2 halves it), e.g. factors=2 or factors=(2, 3)."
        )
    return float(pair[0]), float(pair[1])


def _topographic_sheets(
    model: PreTrainedModel,
    target_modules: list[str] | str | None,
    factor_h: float,
    factor_w: float,
    interpolation: str | None,
) -> tuple[list[CorticalSheet], str]:
    """The sheets of the layers to downsample, validated for the factors, and the interpolation mode to use."""
    if stored_topography(model) is not None:  # a malformed record raises rather than being ignored
        topo = TopoConfig.from_pretrained(model.config)
        if target_modules is not None:  # other layers than the trained ones: their sheets are re-derived
            topo = replace(topo, target_modules=target_modules, watch_modules=None, layers=None)
    else:
        if target_modules is None:
            try:
                target_modules = default_target_modules(model)
            except ValueError as err:
                raise ValueError(f"{type(model).__name__} has no '{TOPOGRAPHY_KEY}' metadata. {err}") from None
        logger.warning(
            "%s has no '%s' metadata: downsampling %s on most-square sheets. A model not trained with TopoLoss "
            "usually loses much more from downsampling than a TopoNet.",
            type(model).__name__,
            TOPOGRAPHY_KEY,
            target_modules,
        )
        topo = TopoConfig(target_modules=target_modules)
    mode = interpolation or topo.interpolation
    # resolve_sheets checks every sheet against the factors with the blur's rules (h >= φh, w >= φw).
    topo = replace(topo, factor_h=factor_h, factor_w=factor_w, interpolation=mode)
    layers = [layer for layer in resolve_sheets(model, topo) if layer.role == "target"]
    return [layer.sheet for layer in layers], mode


def downsample_model(
    model: PreTrainedModel,
    factors: float | tuple[float, float] = (2, 2),
    target_modules: list[str] | str | None = None,
    interpolation: str | None = None,
) -> PreTrainedModel:
    """A new, smaller model whose topographic layers are downsampled on their sheets by ``factors`` (paper A.5).

    Each topographic layer (``nn.Linear`` or ``Conv1D``) becomes a :class:`TopoDownsampledLinear` holding
    ``down(C)``, its sheet downsampled from ``(h, w)`` to ``(floor(h/φh), floor(w/φw))``; every other weight is
    copied. ``model`` is not modified. The result is a registered ``TopoDownsampled*`` class whose config records
    the downsampling (``config.topographic_downsampling``), so it saves with ``save_pretrained`` and loads with
    ``AutoModelForCausalLM.from_pretrained`` after ``import hf_topo``.

    Args:
        model: a causal LM of a supported family (GPT-2, GPT-Neo, GPT-NeoX, Llama, Qwen2, Mistral); not PEFT-wrapped.
        factors: ``φ`` for both sheet axes or ``(φh, φw)``, each ``>= 1`` (the paper reduces a layer ``n``-fold
            with ``φh = φw = √n``). ``(1, 1)`` gives a model that computes exactly what ``model`` does.
        target_modules: the layers to downsample (PEFT semantics: name suffixes or one regex). By default the
            target layers of the model's ``topography`` metadata with their recorded sheets, else the family's
            MLP expansion layer (:data:`hf_topo.presets.TARGET_PRESETS`) on most-square sheets.
        interpolation: ``F.interpolate`` mode; by default the one of the model's TopoLoss (``"bilinear"``).

    Returns:
        The downsampled model, on ``model``'s device and dtype and in its train/eval mode.

    Raises:
        ValueError: bad factors; a sheet smaller than its factors; ``target_modules`` matching nothing; a model of an
            unsupported family, already downsampled, PEFT-wrapped, or without metadata and target layers.
        TypeError: a target layer is not ``nn.Linear``/``Conv1D``.
    """
    factor_h, factor_w = _as_factors(factors)
    if isinstance(model, _TopoDownsampledCausalLM):
        done = model.config.topographic_downsampling
        raise ValueError(
            f"{type(model).__name__} is already downsampled by ({done['factor_h']:g}, {done['factor_w']:g}). "
            "Downsample the original model instead, with the combined factors."
        )
    if hasattr(model, "peft_config"):
        raise ValueError(
            "downsample_model got a PEFT-wrapped model; merge the adapters first: "
            "downsample_model(model.merge_and_unload(), factors)."
        )
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in DOWNSAMPLED_MODEL_CLASSES:
        raise ValueError(
            f"downsample_model does not support model_type={model_type!r} ({type(model).__name__}): a downsampled "
            "model is an instance of a registered class, so that it saves and reloads, and such classes exist for "
            f"{sorted(DOWNSAMPLED_MODEL_CLASSES)}. For another architecture, replace single layers with "
            "TopoDownsampledLinear.from_layer(layer, factors) (such a model does not reload with from_pretrained)."
        )
    base_class, config_class, model_class = DOWNSAMPLED_MODEL_CLASSES[model_type]
    if not isinstance(model, base_class):
        raise ValueError(
            f"downsample_model expects the causal LM {base_class.__name__} of a {model_type} checkpoint, got "
            f"{type(model).__name__}. Load it with AutoModelForCausalLM.from_pretrained."
        )
    sheets, mode = _topographic_sheets(model, target_modules, factor_h, factor_w, interpolation)

    modules = dict(model.named_modules())
    small_layers = {
        sheet.module_name: TopoDownsampledLinear.from_layer(
            modules[sheet.module_name], (factor_h, factor_w), sheet, mode
        )
        for sheet in sheets
    }
    original_count = parameter_count(model)
    removed = sum(modules[name].weight.numel() - small.weight.numel() for name, small in small_layers.items())
    record = {
        "schema_version": DOWNSAMPLING_SCHEMA_VERSION,
        "library": "hf_topo",
        "library_version": __version__,
        "base_model_type": model_type,
        "factor_h": factor_h,
        "factor_w": factor_w,
        "interpolation": mode,
        "original_parameter_count": original_count,
        "parameter_count": original_count - removed,
        "layers": {
            name: DownsampledLayer(
                sheet=sheet,
                reduced_height=small_layers[name].reduced_height,
                reduced_width=small_layers[name].reduced_width,
                bias=small_layers[name].bias is not None,
            ).to_dict()
            for name, sheet in ((s.module_name, s) for s in sheets)
        },
    }
    config_data = model.config.to_dict()
    config_data.pop("model_type", None)
    config_data[DOWNSAMPLING_KEY] = record
    new_config = config_class.from_dict(config_data)

    new_model = _build_with_weights(model, model_class, new_config, small_layers)
    new_model.generation_config = copy.deepcopy(model.generation_config)
    new_model.train(model.training)
    count = parameter_count(new_model)
    if count != record["parameter_count"]:  # e.g. weights tied in the original but not in its config
        raise RuntimeError(
            f"The downsampled model has {count} parameters but {record['parameter_count']} were expected; "
            "please report this with the model's config."
        )
    logger.info(
        "Downsampled %d layer(s) of %s by (%g, %g): %d -> %d parameters (%.1f%%)",
        len(small_layers),
        type(model).__name__,
        factor_h,
        factor_w,
        original_count,
        count,
        100.0 * count / original_count,
    )
    return new_model


def _build_with_weights(
    model: PreTrainedModel,
    model_class: type[PreTrainedModel],
    config: PreTrainedConfig,
    small_layers: dict[str, TopoDownsampledLinear],
) -> PreTrainedModel:
    """``model_class(config)`` holding copies of ``model``'s tensors (each in its own dtype and device) and the
    reduced weights of ``small_layers``."""
    # Built on the meta device (no allocation, no random init), then every tensor is assigned: parameters and
    # persistent buffers from the state dict, non-persistent buffers (rotary frequencies, ...) copied as they are,
    # so the new model computes in exactly the dtypes the original does.
    with torch.device("meta"):
        new_model = model_class(config)
    copies: dict[int, torch.Tensor] = {}  # one copy per storage, so tied weights stay one tensor
    state = {key: copies.setdefault(id(tensor), tensor.detach().clone()) for key, tensor in model.state_dict().items()}
    for name, small in small_layers.items():
        state[f"{name}.weight"] = small.weight.detach()
    new_model.load_state_dict(state, strict=True, assign=True)
    for name, buffer in model.named_buffers():
        if name not in state:
            owner_name, _, buffer_name = name.rpartition(".")
            owner = new_model.get_submodule(owner_name) if owner_name else new_model
            owner.register_buffer(buffer_name, buffer.clone(), persistent=False)
    new_model.tie_weights()
    left_on_meta = [name for name, t in (*new_model.named_parameters(), *new_model.named_buffers()) if t.is_meta]
    if left_on_meta:
        raise RuntimeError(
            f"Tensors {left_on_meta[:4]} of the downsampled {model_class.__name__} were not filled from the original "
            "model; please report this with the model's config."
        )
    return new_model
