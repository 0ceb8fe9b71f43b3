"""The model families the experiments train, and :func:`train_family`: one model of a family on the small CPU recipe,
or the one already saved.

A family is a regularizer and the settings it trains with; every family of an experiment shares the data, the
tokenizer (the baseline trains it, the others reuse it), the seed and the recipe, so only the regularizer and its
strength τ differ. ``hf-topo claims --families`` names families by :attr:`Family.name`; ``hf-topo
compare-regularizers --strengths`` by :attr:`Family.short`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from ..models import apply_overrides, preset_config
from ..presets import topolm_targets
from ..pretraining import pretrain
from .recipes import small_cpu_recipe

__all__ = ["FAMILIES", "Family", "family_by_short_name", "family_recipe", "train_family"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Family:
    """One kind of model an experiment trains.

    Attributes:
        name: the family's name (``hf-topo claims --families``, the claims' model names).
        short: its name in ``hf-topo compare-regularizers --strengths`` and in that comparison's model folders.
        regularizer: the ``topo_loss_type`` it trains with; ``None`` for the τ = 0 baseline.
        display: its name in tables and figures.
        color: its colour in figures.
        settings: further pretraining settings of the family (fields of the pretraining dataclasses).
        topolm_sites: the loss goes on TopoLM's sites (:func:`hf_topo.presets.topolm_targets`) instead of the MLP
            expansion layers.
    """

    name: str
    short: str
    regularizer: str | None
    display: str
    color: str
    settings: dict[str, Any] = field(default_factory=dict)
    topolm_sites: bool = False


#: Every family an experiment trains, by :attr:`Family.name`. Weight / Activation Similarity use the correlation
#: distance (Truong & Hasson's choice); ``toponet_input`` / ``toponet_bias``: TopoLoss on topoloss's
#: LaplacianPyramidOnInput / OnBias sheets.
FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("baseline", "none", None, "none", "black"),
        Family("toponet", "topo", "laplacian_pyramid", "TopoLoss", "tab:red"),
        Family("toponet_input", "topo_input", "laplacian_pyramid", "TopoLoss (input sheet)", "tab:orange",
               {"topo_sheet": "input"}),
        Family("toponet_bias", "topo_bias", "laplacian_pyramid", "TopoLoss + bias sheet", "tab:brown",
               {"topo_include_bias": True}),
        Family("ws", "ws", "weight_similarity", "WS", "tab:blue", {"topo_distance": "correlation"}),
        Family("as", "as", "activation_similarity", "AS", "tab:green", {"topo_distance": "correlation"}),
        Family("topolm", "topolm", "spatial_correlation", "TopoLM", "tab:purple", topolm_sites=True),
    )
}  # fmt: skip


def family_by_short_name(short: str) -> Family:
    """The family whose :attr:`Family.short` is ``short`` (``"topo"`` → the TopoNet)."""
    for family in FAMILIES.values():
        if family.short == short:
            return family
    raise KeyError(short)


#: The files a finished pretraining run leaves in its folder: a model there with all of them is reused.
SAVED_RUN_FILES = ("config.json", "trainer_state.json", "metrics.json")
#: The entries of the training log kept in :func:`train_family`'s result.
LOG_KEYS = ("step", "task_loss", "topo_loss", "loss")


def family_recipe(family: str | Family, topolm_placement: str = "residual", **recipe: Any) -> dict[str, Any]:
    """The settings of :func:`~hf_topo.experiments.recipes.small_cpu_recipe` that train a model of ``family``: its
    regularizer, its own :attr:`Family.settings` and, for a family on TopoLM's sites, those sites in this architecture
    (``topolm_placement``: ``"residual"`` or ``"outputs"``, :func:`hf_topo.presets.topolm_targets`); ``recipe`` (the
    data, the output folder, τ, the shared recipe) wins over the family's own settings."""
    family = FAMILIES[family] if isinstance(family, str) else family
    settings = {"topo_loss_type": family.regularizer or "laplacian_pyramid"} | family.settings | recipe
    if family.topolm_sites:  # TopoLM's sites in this architecture, not the MLP expansion layer
        architecture = apply_overrides(
            preset_config(settings.get("model_preset", "tiny-gpt2"), settings.get("vocab_size", 4096),
                          settings["block_size"]),
            settings.get("config_overrides"),
        )  # fmt: skip
        sites = topolm_targets(architecture, topolm_placement)
        targets = sites["target_modules"]
        settings.setdefault("topo_target_modules", [f"re:{targets}"] if isinstance(targets, str) else targets)
        settings.setdefault("topo_sheet", sites["sheet"])
    return settings


def train_family(
    family: str | Family, *, reuse: bool = False, topolm_placement: str = "residual", **recipe: Any
) -> dict[str, Any]:
    """Train one model of ``family`` with :func:`~hf_topo.experiments.recipes.small_cpu_recipe`, or reuse it.

    Args:
        family: a :class:`Family` or its name in :data:`FAMILIES`.
        reuse: when the output folder holds a finished run (:data:`SAVED_RUN_FILES`), read it instead of training.
        topolm_placement: TopoLM's sites (``"residual"`` or ``"outputs"``), for a family on them.
        **recipe: the settings of :func:`~hf_topo.experiments.recipes.small_cpu_recipe` (``train_file``,
            ``validation_file``, ``output_dir``, ``tau``, ``max_steps``, ``batch_size``, ``seed``, ``tokenizer``,
            ...), completed by :func:`family_recipe`.

    Returns:
        The run's ``metrics.json`` with ``output_dir`` (absolute), ``tau``, ``wall_time_s`` (or ``reused: True``),
        ``train_runtime`` and ``log_history`` (the training log entries with a task loss, :data:`LOG_KEYS` of each).
    """
    model_args, data_args, training_args = small_cpu_recipe(**family_recipe(family, topolm_placement, **recipe))
    directory = os.path.abspath(training_args.output_dir)
    if reuse and all(os.path.isfile(os.path.join(directory, name)) for name in SAVED_RUN_FILES):
        logger.info("Reusing %s", directory)
        with open(os.path.join(directory, "metrics.json")) as f:
            metrics = json.load(f) | {"output_dir": directory, "tau": training_args.tau, "reused": True}
    else:
        start = time.perf_counter()
        metrics = pretrain(model_args, data_args, training_args)
        metrics["wall_time_s"] = time.perf_counter() - start
    with open(os.path.join(directory, "trainer_state.json")) as f:
        history = json.load(f)["log_history"]
    metrics["log_history"] = [{k: h[k] for k in LOG_KEYS if k in h} for h in history if "task_loss" in h]
    metrics["train_runtime"] = next((h["train_runtime"] for h in history if "train_runtime" in h), None)
    return metrics
