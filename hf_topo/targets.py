"""Finding the topographic layers of a model, with PEFT's ``target_modules`` semantics.

* a list of strings: a module matches when its full name equals an entry or ends with ``"." + entry``
  (``"mlp.c_fc"`` matches ``transformer.h.3.mlp.c_fc``);
* one string: a regular expression that must match the full module name (``re.fullmatch``).

Only layers that can carry a cortical sheet (a registered layer kind: Linear, Conv1D, Conv2d, RNN, ... see
:mod:`hf_topo.sheet`) are returned, except for the regularizers that
read activations, whose targets may be any module (a block's attention or MLP, a block, a LayerNorm: its features
are laid out on an activation sheet of the model's hidden size); a pattern that matches nothing raises an error
listing the candidate names. Inside a PEFT-wrapped model the LoRA wrapper of a
layer is the match (its adapter sub-layers are never targets), and names are reported both as seen in the
wrapped model and as in the base model (what ``config.json`` records).

:func:`resolve_sheets` turns a :class:`~hf_topo.config.TopoConfig` into the model's :class:`TopoLayer` list: every
target and watched layer with its cortical sheet and role, checked against the blur factors of the loss and against
the sheets that a saved model's metadata records.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

from .sheet import (
    ACTIVATION_SHEET,
    CorticalSheet,
    activation_sheet,
    get_layer_kind,
    is_sheet_layer,
    layer_kinds,
    sheet_for_module,
    unwrapped_layer,
)

if TYPE_CHECKING:
    from .config import TopoConfig

__all__ = [
    "TopoLayer",
    "base_model_name",
    "candidate_layer_names",
    "find_target_modules",
    "matches_pattern",
    "resolve_sheets",
    "short_layer_name",
]

# Sub-modules of PEFT tuner layers: never targets themselves.
_PEFT_INTERNAL = {
    "base_layer",
    "lora_A",
    "lora_B",
    "lora_embedding_A",
    "lora_embedding_B",
    "lora_magnitude_vector",
    "original_module",  # inside a modules_to_save wrapper, which is matched as the layer itself
    "modules_to_save",
}
_PEFT_PREFIX = "base_model.model."


def _is_candidate(name: str, module: nn.Module) -> bool:
    if not name or _PEFT_INTERNAL.intersection(name.split(".")):
        return False
    return is_sheet_layer(module)


def matches_pattern(name: str, patterns: str | list[str]) -> bool:
    """Whether the full module name ``name`` is matched by ``patterns`` (suffix list or one regex)."""
    if isinstance(patterns, str):
        return re.fullmatch(patterns, name) is not None
    return any(name == p or name.endswith("." + p) for p in patterns)


def candidate_layer_names(model: nn.Module) -> list[str]:
    """Base-model names of every layer of ``model`` that could carry a cortical sheet."""
    return [base_model_name(model, name) for name, module in model.named_modules() if _is_candidate(name, module)]


def _summarize(names: Iterable[str], limit: int = 12) -> str:
    """Distinct name suffixes (block indices dropped) so the error stays readable."""
    suffixes: list[str] = []
    for name in names:
        parts = [p for p in name.split(".") if not p.isdigit()]
        suffix = ".".join(parts[-2:])
        if suffix not in suffixes:
            suffixes.append(suffix)
    shown = ", ".join(repr(s) for s in suffixes[:limit])
    return shown + (f" (+{len(suffixes) - limit} more)" if len(suffixes) > limit else "")


def base_model_name(model: nn.Module, name: str) -> str:
    """``name`` as it is in the base model (PEFT's ``base_model.model.`` prefix removed)."""
    if name.startswith(_PEFT_PREFIX) and hasattr(model, "base_model") and hasattr(model, "peft_config"):
        return name[len(_PEFT_PREFIX) :]
    return name


def short_layer_name(name: str) -> str:
    """The label of a layer in logs, tables and figures: its name from the block onwards.

    ``transformer.h.3.mlp.c_fc`` → ``h.3.mlp.c_fc``, ``model.layers.0.mlp.up_proj`` → ``layers.0.mlp.up_proj``; a name
    without a block index loses only a leading ``transformer.``/``model.``/``gpt_neox.``. Pass a base-model name
    (:func:`base_model_name`) for a PEFT-wrapped model.
    """
    parts = name.split(".")
    block = next((i for i, part in enumerate(parts) if part.isdigit()), None)
    if block is not None and block > 0:
        return ".".join(parts[block - 1 :])
    for prefix in ("transformer.", "model.", "gpt_neox."):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def find_target_modules(
    model: nn.Module, target_modules: str | list[str], role: str = "target_modules", any_module: bool = False
) -> dict[str, nn.Module]:
    """``{full module name: module}`` of the layers matched by ``target_modules``, in model order.

    ``any_module``: match modules of any type (targets of an activation-based regularizer), not only layers that
    carry a weight sheet.

    Raises:
        ValueError: nothing matched (the message lists candidate layer names), or the pattern is malformed.
        TypeError: a matched module is not of a registered layer kind.
    """
    if isinstance(target_modules, str):
        try:
            re.compile(target_modules)
        except re.error as err:
            raise ValueError(f"{role}={target_modules!r} is not a valid regular expression: {err}.") from None
    elif not target_modules or not all(isinstance(p, str) and p for p in target_modules):
        raise ValueError(
            f"{role} must be a non-empty list of module-name suffixes or one regex, got {target_modules!r}."
        )

    matched: dict[str, nn.Module] = {}
    unsupported: list[str] = []
    for name, module in model.named_modules():
        # Patterns are matched against base-model names, as PEFT does (a regex must not see "base_model.model.").
        if not name or _PEFT_INTERNAL.intersection(name.split(".")):
            continue
        if not matches_pattern(base_model_name(model, name), target_modules):
            continue
        if _is_candidate(name, module) or any_module:
            matched[name] = module
        elif isinstance(target_modules, list) or not list(module.children()):
            unsupported.append(f"{name} ({type(module).__name__})")
    if unsupported and isinstance(target_modules, list):
        raise TypeError(
            f"{role}={target_modules!r} matched layers that cannot carry a cortical sheet: {', '.join(unsupported[:5])}. "
            f"Supported (the registered layer kinds): {', '.join(kind.describe() for kind in layer_kinds())}; register "
            "another with hf_topo.sheet.register_layer_kind."
            + (
                " A TopoDownsampledLinear comes from hf_topo.downsample_model and has no full sheet any more: use the "
                "original model."
                if any("(TopoDownsampledLinear)" in entry for entry in unsupported)
                else ""
            )
        )
    if not matched:
        raise ValueError(
            f"{role}={target_modules!r} matches no {'/'.join(kind.name for kind in layer_kinds())} layer of "
            f"{type(model).__name__}. "
            f"Candidates: {_summarize(candidate_layer_names(model))}. Pass module-name suffixes such as 'mlp.c_fc' "
            f"(GPT-2/GPT-Neo), 'mlp.dense_h_to_4h' (GPT-NeoX/Pythia) or 'mlp.up_proj' (Llama/Qwen/Mistral), or one regex."
        )
    return matched


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
        TypeError: a matched layer is not of a registered layer kind.
    """
    spec = config.regularizer
    on_activations = spec.reads_activations
    targets = find_target_modules(model, config.target_modules, any_module=on_activations)
    watched = (
        find_target_modules(model, config.watch_modules, role="watch_modules", any_module=on_activations)
        if config.watch_modules
        else {}
    )
    both = sorted(set(targets) & set(watched))
    if both:
        raise ValueError(
            f"{both[:3]} are matched by both target_modules and watch_modules; a layer is either optimized or watched. "
            "Narrow one of the two patterns."
        )
    layers: list[TopoLayer] = []
    for role, modules in (("target", targets), ("watch", watched)):
        for name, module in modules.items():
            sheet = _sheet_of(model, name, module, config)
            try:
                if spec.check_layer is not None:
                    spec.check_layer(sheet, module, config)
                if config.include_bias:
                    _check_bias_map(sheet, module)
            except ValueError as err:
                raise ValueError(f"Layer {name!r} ({sheet.n_units} units): {err}") from None
            layers.append(TopoLayer(name=name, module=module, sheet=sheet, role=role))
    if config.layers is not None:
        _check_against_stored(layers, config.layers)
    return layers


def _check_bias_map(sheet: CorticalSheet, module: nn.Module) -> None:
    if getattr(unwrapped_layer(module), "bias", None) is None:
        raise ValueError("include_bias=True, but the layer has no bias; target layers with a bias.")
    if sheet.layer_type == ACTIVATION_SHEET or not get_layer_kind(sheet.layer_type).bias_map:
        with_bias = " and ".join(kind.name for kind in layer_kinds() if kind.bias_map)
        raise ValueError(f"include_bias=True applies to {with_bias} layers only.")


def _hidden_size(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for key in ("hidden_size", "n_embd", "d_model"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _sheet_of(model: nn.Module, name: str, module: nn.Module, config: TopoConfig) -> CorticalSheet:
    """A layer's weight sheet, or the activation sheet (of the hidden size) of a module without one."""
    base_name = base_model_name(model, name)
    if _is_candidate(name, module):
        return sheet_for_module(base_name, module, config.sheet_shape, config.sheet)
    hidden_size = _hidden_size(model)
    if hidden_size is None:
        raise ValueError(
            f"{name!r} ({type(module).__name__}) has no weight sheet, and the model's config names no hidden size "
            "(hidden_size / n_embd / d_model) to lay its activations out by: target Linear layers instead."
        )
    return activation_sheet(base_name, hidden_size, config.sheet_shape, config.sheet)


def _describe(sheet: CorticalSheet) -> str:
    return f"{sheet.layer_type} sheet {sheet.shape}" + (" of input units" if sheet.units == "input" else "")


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
        if (actual.layer_type, actual.shape, actual.units) != (sheet.layer_type, sheet.shape, sheet.units):
            raise ValueError(
                f"The stored topography metadata of {name!r} says {_describe(sheet)} (height, width, depth) but the model "
                f"has {_describe(actual)}. The config.json and weights come from different models, or the setup "
                "changed: re-save the model with hf_topo, or load the checkpoint that matches the metadata."
            )
