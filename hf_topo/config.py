"""``TopoConfig``: the topographic setup of a model, and the record it is saved as.

The setup is saved inside the model's own config under the key ``"topography"`` (:mod:`hf_topo.metadata` says where
records live and reads them), so a TopoNet is an ordinary Hugging Face checkpoint:
``AutoModelForCausalLM.from_pretrained(dir)`` loads it with no extra code, and
``TopoConfig.from_pretrained(dir_or_model)`` returns the exact setup, including every topographic layer's sheet.
The record, schema version 3 (a version 1 record has no ``distance`` and ``neighbourhood``, a version 2 record no
``sheet``, ``include_bias``, ``radius``, ``neighbourhoods_per_batch`` and ``accumulation``: they take their
defaults)::

    "topography": {
      "schema_version": 3,
      "library": "hf_topo", "library_version": "0.1.0",
      "loss": "laplacian_pyramid", "distance": "correlation", "neighbourhood": 1,
      "sheet": "output", "include_bias": false, "radius": 5, "neighbourhoods_per_batch": 5, "accumulation": "mean",
      "tau": {"value": 1.0, "schedule": [{"kind": "linear", "steps": 100, "start": 0.0, "end": 1.0}],
              "current": 1.0, "at_step": 1000},
      "factor_h": 3.0, "factor_w": 3.0, "interpolation": "bilinear",
      "target_modules": ["mlp.c_fc"], "watch_modules": null, "sheet_shape": null,
      "inferred": false, "finetuning": null,
      "layers": {"transformer.h.0.mlp.c_fc": {"layer_type": "Conv1D", "height": 48, "width": 64,
                                              "depth": 768, "units": "output", "role": "target"}, ...}
    }

``layers`` maps each full module name (as in the base model, without PEFT prefixes) to its sheet;
``units`` says which units are on the sheet (:data:`hf_topo.sheet.SHEET_UNITS`; ``layer_type`` ``"Activations"`` is a
module's activations, see :mod:`hf_topo.sheet`); ``role`` is ``"target"`` (optimized) or ``"watch"`` (logged only).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, fields
from typing import Any

from torch import nn

from ._version import __version__
from .metadata import TOPOGRAPHY_FILE, TOPOGRAPHY_KEY, read_topography_record
from .regularizers import (
    ACCUMULATIONS,
    DISTANCES,
    INTERPOLATION_MODES,
    RegularizerSpec,
    get_regularizer,
    registered_regularizers,
)
from .schedule import TauSchedule
from .sheet import SHEET_UNITS, CorticalSheet
from .targets import matches_pattern, resolve_sheets

__all__ = [
    "TopoConfig",
    "TOPO_SETTINGS",
    "TOPOGRAPHY_KEY",
    "TOPOGRAPHY_FILE",
    "SCHEMA_VERSION",
]

#: Version of the record that :meth:`TopoConfig.to_dict` writes (1 to this one are read).
SCHEMA_VERSION = 3

#: Keys that every record of a schema version holds (what :meth:`TopoConfig.to_dict` of that version wrote).
_RECORD_KEYS = {
    1: (
        "loss",
        "tau",
        "factor_h",
        "factor_w",
        "interpolation",
        "target_modules",
        "watch_modules",
        "sheet_shape",
        "layers",
    ),
}
_RECORD_KEYS[2] = _RECORD_KEYS[1] + ("distance", "neighbourhood")
_RECORD_KEYS[3] = _RECORD_KEYS[2] + ("sheet", "include_bias", "radius", "neighbourhoods_per_batch", "accumulation")
_SHEET_KEYS = ("layer_type", "height", "width", "depth")


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _malformed(source: str | None, problem: str) -> str:
    where = f" of {source}" if source else ""
    return (
        f"The '{TOPOGRAPHY_KEY}' record{where} is malformed: {problem.rstrip('.')}. It was edited, truncated or written "
        "by other software: re-save the model with hf_topo (TopoTrainer.save_model, or TopoConfig.attach_to before "
        "save_pretrained), or correct the record in config.json."
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_patterns(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)
    )


def _check_record(data: dict[str, Any], source: str | None) -> None:
    """Refuse a saved record (one with ``schema_version``) that its schema does not describe."""
    version = data["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(
            _malformed(
                source, f"schema_version={version!r} is not a schema version of hf_topo (1 to {SCHEMA_VERSION})"
            )
        )
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"Topography metadata{f' of {source}' if source else ''} has schema_version={version!r}, newer than this "
            f"hf_topo understands ({SCHEMA_VERSION}). Upgrade hf_topo (`pip install -U hf_topo`)."
        )
    library = data.get("library", "hf_topo")
    if library != "hf_topo":
        raise ValueError(_malformed(source, f"it was written by library={library!r}, not hf_topo"))
    missing = [key for key in _RECORD_KEYS[version] if key not in data]
    if missing:
        raise ValueError(_malformed(source, f"it lacks {missing}, which every schema_version {version} record holds"))
    problems = []
    tau = data["tau"]
    if isinstance(tau, dict):
        if not _is_number(tau.get("value")):
            problems.append(f"tau.value={tau.get('value')!r} is not a number")
        if not isinstance(tau.get("schedule", []), (list, type(None))):
            problems.append(f"tau.schedule is {_json_type(tau['schedule'])}, expected a list of phases")
        elif any(not isinstance(phase, dict) for phase in tau.get("schedule") or []):
            problems.append("tau.schedule holds entries that are not objects")
    elif not _is_number(tau):
        problems.append(f"tau is {_json_type(tau)}, expected a number or an object with 'value' and 'schedule'")
    for key in ("factor_h", "factor_w"):
        if not _is_number(data[key]):
            problems.append(f"{key} is {_json_type(data[key])}, expected a number")
    for key in ("loss", "interpolation") + (("distance",) if version >= 2 else ()):
        if not isinstance(data[key], str):
            problems.append(f"{key} is {_json_type(data[key])}, expected a string")
    if version >= 2 and (isinstance(data["neighbourhood"], bool) or not isinstance(data["neighbourhood"], int)):
        problems.append(f"neighbourhood is {_json_type(data['neighbourhood'])}, expected an integer")
    if version >= 3:
        for key in ("sheet", "accumulation"):
            if not isinstance(data[key], str):
                problems.append(f"{key} is {_json_type(data[key])}, expected a string")
        if not isinstance(data["include_bias"], bool):
            problems.append(f"include_bias is {_json_type(data['include_bias'])}, expected a boolean")
        for key in ("radius", "neighbourhoods_per_batch"):
            if isinstance(data[key], bool) or not isinstance(data[key], int):
                problems.append(f"{key} is {_json_type(data[key])}, expected an integer")
    if not _is_patterns(data["target_modules"]):
        problems.append(f"target_modules={data['target_modules']!r} is not a regex string or a list of name suffixes")
    if data["watch_modules"] is not None and not _is_patterns(data["watch_modules"]):
        problems.append(f"watch_modules={data['watch_modules']!r} is not null, a regex string or a list of suffixes")
    shape = data["sheet_shape"]
    if shape is not None and not (isinstance(shape, list) and len(shape) == 2):
        problems.append(f"sheet_shape={shape!r} is not null or [height, width]")
    if not isinstance(data.get("inferred", False), bool):
        problems.append(f"inferred is {_json_type(data['inferred'])}, expected a boolean")
    finetuning = data.get("finetuning")
    if finetuning is not None and not (isinstance(finetuning, list) and all(isinstance(f, dict) for f in finetuning)):
        problems.append("finetuning is not null or a list of objects")
    arrangement = data.get("arrangement")
    if arrangement is not None and not (
        isinstance(arrangement, list) and all(isinstance(a, dict) for a in arrangement)
    ):
        problems.append("arrangement is not null or a list of objects")
    layers = data["layers"]
    if layers is not None and not isinstance(layers, dict):
        problems.append(f"layers is {_json_type(layers)}, expected an object mapping module names to sheets")
    for name, sheet in (layers or {}).items() if isinstance(layers, dict) else ():
        if not isinstance(sheet, dict):
            problems.append(f"layers[{name!r}] is {_json_type(sheet)}, expected an object with {list(_SHEET_KEYS)}")
            continue
        lacking = [key for key in _SHEET_KEYS if key not in sheet]
        if lacking:
            keys = f"the key {lacking[0]!r}" if len(lacking) == 1 else f"the keys {lacking}"
            problems.append(f"layers[{name!r}] lacks {keys} (a sheet has {list(_SHEET_KEYS)})")
            continue
        if not isinstance(sheet["layer_type"], str):
            problems.append(f"layers[{name!r}].layer_type is {_json_type(sheet['layer_type'])}, expected a string")
        for key in ("height", "width", "depth"):
            value = sheet[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"layers[{name!r}].{key}={value!r} is not a positive integer")
        if sheet.get("units", "output") not in SHEET_UNITS:
            problems.append(f"layers[{name!r}].units={sheet['units']!r} is not one of {list(SHEET_UNITS)}")
        if sheet.get("role", "target") not in ("target", "watch"):
            problems.append(f"layers[{name!r}].role={sheet['role']!r} is neither 'target' nor 'watch'")
    if problems:
        raise ValueError(_malformed(source, "; ".join(problems)))


def _unknown(loss: str) -> str:
    try:
        get_regularizer(loss)
    except ValueError as err:
        return str(err)
    return ""


def _regex_or_suffixes(patterns: Any) -> Any:
    """``patterns`` as :func:`hf_topo.targets.find_target_modules` takes them: a list of suffixes or one regex string,
    where a list of the single entry ``"re:REGEX"`` (how a regex is written on the command line) is the regex."""
    if not isinstance(patterns, (list, tuple)):
        return patterns
    if len(patterns) == 1 and isinstance(patterns[0], str) and patterns[0].startswith("re:"):
        return patterns[0][len("re:") :]
    return list(patterns)


@dataclass
class TopoConfig:
    """Configuration of TopoLoss (Deb, Deb & Murty, ICLR 2025).

    Args:
        target_modules (`list[str]` or `str`, defaults to `["mlp.c_fc"]`):
            Layers that get TopoLoss: module-name suffixes, or one regex matched against full names (PEFT's
            semantics), also written as the list `["re:REGEX"]`. Use `"mlp.dense_h_to_4h"` for GPT-NeoX/Pythia,
            `"mlp.up_proj"` for Llama/Qwen/Mistral.
        tau (`float`, defaults to `1.0`):
            Base weight τ of the topographic term: `loss = task_loss + τ · topo_loss`. `0` trains a baseline that
            still logs its TopoLoss.
        factor_h (`float`, defaults to `3.0`), factor_w (`float`, defaults to `3.0`):
            Downsampling factors φh, φw of the blur (≥ 1).
        interpolation (`str`, defaults to `"bilinear"`):
            `F.interpolate` mode of the blur: one of `"bilinear"`, `"bicubic"`, `"nearest"`, `"nearest-exact"`,
            `"area"`.
        sheet_shape (`tuple[int, int]`, *optional*):
            Fixed sheet `(height, width)` for every layer; by default each layer's most-square factorization.
        watch_modules (`list[str]` or `str`, *optional*):
            Layers whose TopoLoss is logged but not optimized (the reference's `scale=None`).
        tau_schedule (`TauSchedule` or `str`, defaults to `"constant"`):
            Multiplier of τ over optimizer steps, e.g. `"warmup:1000,cosine:9000:0.1"` (see :mod:`hf_topo.schedule`).
        loss (`str`, defaults to `"laplacian_pyramid"`):
            The topographic regularizer: `"laplacian_pyramid"` (TopoLoss's blur-and-cosine objective),
            `"weight_similarity"` (mean distance between neighbouring units' incoming weights) or
            `"activation_similarity"` (mean distance between neighbouring units' pre-activation responses over
            the batch); the last two after Truong & Hasson, see :mod:`hf_topo.regularizers.similarity`;
            `"spatial_correlation"` (TopoLM: activation correlations in local neighbourhoods pushed to follow
            `1 / (1 + distance)`, see :mod:`hf_topo.regularizers.spatial_correlation`). The factors and the
            interpolation apply to TopoLoss only. Any regularizer registered with
            :func:`hf_topo.regularizers.register_regularizer` is accepted by its name.
        distance (`str`, defaults to `"correlation"`):
            Distance between two units' vectors for the similarity losses: `"euclidean"`, `"cosine"` or
            `"correlation"` (1 − Pearson r).
        neighbourhood (`int`, defaults to `1`):
            Chebyshev radius of a unit's neighbourhood on the sheet for the similarity losses (1 = the 3×3 queen
            neighbourhood, up to 8 neighbours).
        sheet (`str`, defaults to `"output"`):
            Which units of each target are laid out on its sheet. `"output"`: the layer's output units (the paper's
            sheet). `"input"`: for the weight-based losses, a Linear/Conv1D layer's input units, each holding its
            outgoing weights (the reference `topoloss`'s `LaplacianPyramidOnInput`); for the activation-based
            losses, the hidden states the target receives. The activation-based losses also take targets that are
            not Linear layers (a block's `attn` or `mlp`, a block, a LayerNorm), whose features (the hidden size)
            form the sheet: see :mod:`hf_topo.sheet` and :func:`hf_topo.presets.topolm_targets`.
        include_bias (`bool`, defaults to `False`):
            TopoLoss only, output sheets: each layer's term is the mean of its weight sheet's TopoLoss (the
            reference's `LaplacianPyramid`) and its bias map's `1 − cos(b, blur(b))` (`LaplacianPyramidOnBias`).
            The reference's own `TopoLoss` cannot combine the two on one layer: it keys its per-layer values by layer
            name, so the later entry replaces the earlier.
        radius (`int`, defaults to `5`):
            TopoLM's spatial-correlation loss: a neighbourhood is the units at Chebyshev distance `< radius` of its
            centre (a `(2·radius − 1)²` window; TopoLM uses 5 on a 28 × 28 sheet).
        neighbourhoods_per_batch (`int`, defaults to `5`):
            TopoLM's loss: neighbourhoods drawn per layer and micro-batch (seeded by the training seed, the optimizer
            step and the micro-batch, so a resumed run draws the same ones).
        accumulation (`str`, defaults to `"mean"`):
            TopoLM's loss: `"mean"` or `"max"` of the neighbourhood losses of a layer.
        layers (`dict[str, CorticalSheet]`, *optional*):
            The resolved sheets, filled when the config is read from a saved model. When set, the model the
            config is applied to must have exactly these layers and shapes.
        inferred (`bool`, defaults to `False`):
            `True` when the sheets were attached to a model that was not trained with hf_topo
            (:func:`hf_topo.attach_inferred_topography`), so τ says nothing about how it was trained.
        finetuning (`list[dict]`, *optional*):
            What was done to the model after its topographic training, oldest first (e.g. a LoRA run of
            `hf-topo finetune-lora`: method, rank, targets, τ, corpus).
        arrangement (`list[dict]`, *optional*):
            Post-hoc arrangements of the units on the sheets, oldest first (:func:`hf_topo.arrange_units`: method,
            objective, seed, rounds, each layer's objective before and after). The model computes what it computed
            before; only where its units sit on the sheets changed.
    """

    # The settings (those with a help text) are also the topographic training arguments and command-line flags of
    # hf_topo.trainer.TopoTrainingArguments, which takes their defaults and help from here.
    target_modules: list[str] | str = field(
        default_factory=lambda: ["mlp.c_fc"],
        metadata={"help": "Module-name suffixes that get TopoLoss, or one entry 're:REGEX' matched on full names."},
    )
    tau: float = field(default=1.0, metadata={"help": "Weight τ of TopoLoss: loss = task_loss + τ·topo_loss."})
    factor_h: float = field(default=3.0, metadata={"help": "Downsampling factor φh along the sheet height."})
    factor_w: float = field(default=3.0, metadata={"help": "Downsampling factor φw along the sheet width."})
    interpolation: str = field(
        default="bilinear", metadata={"help": "Blur interpolation: bilinear, bicubic, nearest, nearest-exact, area."}
    )
    sheet_shape: tuple[int, int] | None = field(
        default=None, metadata={"help": "Fixed sheet 'HEIGHT WIDTH' for every target layer (default: most-square)."}
    )
    watch_modules: list[str] | str | None = field(
        default=None, metadata={"help": "Layers whose TopoLoss is logged but not optimized (same syntax)."}
    )
    tau_schedule: TauSchedule | str | None = field(
        default="constant",
        metadata={"help": "τ phases over optimizer steps, e.g. 'warmup:1000,cosine:9000:0.1' (see hf_topo.schedule)."},
    )
    loss: str = field(
        default="laplacian_pyramid",
        metadata={
            "help": "Regularizer: laplacian_pyramid (TopoLoss), weight_similarity, activation_similarity, "
            "spatial_correlation (TopoLM), or one registered with hf_topo.regularizers.register_regularizer."
        },
    )
    distance: str = field(
        default="correlation",
        metadata={"help": "Neighbour distance of the similarity losses: euclidean, cosine or correlation."},
    )
    neighbourhood: int = field(
        default=1, metadata={"help": "Neighbourhood radius on the sheet for the similarity losses (1 = 3x3)."}
    )
    sheet: str = field(
        default="output",
        metadata={"help": "Units on the sheet: output (the paper's) or input (input units / incoming hidden states)."},
    )
    include_bias: bool = field(
        default=False, metadata={"help": "TopoLoss: also the bias map on the output sheet (topoloss's bias sheet)."}
    )
    radius: int = field(
        default=5, metadata={"help": "TopoLM: neighbourhood = units at Chebyshev distance < radius of a centre."}
    )
    neighbourhoods_per_batch: int = field(
        default=5, metadata={"help": "TopoLM: neighbourhoods drawn per layer and micro-batch (seeded)."}
    )
    accumulation: str = field(
        default="mean", metadata={"help": "TopoLM: mean or max of the neighbourhood losses of a layer."}
    )
    # Filled from a model (saved with it), not set for a run:
    layers: dict[str, CorticalSheet] | None = None
    inferred: bool = False
    finetuning: list[dict] | None = None
    arrangement: list[dict] | None = None

    def __post_init__(self):
        self.target_modules = _regex_or_suffixes(self.target_modules)
        if isinstance(self.watch_modules, (list, tuple)):
            self.watch_modules = _regex_or_suffixes(self.watch_modules) or None
        if not isinstance(self.tau, (int, float)) or not math.isfinite(self.tau) or self.tau < 0:
            raise ValueError(f"tau={self.tau!r} must be a finite number >= 0 (0 trains a non-topographic baseline).")
        self.tau = float(self.tau)
        for name in ("factor_h", "factor_w"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 1:
                raise ValueError(f"{name}={value!r} must be a finite number >= 1 (the paper uses 3).")
            setattr(self, name, float(value))
        if self.interpolation not in INTERPOLATION_MODES:
            raise ValueError(
                f"interpolation={self.interpolation!r} is not supported; choose one of {INTERPOLATION_MODES}."
            )
        spec = get_regularizer(self.loss)  # raises for a name nothing registered, listing the registered ones
        if self.distance not in DISTANCES:
            raise ValueError(f"distance={self.distance!r} is not supported; choose one of {DISTANCES}.")
        if isinstance(self.neighbourhood, bool) or not isinstance(self.neighbourhood, int) or self.neighbourhood < 1:
            raise ValueError(
                f"neighbourhood={self.neighbourhood!r} must be an integer >= 1 (the Chebyshev radius on the sheet; "
                "1 = 3x3 neighbours)."
            )
        self._check_sheet_settings(spec)
        if spec.check_config is not None:
            spec.check_config(self)
        if self.sheet_shape is not None:
            shape = tuple(self.sheet_shape)
            if len(shape) != 2 or not all(isinstance(v, int) and v > 0 for v in shape):
                raise ValueError(f"sheet_shape={self.sheet_shape!r} must be two positive integers (height, width).")
            self.sheet_shape = (int(shape[0]), int(shape[1]))
        if not isinstance(self.tau_schedule, TauSchedule):
            self.tau_schedule = TauSchedule.parse(self.tau_schedule)

    def _check_sheet_settings(self, spec: RegularizerSpec) -> None:
        if self.sheet not in SHEET_UNITS:
            raise ValueError(f"sheet={self.sheet!r} is not supported; choose one of {SHEET_UNITS}.")
        if not isinstance(self.include_bias, bool):
            raise ValueError(f"include_bias={self.include_bias!r} must be True or False.")
        if self.include_bias and (not spec.bias_map or self.sheet != "output"):
            with_bias = [name for name in registered_regularizers() if get_regularizer(name).bias_map]
            raise ValueError(
                f"include_bias=True adds the bias map of each layer's output sheet to the regularizer; it does not "
                f"apply to loss={self.loss!r} with sheet={self.sheet!r}. Use sheet='output' with a regularizer that "
                f"reads bias maps ({', '.join(repr(n) for n in with_bias)}), or include_bias=False."
            )
        for name, low in (("radius", 2), ("neighbourhoods_per_batch", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(
                    f"{name}={value!r} must be an integer >= {low} (TopoLM uses radius 5, 5 neighbourhoods per batch)."
                )
        if self.accumulation not in ACCUMULATIONS:
            raise ValueError(f"accumulation={self.accumulation!r} is not supported; choose one of {ACCUMULATIONS}.")

    # ---- τ -------------------------------------------------------------------------------------------------------

    @property
    def regularizer(self) -> RegularizerSpec:
        """The registered :class:`~hf_topo.regularizers.RegularizerSpec` of ``loss``."""
        return get_regularizer(self.loss)

    @property
    def reads_activations(self) -> bool:
        """Whether the loss is computed from the layers' outputs of each batch (Activation Similarity, TopoLM's
        spatial correlation) rather than from the weights alone (the regularizer's spec says)."""
        return self.regularizer.reads_activations

    def tau_at(self, step: int) -> float:
        """τ in force at optimizer step ``step``: base τ times the schedule's multiplier."""
        return self.tau * self.tau_schedule.multiplier(step)

    # ---- serialization -------------------------------------------------------------------------------------------

    def to_dict(self, step: int | None = None) -> dict[str, Any]:
        """The ``"topography"`` record of ``config.json`` (``step``: the optimizer step the model is saved at)."""
        tau: dict[str, Any] = {"value": self.tau, "schedule": self.tau_schedule.to_list()}
        if step is not None:
            tau.update(current=self.tau_at(step), at_step=int(step))
        return {
            "schema_version": SCHEMA_VERSION,
            "library": "hf_topo",
            "library_version": __version__,
            "loss": self.loss,
            "distance": self.distance,
            "neighbourhood": self.neighbourhood,
            "sheet": self.sheet,
            "include_bias": self.include_bias,
            "radius": self.radius,
            "neighbourhoods_per_batch": self.neighbourhoods_per_batch,
            "accumulation": self.accumulation,
            "tau": tau,
            "factor_h": self.factor_h,
            "factor_w": self.factor_w,
            "interpolation": self.interpolation,
            "target_modules": copy.deepcopy(self.target_modules),
            "watch_modules": copy.deepcopy(self.watch_modules),
            "sheet_shape": list(self.sheet_shape) if self.sheet_shape else None,
            "inferred": self.inferred,
            "finetuning": copy.deepcopy(self.finetuning),
            **({"arrangement": copy.deepcopy(self.arrangement)} if self.arrangement else {}),
            "layers": None
            if self.layers is None
            else {n: s.to_dict() | {"role": self.layer_role(n)} for n, s in self.layers.items()},
        }

    def layer_role(self, name: str) -> str:
        """``"watch"`` when the full module name ``name`` is matched by ``watch_modules`` (logged only), else
        ``"target"`` (optimized)."""
        return "watch" if self.watch_modules and matches_pattern(name, self.watch_modules) else "target"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> TopoConfig:
        """Inverse of :meth:`to_dict`; also accepts a plain dict of the constructor's arguments.

        A record with a ``schema_version`` (what :meth:`to_dict` writes into ``config.json``) is checked against its
        schema first: every key that version writes must be there with the right type, so that an edited or truncated
        record is refused with what is wrong instead of being filled with defaults. ``source`` names where the record
        comes from in error messages.

        Raises:
            ValueError: ``data`` is not a dict, has an unknown or newer ``schema_version``, lacks a key, holds a value
                of the wrong type, or describes an invalid setup.
        """
        if not isinstance(data, dict):
            raise ValueError(
                _malformed(source, f"it is {_json_type(data)}, expected a JSON object (dict) as hf_topo writes it")
            )
        data = dict(data)
        saved = "schema_version" in data
        if saved:
            _check_record(data, source)
        for key in ("schema_version", "library", "library_version"):
            data.pop(key, None)
        if not saved:  # constructor arguments: their own errors say what to change
            return cls._from_settings(data)
        if data["loss"] not in registered_regularizers():  # a custom regularizer, not registered in this process
            raise ValueError(
                f"The '{TOPOGRAPHY_KEY}' record{f' of {source}' if source else ''}: " + _unknown(data["loss"])
            )
        try:
            return cls._from_settings(data)
        except (TypeError, ValueError) as err:
            raise ValueError(_malformed(source, str(err))) from None

    @classmethod
    def _from_settings(cls, data: dict[str, Any]) -> TopoConfig:
        tau = data.pop("tau", 1.0)
        schedule = data.pop("tau_schedule", None)
        if isinstance(tau, dict):
            schedule = TauSchedule.from_list(tau.get("schedule"))
            tau = tau.get("value", 1.0)
        elif isinstance(schedule, list):
            schedule = TauSchedule.from_list(schedule)
        layers_data = data.pop("layers", None)
        known = set(cls.__dataclass_fields__) - {"layers", "tau", "tau_schedule"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"Unknown topography settings {sorted(unknown)}; expected keys among {sorted(known)}.")
        config = cls(tau=tau, tau_schedule=schedule, **data)
        if layers_data is not None:
            config.layers = {n: CorticalSheet.from_dict(n, d) for n, d in layers_data.items()}
        return config

    @classmethod
    def from_pretrained(cls, source: Any, **hub_kwargs) -> TopoConfig:
        """The topographic setup saved with a model.

        Args:
            source: a local directory or Hub repo id (its ``config.json`` is read through ``AutoConfig``, so
                ``revision``/``token``/``cache_dir`` pass through ``hub_kwargs``; a PEFT adapter's directory is read
                from its ``topography.json``), a ``PreTrainedConfig``, or a model (then the stored sheets are also
                checked against the model's layers).

        Raises:
            ValueError: the source has no record, the record is malformed, or its sheets contradict the model.
        """
        data, name = read_topography_record(source, **hub_kwargs)
        if not isinstance(data, dict) or "schema_version" not in data:
            # What hf_topo writes always carries its schema version; anything else is not a record of ours.
            problem = "it has no schema_version" if isinstance(data, dict) else None
            raise ValueError(_malformed(name, problem or f"it is {_json_type(data)}, expected a JSON object"))
        config = cls.from_dict(data, source=name)
        if isinstance(source, nn.Module):
            resolve_sheets(source, config)  # raises if the stored sheets contradict the model
        return config

    def attach_to(self, model_config: Any, step: int | None = None) -> None:
        """Write this setup into ``model_config`` (a ``PreTrainedConfig``) under ``"topography"``."""
        setattr(model_config, TOPOGRAPHY_KEY, self.to_dict(step=step))


#: The fields of :class:`TopoConfig` that a user sets for a run (each has a help text); ``layers``, ``inferred``,
#: ``finetuning`` and ``arrangement`` are filled from a model instead.
TOPO_SETTINGS: tuple[str, ...] = tuple(f.name for f in fields(TopoConfig) if "help" in f.metadata)
