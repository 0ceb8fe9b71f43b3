"""The regularizer registry: every topographic regularizer is one :class:`RegularizerSpec`, registered once.

A spec says everything the rest of hf_topo needs to know about a regularizer: its ``name`` (the ``loss`` setting of
:class:`~hf_topo.config.TopoConfig` and of saved records), how logs and cards name it, whether it reads the layers'
weights or their activations of the current batch, which settings shape its value, its checks, and the function that
computes one layer's value. :class:`~hf_topo.topo_regularizer.TopoRegularizer` does the bookkeeping around it (which
layers, PEFT and distributed weights, recording activations, the mean over layers, the trainer's τ). The four built-in
regularizers register themselves in their modules (``laplacian_pyramid``, ``similarity``, ``spatial_correlation``);
a new one is a function and a decorator (PEFT's ``register_peft_method`` and lm-evaluation-harness's registries work
the same way)::

    from hf_topo.regularizers import register_regularizer

    @register_regularizer("neighbour_msd", display_name="Neighbour MSD", reads="weights")
    def neighbour_msd(weights, config):
        sheet = weights.units  # (height, width, depth)
        return (sheet[:, 1:] - sheet[:, :-1]).float().pow(2).mean()

    TopoTrainer(..., topo_config=TopoConfig(loss="neighbour_msd"))

A weight-based function receives a :class:`WeightSheet` (the layer's weight viewed as its sheet, with the bias map
when ``include_bias``), an activation-based one an :class:`ActivationSheet` (the layer's responses of the batch, unit
``u`` at ``(u // width, u % width)``, and TopoLM's seeded neighbourhood generator when it asks for one); both also
receive the :class:`~hf_topo.config.TopoConfig` and return a float32 scalar tensor that backpropagates into its input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from torch import nn

    from ..config import TopoConfig
    from ..sheet import CorticalSheet
    from ..targets import TopoLayer

__all__ = [
    "READS",
    "ActivationSheet",
    "RegularizerSpec",
    "WeightSheet",
    "get_regularizer",
    "register_regularizer",
    "registered_regularizers",
    "unregister_regularizer",
]

#: What a regularizer reads: the layers' weights, or their activations of the current batch.
READS = ("weights", "activations")


@dataclass(frozen=True)
class WeightSheet:
    """One layer's weight laid out on its sheet, as a weight-based regularizer receives it.

    Attributes:
        tensor: a view of the weight (no copy): ``(height, width, depth)`` when ``units_first``, else
            ``(depth, height, width)`` (a Conv1D output sheet, a Linear input sheet; see :func:`hf_topo.sheet.sheet_view`).
        units_first: the layout of ``tensor``.
        bias_map: the layer's bias on its output sheet, ``(height, width)``, when ``include_bias``; else ``None``.
        sheet: the layer's :class:`~hf_topo.sheet.CorticalSheet`.
    """

    tensor: torch.Tensor
    units_first: bool
    bias_map: torch.Tensor | None
    sheet: CorticalSheet

    @property
    def units(self) -> torch.Tensor:
        """The sheet as ``(height, width, depth)`` (a permuted view when the weight is stored depth first)."""
        return self.tensor if self.units_first else self.tensor.permute(1, 2, 0)


@dataclass(frozen=True)
class ActivationSheet:
    """One layer's responses to the current batch, as an activation-based regularizer receives them.

    Attributes:
        responses: ``(n_samples, n_units)``, the non-padding positions of the batch; unit ``u`` sits at
            ``(u // sheet.width, u % sheet.width)``.
        sheet: the layer's :class:`~hf_topo.sheet.CorticalSheet`.
        generator: for a spec with ``draws_neighbourhoods``, the generator to draw this layer's neighbourhoods with
            (seeded by the training seed, the optimizer step, the micro-batch and the layer); else ``None``.
    """

    responses: torch.Tensor
    sheet: CorticalSheet
    generator: torch.Generator | None = None

    @property
    def units(self) -> torch.Tensor:
        """The responses laid out as ``(height, width, n_samples)``."""
        return self.responses.T.reshape(self.sheet.height, self.sheet.width, -1)


@dataclass(frozen=True)
class RegularizerSpec:
    """A topographic regularizer, as the registry holds it.

    Args:
        name (`str`): the ``loss`` value of :class:`~hf_topo.config.TopoConfig` and of saved records (keep it once
            models are saved with it, or their records stop loading).
        layer_loss (`Callable`): ``layer_loss(sheet, config) -> Tensor``, one layer's value (float32 scalar);
            ``sheet`` is a :class:`WeightSheet` or an :class:`ActivationSheet` according to ``reads``.
        display_name (`str`, *optional*): how logs, cards and tables name it (default: ``name``).
        reads (`str`, defaults to `"weights"`): ``"weights"`` (a function of the weights alone) or ``"activations"``
            (of the layers' outputs of each batch; its targets may be any module, laid out on activation sheets).
        settings (`tuple[str, ...]`, defaults to `()`): the :class:`~hf_topo.config.TopoConfig` settings that shape its
            value (recorded beside post-hoc measurements, e.g. ``("factor_h", "factor_w", "interpolation")``).
        bias_map (`bool`, defaults to `False`): ``include_bias=True`` applies (the layer's bias on its output sheet is
            handed over as ``WeightSheet.bias_map``).
        draws_neighbourhoods (`bool`, defaults to `False`): an activation-based regularizer that samples
            neighbourhoods receives a seeded ``ActivationSheet.generator``.
        check_config (`Callable`, *optional*): ``check_config(config)`` raises ``ValueError`` for settings it cannot
            use (runs when the :class:`~hf_topo.config.TopoConfig` is built).
        check_layer (`Callable`, *optional*): ``check_layer(sheet, module, config)`` raises ``ValueError`` for a layer
            it cannot regularize (a sheet too small for the blur...); the message is prefixed with the layer's name.
        measure_posthoc (`Callable`, *optional*): ``measure_posthoc(layers, activations, settings) -> (per_layer,
            used_settings)``, its own post-hoc measurement (:func:`hf_topo.analysis.regularizer_values`); default:
            ``layer_loss`` with ``settings`` on every layer.
        formula (`str`, defaults to `""`): the value in a few symbols, for model cards (e.g. ``"1 − mean cos"``).
        description (`str`, defaults to `""`): one line for docs and ``--help``.
    """

    name: str
    layer_loss: Callable[[Any, TopoConfig], torch.Tensor]
    display_name: str = ""
    reads: str = "weights"
    settings: tuple[str, ...] = ()
    bias_map: bool = False
    draws_neighbourhoods: bool = False
    check_config: Callable[[TopoConfig], None] | None = None
    check_layer: Callable[[CorticalSheet, nn.Module, TopoConfig], None] | None = None
    measure_posthoc: (
        Callable[[Sequence[TopoLayer], dict[str, torch.Tensor] | None, TopoConfig], tuple[dict, dict]] | None
    ) = None
    formula: str = ""
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(
                f"A regularizer's name is the `loss` value of configs and saved records: a Python identifier such as "
                f"'neighbour_msd', got {self.name!r}."
            )
        if self.reads not in READS:
            raise ValueError(f"reads={self.reads!r} of regularizer {self.name!r} must be one of {READS}.")
        if not callable(self.layer_loss):
            raise TypeError(f"layer_loss of regularizer {self.name!r} must be callable, got {self.layer_loss!r}.")
        if self.bias_map and self.reads != "weights":
            raise ValueError(f"bias_map=True needs a weight-based regularizer; {self.name!r} reads activations.")
        if self.draws_neighbourhoods and self.reads != "activations":
            raise ValueError(f"draws_neighbourhoods=True needs an activation-based regularizer ({self.name!r}).")
        if not self.display_name:
            object.__setattr__(self, "display_name", self.name)
        object.__setattr__(self, "settings", tuple(self.settings))

    @property
    def reads_activations(self) -> bool:
        """Whether it is computed from the layers' activations of the current batch (else from the weights)."""
        return self.reads == "activations"


_REGISTRY: dict[str, RegularizerSpec] = {}


def register_regularizer(
    spec_or_name: RegularizerSpec | str, **fields: Any
) -> RegularizerSpec | Callable[[Callable], Callable]:
    """Register a topographic regularizer, by spec or as a decorator of its layer function.

    ``register_regularizer(RegularizerSpec(...))`` registers the spec and returns it;
    ``@register_regularizer(name, **fields)`` on a function ``layer_loss(sheet, config)`` registers
    ``RegularizerSpec(name, layer_loss=function, **fields)`` and returns the function unchanged. From then on
    ``TopoConfig(loss=name)`` trains, logs, saves and measures with it.

    Raises:
        ValueError: the name is already registered (the message lists the registered names), or a field is invalid.
    """
    if isinstance(spec_or_name, RegularizerSpec):
        if fields:
            raise ValueError("Pass either a RegularizerSpec or a name and its fields (as a decorator), not both.")
        return _add(spec_or_name)
    if not isinstance(spec_or_name, str):
        raise TypeError(
            f"register_regularizer takes a RegularizerSpec or a name, got {type(spec_or_name).__name__}; use "
            "@register_regularizer('my_loss', reads='weights') on a function layer_loss(sheet, config)."
        )

    def decorate(layer_loss: Callable) -> Callable:
        _add(RegularizerSpec(name=spec_or_name, layer_loss=layer_loss, **fields))
        return layer_loss

    return decorate


def _add(spec: RegularizerSpec) -> RegularizerSpec:
    if spec.name in _REGISTRY:
        raise ValueError(
            f"A regularizer named {spec.name!r} is already registered ({_REGISTRY[spec.name].display_name}); "
            f"choose another name. Registered: {registered_regularizers()}."
        )
    _REGISTRY[spec.name] = spec
    return spec


def unregister_regularizer(name: str) -> RegularizerSpec:
    """Remove a registered regularizer and return its spec (for tests and notebooks that register their own)."""
    get_regularizer(name)
    return _REGISTRY.pop(name)


def registered_regularizers() -> tuple[str, ...]:
    """The names of the registered regularizers, in registration order (the four built-ins first)."""
    return tuple(_REGISTRY)


def get_regularizer(name: str) -> RegularizerSpec:
    """The :class:`RegularizerSpec` registered as ``name``.

    Raises:
        ValueError: nothing is registered under ``name`` (the message lists the registered names and says how to
            register one).
    """
    spec = _REGISTRY.get(name) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(
            f"loss={name!r} is not known: the registered regularizers are {registered_regularizers()}. Register your "
            "own with hf_topo.regularizers.register_regularizer (a record saved with a custom regularizer loads once "
            "it is registered again)."
        )
    return spec
