"""``TopoLoss``: find a model's topographic layers and average their sheet losses.

The math lives in :mod:`hf_topo.losses` (a pure function of one sheet); this module is the bookkeeping: which
layers, which sheets, which are optimized and which only watched.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from .config import TopoConfig
from .losses import _check_blur_arguments, sheet_cosine_loss
from .sheet import CorticalSheet, effective_weight, sheet_for_module, sheet_view
from .targets import base_model_name, find_target_modules

__all__ = ["TopoLoss", "TopoLayer", "resolve_sheets", "attach_inferred_topography"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopoLayer:
    """A resolved topographic layer: its name in the model at hand, the module, its sheet and its role."""

    name: str
    module: nn.Module
    sheet: CorticalSheet  # sheet.module_name is the name in the base model (what config.json records)
    role: str  # "target" (optimized) or "watch" (logged only)


def resolve_sheets(model: nn.Module, config: TopoConfig) -> list[TopoLayer]:
    """The topographic layers of ``model`` under ``config``, validated.

    Raises:
        ValueError: a pattern matches nothing, a layer is both target and watched, a sheet is too small for the
            blur factors, or ``config.layers`` (stored metadata) disagrees with the model's layers or shapes.
        TypeError: a matched layer is not Linear, Conv1D or Conv2d.
    """
    targets = find_target_modules(model, config.target_modules)
    watched = find_target_modules(model, config.watch_modules, role="watch_modules") if config.watch_modules else {}
    both = sorted(set(targets) & set(watched))
    if both:
        raise ValueError(
            f"{both[:3]} are matched by both target_modules and watch_modules; a layer is either optimized or watched. "
            "Narrow one of the two patterns."
        )
    layers: list[TopoLayer] = []
    for role, modules in (("target", targets), ("watch", watched)):
        for name, module in modules.items():
            sheet = sheet_for_module(base_model_name(model, name), module, config.sheet_shape)
            try:
                _check_blur_arguments(
                    sheet.height, sheet.width, config.factor_h, config.factor_w, config.interpolation
                )
            except ValueError as err:
                raise ValueError(f"Layer {name!r} ({sheet.n_units} units): {err}") from None
            layers.append(TopoLayer(name=name, module=module, sheet=sheet, role=role))
    if config.layers is not None:
        _check_against_stored(layers, config.layers)
    return layers


def _check_against_stored(layers: list[TopoLayer], stored: dict[str, CorticalSheet]) -> None:
    found = {layer.sheet.module_name: layer.sheet for layer in layers}
    missing = sorted(set(stored) - set(found))
    extra = sorted(set(found) - set(stored))
    if missing or extra:
        raise ValueError(
            "The stored topography metadata does not describe this model's layers: "
            + (f"recorded but not found in the model: {missing[:4]}; " if missing else "")
            + (f"found in the model but not recorded: {extra[:4]}; " if extra else "")
            + "load the matching checkpoint, or drop `layers` from the TopoConfig to re-derive the sheets."
        )
    for name, sheet in stored.items():
        actual = found[name]
        if (actual.layer_type, actual.shape) != (sheet.layer_type, sheet.shape):
            raise ValueError(
                f"The stored topography metadata of {name!r} says {sheet.layer_type} sheet {sheet.shape} (height, width, "
                f"depth) but the model has {actual.layer_type} sheet {actual.shape}. The config.json and weights come from "
                "different models: re-save the model with hf_topo, or load the checkpoint that matches the metadata."
            )


class TopoLoss:
    """TopoLoss of a model: the mean over target layers of ``1 − mean_u cos(C_u, blur(C)_u)``.

    Not multiplied by τ (``TopoTrainer`` does that). Works on plain models and PEFT-wrapped ones; for a layer
    wrapped by LoRA the sheet is built from the effective weight ``W + scaling·B·A``.

    Example::

        topo = TopoLoss(TopoConfig(target_modules=["mlp.c_fc"]))
        loss = task_loss + tau * topo(model)
        topo.per_layer(model)   # {"transformer.h.0.mlp.c_fc": tensor(0.93), ...}

    Args:
        config: the :class:`TopoConfig`; keyword arguments build one when it is omitted.
    """

    def __init__(self, config: TopoConfig | None = None, **config_kwargs):
        if config is not None and config_kwargs:
            raise ValueError("Pass either a TopoConfig or its keyword arguments, not both.")
        self.config = config if config is not None else TopoConfig(**config_kwargs)
        self._resolved: weakref.WeakKeyDictionary[nn.Module, list[TopoLayer]] = weakref.WeakKeyDictionary()

    def layers(self, model: nn.Module) -> list[TopoLayer]:
        """The resolved (and validated) topographic layers of ``model``; cached per model."""
        if model not in self._resolved:
            self._resolved[model] = resolve_sheets(model, self.config)
            layers = self._resolved[model]
            logger.info(
                "TopoLoss on %d layer(s) (%d watched): %s",
                sum(layer.role == "target" for layer in layers),
                sum(layer.role == "watch" for layer in layers),
                ", ".join(
                    f"{layer.name} {layer.sheet.height}x{layer.sheet.width}x{layer.sheet.depth}"
                    for layer in layers[:3]
                )
                + (" ..." if len(layers) > 3 else ""),
            )
        return self._resolved[model]

    def layer_loss(self, layer: TopoLayer) -> torch.Tensor:
        """TopoLoss of one layer (float32 scalar, differentiable w.r.t. the layer's weight)."""
        sheet, units_first = sheet_view(effective_weight(layer.module), layer.sheet)
        return sheet_cosine_loss(
            sheet, units_first, self.config.factor_h, self.config.factor_w, self.config.interpolation
        )

    def compute(self, model: nn.Module, with_grad: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(mean over target layers, {name: loss} for every layer)``; watched layers never carry a gradient."""
        per_layer: dict[str, torch.Tensor] = {}
        targets: list[torch.Tensor] = []
        for layer in self.layers(model):
            optimize = with_grad and layer.role == "target"
            with torch.set_grad_enabled(optimize and torch.is_grad_enabled()):
                value = self.layer_loss(layer)
            per_layer[layer.name] = value if optimize else value.detach()
            if layer.role == "target":
                targets.append(per_layer[layer.name])
        return torch.stack(targets).mean(), per_layer

    def __call__(self, model: nn.Module) -> torch.Tensor:
        """Mean TopoLoss over the target layers of ``model`` (a scalar tensor, not multiplied by τ)."""
        return self.compute(model)[0]

    def per_layer(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """``{full module name: TopoLoss}`` for every target and watched layer."""
        return self.compute(model)[1]

    def config_for(self, model: nn.Module) -> TopoConfig:
        """A copy of the config with ``layers`` filled in from ``model`` (what gets saved in ``config.json``)."""
        data = self.config.to_dict()
        data["layers"] = {layer.sheet.module_name: layer.sheet.to_dict() for layer in self.layers(model)}
        return TopoConfig.from_dict(data)


def attach_inferred_topography(
    model: nn.Module, target_modules: list[str] | str | None = None, **config_kwargs
) -> TopoConfig:
    """Give a model that was not trained with hf_topo (any GPT-style model from the Hub or disk) sheet metadata.

    The sheets are the most-square ones over ``target_modules`` (default: the family's MLP expansion layer,
    :data:`hf_topo.TARGET_PRESETS`), recorded with ``inferred: true`` and ``tau: 0``, so every hf_topo tool (loss,
    analysis, LoRA with ``--tau``) works on the model and the metadata does not pretend it was trained topographically.
    Returns the attached :class:`TopoConfig`.
    """
    from .targets import TARGET_PRESETS

    if target_modules is None:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type not in TARGET_PRESETS:
            raise ValueError(
                f"No default topographic layer is known for model_type={model_type!r}; pass target_modules=... "
                f"(known families: {', '.join(sorted(TARGET_PRESETS))})."
            )
        target_modules = TARGET_PRESETS[model_type]
    config = TopoLoss(
        TopoConfig(target_modules=target_modules, tau=config_kwargs.pop("tau", 0.0), **config_kwargs)
    ).config_for(model)
    config.inferred = True
    config.attach_to(model.config)
    return config
