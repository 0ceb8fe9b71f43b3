"""Finding the topographic layers of a model, with PEFT's ``target_modules`` semantics.

* a list of strings: a module matches when its full name equals an entry or ends with ``"." + entry``
  (``"mlp.c_fc"`` matches ``transformer.h.3.mlp.c_fc``);
* one string: a regular expression that must match the full module name (``re.fullmatch``).

Only layers that can carry a cortical sheet (Linear, Conv1D, Conv2d) are returned; a pattern that matches
nothing raises an error listing the candidate names. Inside a PEFT-wrapped model the LoRA wrapper of a
layer is the match (its adapter sub-layers are never targets), and names are reported both as seen in the
wrapped model and as in the base model (what ``config.json`` records).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn

from .sheet import SUPPORTED_LAYER_TYPES, unwrapped_layer

__all__ = ["TARGET_PRESETS", "find_target_modules", "base_model_name", "candidate_layer_names", "matches_pattern"]

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
    if isinstance(module, SUPPORTED_LAYER_TYPES):
        return True
    return isinstance(unwrapped_layer(module), SUPPORTED_LAYER_TYPES)


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


def find_target_modules(
    model: nn.Module, target_modules: str | list[str], role: str = "target_modules"
) -> dict[str, nn.Module]:
    """``{full module name: module}`` of the layers matched by ``target_modules``, in model order.

    Raises:
        ValueError: nothing matched (the message lists candidate layer names), or the pattern is malformed.
        TypeError: a matched module is not a supported layer type.
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
        if _is_candidate(name, module):
            matched[name] = module
        elif isinstance(target_modules, list) or not list(module.children()):
            unsupported.append(f"{name} ({type(module).__name__})")
    if unsupported and isinstance(target_modules, list):
        raise TypeError(
            f"{role}={target_modules!r} matched layers that cannot carry a cortical sheet: {', '.join(unsupported[:5])}. "
            "Supported: torch.nn.Linear, transformers' Conv1D, torch.nn.Conv2d."
            + (
                " A TopoDownsampledLinear comes from hf_topo.downsample_model and has no full sheet any more: use the "
                "original model."
                if any("(TopoDownsampledLinear)" in entry for entry in unsupported)
                else ""
            )
        )
    if not matched:
        raise ValueError(
            f"{role}={target_modules!r} matches no Linear/Conv1D/Conv2d layer of {type(model).__name__}. "
            f"Candidates: {_summarize(candidate_layer_names(model))}. Pass module-name suffixes such as 'mlp.c_fc' "
            f"(GPT-2/GPT-Neo), 'mlp.dense_h_to_4h' (GPT-NeoX/Pythia) or 'mlp.up_proj' (Llama/Qwen/Mistral), or one regex."
        )
    return matched
