"""Cortical-sheet geometry: how a layer's weight is laid out as a 2D sheet of units.

TopoNets (Deb, Deb & Murty, ICLR 2025, §2.1 and A.2) view the weight of a layer with ``o`` output units
as a sheet ``C ∈ R^{h×w×d}``: one sheet element per output unit (``h·w = o``) whose depth ``d`` holds that
unit's incoming weights. ``h ≤ w`` are chosen as close as possible (the most-square factorization).

How a layer becomes a sheet is its **layer kind** (:class:`LayerKind`, one registration each: which module types,
which weight attribute, how the weight is stored). The built-in kinds, whose names are the records' ``layer_type``:

=============  ==========================  ==================  =====================  ============================
kind           layer                       weight attribute    weight shape           sheet depth ``d``
=============  ==========================  ==================  =====================  ============================
``Linear``     ``torch.nn.Linear``         ``weight``          ``(out, in)``          ``in``
``Conv1D``     transformers ``Conv1D``     ``weight``          ``(in, out)``          ``in`` (sheet over outputs)
``Conv2d``     ``torch.nn.Conv2d``         ``weight``          ``(out, in, k, k)``    ``in·k·k``
``RNN``        ``torch.nn.RNN``            ``weight_hh_l0``    ``(hidden, hidden)``   ``hidden`` (recurrent inputs)
=============  ==========================  ==================  =====================  ============================

``RNN`` and a weight stored under another attribute are what the authors' ``topoloss`` main branch adds to its PyPI
release (``custom_weight_attribute_name``, e.g. ``"weight_hh_l0"``). A new kind of layer is one call of
:func:`register_layer_kind`::

    register_layer_kind("Scaled", ScaledLinear, weight_attribute="kernel")  # kernel (out, in), like a Linear

Two more layouts (the ``units`` of a sheet, :data:`SHEET_UNITS`):

* ``units="input"``: the *input* units of a Linear or Conv1D layer on the sheet (``h·w = in``), each holding its
  outgoing weights (depth ``out``), the reference ``topoloss``'s ``LaplacianPyramidOnInput``: weight
  ``(out, h·w) → (h, w, out)``.
* an **activation sheet** (``layer_type="Activations"``, depth 1) for a module that has no weight to lay out (a
  block's attention or MLP output, a block's output, the hidden states entering a LayerNorm): its features (the
  model's hidden size) on the sheet, read from the module's output (``units="output"``) or from the hidden states
  it receives (``units="input"``). Only the activation-based regularizers use such sheets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from .distributed import full_weight, parameter_shape

__all__ = [
    "CorticalSheet",
    "LayerKind",
    "register_layer_kind",
    "unregister_layer_kind",
    "get_layer_kind",
    "layer_kinds",
    "find_layer_kind",
    "layer_kind_of",
    "is_sheet_layer",
    "sheet_layer_types",
    "SHEET_UNITS",
    "ACTIVATION_SHEET",
    "activation_sheet",
    "most_square_shape",
    "layer_type_name",
    "units_and_inputs",
    "sheet_for_module",
    "effective_weight",
    "sheet_view",
    "sheet_units_first",
    "as_cortical_sheet",
]

#: Which units of a layer sit on its sheet: its output units (the paper's sheet) or its input units.
SHEET_UNITS = ("output", "input")
#: ``layer_type`` of a sheet of a module's activations (a module without a weight to lay out).
ACTIVATION_SHEET = "Activations"


@dataclass(frozen=True)
class LayerKind:
    """How one kind of layer is laid out on a cortical sheet (register one with :func:`register_layer_kind`).

    Args:
        name (`str`): the sheet's ``layer_type`` in records (``"Linear"``, ``"Conv1D"``, ...); never rename a kind
            whose records exist, or they stop loading.
        module_types (`tuple[type[nn.Module], ...]`): the module classes of this kind (``isinstance``; of two kinds
            that match a module, the one registered later wins, so a subclass can have its own kind).
        weight_attribute (`str`, defaults to `"weight"`): the attribute holding the weight to lay out (``topoloss``'s
            ``custom_weight_attribute_name``, e.g. ``"weight_hh_l0"`` for ``nn.RNN``).
        output_units_first (`bool`, defaults to `True`): the weight is stored ``(out, ...)`` with the output units
            first (Linear, Conv2d); `False` for ``(..., out)`` (transformers' Conv1D stores ``(in, out)``).
        input_sheet (`bool`, defaults to `False`): ``units="input"`` is defined (a 2D weight: its input units on the
            sheet, each holding its outgoing weights).
        bias_map (`bool`, defaults to `False`): the layer's ``bias`` (one value per output unit) can be laid out on the
            output sheet (``include_bias=True``).
        channels_first_activations (`bool`, defaults to `False`): the layer's output is ``(batch, units, ...)`` (a
            convolution: every other position is a sample), not ``(..., units)``.
        description (`str`, *optional*): how errors name the kind's modules (default: their class names).
    """

    name: str
    module_types: tuple[type[nn.Module], ...]
    weight_attribute: str = "weight"
    output_units_first: bool = True
    input_sheet: bool = False
    bias_map: bool = False
    channels_first_activations: bool = False
    description: str = ""

    def weight_of(self, layer: nn.Module) -> torch.Tensor:
        """The layer's weight parameter (native orientation; a DTensor shard or ZeRO-3 placeholder as stored)."""
        weight = getattr(layer, self.weight_attribute, None)
        if not isinstance(weight, torch.Tensor):
            raise TypeError(
                f"A {type(layer).__name__} of layer kind {self.name!r} has no tensor attribute "
                f"{self.weight_attribute!r} (found {type(weight).__name__}); register the kind with the attribute "
                "that holds its weight: register_layer_kind(..., weight_attribute=NAME)."
            )
        return weight

    def units_and_depth(self, shape: Sequence[int]) -> tuple[int, int]:
        """``(output units, inputs per unit)`` of a weight of this kind with shape ``shape``."""
        if len(shape) < 2:
            raise ValueError(
                f"A {self.name} weight of shape {tuple(shape)} cannot be laid out on a sheet: it needs at least two "
                "dimensions (units and their inputs)."
            )
        if self.output_units_first:
            return int(shape[0]), math.prod(shape[1:])
        return int(shape[-1]), math.prod(shape[:-1])

    def describe(self) -> str:
        return self.description or " / ".join(t.__name__ for t in self.module_types)


_LAYER_KINDS: dict[str, LayerKind] = {}


def register_layer_kind(
    name: str | LayerKind,
    module_types: type[nn.Module] | Sequence[type[nn.Module]] | None = None,
    **fields,
) -> LayerKind:
    """Register how a kind of layer becomes a cortical sheet; returns the :class:`LayerKind`.

    Pass a :class:`LayerKind`, or its ``name``, ``module_types`` and keyword fields. Layers of the kind can then be
    targets of every weight-based regularizer (and their outputs of the activation-based ones) and are found by
    ``target_modules``.

    Example::

        class Scaled(nn.Module):  # holds its (out, in) weight as `kernel`
            ...

        register_layer_kind("Scaled", Scaled, weight_attribute="kernel", input_sheet=True)

    Raises:
        ValueError: the name is taken, or a module type already belongs to another kind.
        TypeError: ``module_types`` are not ``nn.Module`` subclasses.
    """
    if isinstance(name, LayerKind):
        if module_types is not None or fields:
            raise ValueError("Pass either a LayerKind or its name, module_types and fields, not both.")
        kind = name
    else:
        if module_types is None:
            raise ValueError(f"register_layer_kind({name!r}) needs module_types=, the module class(es) of the kind.")
        types = (module_types,) if isinstance(module_types, type) else tuple(module_types)
        kind = LayerKind(name=name, module_types=types, **fields)
    if not isinstance(kind.name, str) or not kind.name or kind.name == ACTIVATION_SHEET:
        raise ValueError(f"A layer kind needs a non-empty name other than {ACTIVATION_SHEET!r}, got {kind.name!r}.")
    if not kind.module_types or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in kind.module_types):
        raise TypeError(f"module_types={kind.module_types!r} of layer kind {kind.name!r} must be nn.Module classes.")
    if kind.name in _LAYER_KINDS:
        raise ValueError(
            f"A layer kind named {kind.name!r} is already registered ({_LAYER_KINDS[kind.name].describe()}); "
            f"choose another name. Registered: {list(_LAYER_KINDS)}."
        )
    for other in _LAYER_KINDS.values():
        taken = [t.__name__ for t in kind.module_types if t in other.module_types]
        if taken:
            raise ValueError(
                f"{taken} already belong to the layer kind {other.name!r}; a module type has one kind. Register a "
                "subclass under the new kind instead."
            )
    _LAYER_KINDS[kind.name] = kind
    return kind


def unregister_layer_kind(name: str) -> LayerKind:
    """Remove a registered layer kind and return it (for tests and notebooks that register their own)."""
    get_layer_kind(name)
    return _LAYER_KINDS.pop(name)


def layer_kinds() -> tuple[LayerKind, ...]:
    """The registered layer kinds, in registration order."""
    return tuple(_LAYER_KINDS.values())


def sheet_layer_types() -> tuple[type[nn.Module], ...]:
    """Every module class that can carry a cortical sheet (all registered kinds)."""
    return tuple(t for kind in _LAYER_KINDS.values() for t in kind.module_types)


def get_layer_kind(name: str) -> LayerKind:
    """The registered :class:`LayerKind` named ``name`` (a record's ``layer_type``).

    Raises:
        ValueError: no kind has that name (the message lists the registered ones).
    """
    try:
        return _LAYER_KINDS[name]
    except KeyError:
        raise ValueError(
            f"No layer kind named {name!r} is registered (registered: {list(_LAYER_KINDS)}). A record of a custom kind "
            "loads once its kind is registered: call hf_topo.sheet.register_layer_kind(...) before loading."
        ) from None


def find_layer_kind(module: nn.Module) -> LayerKind | None:
    """The kind of ``module`` itself (no PEFT unwrapping): the latest registered kind whose types it is an instance
    of, or ``None``."""
    for kind in reversed(_LAYER_KINDS.values()):
        if isinstance(module, kind.module_types):
            return kind
    return None


def is_sheet_layer(module: nn.Module) -> bool:
    """Whether ``module`` (or the layer a PEFT wrapper applies) is of a registered layer kind."""
    return find_layer_kind(module) is not None or find_layer_kind(unwrapped_layer(module)) is not None


def _kinds_text() -> str:
    return ", ".join(kind.describe() for kind in _LAYER_KINDS.values())


register_layer_kind("Linear", nn.Linear, input_sheet=True, bias_map=True, description="torch.nn.Linear")
register_layer_kind(
    "Conv1D", Conv1D, output_units_first=False, input_sheet=True, bias_map=True, description="transformers' Conv1D"
)
register_layer_kind("Conv2d", nn.Conv2d, channels_first_activations=True, description="torch.nn.Conv2d")
register_layer_kind("RNN", nn.RNN, weight_attribute="weight_hh_l0", description="torch.nn.RNN (weight_hh_l0)")


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
    """Where a layer's units sit: the layer's full module name, its type, the sheet ``(height, width, depth)`` and
    which units are on it (``"output"``, the default, or ``"input"``; see the module docstring)."""

    module_name: str
    layer_type: str
    height: int
    width: int
    depth: int
    units: str = "output"

    @property
    def n_units(self) -> int:
        return self.height * self.width

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.depth)

    def to_dict(self) -> dict:
        return {
            "layer_type": self.layer_type,
            "height": self.height,
            "width": self.width,
            "depth": self.depth,
            "units": self.units,
        }

    @classmethod
    def from_dict(cls, module_name: str, data: dict) -> CorticalSheet:
        try:
            return cls(
                module_name=module_name,
                layer_type=str(data["layer_type"]),
                height=int(data["height"]),
                width=int(data["width"]),
                depth=int(data["depth"]),
                units=str(data.get("units", "output")),  # records before schema version 3: output sheets
            )
        except KeyError as missing:
            raise ValueError(
                f"Sheet metadata of layer {module_name!r} lacks the key {missing}; expected "
                "{'layer_type', 'height', 'width', 'depth'}. Re-save the model with hf_topo to rewrite its metadata."
            ) from None


def layer_kind_of(module: nn.Module) -> LayerKind:
    """The :class:`LayerKind` of ``module`` (PEFT LoRA wrappers are seen through).

    Raises:
        TypeError: no registered kind covers the layer.
    """
    base = unwrapped_layer(module)
    kind = find_layer_kind(base)
    if kind is None:
        raise TypeError(
            f"Cannot lay out a {type(base).__name__} on a cortical sheet: the registered layer kinds are "
            f"{_kinds_text()}. Point target_modules= at one of those (e.g. 'mlp.c_fc'), or register the layer's "
            "kind with hf_topo.sheet.register_layer_kind(...)."
        )
    return kind


def layer_type_name(module: nn.Module) -> str:
    """The layer kind's name (``"Linear"``, ``"Conv1D"``, ``"Conv2d"``, ``"RNN"``, ...) of a layer (PEFT LoRA wrappers
    are seen through): the ``layer_type`` of its sheet."""
    return layer_kind_of(module).name


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
    """``(output units, inputs per unit)`` of a layer of a registered kind, whatever way its weight is stored
    (Linear ``(out, in)``, Conv1D ``(in, out)``, Conv2d ``(out, in, kh, kw)``: ``in·kh·kw`` inputs)."""
    layer = unwrapped_layer(module)
    kind = layer_kind_of(layer)
    return kind.units_and_depth(kind.weight_of(layer).shape)


def _sheet_shape(module_name: str, n_units: int, sheet_shape: tuple[int, int] | None, what: str) -> tuple[int, int]:
    if sheet_shape is None:
        return most_square_shape(n_units)
    height, width = (int(v) for v in sheet_shape)
    if height * width != n_units:
        raise ValueError(
            f"sheet_shape={tuple(sheet_shape)} has {height * width} positions but {module_name!r} has {n_units} "
            f"{what}. Choose (height, width) with height*width == {n_units}, or leave sheet_shape unset for "
            f"the most-square sheet {most_square_shape(n_units)}."
        )
    return height, width


def sheet_for_module(
    module_name: str, module: nn.Module, sheet_shape: tuple[int, int] | None = None, units: str = "output"
) -> CorticalSheet:
    """The :class:`CorticalSheet` of ``module``: most-square unless ``sheet_shape=(height, width)`` is given.

    ``units="input"`` puts the layer's input units on the sheet (Linear and Conv1D only), each holding its outgoing
    weights.
    """
    if units not in SHEET_UNITS:
        raise ValueError(f"units={units!r} is not a sheet layout; choose one of {SHEET_UNITS}.")
    kind = layer_kind_of(module)
    # The logical shape: a DeepSpeed ZeRO-3 placeholder is empty outside the forward, a DTensor shard is partial.
    n_units, depth = kind.units_and_depth(parameter_shape(kind.weight_of(unwrapped_layer(module))))
    if units == "input":
        if not kind.input_sheet:
            with_input = " and ".join(k.name for k in _LAYER_KINDS.values() if k.input_sheet)
            raise ValueError(
                f"{module_name!r} is a {kind.name} layer: an input sheet is defined for {with_input} layers only "
                "(their input features); use sheet='output' for it."
            )
        n_units, depth = depth, n_units
    height, width = _sheet_shape(module_name, n_units, sheet_shape, f"{units} units")
    return CorticalSheet(
        module_name=module_name, layer_type=kind.name, height=height, width=width, depth=depth, units=units
    )


def activation_sheet(
    module_name: str, n_features: int, sheet_shape: tuple[int, int] | None = None, units: str = "output"
) -> CorticalSheet:
    """The sheet of a module's activations: its ``n_features`` (e.g. the hidden size) as units, depth 1.

    ``units="output"`` reads the module's output, ``units="input"`` the hidden states it receives.
    """
    if units not in SHEET_UNITS:
        raise ValueError(f"units={units!r} is not a sheet layout; choose one of {SHEET_UNITS}.")
    height, width = _sheet_shape(module_name, n_features, sheet_shape, "features")
    return CorticalSheet(
        module_name=module_name, layer_type=ACTIVATION_SHEET, height=height, width=width, depth=1, units=units
    )


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight the layer applies, in its native orientation.

    For a plain layer this is its kind's weight (``module.weight``, or the kind's ``weight_attribute``). For a PEFT LoRA layer it is ``W + Σ_active scaling·B·A``
    (PEFT's ``get_delta_weight`` handles the Conv1D ``fan_in_fan_out`` orientation), and for DoRA that weight
    rescaled per output unit by its magnitude vector, so a gradient through the sheet reaches the adapter
    parameters. Merged or disabled adapters add nothing. FSDP2 (DTensor) shards are all-gathered with autograd
    (:func:`hf_topo.distributed.full_weight`), so the result is the whole weight under sharded training too.
    """
    base = unwrapped_layer(module)
    weight = full_weight(layer_kind_of(base).weight_of(base))
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

    Returns ``(tensor, units_first)``: ``(height, width, depth)`` when ``units_first`` (Linear, Conv2d, RNN: kinds
    stored with the output units first), else ``(depth, height, width)`` (Conv1D, whose weight is stored
    ``in × out``). An input sheet is the other way round: a Linear weight ``(out, in)`` is ``(depth, height, width)``,
    a Conv1D weight ``(in, out)`` is ``(height, width, depth)``.
    """
    if sheet_units_first(sheet):
        return weight.reshape(sheet.height, sheet.width, sheet.depth), True
    return weight.reshape(sheet.depth, sheet.height, sheet.width), False


def sheet_units_first(sheet: CorticalSheet) -> bool:
    """Whether the layer's weight stores the sheet's units first (its elements, in row-major order, are the
    ``(units, depth)`` matrix) rather than last (``(depth, units)``): the layout :func:`sheet_view` gives."""
    if sheet.layer_type == ACTIVATION_SHEET:
        raise ValueError(f"{sheet.module_name!r} has an activation sheet: it has no weight to lay out.")
    return get_layer_kind(sheet.layer_type).output_units_first == (sheet.units == "output")


def as_cortical_sheet(
    module: nn.Module, sheet_shape: tuple[int, int] | None = None, units: str = "output"
) -> torch.Tensor:
    """The sheet ``C`` of shape ``(height, width, depth)`` for ``module`` (a permuted view when the weight is stored
    depth first: a Conv1D output sheet, a Linear input sheet)."""
    sheet = sheet_for_module(type(module).__name__, module, sheet_shape, units)
    tensor, units_first = sheet_view(effective_weight(module), sheet)
    return tensor if units_first else tensor.permute(1, 2, 0)
