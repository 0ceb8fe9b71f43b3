"""What is known about a model, read from the files hf_topo's commands leave next to it.

``metrics.json`` and ``blimp.json`` (``hf-topo pretrain``), ``trainer_state.json`` (the ``Trainer`` log history) and,
optionally, the ``report.json`` of ``hf-topo analyze`` (its typed summary,
:class:`~hf_topo.analysis.summary.AnalysisSummary`). The readers check what they read and return plain data for
:func:`hf_topo.hub.toponet_card`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = [
    "read_results",
    "results_from_log_history",
    "recipe_from_trainer_state",
    "recipe_from_training_args",
    "recipe_from_conversion",
    "recipe_from_vision_conversion",
]

# Files next to a model whose contents feed the card; never uploaded (metrics.json holds local paths).
METRICS_FILE, BLIMP_FILE, STATE_FILE, REPORT_FILE = "metrics.json", "blimp.json", "trainer_state.json", "report.json"


def read_json(path: Path) -> Any:
    """The JSON in ``path``; a file that is not valid JSON is a ``ValueError`` that names it."""
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-run the script that wrote it.") from None


def finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_results(model_dir: str | os.PathLike, analysis_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The results recorded next to a model, as one flat-ish dict (empty when nothing was recorded).

    Reads ``metrics.json`` (``eval_loss``, ``eval_perplexity``, ``topo_loss``, ``topo_loss_per_layer``, ``tau``,
    ``blimp_overall``, ``blimp_fields``, ``train_loss``, ``train_runtime``, ``n_parameters``; an image classifier's
    ``eval_accuracy``, ``eval_top5_accuracy``, ``n_train_images``, ``n_eval_images`` and, from ``classes``,
    ``n_classes``), ``blimp.json`` (BLiMP
    per field and the number of pairs) and, from ``analysis_dir``, ``report.json``'s summary of the analysed model
    under ``"analysis"`` (an :class:`~hf_topo.analysis.summary.AnalysisSummary`).
    """
    from ..analysis.summary import AnalysisSummary

    model_dir = Path(model_dir)
    results: dict[str, Any] = {}
    if (model_dir / METRICS_FILE).is_file():
        metrics = read_json(model_dir / METRICS_FILE)
        for key in (
            "eval_loss",
            "eval_perplexity",
            "topo_loss",
            "blimp_overall",
            "train_loss",
            "train_runtime",
            "n_parameters",
            "eval_accuracy",
            "eval_top5_accuracy",
            "n_train_images",
            "n_eval_images",
        ):
            if finite_number(metrics.get(key)):
                results[key] = metrics[key]
        if isinstance(metrics.get("classes"), list) and metrics["classes"]:  # an image classifier's class names
            results["n_classes"] = len(metrics["classes"])
        for key in ("topo_loss_per_layer", "blimp_fields"):
            if isinstance(metrics.get(key), dict):
                results[key] = {k: v for k, v in metrics[key].items() if finite_number(v)}
    if (model_dir / BLIMP_FILE).is_file():
        blimp = read_json(model_dir / BLIMP_FILE)
        if finite_number(blimp.get("overall")):
            results["blimp_overall"] = blimp["overall"]
        if isinstance(blimp.get("fields"), dict):
            results["blimp_fields"] = {k: v for k, v in blimp["fields"].items() if finite_number(v)}
        if isinstance(blimp.get("n_pairs"), dict):
            results["blimp_pairs"] = int(sum(blimp["n_pairs"].values()))
            results["blimp_paradigms"] = len(blimp["n_pairs"])
    if analysis_dir is not None:
        report_path = Path(analysis_dir) / REPORT_FILE
        if report_path.is_file():
            summary = AnalysisSummary.from_report(read_json(report_path), source=str(report_path))
            if summary is not None:
                results["analysis"] = summary
    return results


def results_from_log_history(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """The latest evaluation loss (with its perplexity) and BLiMP accuracy in a ``Trainer`` log history."""
    results: dict[str, Any] = {}
    for entry in log_history:
        if finite_number(entry.get("eval_loss")):
            results["eval_loss"] = entry["eval_loss"]
            results["eval_perplexity"] = math.exp(min(entry["eval_loss"], 50.0))
        if finite_number(entry.get("eval_blimp_overall")):
            results["blimp_overall"] = entry["eval_blimp_overall"]
        for key in ("eval_accuracy", "eval_top5_accuracy"):  # an image classifier's
            if finite_number(entry.get(key)):
                results[key] = entry[key]
        if finite_number(entry.get("train_loss")):
            results["train_loss"] = entry["train_loss"]
    return results


def recipe_from_trainer_state(state: dict[str, Any]) -> dict[str, Any]:
    """Training facts in a ``trainer_state.json``: steps, batch size, epochs, peak learning rate, final losses."""
    recipe: dict[str, Any] = {}
    if isinstance(state.get("global_step"), int):
        recipe["optimizer steps"] = state["global_step"]
    if isinstance(state.get("train_batch_size"), int):
        recipe["batch size per device"] = state["train_batch_size"]
    if finite_number(state.get("epoch")):
        recipe["epochs"] = round(state["epoch"], 3)
    history = state.get("log_history") or []
    rates = [h["learning_rate"] for h in history if finite_number(h.get("learning_rate"))]
    if rates:
        recipe["peak learning rate (logged)"] = max(rates)
    train_losses = [h for h in history if finite_number(h.get("task_loss"))]
    if train_losses:
        recipe["final training task loss (logged)"] = round(train_losses[-1]["task_loss"], 4)
    return recipe


def recipe_from_training_args(args) -> dict[str, Any]:
    """The recipe in ``TrainingArguments``: optimizer, schedule, batch, precision, seed (unset values left out)."""
    recipe: dict[str, Any] = {
        "learning rate": args.learning_rate,
        "schedule": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "warmup steps": args.warmup_steps,
        "optimizer": str(getattr(args.optim, "value", args.optim)),
        "weight decay": args.weight_decay,
        "batch size per device": args.per_device_train_batch_size,
        "gradient accumulation steps": args.gradient_accumulation_steps,
        "processes": args.world_size,
        "max steps": args.max_steps if args.max_steps > 0 else None,
        "epochs": args.num_train_epochs if args.max_steps <= 0 else None,
        "max gradient norm": args.max_grad_norm,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "seed": args.seed,
    }
    return {k: v for k, v in recipe.items() if v is not None}


def recipe_from_conversion(record: dict[str, Any]) -> dict[str, Any]:
    """The recipe of a model converted from nanoGPT (its ``conversion`` record in ``config.json``)."""
    recipe: dict[str, Any] = {"converted from": f"nanoGPT checkpoint `{record.get('checkpoint')}`"}
    if "iter_num" in record:
        recipe["iterations (nanoGPT iter_num)"] = record["iter_num"]
    if finite_number(record.get("best_val_loss")):
        recipe["best validation loss (nanoGPT)"] = round(record["best_val_loss"], 4)
    settings = record.get("training_config") or {}
    for key in (
        "dataset",
        "batch_size",
        "gradient_accumulation_steps",
        "block_size",
        "learning_rate",
        "max_iters",
        "warmup_iters",
        "lr_decay_iters",
        "min_lr",
        "weight_decay",
        "beta1",
        "beta2",
        "grad_clip",
        "dtype",
    ):
        if key in settings:
            recipe[f"nanoGPT {key}"] = settings[key]
    return recipe


def recipe_from_vision_conversion(record: dict[str, Any]) -> dict[str, Any]:
    """The recipe of a vision TopoNet converted from the authors' checkpoint (``hf-topo convert-toponet``'s
    ``conversion`` record: ``from`` ``torchvision-resnet``/``torchvision-vit``, ``checkpoint``, ``source``, ...)."""
    source = f" of `{record['source']}`" if record.get("source") else ""
    recipe: dict[str, Any] = {"converted from": f"the authors' checkpoint `{record.get('checkpoint')}`{source}"}
    if record.get("blurpool") is not None:
        recipe["blur-pool convolutions (the authors' ResNets)"] = "yes" if record["blurpool"] else "no"
    if isinstance(record.get("epoch"), int):
        recipe["epochs (the checkpoint's)"] = record["epoch"]
    for key, value in (record.get("training_config") or {}).items():
        if isinstance(value, (str, int, float, bool)):
            recipe[f"authors' {key}"] = value
    return recipe
