"""``downsample_model`` and ``parameter_count``: a whole model downsampled on its sheets, as a registered class.

:func:`downsample_model` replaces each topographic layer with a
:class:`~hf_topo.downsampling.layer.TopoDownsampledLinear` (Linear, Conv1D) or
:class:`~hf_topo.downsampling.layer.TopoDownsampledConv2d` (Conv2d) (per-unit gains by default, ``gains=False`` for
the paper's A.5 layer), copies every other tensor, and returns an instance of the family's registered
``TopoDownsampled*`` class whose ``config.json`` records what was done (:mod:`hf_topo.downsampling.record`).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import replace

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel

from .._version import __version__
from ..config import TopoConfig
from ..metadata import TOPOGRAPHY_KEY, stored_topography
from ..presets import default_target_modules
from ..sheet import CorticalSheet
from ..targets import resolve_sheets
from .fitting import distill_downsampled_, fit_least_squares_gains_
from .layer import TopoDownsampledConv2d, TopoDownsampledLinear, as_factors
from .models import DOWNSAMPLED_MODEL_CLASSES, TopoDownsampledModel, auto_class_for
from .record import DOWNSAMPLING_KEY, DOWNSAMPLING_SCHEMA_VERSION, GAIN_METHODS, DownsampledLayer

__all__ = ["downsample_model", "parameter_count", "resolve_gains"]

logger = logging.getLogger(__name__)


def parameter_count(model: nn.Module) -> int:
    """Number of parameters of ``model``, each shared (tied) parameter counted once."""
    return sum(p.numel() for p in model.parameters())


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


def resolve_gains(gains: bool | str | None) -> str | None:
    """The gain method of ``downsample_model(gains=...)``: ``"closed_form"``, ``"least_squares"`` or ``None``.

    ``True`` is ``"closed_form"``; ``False``, ``None`` and ``"none"`` are the paper's variant (no gains).
    """
    if gains is True:
        return "closed_form"
    if gains is False or gains is None or gains == "none":
        return None
    if isinstance(gains, str) and gains in GAIN_METHODS:
        return gains
    raise ValueError(
        f"gains={gains!r} is not a gain method: expected True / 'closed_form' (g_u = ||W_u|| / ||blur(W)_u||, the "
        "default), 'least_squares' (fitted on calibration_tokens), or False / 'none' (the paper's A.5 layer)."
    )


def downsample_model(
    model: PreTrainedModel,
    factors: float | tuple[float, float] = (2, 2),
    target_modules: list[str] | str | None = None,
    interpolation: str | None = None,
    gains: bool | str | None = True,
    calibration_tokens=None,
    distill_steps: int = 0,
    distill_learning_rate: float = 1e-3,
    batch_size: int = 8,
    progress: bool = False,
) -> PreTrainedModel:
    """A new, smaller model whose topographic layers are downsampled on their sheets by ``factors`` (paper A.5).

    Each topographic layer (``nn.Linear`` or ``Conv1D``) becomes a :class:`TopoDownsampledLinear` holding
    ``down(C)``, its sheet downsampled from ``(h, w)`` to ``(floor(h/φh), floor(w/φw))``, and by default one gain per
    output unit; each ``nn.Conv2d`` likewise becomes a :class:`TopoDownsampledConv2d` with ``(h'·w', in, kh, kw)``
    weights whose output channels are upsampled back on the sheet. Every other weight is copied. ``model`` is not
    modified. The result is a registered ``TopoDownsampled*`` class whose config records the downsampling
    (``config.topographic_downsampling``, with its ``"variant"``: ``"gains"`` or ``"paper"``), so it saves with
    ``save_pretrained`` and loads with ``AutoModelForCausalLM.from_pretrained`` (language) or
    ``AutoModelForImageClassification.from_pretrained`` (vision) after ``import hf_topo``.

    Args:
        model: a causal LM (GPT-2, GPT-Neo, GPT-NeoX, Llama, Qwen2, Mistral) or image classifier (ResNet, ViT) of a
            supported family; not PEFT-wrapped.
        factors: ``φ`` for both sheet axes or ``(φh, φw)``, each ``>= 1`` (the paper reduces a layer ``n``-fold
            with ``φh = φw = √n``). ``(1, 1)`` with ``gains=False`` gives a model that computes exactly what
            ``model`` does.
        target_modules: the layers to downsample (PEFT semantics: name suffixes or one regex). By default the
            target layers of the model's ``topography`` metadata with their recorded sheets, else the family's
            MLP expansion layer (:data:`hf_topo.presets.TARGET_PRESETS`) on most-square sheets.
        interpolation: ``F.interpolate`` mode; by default the one of the model's TopoLoss (``"bilinear"``).
        gains: per-unit gains (``h·w`` parameters per layer). ``True``/``"closed_form"`` (default):
            ``g_u = ‖W_u‖ / ‖blur(W)_u‖``, which restores each unit's weight norm that the blur changed;
            ``"least_squares"`` (language models): fitted on ``calibration_tokens``
            (:func:`~hf_topo.downsampling.fitting.fit_least_squares_gains_`); ``False``/``"none"``: the paper's layer.
        calibration_tokens: token ids ``(n, seq_len)`` (tensor, ``TokenBatch`` or dict/dataset with ``input_ids``)
            of a little text, for ``gains="least_squares"`` and ``distill_steps``.
        distill_steps: (language models) after the gains, train the downsampled layers' reduced weights and gains for this many steps
            to match ``model``'s next-token distributions on ``calibration_tokens``
            (:func:`~hf_topo.downsampling.fitting.distill_downsampled_`); 0 (default) trains nothing.
        distill_learning_rate: AdamW learning rate of the distillation.
        batch_size: sequences per forward when fitting or distilling.
        progress: show tqdm bars while fitting or distilling.

    Returns:
        The downsampled model, on ``model``'s device and dtype and in its train/eval mode.

    Raises:
        ValueError: bad factors or gains; a sheet smaller than its factors; ``target_modules`` matching nothing; a
            model of an unsupported family, already downsampled, PEFT-wrapped, or without metadata and target
            layers; fitting or distilling without ``calibration_tokens``.
        TypeError: a target layer is not ``nn.Linear``/``Conv1D``.
    """
    method = resolve_gains(gains)
    if isinstance(distill_steps, bool) or not isinstance(distill_steps, int) or distill_steps < 0:
        raise ValueError(f"distill_steps={distill_steps!r} must be a non-negative integer (0: no distillation).")
    if (method == "least_squares" or distill_steps) and calibration_tokens is None:
        raise ValueError(
            f"gains={gains!r} with distill_steps={distill_steps} needs calibration_tokens: token ids (n, seq_len) of "
            "some text, e.g. hf_topo.evaluation.load_text_blocks(tokenizer, 128, text_file=..., max_blocks=32)."
        )
    factor_h, factor_w = as_factors(factors)
    if isinstance(model, TopoDownsampledModel):
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
    auto_class = auto_class_for(model_class).__name__
    if not isinstance(model, base_class):
        raise ValueError(
            f"downsample_model expects the {base_class.__name__} of a {model_type} checkpoint, got "
            f"{type(model).__name__}. Load it with {auto_class}.from_pretrained."
        )
    if (method == "least_squares" or distill_steps) and auto_class != "AutoModelForCausalLM":
        raise ValueError(
            f"gains={gains!r} with distill_steps={distill_steps} fits the downsampled layers on text, so it applies to "
            f"language models only; {type(model).__name__} is an image model: use gains='closed_form' (default) or "
            "gains=False, with distill_steps=0."
        )
    sheets, mode = _topographic_sheets(model, target_modules, factor_h, factor_w, interpolation)

    modules = dict(model.named_modules())
    small_layers = {
        sheet.module_name: (
            TopoDownsampledConv2d if isinstance(modules[sheet.module_name], nn.Conv2d) else TopoDownsampledLinear
        ).from_layer(modules[sheet.module_name], (factor_h, factor_w), sheet, mode, gain=method is not None)
        for sheet in sheets
    }
    original_count = parameter_count(model)
    removed = sum(
        modules[name].weight.numel() - small.weight.numel() - (0 if small.gain is None else small.gain.numel())
        for name, small in small_layers.items()
    )
    record = {
        "schema_version": DOWNSAMPLING_SCHEMA_VERSION,
        "library": "hf_topo",
        "library_version": __version__,
        "base_model_type": model_type,
        "factor_h": factor_h,
        "factor_w": factor_w,
        "interpolation": mode,
        "variant": "paper" if method is None else "gains",
        "gains": method,
        "distill_steps": distill_steps,
        "original_parameter_count": original_count,
        "parameter_count": original_count - removed,
        "layers": {
            name: DownsampledLayer(
                sheet=sheet,
                reduced_height=small_layers[name].reduced_height,
                reduced_width=small_layers[name].reduced_width,
                bias=small_layers[name].bias is not None,
                gain=small_layers[name].gain is not None,
            ).to_dict()
            for name, sheet in ((s.module_name, s) for s in sheets)
        },
    }
    config_data = model.config.to_dict()
    config_data.pop("model_type", None)
    config_data[DOWNSAMPLING_KEY] = record
    new_config = config_class.from_dict(config_data)

    new_model = _build_with_weights(model, model_class, new_config, small_layers)
    if getattr(model, "generation_config", None) is not None:  # causal LMs only
        new_model.generation_config = copy.deepcopy(model.generation_config)
    new_model.train(model.training)
    if method == "least_squares":
        fit_least_squares_gains_(new_model, model, calibration_tokens, batch_size, progress)
    if distill_steps:
        distill_downsampled_(
            new_model, model, calibration_tokens, distill_steps, distill_learning_rate, batch_size, progress
        )
    count = parameter_count(new_model)
    if count != record["parameter_count"]:  # e.g. weights tied in the original but not in its config
        raise RuntimeError(
            f"The downsampled model has {count} parameters but {record['parameter_count']} were expected; "
            "please report this with the model's config."
        )
    logger.info(
        "Downsampled %d layer(s) of %s by (%g, %g), %s variant: %d -> %d parameters (%.1f%%)",
        len(small_layers),
        type(model).__name__,
        factor_h,
        factor_w,
        record["variant"],
        original_count,
        count,
        100.0 * count / original_count,
    )
    return new_model


def _build_with_weights(
    model: PreTrainedModel,
    model_class: type[PreTrainedModel],
    config: PreTrainedConfig,
    small_layers: dict[str, TopoDownsampledLinear | TopoDownsampledConv2d],
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
        if small.gain is not None:
            state[f"{name}.gain"] = small.gain.detach()
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
