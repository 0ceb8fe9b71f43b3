"""Fig. 5B / Fig. 8 for one seed: window kinds per layer, their maps and clustering, the sentence-yoked maps, for the
baseline, the TopoNet and the arranged baseline (the control), at the reference's settings.

    from hf_topo.experiments.window_kinds import WINDOW_SETTINGS, window_kinds_for_seed

    result = window_kinds_for_seed("outputs/claims/seed0/baseline", "outputs/claims/seed0/toponet",
                                   text_file="outputs/claims/data/validation.txt", seed=0,
                                   output_dir="outputs/claims/seed0/window_kinds")

For each of the baseline and the TopoNet it measures the integration windows by word swaps
(:func:`~hf_topo.analysis.temporal.measure_integration_windows`: 21 lags, ``Δ = 0 … 20``, on 100 sequences of 40
words — the reference's lags and at least its 100 sequences) and the structure yoking
(:func:`~hf_topo.analysis.temporal.measure_structure_yoking`, 100 sequences), fits every unit
(:func:`~hf_topo.analysis.temporal.fit_integration_windows`) and summarises per layer
(:func:`~hf_topo.analysis.temporal.kinds.window_kind_summary`: the paper's three kinds' shares, the first-to-middle
layer trend, Moran's I of the kind and coefficient maps, same-kind patch sizes against shuffles, the yoked maps).
The arranged baseline (:func:`hf_topo.arrange_units` of the baseline, TopoLoss objective, seeded with the seed) is
the baseline's units moved, so its fits and yoking are the baseline's permuted
(:func:`~hf_topo.analysis.temporal.kinds.permute_window_fits`), at no extra measuring cost.

The result is a plain JSON-ready dict, cached in ``output_dir/window_kinds.json`` with its settings (a second call
with the same settings reads it), with the figure ``window_kinds.png`` beside it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..analysis import load_passages
from ..analysis.plots import pyplot, save_figure
from ..analysis.report import json_safe
from ..analysis.temporal import fit_integration_windows, measure_integration_windows, measure_structure_yoking
from ..analysis.temporal.kinds import (
    PAPER_KINDS,
    paper_kind_index,
    permute_window_fits,
    permute_yoking,
    window_kind_summary,
)
from ..arrangement import arrange_units
from ..errors import InputError, parameter

__all__ = ["WINDOW_MODELS", "WINDOW_SETTINGS", "plot_window_kinds", "window_kind_measures", "window_kinds_for_seed"]

logger = logging.getLogger(__name__)

#: The models of one seed, in the order of the result and the figure.
WINDOW_MODELS = ("baseline", "toponet", "arranged_baseline")

#: Default settings. ``max_delta`` 20 (21 lags) and 40-word sequences are the reference's
#: (Skrill & Norman-Haignere's ``max_window_size = 21``, ``get_natural_sequences_of_length(40)``); 100 sequences for
#: the windows and 100 for the yoking are the floor the claims ask for (the reference: 250). The yoking uses 8-word
#: sentences of any words (the reference: 12 single-token words, which a 4,096-token vocabulary rarely gives).
WINDOW_SETTINGS: dict[str, Any] = {
    "max_delta": 20,
    "sequence_words": 40,
    "max_sequences": 100,
    "yoking_sequences": 100,
    "sentence_words": 8,
    "sentences_per_sequence": 5,
    "single_token_words": False,
    "batch_size": 64,
    "r2_threshold": 0.9,
    "c_split": 0.5,
    "patch_shuffles": 20,
}
#: The reference's floors: :func:`window_kinds_for_seed` refuses fewer lags or sequences.
MIN_MAX_DELTA, MIN_SEQUENCES = 20, 100


def _measure(model, tokenizer, passages: list[str], settings: Mapping[str, Any], seed: int, progress: bool):
    start = time.perf_counter()
    windows = measure_integration_windows(
        model, tokenizer, passages, max_delta=settings["max_delta"], sequence_words=settings["sequence_words"],
        max_sequences=settings["max_sequences"], batch_size=settings["batch_size"], seed=seed, progress=progress,
    )  # fmt: skip
    windows_s = time.perf_counter() - start
    fits = fit_integration_windows(windows, r2_threshold=settings["r2_threshold"], c_split=settings["c_split"])
    fit_s = time.perf_counter() - start - windows_s
    yoking = measure_structure_yoking(
        model, tokenizer, passages, sentence_words=settings["sentence_words"],
        sentences_per_sequence=settings["sentences_per_sequence"], max_sequences=settings["yoking_sequences"],
        single_token_words=settings["single_token_words"], batch_size=settings["batch_size"], seed=seed,
        progress=progress,
    )  # fmt: skip
    cost = {
        "windows_s": windows_s,
        "fit_s": fit_s,
        "yoking_s": time.perf_counter() - start - windows_s - fit_s,
        "n_sequences": windows.n_sequences,
        "yoking_sequences": yoking.n_sequences,
        "forward_passes": windows.n_sequences * (1 + settings["sequence_words"] - 2)
        + yoking.n_sequences * (1 + settings["sentence_words"] * settings["sentences_per_sequence"]),
    }
    return fits, yoking, cost


def _check_settings(settings: Mapping[str, Any]) -> None:
    if settings["max_delta"] < MIN_MAX_DELTA:
        raise InputError(
            f"{parameter('max_delta', settings['max_delta'])}: the reference measures {MIN_MAX_DELTA + 1} lags "
            f"(Δ = 0 … {MIN_MAX_DELTA}); give max_delta ≥ {MIN_MAX_DELTA}."
        )
    for key in ("max_sequences", "yoking_sequences"):
        if settings[key] < MIN_SEQUENCES:
            raise InputError(
                f"{parameter(key, settings[key])}: Fig. 5B's shares need at least {MIN_SEQUENCES} sequences (the "
                f"reference: 250); give {key} ≥ {MIN_SEQUENCES}."
            )


def window_kinds_for_seed(
    baseline_dir: str,
    toponet_dir: str,
    text_file: str,
    seed: int = 0,
    output_dir: str | None = None,
    settings: Mapping[str, Any] | None = None,
    device: str | None = None,
    progress: bool = False,
    allow_below_reference: bool = False,
    arrangement: Mapping[str, Any] | None = None,
) -> dict:
    """Fig. 5B / Fig. 8's measures of one seed for the baseline, the TopoNet and the arranged baseline.

    Args:
        baseline_dir, toponet_dir: the seed's τ = 0 baseline and TopoNet (saved by hf_topo; same tokenizer).
        text_file: held-out running text (the passages are read from it: ``load_passages(min_words=sequence_words)``).
        seed: seeds the swap words and the arrangement.
        output_dir: where ``window_kinds.json`` (the cache) and ``window_kinds.png`` go; ``None``: nothing written.
        settings: overrides of :data:`WINDOW_SETTINGS`.
        device: e.g. ``"cpu"`` or ``"cuda"`` (default: where the model loads).
        progress: tqdm bars.
        allow_below_reference: allow fewer than 21 lags or 100 sequences (for tests on tiny texts only).
        arrangement: ``{layer: permutation}`` of an arrangement of this baseline already made (e.g. the claims run's
            ``arranged_baseline``: ``ArrangementReport.permutations()``), which saves arranging again (about 300 CPU
            s on the claims model); default: :func:`hf_topo.arrange_units` here (TopoLoss objective, seeded).

    Returns:
        ``{"settings", "models": {name: window_kind_summary(...) | {"cost": ...}}, "arranged_topoloss": {before,
        after}, "figure", "wall_time_s"}`` — see :func:`~hf_topo.analysis.temporal.kinds.window_kind_summary` for
        a model's entry; ``trend`` in it is the first-to-middle-layer test of the paper's statement.
    """
    settings = WINDOW_SETTINGS | dict(settings or {})
    unknown = sorted(set(settings) - set(WINDOW_SETTINGS))
    if unknown:
        raise InputError(f"Unknown window settings {unknown}; known: {sorted(WINDOW_SETTINGS)}.")
    if not allow_below_reference:
        _check_settings(settings)
    recipe = {"baseline": os.path.abspath(baseline_dir), "toponet": os.path.abspath(toponet_dir),
              "text_file": os.path.abspath(text_file), "seed": seed, "settings": settings,
              "arrangement": None if arrangement is None else hashlib.sha256(
                  json.dumps({k: [int(i) for i in v] for k, v in sorted(arrangement.items())}).encode()
              ).hexdigest()}  # fmt: skip
    cache = os.path.join(output_dir, "window_kinds.json") if output_dir else None
    if cache and os.path.isfile(cache):
        with open(cache) as f:
            saved = json.load(f)
        if saved.get("recipe") == json_safe(recipe):
            logger.info("Reusing the window kinds of seed %d from %s", seed, cache)
            return saved
        logger.warning("%s was measured with other settings: measuring again", cache)
    start = time.perf_counter()
    passages = load_passages(text_file, min_words=settings["sequence_words"], max_passages=None)
    measured, results, arranged_source = {}, {}, None
    for name, path in (("baseline", baseline_dir), ("toponet", toponet_dir)):
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        if device:
            model.to(device)
        if name == "baseline" and arrangement is None:
            arranged_source = copy.deepcopy(model).cpu()
        measured[name] = _measure(model, tokenizer, passages, settings, seed, progress)
        del model
    if arrangement is None:
        report = arrange_units(arranged_source, objective="topoloss", seed=seed, progress=progress)
        permutations = {name: layer.permutation for name, layer in report.layers.items()}
        topoloss = {"before": report.mean_before, "after": report.mean_after}
    else:
        permutations = {name: torch.as_tensor(perm, dtype=torch.long) for name, perm in arrangement.items()}
        topoloss = {"given": True}
    del arranged_source
    missing = sorted(set(measured["baseline"][0].layers) - set(permutations))
    if missing:
        raise ValueError(f"The arrangement moved no units of {missing}: the measured layers and the sheets differ.")
    fits, yoking, _ = measured["baseline"]
    measured["arranged_baseline"] = (permute_window_fits(fits, permutations), permute_yoking(yoking, permutations),
                                     {"permuted_from": "baseline"})  # fmt: skip
    for name in WINDOW_MODELS:
        fits, yoking, cost = measured[name]
        summary = window_kind_summary(fits, yoking, n_shuffles=settings["patch_shuffles"], seed=seed)
        results[name] = summary | {"cost": cost}
    result = {
        "recipe": recipe,
        "settings": settings,
        "models": results,
        "arranged_topoloss": topoloss,
        "wall_time_s": time.perf_counter() - start,
        "figure": None,
    }
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        result["figure"] = plot_window_kinds(
            {name: measured[name][:2] for name in WINDOW_MODELS}, results, os.path.join(output_dir, "window_kinds.png")
        )
    result = json_safe(result)
    if cache:
        with open(cache, "w") as f:
            json.dump(result, f, indent=2)
    return result


#: Colours of the paper's kinds (Fig. 5B: power law red, exponential green), "neither" grey.
KIND_COLOURS = {"exponential": "tab:green", "power_law": "tab:red", "neither": "0.6"}


def plot_window_kinds(measured: Mapping[str, tuple], summaries: Mapping[str, dict], path: str | os.PathLike) -> str:
    """Fig. 5B / Fig. 8's counterpart: per model a row of the shares of the paper's kinds per layer (stacked bars),
    each layer's kind map on its sheet, and each layer's sentence-yoked map.

    Args:
        measured: ``{model: (WindowFits, StructureYoking | None)}``.
        summaries: ``{model: window_kind_summary(...)}`` (for the bar heights and titles).
    """
    from matplotlib.colors import ListedColormap

    plt = pyplot()
    names = list(measured)
    n_layers = max(len(fits.layers) for fits, _ in measured.values())
    columns = 1 + n_layers
    fig, axes = plt.subplots(2 * len(names), columns, figsize=(2.1 * columns + 1.5, 4.2 * len(names)), squeeze=False)
    colours = ListedColormap([KIND_COLOURS[k] for k in PAPER_KINDS])
    for row, name in enumerate(names):
        fits, yoking = measured[name]
        summary = summaries[name]
        ax = axes[2 * row, 0]
        bottom = [0.0] * len(fits.layers)
        for kind in PAPER_KINDS:
            heights = [entry["shares"]["paper"][kind] for entry in summary["layers"].values()]
            ax.bar(range(len(heights)), heights, bottom=bottom, color=KIND_COLOURS[kind], label=kind)
            bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
        ax.set(title=f"{name}: kinds per layer", xlabel="layer", ylabel="share of units", ylim=(0, 1))
        ax.legend(fontsize=6, loc="lower right")
        axes[2 * row + 1, 0].axis("off")
        trend = summary["trend"]
        axes[2 * row + 1, 0].text(
            0.0, 0.5, f"exponential {trend['exponential_first']:.2f} → {trend['exponential_middle']:.2f}\n"
            f"power law {trend['power_law_first']:.2f} → {trend['power_law_middle']:.2f}\n(first → middle layers)",
            fontsize=7, va="center",
        )  # fmt: skip
        for column, (layer, fit) in enumerate(fits.layers.items(), start=1):
            kind_map = paper_kind_index(fit.kind).reshape(fit.sheet).numpy()
            ax = axes[2 * row, column]
            ax.imshow(kind_map, cmap=colours, vmin=-0.5, vmax=len(PAPER_KINDS) - 0.5, interpolation="nearest")
            moran = summary["layers"][layer]["clustering"]["morans_i"]
            ax.set_title(f"{_short(layer)} kinds\nI exp "
                         f"{_fmt(moran['exponential'])}, pow {_fmt(moran['power_law'])}", fontsize=7)  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            ax = axes[2 * row + 1, column]
            if yoking is not None and layer in yoking.index:
                index = yoking.index[layer].reshape(fit.sheet)
                finite = index[torch.isfinite(index)]
                scale = float(finite.abs().quantile(0.95)) if finite.numel() else 1.0
                ax.imshow(index.numpy(), cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest")
                ax.set_title(f"yoked, I {_fmt(yoking.morans.get(layer))}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        for column in range(1 + len(fits.layers), columns):
            axes[2 * row, column].axis("off")
            axes[2 * row + 1, column].axis("off")
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def _short(layer: str) -> str:
    parts = layer.split(".")
    return ".".join(parts[-4:-2]) if len(parts) >= 4 else layer


def _fmt(value) -> str:
    return "–" if value is None or value != value else f"{value:.2f}"


def _mean(values) -> float | None:
    finite = [v for v in values if v is not None and v == v]
    return sum(finite) / len(finite) if finite else None


def window_kind_measures(result: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """The claims' per-model measures from one seed's :func:`window_kinds_for_seed` result:
    ``{model: {measure: value}}`` for the models of :data:`WINDOW_MODELS`, merged into a seed's measures by the
    claims run.

    * ``temporal_exponential_change``, ``temporal_power_law_change``: the paper-kind share of the middle layers minus
      that of the first layer (Fig. 5B: < 0 and > 0);
    * ``temporal_neither_share``: the "third cluster"'s share, mean over layers;
    * ``temporal_kind_morans_i``: Moran's I of the kinds' indicator maps, mean over layers and kinds present;
    * ``temporal_kind_patch_ratio``: same-kind patch size over that of the shuffled map, mean over layers and kinds;
    * ``temporal_c_morans_i``, ``temporal_reach_morans_i``, ``temporal_yoking_morans_i``: Moran's I of the ``c``,
      reach and sentence-yoked maps, mean over layers.
    """
    measures = {}
    for name, summary in result["models"].items():
        layers = list(summary["layers"].values())
        measures[name] = {
            "temporal_exponential_change": summary["trend"]["exponential_change"],
            "temporal_power_law_change": summary["trend"]["power_law_change"],
            "temporal_neither_share": _mean(layer["shares"]["paper"]["neither"] for layer in layers),
            "temporal_kind_morans_i": _mean(
                value for layer in layers for value in layer["clustering"]["morans_i"].values()
            ),
            "temporal_kind_patch_ratio": _mean(
                patch["patch_size_ratio"] for layer in layers for patch in layer["clustering"]["patches"].values()
            ),
            "temporal_c_morans_i": _mean(layer["coefficient_morans_i"].get("c") for layer in layers),
            "temporal_reach_morans_i": _mean(layer["coefficient_morans_i"].get("reach") for layer in layers),
            "temporal_yoking_morans_i": _mean((layer.get("yoking") or {}).get("morans_i") for layer in layers),
        }
    return measures
