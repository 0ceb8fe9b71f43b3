"""``arrange_units``: give any model the arrangement of its MLP units on the sheet that minimises a topographic
objective, without changing what it computes; the arrangement is recorded in the model's topography record.

    from hf_topo import arrange_units

    report = arrange_units(model)              # GPT-2: the 12 mlp.c_fc sheets, TopoLoss, seed 0
    report.mean_before, report.mean_after      # TopoLoss before and after (hf_topo.TopoRegularizer's values)
    model.save_pretrained("gpt2-arranged")     # config.json's "topography" record says how it was arranged

The record gets an entry in its ``"arrangement"`` list::

    "arrangement": [{"method": "mds+swaps", "objective": "topoloss", "seed": 0, "init": "auto",
                     "max_rounds": 200, "settings": {"factor_h": 3.0, ...}, "library_version": "0.1.0",
                     "mean_before": 0.93, "mean_after": 0.71,
                     "layers": {"transformer.h.0.mlp.c_fc": {"before": 0.93, "after": 0.71, "initial": 0.88,
                                                              "rounds": 200, "swaps": 5321}, ...}}]

A model without a record first gets the inferred one of :func:`hf_topo.attach_inferred_topography` (``inferred:
true``, ``tau: 0``), so the record never claims topographic training that did not happen.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .._version import __version__
from ..config import TopoConfig
from ..metadata import ARRANGEMENT_KEY, TOPOGRAPHY_KEY, append_to_record, stored_topography
from ..presets import default_target_modules
from ..targets import resolve_sheets
from ..topo_regularizer import TopoRegularizer, attach_inferred_topography
from .mlp import check_not_peft, mlp_units, permute_units_, unit_vectors
from .search import ARRANGE_INITS, ARRANGE_OBJECTIVES, find_arrangement

__all__ = ["ARRANGE_METHOD", "ArrangementReport", "LayerArrangement", "arrange_units"]

logger = logging.getLogger(__name__)

#: How the arrangement is searched (recorded as ``method``): MDS initial layout, then pairwise-swap refinement.
ARRANGE_METHOD = "mds+swaps"
# The objective's name in arrange_units → the loss of TopoConfig / TopoRegularizer that measures it.
_LOSS_OF = {"topoloss": "laplacian_pyramid", "weight_similarity": "weight_similarity"}


@dataclass
class LayerArrangement:
    """One layer's arrangement: the objective (``hf_topo.TopoRegularizer``'s value) ``before`` and ``after``, the search's
    ``initial`` layout value, its ``rounds`` and ``swaps``, and the ``permutation`` applied (position ``p`` now holds
    the unit that was at ``permutation[p]``)."""

    before: float
    after: float
    initial: float
    rounds: int
    swaps: int
    permutation: torch.Tensor = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The layer's entry in the record (the permutation is not stored: the weights hold it)."""
        return {"before": self.before, "after": self.after, "initial": self.initial, "rounds": self.rounds,
                "swaps": self.swaps}  # fmt: skip


@dataclass
class ArrangementReport:
    """What :func:`arrange_units` did: the settings and every arranged layer (keyed by base-model name)."""

    objective: str
    init: str
    seed: int
    max_rounds: int
    settings: dict[str, Any]
    layers: dict[str, LayerArrangement]
    method: str = ARRANGE_METHOD

    @property
    def mean_before(self) -> float:
        return sum(layer.before for layer in self.layers.values()) / len(self.layers)

    @property
    def mean_after(self) -> float:
        return sum(layer.after for layer in self.layers.values()) / len(self.layers)

    def permutations(self) -> dict[str, list[int]]:
        """``{layer: permutation}`` as JSON-ready lists."""
        return {name: layer.permutation.tolist() for name, layer in self.layers.items()}

    def to_record(self) -> dict[str, Any]:
        """The entry appended to the record's ``"arrangement"`` list."""
        return {
            "method": self.method,
            "objective": self.objective,
            "init": self.init,
            "seed": self.seed,
            "max_rounds": self.max_rounds,
            "settings": dict(self.settings),
            "library_version": __version__,
            "mean_before": self.mean_before,
            "mean_after": self.mean_after,
            "layers": {name: layer.to_dict() for name, layer in self.layers.items()},
        }


def _topography_config(model: nn.Module, target_modules: list[str] | str | None) -> TopoConfig:
    """The sheets to arrange on: the model's record (its targets unless ``target_modules`` is given), else the
    family's most-square default."""
    if isinstance(stored_topography(model), dict):
        config = TopoConfig.from_pretrained(model)
        if target_modules is None:
            return config
        return dataclasses.replace(config, target_modules=target_modules, watch_modules=None, layers=None)
    return TopoConfig(target_modules=target_modules or default_target_modules(model), tau=0.0)


def _measure(model: nn.Module, config: TopoConfig) -> dict[str, float]:
    """``{base-model name: objective}`` of the target layers, by :class:`hf_topo.TopoRegularizer` itself."""
    topo = TopoRegularizer(config)
    per_layer = topo.compute(model, with_grad=False)[1]
    return {layer.sheet.module_name: float(per_layer[layer.name]) for layer in topo.layers(model)}


def arrange_units(
    model: nn.Module,
    target_modules: list[str] | str | None = None,
    objective: str = "topoloss",
    *,
    init: str = "auto",
    max_rounds: int = 200,
    patience: int = 3,
    seed: int = 0,
    record: bool = True,
    progress: bool = True,
) -> ArrangementReport:
    """Rearrange the hidden units of the model's MLPs on their sheets, in place, to minimise ``objective``.

    Every target layer's units are permuted together with the matching units of its MLP (:mod:`.mlp`), so the model
    computes exactly what it computed before (logits equal up to float rounding, ``generate`` identical); only where
    each unit sits on the sheet changes. The search (:func:`~hf_topo.arrangement.search.find_arrangement`) starts
    from the better of the identity and an MDS layout of the units' weights and refines it with pairwise swaps, so
    the objective never rises.

    Args:
        model: a causal LM of a supported family (GPT-2, GPT-Neo, GPT-NeoX/Pythia, Llama/Qwen2/Mistral), not
            PEFT-wrapped.
        target_modules: the expansion layers to arrange (suffixes or one regex, as in :class:`hf_topo.TopoConfig`);
            by default the layers of the model's topography record, or its family's MLP expansion layer.
        objective: ``"topoloss"`` (TopoLoss with the record's factors and interpolation) or ``"weight_similarity"``
            (with the record's distance and neighbourhood), see
            :data:`~hf_topo.arrangement.search.ARRANGE_OBJECTIVES`.
        init: the initial layout, one of :data:`~hf_topo.arrangement.search.ARRANGE_INITS`.
        max_rounds, patience: the most swap rounds per layer, and how many rounds without an improving swap end it.
        seed: the random swap proposals (a ``torch.Generator`` seeded with it; the global RNG is not touched).
        record: append the arrangement to the model's topography record (a model without one gets inferred sheets
            first, ``inferred: true``).
        progress: tqdm bars over layers and rounds.

    Returns:
        An :class:`ArrangementReport`; ``before``/``after`` are measured with :class:`hf_topo.TopoRegularizer`.

    Raises:
        TypeError: the model is PEFT-wrapped (merge the adapters first) or a target is not a Linear/Conv1D layer.
        ValueError: a bad argument, a target that is not an MLP expansion layer, or a layer whose weights are tied to
            or shared with another module. Nothing is changed when an error is raised.
    """
    if objective not in ARRANGE_OBJECTIVES:
        raise ValueError(f"objective={objective!r} is not supported; choose one of {ARRANGE_OBJECTIVES}.")
    if init not in ARRANGE_INITS:
        raise ValueError(f"init={init!r} is not supported; choose one of {ARRANGE_INITS}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed={seed!r} must be an integer.")
    check_not_peft(model)
    config = _topography_config(model, target_modules)
    measured = dataclasses.replace(config, loss=_LOSS_OF[objective], watch_modules=None, layers=None)
    layers = [layer for layer in resolve_sheets(model, measured) if layer.role == "target"]
    groups = {layer.name: mlp_units(model, layer.name) for layer in layers}  # every check before any change
    before = _measure(model, measured)
    settings = (
        {"factor_h": config.factor_h, "factor_w": config.factor_w, "interpolation": config.interpolation}
        if objective == "topoloss"
        else {"distance": config.distance, "neighbourhood": config.neighbourhood}
    )
    generator = torch.Generator().manual_seed(seed)
    results = {}
    for layer in tqdm(layers, desc="arranging layers", disable=not progress):
        sheet = layer.sheet
        result = find_arrangement(
            unit_vectors(groups[layer.name].expansion[layer.name]), sheet.height, sheet.width, objective,
            **settings, init=init, max_rounds=max_rounds, patience=patience, generator=generator,
            progress=progress, description=sheet.module_name,
        )  # fmt: skip
        permute_units_(groups[layer.name], result.permutation)
        results[sheet.module_name] = result
    after = _measure(model, measured)
    report_layers = {}
    for name, result in results.items():
        if abs(after[name] - result.final) > 1e-4 * max(1.0, abs(result.final)):
            logger.warning(
                "%s: the search's objective %.6g differs from TopoLoss's %.6g", name, result.final, after[name]
            )
        report_layers[name] = LayerArrangement(
            before=before[name], after=after[name], initial=result.initial, rounds=result.rounds, swaps=result.swaps,
            permutation=result.permutation,
        )  # fmt: skip
    report = ArrangementReport(
        objective=objective, init=init, seed=seed, max_rounds=max_rounds, settings=settings, layers=report_layers
    )
    logger.info(
        "Arranged %d layer(s) by %s: %.5f → %.5f (mean)", len(report_layers), objective, report.mean_before,
        report.mean_after,
    )  # fmt: skip
    if record:
        if not isinstance(stored_topography(model), dict):
            attach_inferred_topography(model, config.target_modules)
        append_to_record(model.config, ARRANGEMENT_KEY, report.to_record())
        TopoConfig.from_pretrained(model)  # the record stays valid and matches the model
        logger.info("Recorded the arrangement in config.%s.%s", TOPOGRAPHY_KEY, ARRANGEMENT_KEY)
    return report
