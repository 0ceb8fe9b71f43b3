"""The hidden units of a transformer MLP, and permuting them without changing what the model computes.

An MLP ``down(act(up(x)))`` (or the gated ``down(act(gate(x)) ⊙ up(x))``) applies its nonlinearity unit by unit, so
permuting the output units of the expansion layer(s) (weight rows and bias entries) together with the matching input
columns of the contraction layer leaves the function unchanged:

=========================  ==================================  ====================  ========================
family                     expansion layer(s), permuted        contraction layer     layer type
                           together                            (its inputs)
=========================  ==================================  ====================  ========================
GPT-2                      ``mlp.c_fc``                        ``mlp.c_proj``        ``Conv1D`` (``in × out``)
GPT-Neo                    ``mlp.c_fc``                        ``mlp.c_proj``        ``nn.Linear``
GPT-NeoX / Pythia          ``mlp.dense_h_to_4h``               ``mlp.dense_4h_to_h`` ``nn.Linear``
Llama / Qwen2 / Mistral    ``mlp.up_proj`` + ``mlp.gate_proj``  ``mlp.down_proj``     ``nn.Linear``
=========================  ==================================  ====================  ========================

The sheet is the target layer's (e.g. ``up_proj``); the gated sibling moves with it. What cannot be permuted safely
is refused before anything changes: a PEFT-wrapped model (its adapters would have to move too: merge them first), a
layer whose parameters are tied to or shared with another module, and a target that is not an MLP expansion layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..sheet import units_and_inputs

__all__ = ["MLP_EXPANSIONS", "MlpUnits", "check_not_peft", "mlp_units", "permute_units_"]

#: Expansion layer name → (sibling expansion layers permuted with it, the contraction layer), in the same MLP module.
MLP_EXPANSIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "c_fc": ((), "c_proj"),  # GPT-2 (Conv1D), GPT-Neo (Linear)
    "dense_h_to_4h": ((), "dense_4h_to_h"),  # GPT-NeoX, Pythia
    "up_proj": (("gate_proj",), "down_proj"),  # Llama, Qwen2, Mistral (gated)
    "gate_proj": (("up_proj",), "down_proj"),
}


@dataclass(frozen=True)
class MlpUnits:
    """The layers that share one MLP's hidden units: ``expansion`` (the target first) and ``contraction``."""

    name: str
    expansion: dict[str, nn.Module]
    contraction_name: str
    contraction: nn.Module
    n_units: int


def check_not_peft(model: nn.Module) -> None:
    """Refuse a PEFT-wrapped model: its adapter matrices would have to be permuted with the base weights.

    Raises:
        TypeError: the model is a ``PeftModel`` or holds PEFT tuner layers.
    """
    wrapped = hasattr(model, "peft_config") or any(
        hasattr(m, "base_layer") or hasattr(m, "lora_A") or hasattr(m, "modules_to_save") for m in model.modules()
    )
    if wrapped:
        raise TypeError(
            f"{type(model).__name__} is wrapped by PEFT: its adapters would have to be permuted with the base weights. "
            "Merge them first (`model = model.merge_and_unload()`), arrange the merged model, and train new adapters "
            "on it if needed."
        )


def mlp_units(model: nn.Module, name: str) -> MlpUnits:
    """The expansion and contraction layers whose hidden units the target layer ``name`` (a full module name) owns.

    Raises:
        ValueError: ``name`` is not an MLP expansion layer of a supported family (:data:`MLP_EXPANSIONS`), its MLP
            lacks the contraction layer, the shapes do not match, or a parameter is tied to / shared with another
            module (permuting it would change that module too).
    """
    parent_name, _, child = name.rpartition(".")
    if child not in MLP_EXPANSIONS:
        raise ValueError(
            f"{name!r} is not an MLP expansion layer: only the hidden units of an MLP can be permuted without changing "
            f"the model. Target one of the expansion layers {sorted(MLP_EXPANSIONS)} (e.g. 'mlp.c_fc' for GPT-2/"
            "GPT-Neo, 'mlp.dense_h_to_4h' for GPT-NeoX/Pythia, 'mlp.up_proj' for Llama/Qwen2/Mistral)."
        )
    siblings, contraction_child = MLP_EXPANSIONS[child]
    parent = model.get_submodule(parent_name) if parent_name else model
    expansion = {name: getattr(parent, child)}
    for sibling in siblings:
        if isinstance(getattr(parent, sibling, None), nn.Module):
            expansion[f"{parent_name}.{sibling}"] = getattr(parent, sibling)
    contraction = getattr(parent, contraction_child, None)
    contraction_name = f"{parent_name}.{contraction_child}"
    modules = list(expansion.items()) + [(contraction_name, contraction)]
    for module_name, module in modules:
        if not isinstance(module, (nn.Linear, Conv1D)):
            kind = "missing" if module is None else f"a {type(module).__name__}"
            raise ValueError(
                f"{module_name!r} is {kind}, not an nn.Linear or Conv1D: {name!r} is not the expansion layer of a "
                f"standard MLP (expected {child} → {contraction_child} in {parent_name or 'the model'})."
            )
    n_units = units_and_inputs(expansion[name])[0]
    widths = {module_name: units_and_inputs(module)[0] for module_name, module in expansion.items()}
    widths[contraction_name + " (inputs)"] = units_and_inputs(contraction)[1]
    if set(widths.values()) != {n_units}:
        raise ValueError(f"The MLP layers of {name!r} disagree on the number of hidden units: {widths}.")
    _check_not_shared(model, [module for _, module in modules], name)
    return MlpUnits(name, expansion, contraction_name, contraction, n_units)


def _check_not_shared(model: nn.Module, modules: list[nn.Module], name: str) -> None:
    owners: dict[int, list[str]] = {}
    for param_name, param in model.named_parameters(remove_duplicate=False):
        owners.setdefault(param.untyped_storage().data_ptr(), []).append(param_name)
    for module in modules:
        for param in module.parameters(recurse=False):
            names = owners.get(param.untyped_storage().data_ptr(), [])
            if len(names) > 1:
                raise ValueError(
                    f"The MLP of {name!r} has a parameter tied to or shared with another module ({', '.join(names[:4])}"
                    "): permuting it would change that module too, and the model would no longer compute the same "
                    "function. Untie the weights (give each module its own copy) before arranging, or leave this "
                    "layer out of target_modules."
                )


@torch.no_grad()
def permute_units_(units: MlpUnits, permutation: torch.Tensor) -> None:
    """Move hidden unit ``permutation[p]`` to position ``p`` in every layer of the MLP, in place (same parameters)."""
    perm = permutation.to(torch.long)
    if sorted(perm.tolist()) != list(range(units.n_units)):
        raise ValueError(f"Not a permutation of {units.n_units} units (entries repeated, missing or out of range).")
    for module in units.expansion.values():
        perm_d = perm.to(module.weight.device)
        module.weight.copy_(module.weight[:, perm_d] if isinstance(module, Conv1D) else module.weight[perm_d])
        if module.bias is not None:
            module.bias.copy_(module.bias[perm_d])
    weight = units.contraction.weight
    perm_d = perm.to(weight.device)
    weight.copy_(weight[perm_d] if isinstance(units.contraction, Conv1D) else weight[:, perm_d])


def unit_vectors(module: nn.Module) -> torch.Tensor:
    """``(n_units, depth)``: the incoming weights of each output unit (the sheet's depth), float64 on the CPU."""
    weight = module.weight.detach()
    return (weight.T if isinstance(module, Conv1D) else weight).to("cpu", torch.float64)
