"""The TopoNet model card: data in, a ``huggingface_hub.ModelCard`` out (nothing is read from disk but the template).

:func:`toponet_card` renders ``templates/toponet_card.md`` (Jinja, through ``ModelCard.from_template``): YAML metadata
with a model-index, τ and its schedule, the topographic layers and their sheets, the training recipe, results when
known, the analysis (its typed :class:`~hf_topo.analysis.summary.AnalysisSummary`) and the figures.

An image classifier (a vision TopoNet, ``config.architectures`` ``*ForImageClassification``) gets the
``image-classification`` pipeline tag, top-1/top-5 accuracy in its model-index, its convolutions' depth spelled out
as input channels × kernel height × kernel width, an ``AutoModelForImageClassification`` snippet, and the authors'
checkpoint it was converted from (``config.conversion`` of ``hf-topo convert-toponet``) when there is one.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from torch import nn

from ..analysis.summary import AnalysisSummary
from ..config import TOPOGRAPHY_KEY, TopoConfig
from ..regularizers import get_regularizer
from .loading import is_image_classifier_config
from .results import recipe_from_conversion, recipe_from_vision_conversion

__all__ = ["CARD_TEMPLATE_NAME", "TOPONET_TAGS", "PAPER_URL", "CITATION", "card_template_path", "toponet_card"]

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
# Captions of the figures hf-topo analyze writes (any other PNG is captioned by its file name).
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
# An image classifier's sweeps are scored by top-1 accuracy.
_VISION_FIGURE_CAPTIONS = {
    "pruning": "Top-1 accuracy under L1 pruning of the weights",
    "noise": "Top-1 accuracy under weight noise",
    "downsampling": "Top-1 accuracy after downsampling the topographic layers' weights on the sheet",
}
# Figures in the card's order: maps first, then curves, then the sweeps; others after them by name.
_FIGURE_ORDER = ("sheet_maps", "selectivity", "smoothness_curve", "pruning", "downsampling", "noise")


def card_template_path() -> Path:
    """The TopoNet card template shipped with hf_topo (``hf_topo/hub/templates/toponet_card.md``)."""
    return Path(str(resources.files("hf_topo.hub") / "templates" / CARD_TEMPLATE_NAME))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.4e}"
    if isinstance(value, (list, tuple)):
        return ", ".join(f"`{v}`" for v in value)
    return str(value)


#: How a model card words a regularizer's settings (by the settings its spec names; others get a row per setting).
_SETTING_ROWS = {
    ("factor_h", "factor_w", "interpolation"): lambda topo: [
        ("downsampling factors φh × φw", f"{_fmt(topo.factor_h)} × {_fmt(topo.factor_w)}"),
        ("blur interpolation", topo.interpolation),
    ],
    ("radius", "neighbourhoods_per_batch", "accumulation"): lambda topo: [
        (
            "radius, neighbourhoods per batch, accumulation",
            f"{topo.radius}, {topo.neighbourhoods_per_batch}, {topo.accumulation}",
        )
    ],
    ("distance", "neighbourhood"): lambda topo: [
        ("distance, neighbourhood radius", f"{topo.distance}, {topo.neighbourhood}")
    ],
}


def _topography_rows(topo: TopoConfig, record: dict[str, Any]) -> list[tuple[str, str]]:
    tau = record.get("tau") or {}
    spec = topo.regularizer
    name = spec.display_name
    rows = [("loss", f"{name} ({topo.loss}: {spec.formula})" if spec.formula else f"{name} ({topo.loss})")]
    rows.append(("τ (weight of the topographic term)", _fmt(topo.tau)))
    rows.append(("τ schedule (multiplier over optimizer steps)", topo.tau_schedule.describe()))
    if tau.get("at_step") is not None:
        rows.append(("τ at the saved step", f"{_fmt(tau.get('current'))} (step {tau['at_step']})"))
    settings = _SETTING_ROWS.get(spec.settings)
    rows.extend(settings(topo) if settings else [(key, _fmt(getattr(topo, key))) for key in spec.settings])
    if topo.include_bias:
        rows.append(("bias map", "included (mean of the weight sheet's and the bias map's TopoLoss)"))
    if topo.sheet != "output":
        rows.append(("units on the sheet", f"{topo.sheet} (input units / the hidden states a target receives)"))
    targets = topo.target_modules if isinstance(topo.target_modules, list) else [f"re:{topo.target_modules}"]
    # a regex's "|" would end the markdown table's cell
    rows.append(("target modules", _fmt(targets).replace("|", "\\|")))
    if topo.watch_modules:
        rows.append(("watched modules (logged only)", _fmt(topo.watch_modules)))
    rows.append(
        ("sheet shape", "fixed " + "×".join(map(str, topo.sheet_shape)) if topo.sheet_shape else "most-square")
    )
    rows.append(
        ("metadata", "inferred (the model was not trained with hf_topo)" if topo.inferred else "recorded in training")
    )
    for arranged in topo.arrangement or []:
        rows.append(
            (
                "post-hoc arrangement of the units",
                f"{arranged.get('objective')} {_fmt(arranged.get('mean_before'))} → {_fmt(arranged.get('mean_after'))} "
                f"({arranged.get('method')}, seed {arranged.get('seed')})",
            )
        )
    return rows


def downsampling_sentence(config: Any) -> str | None:
    """What a downsampled model is, for its card: factors, layers, parameters and the variant; ``None`` otherwise."""
    from ..downsampling.record import DOWNSAMPLING_KEY, downsampling_variant

    record = getattr(config, DOWNSAMPLING_KEY, None)
    if not isinstance(record, dict):
        return None
    variant = downsampling_variant(record)
    if variant == "gains":
        how = {
            "closed_form": "in closed form so that each unit's blurred weights keep the norm of its original ones",
            "least_squares": "by least squares to the original layer's outputs on calibration text",
        }
        steps = record.get("distill_steps") or 0
        detail = (
            "**with per-unit gains** (hf_topo's variant: each unit's output is rescaled by one gain, set "
            f"{how.get(record.get('gains'), 'as recorded')}"
            + (f"; then {steps} steps of distillation of the reduced weights and gains" if steps else "")
            + ")"
        )
    else:
        detail = "as in the paper (**no per-unit gains**)"
    layers = record.get("layers") or {}
    count, original = record.get("parameter_count"), record.get("original_parameter_count")
    size = (
        f" It has {count:,} parameters, {100 * count / original:.1f} % of the original's {original:,}."
        if isinstance(count, int) and isinstance(original, int) and original > 0
        else ""
    )
    return (
        f"This model is **downsampled** on its cortical sheets by φ = {_fmt(record.get('factor_h'))} × "
        f"{_fmt(record.get('factor_w'))} (TopoNets appendix A.5): {len(layers)} topographic layer(s) keep a reduced "
        f"sheet of weights and upsample their outputs back to the full sheet, {detail}.{size} It loads with "
        "`AutoModelForCausalLM.from_pretrained` after `import hf_topo`."
    )


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


#: Image-classification metrics of ``metrics.json`` / the log history, as model-index entries (``metric_type``, name).
VISION_METRICS = (
    ("eval_accuracy", "accuracy", "Top-1 accuracy"),
    ("eval_top5_accuracy", "top_5_accuracy", "Top-5 accuracy"),
)


def _vision_eval_results(results: dict[str, Any], dataset: str | None, dataset_config: str | None) -> list[EvalResult]:
    """Model-index entries of an image classifier: top-1 (and top-5) accuracy on ``dataset`` (none when it is not
    named: the Hub's model-index needs a dataset)."""
    if not dataset:
        return []
    return [
        EvalResult(
            task_type="image-classification",
            task_name="Image Classification",
            dataset_type=dataset,
            dataset_name=dataset,
            dataset_config=dataset_config,
            metric_type=metric_type,
            metric_value=round(results[key], 4),
            metric_name=name,
        )
        for key, metric_type, name in VISION_METRICS
        if key in results
    ]


def _vision_result_rows(results: dict[str, Any], loss: str) -> list[tuple[str, str]]:
    """The headline results of an image classifier."""
    labels = [
        ("eval_accuracy", "top-1 accuracy (evaluation images)"),
        ("eval_top5_accuracy", "top-5 accuracy (evaluation images)"),
        ("eval_loss", "evaluation loss (cross-entropy)"),
        ("topo_loss", f"{get_regularizer(loss).display_name} (mean over target layers)"),
        ("n_classes", "classes"),
        ("n_train_images", "training images"),
        ("n_eval_images", "evaluation images"),
        ("train_loss", "training loss (mean over the run)"),
        ("train_runtime", "training time (s)"),
        ("n_parameters", "parameters"),
    ]
    return [(label, _fmt(results[key])) for key, label in labels if key in results]


def _depth_text(layer: dict[str, Any], modules: dict[str, nn.Module]) -> str:
    """A layer's depth for the sheets table: a convolution's as ``in·kh·kw = depth`` when the module is at hand."""
    module = modules.get(layer["name"])
    weight = getattr(module, "weight", None)
    if layer["layer_type"].startswith("Conv2d") and weight is not None and weight.ndim == 4:
        _, channels, kh, kw = weight.shape
        return f"{channels}·{kh}·{kw} = {layer['depth']}"
    return str(layer["depth"])


def _result_rows(results: dict[str, Any], loss: str) -> list[tuple[str, str]]:
    """The headline results; ``topo_loss`` is labelled with the regularizer that produced it (``loss``)."""
    spec = get_regularizer(loss)
    definition = spec.formula or spec.display_name
    labels = [
        ("eval_loss", "evaluation loss (nats/token)"),
        ("eval_perplexity", "evaluation perplexity"),
        ("topo_loss", f"{spec.display_name} (mean over target layers, {definition})"),
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


# The headline measures of an analysis summary (fields of AnalysisSummary), in the card's order.
ANALYSIS_MEASURE_LABELS = (
    ("smoothness", "smoothness (activations; highest − lowest binned correlation vs distance)"),
    ("robust_smoothness", "smoothness, robust (activations; pairs ≤ 2 apart − farther half of the pairs)"),
    ("weight_smoothness", "smoothness (weights)"),
    ("morans_i", "Moran's I of activation maps"),
    ("morans_i_p_value", "Moran's I permutation p-value (largest over layers)"),
    ("effective_dimensionality", "effective dimensionality of activations"),
    ("perplexity", "perplexity on the analysis text"),
    ("accuracy", "top-1 accuracy on the analysis images"),
    ("blimp", "BLiMP accuracy"),
    ("selectivity_morans_i", "Moran's I of selectivity maps"),
    ("temporal_reach_morans_i", "Moran's I of the units' temporal reach"),
)
# Shares of temporal window kinds shown (keys of AnalysisSummary.temporal_fractions).
TEMPORAL_FRACTION_LABELS = (
    ("power_law", "share of power-law temporal windows"),
    ("exponential", "share of exponential temporal windows"),
)
# One row per sweep kind (SweepSummary.kind), in this order; each row says Δ of the sweep's metric (perplexity for a
# language model, top-1 accuracy for an image classifier).
SWEEP_LABELS = {
    "pruning": "L1 pruning (fraction of weights)",
    "noise": "weight noise (σ × weight std)",
    "downsampling": "sheets downsampled φ × φ",
    "downsampling_paper": "sheets downsampled φ × φ",
    "substitution": "random token substitution",
    "deletion": "token deletion",
}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def analysis_rows(summary: AnalysisSummary) -> list[tuple[str, str]]:
    """The analysis as card rows: the headline measures, then one row per sweep (strength: Δ of its metric,
    perplexity or top-1 accuracy)."""
    rows = [
        (label, _fmt(summary.measure(name)))
        for name, label in ANALYSIS_MEASURE_LABELS
        if _finite(summary.measure(name))
    ]
    fractions = summary.temporal_fractions or {}
    rows += [
        (label, _fmt(fractions[kind])) for kind, label in TEMPORAL_FRACTION_LABELS if _finite(fractions.get(kind))
    ]
    for kind, label in SWEEP_LABELS.items():
        sweep = summary.sweeps.get(kind)
        points = [p for p in sweep.perturbed_points() if _finite(p.delta)] if sweep else []
        if points:
            label = f"Δ {'top-1 accuracy' if sweep.metric == 'accuracy' else sweep.metric}, {label}"
            if sweep.variant is not None:
                label += " with per-unit gains" if sweep.variant == "gains" else " (the paper's layer, no gains)"
            rows.append((label, ", ".join(f"{sweep.strength(p.x)}: {p.delta:+.3g}" for p in points)))
    return rows


def _figure_entries(figures: list[str], vision: bool = False) -> list[dict[str, str]]:
    def rank(path: str) -> tuple[int, str]:
        stem = Path(path).stem
        return (_FIGURE_ORDER.index(stem) if stem in _FIGURE_ORDER else len(_FIGURE_ORDER), stem)

    captions = _FIGURE_CAPTIONS | (_VISION_FIGURE_CAPTIONS if vision else {})
    return [
        {"path": path, "caption": captions.get(Path(path).stem, Path(path).stem.replace("_", " "))}
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
        model_config: the model's ``PreTrainedConfig`` (or the model: a convolution's depth is then spelled out as
            ``in·kh·kw``); it must carry ``topography`` metadata, and a malformed record is ``TopoConfig``'s
            ``ValueError`` (it is never taken for a missing one).
        repo_id: where the model lives on the Hub (used in the loading snippet and the model-index name).
        model_name: title of the card (default: the repo name, else "TopoNet").
        results: what :func:`~hf_topo.hub.read_results` returns (its ``"analysis"`` an
            :class:`~hf_topo.analysis.summary.AnalysisSummary`); the card says when none are known.
        recipe: training facts (``{label: value}``) shown under "Training recipe".
        figures: image paths relative to the card (e.g. ``["figures/sheet_maps.png"]``), embedded in order.
        datasets: Hub ids of the training data (``datasets`` metadata).
        eval_dataset, eval_dataset_config: the dataset the evaluation loss was measured on; perplexity enters the
            model-index only when it is named (BLiMP always does). An image classifier's accuracy enters it on
            ``eval_dataset``, else on the first of ``datasets``.
        base_model: the model this one was fine-tuned from (``base_model`` metadata), when relevant.
        license, language, tags: card metadata (``tags`` are added to :data:`TOPONET_TAGS`).

    Returns a ``huggingface_hub.ModelCard``; ``card.save(path)`` writes it, ``card.data`` is its ``ModelCardData``.
    """
    config = getattr(model_config, "config", model_config)
    modules = dict(model_config.named_modules()) if isinstance(model_config, nn.Module) else {}
    vision = is_image_classifier_config(model_config)
    record = getattr(config, TOPOGRAPHY_KEY, None)
    if record is None:
        raise ValueError(
            f"The model config has no '{TOPOGRAPHY_KEY}' metadata, so there is no topography to describe. Train with "
            "TopoTrainer, or attach inferred sheets with hf_topo.attach_inferred_topography(model) first."
        )
    topo = TopoConfig.from_dict(record, source=f"the model config's '{TOPOGRAPHY_KEY}'")  # validates the record
    results = dict(results or {})
    model_name = model_name or (repo_id.split("/")[-1] if repo_id else "TopoNet")
    conversion = getattr(config, "conversion", None)
    recipe = dict(recipe or {})
    if isinstance(conversion, dict) and conversion.get("from") == "nanogpt":
        recipe = recipe_from_conversion(conversion) | recipe
    elif isinstance(conversion, dict) and str(conversion.get("from", "")).startswith("torchvision-"):
        recipe = recipe_from_vision_conversion(conversion) | recipe
    analysis = results.get("analysis")
    if analysis is not None and not isinstance(analysis, AnalysisSummary):
        raise TypeError(f"results['analysis'] must be an AnalysisSummary (read_results gives one), not {analysis!r}.")

    if vision:
        accuracy_dataset = eval_dataset or (datasets[0] if datasets else None)
        eval_results = _vision_eval_results(results, accuracy_dataset, eval_dataset_config if eval_dataset else None)
    else:
        eval_results = _eval_results(results, eval_dataset, eval_dataset_config)
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-classification" if vision else "text-generation",
        tags=TOPONET_TAGS + [t for t in (tags or []) if t not in TOPONET_TAGS],
        base_model=base_model,
        datasets=list(datasets) if datasets else None,
        license=license,
        language=language,
        metrics=sorted({r.metric_type for r in eval_results}) or None,
        model_name=model_name,
        eval_results=eval_results or None,
    )
    layers = [
        {
            "name": name,
            **sheet.to_dict(),
            "layer_type": sheet.layer_type + (" (input units)" if sheet.units == "input" else ""),
            "units": sheet.height * sheet.width,
            "role": topo.layer_role(name),
        }
        for name, sheet in (topo.layers or {}).items()
    ]
    for layer in layers:
        layer["depth_text"] = _depth_text(layer, modules)
    architecture = (getattr(config, "architectures", None) or [type(config).__name__.replace("Config", "")])[0]
    return ModelCard.from_template(
        card_data,
        template_path=str(card_template_path()),
        model_title=model_name,
        repo_id=repo_id,
        architecture=architecture,
        model_type=getattr(config, "model_type", None),
        topo=topo,
        loss_name=topo.regularizer.display_name,
        topography_rows=_topography_rows(topo, record),
        layers=layers,
        finetuning=topo.finetuning or [],
        recipe_rows=[(k, _fmt(v)) for k, v in recipe.items()],
        result_rows=_vision_result_rows(results, topo.loss) if vision else _result_rows(results, topo.loss),
        vision=vision,
        needs_hf_topo_import=str(getattr(config, "model_type", "")).startswith("hf_topo"),
        eval_dataset=eval_dataset,
        blimp_fields=[(k, _fmt(v)) for k, v in (results.get("blimp_fields") or {}).items()],
        topo_loss_per_layer=[(k, _fmt(v)) for k, v in (results.get("topo_loss_per_layer") or {}).items()],
        analysis_rows=analysis_rows(analysis) if analysis is not None else [],
        figures=_figure_entries(figures or [], vision),
        conversion=conversion if isinstance(conversion, dict) else None,
        downsampling=downsampling_sentence(config),
        paper_url=PAPER_URL,
        citation=CITATION,
    )


def add_card_tags(card_path: str | Path, tags: list[str]) -> bool:
    """Add ``tags`` to the YAML metadata of an existing model card file (e.g. the card PEFT writes next to an
    adapter, which older PEFT releases write without the base model's tags); returns whether a card was there."""
    path = Path(card_path)
    if not path.is_file():
        return False
    card = ModelCard.load(path)
    existing = list(card.data.tags or [])
    card.data.tags = existing + [tag for tag in tags if tag not in existing]
    card.save(path)
    return True
