"""Cortical-sheet geometry: how a layer's weight is laid out as a 2D sheet of units.

TopoNets (Deb, Deb & Murty, ICLR 2025, §2.1 and A.2) view the weight of a layer with ``o`` output units
as a sheet ``C ∈ R^{h×w×d}``: one sheet element per output unit (``h·w = o``) whose depth ``d`` holds that
unit's incoming weights. ``h ≤ w`` are chosen as close as possible (the most-square factorization).

Supported layers and how their weight maps onto the sheet:

==========================  =====================  ==========================
layer                       weight shape           sheet depth ``d``
==========================  =====================  ==========================
``torch.nn.Linear``         ``(out, in)``          ``in``
transformers ``Conv1D``     ``(in, out)``          ``in`` (sheet over outputs)
``torch.nn.Conv2d``         ``(out, in, k, k)``    ``in·k·k``
==========================  =====================  ==========================
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .distributed import full_weight, parameter_shape

__all__ = [
    "CorticalSheet",
    "SUPPORTED_LAYER_TYPES",
    "most_square_shape",
    "layer_type_name",
    "units_and_inputs",
    "sheet_for_module",
    "effective_weight",
    "sheet_view",
    "as_cortical_sheet",
]

#: Layer classes whose output units can be laid out on a cortical sheet.
SUPPORTED_LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, Conv1D, nn.Conv2d)


def most_square_shape(n_units: int) -> tuple[int, int]:
    """The most-square factorization ``(height, width)`` of ``n_units`` with ``height ≤ width``.

    ``height`` is the largest divisor of ``n_units`` that is ``≤ sqrt(n_units)``, exactly as the reference
    ``topoloss`` package does (so ``3072 → (48, 64)``, ``768 → (24, 32)``, a prime ``p → (1, p)``).
    """
    if n_units < 1:
        raise ValueError(f"A cortical sheet needs at least one unit, got n_units={n_units}.")
    height = math.isqrt(n_units)
    while n_units % height:
        height -= 1
    return height, n_units // height


@dataclass(frozen=True)
class CorticalSheet:
    """Where a layer's units sit: the layer's full module name, its type and the sheet ``(height, width, depth)``."""

    module_name: str
    layer_type: str
    height: int
    width: int
    depth: int

    @property
    def n_units(self) -> int:
        return self.height * self.width

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.depth)

    def to_dict(self) -> dict:
        return {"layer_type": self.layer_type, "height": self.height, "width": self.width, "depth": self.depth}

    @classmethod
    def from_dict(cls, module_name: str, data: dict) -> CorticalSheet:
        try:
            return cls(
                module_name=module_name,
                layer_type=str(data["layer_type"]),
                height=int(data["height"]),
                width=int(data["width"]),
                depth=int(data["depth"]),
            )
        except KeyError as missing:
            raise ValueError(
                f"Sheet metadata of layer {module_name!r} lacks the key {missing}; expected "
                "{'layer_type', 'height', 'width', 'depth'}. Re-save the model with hf_topo to rewrite its metadata."
            ) from None


def layer_type_name(module: nn.Module) -> str:
    """``"Linear"``, ``"Conv1D"`` or ``"Conv2d"`` for a supported layer (PEFT LoRA wrappers are seen through)."""
    base = unwrapped_layer(module)
    if isinstance(base, Conv1D):
        return "Conv1D"
    if isinstance(base, nn.Conv2d):
        return "Conv2d"
    if isinstance(base, nn.Linear):
        return "Linear"
    raise TypeError(
        f"Cannot lay out a {type(base).__name__} on a cortical sheet: supported layers are torch.nn.Linear, "
        "transformers' Conv1D and torch.nn.Conv2d. Point `target_modules` at one of those (e.g. 'mlp.c_fc')."
    )


def unwrapped_layer(module: nn.Module) -> nn.Module:
    """The layer whose weight the model applies, with PEFT wrappers seen through.

    PEFT tuner layers (LoRA, DoRA, ...) keep the original layer as ``base_layer``. A ``modules_to_save`` wrapper
    keeps a frozen ``original_module`` and a trainable copy per adapter; the forward uses the active adapter's copy
    (unless adapters are disabled), so that copy is the one whose sheet TopoLoss shapes.
    """
    while True:
        copies = getattr(module, "modules_to_save", None)
        if isinstance(copies, nn.ModuleDict) and isinstance(getattr(module, "original_module", None), nn.Module):
            active = list(getattr(module, "active_adapters", None) or [])
            if active and active[0] in copies and not getattr(module, "disable_adapters", False):
                module = copies[active[0]]
            else:
                module = module.original_module
        elif hasattr(module, "base_layer") and isinstance(module.base_layer, nn.Module):
            module = module.base_layer
        else:
            return module


def units_and_inputs(module: nn.Module) -> tuple[int, int]:
    """``(output units, inputs per unit)`` of a Linear, Conv1D or Conv2d layer, whatever way its weight is stored
    (Linear ``(out, in)``, Conv1D ``(in, out)``, Conv2d ``(out, in, kh, kw)``: ``in·kh·kw`` inputs)."""
    layer = unwrapped_layer(module)
    return _units_and_depth(layer_type_name(layer), layer.weight.shape)


def _units_and_depth(layer_type: str, shape: torch.Size) -> tuple[int, int]:
    if layer_type == "Linear":
        return shape[0], shape[1]
    if layer_type == "Conv1D":
        return shape[1], shape[0]
    if layer_type == "Conv2d":
        return shape[0], math.prod(shape[1:])
    raise TypeError(f"Unknown layer type {layer_type!r}; expected one of 'Linear', 'Conv1D', 'Conv2d'.")


def sheet_for_module(module_name: str, module: nn.Module, sheet_shape: tuple[int, int] | None = None) -> CorticalSheet:
    """The :class:`CorticalSheet` of ``module``: most-square unless ``sheet_shape=(height, width)`` is given."""
    layer_type = layer_type_name(module)
    # The logical shape: a DeepSpeed ZeRO-3 placeholder is empty outside the forward, a DTensor shard is partial.
    n_units, depth = _units_and_depth(layer_type, parameter_shape(unwrapped_layer(module).weight))
    if sheet_shape is None:
        height, width = most_square_shape(n_units)
    else:
        height, width = (int(v) for v in sheet_shape)
        if height * width != n_units:
            raise ValueError(
                f"sheet_shape={tuple(sheet_shape)} has {height * width} positions but {module_name!r} has {n_units} "
                f"output units. Choose (height, width) with height*width == {n_units}, or leave sheet_shape unset for "
                f"the most-square sheet {most_square_shape(n_units)}."
            )
    return CorticalSheet(module_name=module_name, layer_type=layer_type, height=height, width=width, depth=depth)


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight the layer applies, in its native orientation.

    For a plain layer this is ``module.weight``. For a PEFT LoRA layer it is ``W + Σ_active scaling·B·A``
    (PEFT's ``get_delta_weight`` handles the Conv1D ``fan_in_fan_out`` orientation), and for DoRA that weight
    rescaled per output unit by its magnitude vector, so a gradient through the sheet reaches the adapter
    parameters. Merged or disabled adapters add nothing. FSDP2 (DTensor) shards are all-gathered with autograd
    (:func:`hf_topo.distributed.full_weight`), so the result is the whole weight under sharded training too.
    """
    base = unwrapped_layer(module)
    weight = full_weight(base.weight)
    if base is module or getattr(module, "merged", False) or getattr(module, "disable_adapters", False):
        return weight
    active = getattr(module, "active_adapters", None) or []
    lora_a = getattr(module, "lora_A", {})
    for name in active:
        if name not in lora_a:
            continue
        weight = weight + full_weight(module.get_delta_weight(name)).to(weight.dtype)
        if getattr(module, "use_dora", {}).get(name, False):
            weight = _dora_weight(module, name, weight)
    return weight


def _dora_weight(module: nn.Module, adapter: str, combined: torch.Tensor) -> torch.Tensor:
    """DoRA's applied weight ``m · (W + ΔW) / ||W + ΔW||`` per output unit (the norm detached, as PEFT does)."""
    fan_in_fan_out = getattr(module, "fan_in_fan_out", False)
    out_first = combined.T if fan_in_fan_out else combined  # (out, in, ...)
    norm = torch.linalg.vector_norm(out_first.flatten(1), dim=1).detach()
    factor = full_weight(module.lora_magnitude_vector[adapter].weight) / norm
    scaled = factor.view(-1, *([1] * (out_first.ndim - 1))) * out_first
    return scaled.T if fan_in_fan_out else scaled


def sheet_view(weight: torch.Tensor, sheet: CorticalSheet) -> tuple[torch.Tensor, bool]:
    """View ``weight`` as a 3D sheet tensor without copying.

    Returns ``(tensor, units_first)``: ``(height, width, depth)`` when ``units_first`` (Linear, Conv2d), else
    ``(depth, height, width)`` (Conv1D, whose weight is stored ``in × out``).
    """
    if sheet.layer_type == "Conv1D":
        return weight.reshape(sheet.depth, sheet.height, sheet.width), False
    return weight.reshape(sheet.height, sheet.width, sheet.depth), True


def as_cortical_sheet(module: nn.Module, sheet_shape: tuple[int, int] | None = None) -> torch.Tensor:
    """The sheet ``C`` of shape ``(height, width, depth)`` for ``module`` (a copy only for Conv1D)."""
    sheet = sheet_for_module(type(module).__name__, module, sheet_shape)
    tensor, units_first = sheet_view(effective_weight(module), sheet)
    return tensor if units_first else tensor.permute(1, 2, 0)
