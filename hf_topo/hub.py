"""TopoNets on the Hugging Face Hub: loading with sheet metadata, model cards, the upload folder and the push.

* :func:`load_toponet` loads any causal LM (Hub id or directory) with its ``topography`` metadata, attaching
  inferred sheets (``inferred: true``) to a model that has none, so that every hf_topo tool works on it.
* :func:`toponet_card` renders the TopoNet model card (``templates/toponet_card.md``, Jinja, through
  ``huggingface_hub.ModelCard``): YAML metadata with a model-index, τ and its schedule, the topographic layers and
  their sheets, the training recipe, results when known and the topographic maps.
* :func:`build_upload_folder` writes everything a Hub repo gets (weights as safetensors, ``config.json`` with
  ``topography``, tokenizer, ``README.md``, ``figures/*.png``) into a local folder; :func:`push_folder` uploads exactly
  that folder with ``create_repo`` + ``upload_folder``.
* :func:`write_trainer_card` is what ``TopoTrainer.create_model_card`` (and so ``TopoTrainer.push_to_hub``) writes.

Results come from the files hf_topo's scripts leave next to a model: ``metrics.json`` and ``blimp.json``
(``scripts/pretrain.py``), ``trainer_state.json`` (the log history) and, optionally, an analysis directory of
``scripts/analyze.py`` (``report.json`` whose ``"summary"`` holds scalar metrics, and PNG figures).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from torch import nn

from .config import TOPOGRAPHY_KEY, TopoConfig
from .models import check_model_source
from .topo_loss import TopoLoss, attach_inferred_topography

__all__ = [
    "CARD_TEMPLATE_NAME",
    "TOPONET_TAGS",
    "PAPER_URL",
    "CITATION",
    "card_template_path",
    "load_toponet",
    "read_results",
    "results_from_log_history",
    "recipe_from_trainer_state",
    "toponet_card",
    "render_sheet_maps",
    "build_upload_folder",
    "push_folder",
    "write_trainer_card",
]

logger = logging.getLogger(__name__)

CARD_TEMPLATE_NAME = "toponet_card.md"
#: Tags every TopoNet card carries (``topographic`` is what the Hub search for topographic models uses).
TOPONET_TAGS = ["hf_topo", "topographic", "toponets", "topoloss"]
PAPER_URL = "https://arxiv.org/abs/2501.16396"
CITATION = """@inproceedings{deb2025toponets,
  title     = {TopoNets: High Performing Vision and Language Models with Brain-Like Topography},
  author    = {Deb, Mayukh and Deb, Mainak and Murty, N. Apurva Ratan},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2025},
  url       = {https://arxiv.org/abs/2501.16396}
}"""
BLIMP_DATASET = "nyu-mll/blimp"
FIGURES_DIR = "figures"
# Captions of the figures scripts/analyze.py writes (any other PNG is captioned by its file name).
_FIGURE_CAPTIONS = {
    "sheet_maps": "Maps on the cortical sheets of the topographic layers",
    "smoothness_curve": "Correlation of unit responses versus distance on the sheet (smoothness)",
    "pruning": "Perplexity under L1 pruning of the weights",
    "noise": "Perplexity under weight noise",
    "downsampling": "Perplexity after downsampling the topographic layers' weights on the sheet",
    "selectivity": "Selectivity maps (Welch's t between two stimulus sets)",
    "input_substitution": "Perplexity when input tokens are replaced by random ones",
    "input_deletion": "Perplexity when input tokens are deleted",
}
# Files next to a model whose contents feed the card; never uploaded (metrics.json holds local paths).
_METRICS_FILE, _BLIMP_FILE, _STATE_FILE, _REPORT_FILE = (
    "metrics.json",
    "blimp.json",
    "trainer_state.json",
    "report.json",
)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "vocab.txt")


def card_template_path() -> Path:
    """The TopoNet card template shipped with hf_topo (``hf_topo/templates/toponet_card.md``)."""
    return Path(str(resources.files("hf_topo") / "templates" / CARD_TEMPLATE_NAME))


# ---- loading ---------------------------------------------------------------------------------------------------------


def load_toponet(
    source: str | os.PathLike,
    infer_if_missing: bool = True,
    target_modules: list[str] | str | None = None,
    **from_pretrained_kwargs,
):
    """A causal LM with its topographic metadata: ``AutoModelForCausalLM.from_pretrained`` plus a check of the sheets.

    Args:
        source: Hub repo id or local directory.
        infer_if_missing: for a model without ``topography`` metadata (a Hub GPT-2, a GPT-Neo TopoNet published
            without metadata), attach the most-square sheets of its family's MLP expansion layer
            (:func:`hf_topo.attach_inferred_topography`, recorded ``inferred: true``, ``tau: 0``). When ``False``,
            such a model is an error.
        target_modules: layers for the inferred sheets (default: the family's preset, :data:`hf_topo.TARGET_PRESETS`).
        **from_pretrained_kwargs: passed to ``from_pretrained`` (``revision``, ``token``, ``dtype``, ...).

    Returns the model; ``hf_topo.TopoConfig.from_pretrained(model)`` gives its setup. Stored metadata that
    contradicts the weights is an error, never re-derived.
    """
    from transformers import AutoModelForCausalLM

    check_model_source(source, **{k: v for k, v in from_pretrained_kwargs.items() if k in ("revision", "token")})
    model = AutoModelForCausalLM.from_pretrained(source, **from_pretrained_kwargs)
    if isinstance(getattr(model.config, TOPOGRAPHY_KEY, None), dict):
        TopoConfig.from_pretrained(model)  # raises if the stored sheets do not describe the weights
    elif infer_if_missing:
        config = attach_inferred_topography(model, target_modules)
        logger.info("%s has no topography metadata: attached inferred sheets over %s", source, config.target_modules)
    else:
        raise ValueError(
            f"{source} has no '{TOPOGRAPHY_KEY}' metadata in its config.json. Load it with infer_if_missing=True "
            "(push_to_hub.py: --infer_topography) to attach inferred most-square sheets, or train it with TopoTrainer."
        )
    return model


# ---- results and recipe ------------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-run the script that wrote it.") from None


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_results(model_dir: str | os.PathLike, analysis_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The results recorded next to a model, as one flat-ish dict (empty when nothing was recorded).

    Reads ``metrics.json`` (``eval_loss``, ``eval_perplexity``, ``topo_loss``, ``topo_loss_per_layer``, ``tau``,
    ``blimp_overall``, ``blimp_fields``, ``train_loss``, ``train_runtime``, ``n_parameters``), ``blimp.json`` (BLiMP
    per field and the number of pairs) and, from ``analysis_dir``, ``report.json``'s ``"summary"`` (scalar metrics of
    the analysed model) under ``"analysis"``.
    """
    model_dir = Path(model_dir)
    results: dict[str, Any] = {}
    if (model_dir / _METRICS_FILE).is_file():
        metrics = _read_json(model_dir / _METRICS_FILE)
        for key in (
            "eval_loss",
            "eval_perplexity",
            "topo_loss",
            "blimp_overall",
            "train_loss",
            "train_runtime",
            "n_parameters",
        ):
            if _finite_number(metrics.get(key)):
                results[key] = metrics[key]
        for key in ("topo_loss_per_layer", "blimp_fields"):
            if isinstance(metrics.get(key), dict):
                results[key] = {k: v for k, v in metrics[key].items() if _finite_number(v)}
    if (model_dir / _BLIMP_FILE).is_file():
        blimp = _read_json(model_dir / _BLIMP_FILE)
        if _finite_number(blimp.get("overall")):
            results["blimp_overall"] = blimp["overall"]
        if isinstance(blimp.get("fields"), dict):
            results["blimp_fields"] = {k: v for k, v in blimp["fields"].items() if _finite_number(v)}
        if isinstance(blimp.get("n_pairs"), dict):
            results["blimp_pairs"] = int(sum(blimp["n_pairs"].values()))
            results["blimp_paradigms"] = len(blimp["n_pairs"])
    if analysis_dir is not None:
        report_path = Path(analysis_dir) / _REPORT_FILE
        if report_path.is_file():
            summary = _read_json(report_path).get("summary")
            if isinstance(summary, dict):
                results["analysis"] = {k: v for k, v in summary.items() if _finite_number(v)}
    return results


def results_from_log_history(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """The latest evaluation loss (with its perplexity) and BLiMP accuracy in a ``Trainer`` log history."""
    results: dict[str, Any] = {}
    for entry in log_history:
        if _finite_number(entry.get("eval_loss")):
            results["eval_loss"] = entry["eval_loss"]
            results["eval_perplexity"] = math.exp(min(entry["eval_loss"], 50.0))
        if _finite_number(entry.get("eval_blimp_overall")):
            results["blimp_overall"] = entry["eval_blimp_overall"]
        if _finite_number(entry.get("train_loss")):
            results["train_loss"] = entry["train_loss"]
    return results


def recipe_from_trainer_state(state: dict[str, Any]) -> dict[str, Any]:
    """Training facts in a ``trainer_state.json``: steps, batch size, epochs, peak learning rate, final losses."""
    recipe: dict[str, Any] = {}
    if isinstance(state.get("global_step"), int):
        recipe["optimizer steps"] = state["global_step"]
    if isinstance(state.get("train_batch_size"), int):
        recipe["batch size per device"] = state["train_batch_size"]
    if _finite_number(state.get("epoch")):
        recipe["epochs"] = round(state["epoch"], 3)
    history = state.get("log_history") or []
    rates = [h["learning_rate"] for h in history if _finite_number(h.get("learning_rate"))]
    if rates:
        recipe["peak learning rate (logged)"] = max(rates)
    train_losses = [h for h in history if _finite_number(h.get("task_loss"))]
    if train_losses:
        recipe["final training task loss (logged)"] = round(train_losses[-1]["task_loss"], 4)
    return recipe


def _recipe_from_training_args(args) -> dict[str, Any]:
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


def _recipe_from_conversion(record: dict[str, Any]) -> dict[str, Any]:
    recipe: dict[str, Any] = {"converted from": f"nanoGPT checkpoint `{record.get('checkpoint')}`"}
    if "iter_num" in record:
        recipe["iterations (nanoGPT iter_num)"] = record["iter_num"]
    if _finite_number(record.get("best_val_loss")):
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


# ---- the card --------------------------------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.4e}"
    if isinstance(value, (list, tuple)):
        return ", ".join(f"`{v}`" for v in value)
    return str(value)


def _topography_rows(topo: TopoConfig, record: dict[str, Any]) -> list[tuple[str, str]]:
    tau = record.get("tau") or {}
    rows = [("loss", {"laplacian_pyramid": "TopoLoss (blur-and-cosine, eq. 1)"}.get(topo.loss, topo.loss))]
    rows.append(("τ (weight of the topographic term)", _fmt(topo.tau)))
    rows.append(("τ schedule (multiplier over optimizer steps)", topo.tau_schedule.describe()))
    if tau.get("at_step") is not None:
        rows.append(("τ at the saved step", f"{_fmt(tau.get('current'))} (step {tau['at_step']})"))
    if topo.loss == "laplacian_pyramid":
        rows.append(("downsampling factors φh × φw", f"{_fmt(topo.factor_h)} × {_fmt(topo.factor_w)}"))
        rows.append(("blur interpolation", topo.interpolation))
    else:
        rows.append(("distance, neighbourhood radius", f"{topo.distance}, {topo.neighbourhood}"))
    targets = topo.target_modules if isinstance(topo.target_modules, list) else [f"re:{topo.target_modules}"]
    rows.append(("target modules", _fmt(targets)))
    if topo.watch_modules:
        rows.append(("watched modules (logged only)", _fmt(topo.watch_modules)))
    rows.append(
        ("sheet shape", "fixed " + "×".join(map(str, topo.sheet_shape)) if topo.sheet_shape else "most-square")
    )
    rows.append(
        ("metadata", "inferred (the model was not trained with hf_topo)" if topo.inferred else "recorded in training")
    )
    return rows


def _eval_results(
    results: dict[str, Any], eval_dataset: str | None, eval_dataset_config: str | None
) -> list[EvalResult]:
    """Model-index entries: perplexity on the evaluation set (when it is named) and BLiMP accuracy."""
    entries = []
    if eval_dataset and "eval_perplexity" in results:
        common = dict(
            task_type="text-generation",
            task_name="Causal language modeling",
            dataset_type=eval_dataset,
            dataset_name=eval_dataset,
            dataset_config=eval_dataset_config,
        )
        entries.append(
            EvalResult(
                metric_type="perplexity",
                metric_value=round(results["eval_perplexity"], 4),
                metric_name="Perplexity",
                **common,
            )
        )
        if "eval_loss" in results:
            entries.append(
                EvalResult(
                    metric_type="loss",
                    metric_value=round(results["eval_loss"], 4),
                    metric_name="Cross-entropy loss (nats/token)",
                    **common,
                )
            )
    if "blimp_overall" in results:
        subset = (
            f" ({results['blimp_pairs']} pairs, {results['blimp_paradigms']} paradigms)"
            if "blimp_pairs" in results
            else ""
        )
        entries.append(
            EvalResult(
                task_type="text-generation",
                task_name="Minimal-pair acceptability (BLiMP)",
                dataset_type=BLIMP_DATASET,
                dataset_name="BLiMP",
                metric_type="accuracy",
                metric_value=round(results["blimp_overall"], 4),
                metric_name="BLiMP accuracy, mean over paradigms" + subset,
            )
        )
    return entries


def _result_rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    labels = [
        ("eval_loss", "evaluation loss (nats/token)"),
        ("eval_perplexity", "evaluation perplexity"),
        ("topo_loss", "TopoLoss (mean over target layers, 1 − mean cos)"),
        ("blimp_overall", "BLiMP accuracy (mean over paradigms)"),
        ("train_loss", "training loss (mean over the run)"),
        ("train_runtime", "training time (s)"),
        ("n_parameters", "parameters"),
    ]
    rows = [(label, _fmt(results[key])) for key, label in labels if key in results]
    if "blimp_pairs" in results:
        rows.append(
            ("BLiMP pairs evaluated", f"{results['blimp_pairs']} over {results['blimp_paradigms']} paradigm(s)")
        )
    return rows


# The headline measures of an analysis summary, in the card's order.
_ANALYSIS_LABELS = (
    ("smoothness", "smoothness (activations; highest − lowest binned correlation vs distance)"),
    ("weight_smoothness", "smoothness (weights)"),
    ("morans_i", "Moran's I of activation maps"),
    ("effective_dimensionality", "effective dimensionality of activations"),
    ("perplexity", "perplexity on the analysis text"),
    ("blimp", "BLiMP accuracy"),
    ("selectivity_morans_i", "Moran's I of selectivity maps"),
    ("temporal_reach_morans_i", "Moran's I of the units' temporal reach"),
    ("temporal_fraction_power_law", "share of power-law temporal windows"),
    ("temporal_fraction_exponential", "share of exponential temporal windows"),
)
# Sweep points of an analysis summary: (key pattern, row label, how to write the strength, the unperturbed strength).
_SWEEP_PATTERNS = (
    (r"pruned_(\d+)pct_delta_perplexity", "Δ perplexity, L1 pruning (fraction of weights)", "{} %", 0.0),
    (r"noise_sigma_([\d.]+)_delta_perplexity", "Δ perplexity, weight noise (σ × weight std)", "σ {}", 0.0),
    (r"downsampled_([\d.]+)x[\d.]+_delta_perplexity", "Δ perplexity, sheets downsampled φ × φ", "φ {}", 1.0),
    (r"substitution_(\d+)pct_delta_perplexity", "Δ perplexity, random token substitution", "{} %", 0.0),
    (r"deletion_(\d+)pct_delta_perplexity", "Δ perplexity, token deletion", "{} %", 0.0),
)


def _analysis_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The analysis summary as card rows: the headline measures, then one row per sweep (strength: Δ perplexity)."""
    rows = [(label, _fmt(summary[key])) for key, label in _ANALYSIS_LABELS if key in summary]
    for pattern, label, strength, unperturbed in _SWEEP_PATTERNS:
        points = [(m.group(1), value) for key, value in summary.items() if (m := re.fullmatch(pattern, key))]
        points = [(x, v) for x, v in points if float(x) != unperturbed]  # Δ = 0 there by definition
        if points:
            cells = ", ".join(
                f"{strength.format(x)}: {float(v):+.3g}" for x, v in sorted(points, key=lambda p: float(p[0]))
            )
            rows.append((label, cells))
    return rows


# Figures in the card's order: maps first, then curves, then the sweeps; others after them by name.
_FIGURE_ORDER = ("sheet_maps", "selectivity", "smoothness_curve", "pruning", "downsampling", "noise")


def _figure_entries(figures: list[str]) -> list[dict[str, str]]:
    def rank(path: str) -> tuple[int, str]:
        stem = Path(path).stem
        return (_FIGURE_ORDER.index(stem) if stem in _FIGURE_ORDER else len(_FIGURE_ORDER), stem)

    return [
        {"path": path, "caption": _FIGURE_CAPTIONS.get(Path(path).stem, Path(path).stem.replace("_", " "))}
        for path in sorted(figures, key=rank)
    ]


def toponet_card(
    model_config: Any,
    *,
    repo_id: str | None = None,
    model_name: str | None = None,
    results: dict[str, Any] | None = None,
    recipe: dict[str, Any] | None = None,
    figures: list[str] | None = None,
    datasets: list[str] | None = None,
    eval_dataset: str | None = None,
    eval_dataset_config: str | None = None,
    base_model: str | None = None,
    license: str | None = None,
    language: str | list[str] | None = None,
    tags: list[str] | None = None,
) -> ModelCard:
    """Render the TopoNet model card.

    Args:
        model_config: the model's ``PreTrainedConfig`` (or the model); it must carry ``topography`` metadata.
        repo_id: where the model lives on the Hub (used in the loading snippet and the model-index name).
        model_name: title of the card (default: the repo name, else "TopoNet").
        results: what :func:`read_results` returns; the card says when none are known.
        recipe: training facts (``{label: value}``) shown under "Training recipe".
        figures: image paths relative to the card (e.g. ``["figures/sheet_maps.png"]``), embedded in order.
        datasets: Hub ids of the training data (``datasets`` metadata).
        eval_dataset, eval_dataset_config: the dataset the evaluation loss was measured on; perplexity enters the
            model-index only when it is named (BLiMP always does).
        base_model: the model this one was fine-tuned from (``base_model`` metadata), when relevant.
        license, language, tags: card metadata (``tags`` are added to :data:`TOPONET_TAGS`).

    Returns a ``huggingface_hub.ModelCard``; ``card.save(path)`` writes it, ``card.data`` is its ``ModelCardData``.
    """
    config = getattr(model_config, "config", model_config)
    record = getattr(config, TOPOGRAPHY_KEY, None)
    if not isinstance(record, dict):
        raise ValueError(
            f"The model config has no '{TOPOGRAPHY_KEY}' metadata, so there is no topography to describe. Train with "
            "TopoTrainer, or attach inferred sheets with hf_topo.attach_inferred_topography(model) first."
        )
    topo = TopoConfig.from_dict(record)
    results = dict(results or {})
    model_name = model_name or (repo_id.split("/")[-1] if repo_id else "TopoNet")
    conversion = getattr(config, "conversion", None)
    recipe = dict(recipe or {})
    if isinstance(conversion, dict) and conversion.get("from") == "nanogpt":
        recipe = _recipe_from_conversion(conversion) | recipe

    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=TOPONET_TAGS + [t for t in (tags or []) if t not in TOPONET_TAGS],
        base_model=base_model,
        datasets=list(datasets) if datasets else None,
        license=license,
        language=language,
        metrics=sorted({r.metric_type for r in _eval_results(results, eval_dataset, eval_dataset_config)}) or None,
        model_name=model_name,
        eval_results=_eval_results(results, eval_dataset, eval_dataset_config) or None,
    )
    layers = [
        {"name": name, "units": sheet.height * sheet.width, **sheet.to_dict(), "role": topo._role(name)}
        for name, sheet in (topo.layers or {}).items()
    ]
    architecture = (getattr(config, "architectures", None) or [type(config).__name__.replace("Config", "")])[0]
    return ModelCard.from_template(
        card_data,
        template_path=str(card_template_path()),
        model_title=model_name,
        repo_id=repo_id,
        architecture=architecture,
        model_type=getattr(config, "model_type", None),
        topo=topo,
        topography_rows=_topography_rows(topo, record),
        layers=layers,
        finetuning=topo.finetuning or [],
        recipe_rows=[(k, _fmt(v)) for k, v in recipe.items()],
        result_rows=_result_rows(results),
        eval_dataset=eval_dataset,
        blimp_fields=[(k, _fmt(v)) for k, v in (results.get("blimp_fields") or {}).items()],
        topo_loss_per_layer=[(k, _fmt(v)) for k, v in (results.get("topo_loss_per_layer") or {}).items()],
        analysis_rows=_analysis_rows(results.get("analysis") or {}),
        figures=_figure_entries(figures or []),
        conversion=conversion if isinstance(conversion, dict) else None,
        paper_url=PAPER_URL,
        citation=CITATION,
    )


# ---- figures ----------------------------------------------------------------------------------------------------------


def _spread(items: list, count: int) -> list:
    """``count`` items evenly spread over ``items`` (first and last included)."""
    if len(items) <= count:
        return list(items)
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)] if count > 1 else items[:1]


def render_sheet_maps(model: nn.Module, path: str | os.PathLike, max_layers: int = 3, label: str = "TopoNet") -> str:
    """Draw the first principal component of each unit's weights on its sheet, for up to ``max_layers`` target layers
    (early, middle, late), into the PNG ``path``; returns the path. The model must carry ``topography`` metadata."""
    from .analysis.maps import weight_pc1_map
    from .analysis.plots import plot_sheet_maps

    layers = [layer for layer in TopoLoss(TopoConfig.from_pretrained(model)).layers(model) if layer.role == "target"]
    chosen = _spread(layers, max_layers)
    maps = {label: {"weight PC1": {layer.name: weight_pc1_map(layer) for layer in chosen}}}
    return plot_sheet_maps(maps, path, title="Weight PC1 on the sheet")


# ---- the upload folder and the push --------------------------------------------------------------------------------


def _check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo_id={repo_id!r} must be 'user_or_org/model_name' (exactly one slash).")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"repo_id={repo_id!r} is not a valid Hub repo id: {err}") from None


def _prepare_empty_folder(folder: Path, model_dir: Path, overwrite: bool) -> None:
    folder_abs, model_abs = folder.resolve(), model_dir.resolve()
    if folder_abs == model_abs or folder_abs in model_abs.parents:
        raise ValueError(f"The upload folder {folder} must not be (or contain) the model directory {model_dir}.")
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise ValueError(f"The upload folder {folder} exists and is not empty; pass overwrite=True (--overwrite).")
        if not ((folder / "README.md").is_file() and (folder / "config.json").is_file()):
            raise ValueError(
                f"Not overwriting {folder}: it is not empty and does not look like an upload folder written by hf_topo "
                "(no README.md and config.json). Choose another folder or empty it yourself."
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)


def build_upload_folder(
    model_dir: str | os.PathLike,
    folder: str | os.PathLike,
    *,
    repo_id: str | None = None,
    analysis_dir: str | os.PathLike | None = None,
    tokenizer: str | os.PathLike | None = None,
    infer_topography: bool = False,
    overwrite: bool = False,
    **card_kwargs,
) -> list[str]:
    """Write into ``folder`` exactly what a Hub repo of the model gets; returns its files (relative, sorted).

    The folder holds the model re-saved with ``save_pretrained`` (``model.safetensors``, ``config.json`` with
    ``topography``, ``generation_config.json``), the tokenizer, ``README.md`` (:func:`toponet_card`) and
    ``figures/*.png``: the PNGs of ``analysis_dir`` when given (its ``report.json`` summary also goes into the card),
    else the sheet maps drawn by :func:`render_sheet_maps`. Nothing else (no ``training_args.bin`` pickle, no
    ``metrics.json`` with local paths).

    Args:
        model_dir: a saved model directory (``config.json`` + weights), e.g. the output of ``scripts/pretrain.py``.
        folder: where to write (must be empty unless ``overwrite``; never the model directory).
        repo_id: the target repo (``user/name``), shown in the card.
        analysis_dir: output directory of ``scripts/analyze.py`` for this model.
        tokenizer: tokenizer to save instead of the one in ``model_dir`` (Hub id or path).
        infer_topography: a model without ``topography`` metadata gets inferred sheets instead of an error.
        overwrite: replace a non-empty ``folder``.
        **card_kwargs: passed to :func:`toponet_card` (``datasets``, ``eval_dataset``, ``base_model``, ``license``, ...).
    """
    from transformers import AutoTokenizer

    model_dir, folder = Path(model_dir), Path(folder)
    if not model_dir.is_dir():
        raise FileNotFoundError(
            f"Model folder {model_dir} does not exist: pass the folder save_pretrained wrote (the --output_dir of "
            "hf-topo pretrain, the --output of hf-topo convert-nanogpt)."
        )
    check_model_source(model_dir)
    if repo_id is not None:
        _check_repo_id(repo_id)
    figure_sources: list[Path] = []
    if analysis_dir is not None:
        analysis_dir = Path(analysis_dir)
        if not analysis_dir.is_dir():
            raise ValueError(
                f"analysis_dir {analysis_dir} is not a directory (expected hf-topo analyze's --output_dir)."
            )
        if not (analysis_dir / _REPORT_FILE).is_file():
            raise ValueError(
                f"analysis_dir {analysis_dir} has no {_REPORT_FILE}, so it is not the --output_dir of hf-topo analyze "
                "(whose summary and figures go in the card): pass that folder (e.g. outputs/demo/analysis), or leave "
                "--analysis_dir out to draw the sheet maps."
            )
        figure_sources = sorted(analysis_dir.glob("*.png"))

    model = load_toponet(model_dir, infer_if_missing=infer_topography)
    tokenizer_source = tokenizer if tokenizer is not None else model_dir
    how_to_fix = (
        "A Hub model needs its tokenizer: pass tokenizer=... (--tokenizer PATH_OR_HUB_ID), or save one into the model "
        "directory (e.g. AutoTokenizer.from_pretrained('gpt2').save_pretrained(MODEL_DIR))."
    )
    # transformers builds an empty tokenizer from a directory without tokenizer files instead of failing
    if Path(tokenizer_source).is_dir() and not any((Path(tokenizer_source) / f).is_file() for f in _TOKENIZER_FILES):
        raise ValueError(f"No tokenizer in {tokenizer_source} (none of {', '.join(_TOKENIZER_FILES)}). {how_to_fix}")
    try:
        loaded_tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    except (OSError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else repr(err)
        raise ValueError(f"No tokenizer could be loaded from {tokenizer_source} ({reason}). {how_to_fix}") from None
    vocab_size = getattr(model.config, "vocab_size", None)
    if vocab_size is not None and len(loaded_tokenizer) > vocab_size:
        raise ValueError(
            f"The tokenizer from {tokenizer_source} has {len(loaded_tokenizer)} tokens but the model only "
            f"{vocab_size} embeddings: it is not this model's tokenizer. {how_to_fix}"
        )

    # Read (and so check) every file the card uses before anything is written.
    results = read_results(model_dir, analysis_dir)
    recipe = {}
    if (model_dir / _STATE_FILE).is_file():
        recipe = recipe_from_trainer_state(_read_json(model_dir / _STATE_FILE))

    _prepare_empty_folder(folder, model_dir, overwrite)
    model.save_pretrained(folder)
    loaded_tokenizer.save_pretrained(folder)
    figures_dir = folder / FIGURES_DIR
    figures_dir.mkdir()
    if figure_sources:
        for source in figure_sources:
            shutil.copyfile(source, figures_dir / source.name)
    else:
        render_sheet_maps(model, figures_dir / "sheet_maps.png")
    figures = sorted(f"{FIGURES_DIR}/{p.name}" for p in figures_dir.glob("*.png"))

    card = toponet_card(
        model.config,
        repo_id=repo_id,
        results=results,
        recipe=recipe,
        figures=figures,
        **card_kwargs,
    )
    card.save(folder / "README.md")
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    logger.info("Upload folder %s: %s", folder, ", ".join(files))
    return files


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
):
    """Upload ``folder`` (as written by :func:`build_upload_folder`) to the model repo ``repo_id``.

    Creates the repo if needed (``private`` applies only then; ``None`` leaves the visibility to the Hub's default
    for the namespace) and the branch ``revision`` if it is not ``main``,
    then commits the whole folder with ``HfApi.upload_folder``. Returns the ``CommitInfo``.
    """
    from huggingface_hub import HfApi

    _check_repo_id(repo_id)
    folder = Path(folder)
    if not (folder / "README.md").is_file() or not (folder / "config.json").is_file():
        raise ValueError(f"{folder} is not an upload folder (no README.md/config.json): build it first.")
    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    logger.info("Repository %s", repo_url)
    if revision is not None and revision != "main":
        api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
    return api.upload_folder(
        repo_id=repo_id,
        repo_type="model",
        folder_path=folder,
        commit_message=commit_message or "Upload TopoNet with hf_topo",
        revision=revision,
    )


# ---- the trainer's card --------------------------------------------------------------------------------------------


def write_trainer_card(
    trainer,
    *,
    model_name: str | None = None,
    language: str | list[str] | None = None,
    license: str | None = None,
    tags: str | list[str] | None = None,
    finetuned_from: str | None = None,
    dataset: str | list[str] | None = None,
) -> str:
    """Write the TopoNet card of a ``TopoTrainer``'s model into ``args.output_dir`` (``README.md`` and
    ``figures/sheet_maps.png``); returns the card's path.

    The card describes what ``push_to_hub`` uploads: the model saved in ``output_dir`` when there is one (its full
    weights, also when training sharded them with FSDP or ZeRO-3), else the trainer's model. Results:
    ``metrics.json``/``blimp.json`` there if a script wrote them, else the trainer's log history; the TopoLoss of the
    weights is computed when not recorded (weight-based losses only).
    """
    output_dir = Path(trainer.args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    trainer.write_topography_metadata()
    if (output_dir / "config.json").is_file():
        model = load_toponet(output_dir, infer_if_missing=False)
    else:
        model = trainer.accelerator.unwrap_model(trainer.model)
    results = results_from_log_history(trainer.state.log_history) | read_results(output_dir)
    topo_loss = TopoLoss(TopoConfig.from_pretrained(model))
    if "topo_loss" not in results and not topo_loss.needs_activations:
        results["topo_loss"] = topo_loss.compute(model, with_grad=False)[0].item()
    figure = render_sheet_maps(model, output_dir / FIGURES_DIR / "sheet_maps.png")
    datasets = [dataset] if isinstance(dataset, str) else dataset
    repo_id = getattr(trainer, "hub_model_id", None) or trainer.args.hub_model_id
    card = toponet_card(
        model.config,
        repo_id=repo_id if repo_id and "/" in repo_id else None,
        model_name=model_name,
        results=results,
        recipe=_recipe_from_training_args(trainer.args)
        | recipe_from_trainer_state(
            {"global_step": trainer.state.global_step, "log_history": trainer.state.log_history}
        ),
        figures=[Path(figure).relative_to(output_dir).as_posix()],
        datasets=datasets,
        eval_dataset=datasets[0] if datasets else None,
        base_model=finetuned_from,
        license=license,
        language=language,
        tags=[tags] if isinstance(tags, str) else tags,
    )
    path = output_dir / "README.md"
    card.save(path)
    return str(path)
