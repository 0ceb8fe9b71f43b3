"""All analyses of a model in one call, and the report (``report.json`` + figures) of a TopoNet and its baseline.

:func:`analyze_model` measures one model on its topographic layers; :func:`write_report` puts a model and
(optionally) its baseline side by side in ``report.json`` and PNG figures. ``hf-topo analyze``
(:func:`hf_topo.analysis.run.analyze_saved_models`) runs them on saved models.

A causal LM is analysed on text (``analyze_model(model, tokenizer, text)``), an image classifier on labelled images
(``analyze_model(model, images=ImageBatch(pixel_values, labels))``): the same measures on the unit responses (a
token's activation; an image's response of a convolution's output channel, averaged over space, see
:mod:`~hf_topo.analysis.image_activations`), the same sweeps scored by perplexity or by top-1 accuracy, the same
:class:`ModelAnalysis`, report and :class:`~hf_topo.analysis.summary.AnalysisSummary`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import TopoConfig
from ..evaluation import TokenBatch, evaluate_perplexity
from ..targets import TopoLayer
from .activations import (
    collect_activations,
    has_own_weight,
    is_output_weight_sheet,
    token_positions,
    topographic_layers,
)
from .dimensionality import EXCLUDED_POSITIONS, EffectiveDimensionality, effective_dimensionalities
from .image_activations import collect_image_activations
from .image_inputs import ImageBatch, as_image_batch, evaluate_accuracy
from .maps import as_sheet_map, mean_activation_map, weight_pc1_map
from .perturbation import (
    INPUT_PERTURBATIONS,
    PRUNING_SCOPES,
    SweepResult,
    downsampling_sweep,
    input_perturbation_sweep,
    noise_sweep,
    pruning_sweep,
)
from .selectivity import selectivity_maps
from .smoothness import SmoothnessResult, smoothness, weight_smoothness
from .spatial import MoranTest, mean_morans_i, morans_i, morans_i_permutation_test
from .summary import AnalysisSummary, SweepSummary
from .temporal import (
    WINDOW_KINDS,
    IntegrationWindows,
    NotEnoughTextError,
    StructureYoking,
    WindowFits,
    fit_integration_windows,
    measure_integration_windows,
    measure_structure_yoking,
    plot_window_maps,
    plot_window_summary,
)

__all__ = ["AnalysisSettings", "ModelAnalysis", "analyze_model", "json_safe", "write_report", "FIGURES", "SWEEPS"]

logger = logging.getLogger(__name__)

#: The perturbation sweeps :func:`analyze_model` can run.
SWEEPS = ("pruning", "noise", "downsampling", "substitution", "deletion")

#: File names of the figures :func:`write_report` writes (those whose data exist).
FIGURES = {
    "sheet_maps": "sheet_maps.png",
    "selectivity": "selectivity.png",
    "smoothness_curve": "smoothness_curve.png",
    "pruning": "pruning.png",
    "noise": "noise.png",
    "downsampling": "downsampling.png",
    "substitution": "input_substitution.png",
    "deletion": "input_deletion.png",
}


@dataclass
class AnalysisSettings:
    """What the analyses measure and how much text they use.

    Activations:
        max_tokens (`int`, defaults to `8192`): activation samples (tokens) per layer for smoothness, effective
            dimensionality and Moran's I (the paper uses 8192 samples for dimensionality). An image classifier's
            samples are the images it is given, all of them (one response per image and unit).
        batch_size (`int`, defaults to `8`): sequences (or images) per forward pass.
    Smoothness:
        n_bins (`int`, defaults to `20`), max_pairs (`int`, optional, defaults to every pair; else a stratified
            sample with ≥ 500 pairs per bin), min_pairs_per_bin (`int`, defaults to `20`), near_distance (`float`,
            defaults to `2.0`; the robust score's near group): see
            :func:`~hf_topo.analysis.smoothness.correlation_vs_distance`.
        smoothness_bootstrap (`int`, defaults to `200`): bootstrap replicates of both activation smoothness scores,
            resampling whole blocks of text (`0`: no interval).
        smoothness_shuffles (`int`, defaults to `10`): the shuffle control: units permuted over the sheet (`0`: none).
    Effective dimensionality:
        exclude_positions (`int`, defaults to `4`): the `late_positions` variant leaves out the first this many
            tokens of every block (see :mod:`hf_topo.analysis.dimensionality`).
    Moran's I:
        morans_permutations (`int`, defaults to `199`): permutations of the seeded permutation test of each layer's
            mean Moran's I (:func:`~hf_topo.analysis.spatial.morans_i_permutation_test`); `0` skips the test.
        morans_test_maps (`int`, defaults to `256`): activation maps (the first tokens) the test uses; the
            reported Moran's I itself uses every sample.
    Sweeps:
        sweeps (`list[str]`, defaults to all of `pruning, noise, downsampling, substitution, deletion`): which
            sweeps run (an empty grid also skips a sweep).
        eval_blocks (`int`, defaults to `32`): blocks of text on which every perplexity is measured (an image
            classifier's accuracy is measured on all its images).
        pruning_fractions (`list[float]`, defaults to `0, 0.1, …, 0.9`), pruning_scope (`str`, defaults to
            `"topographic"`; or `"all_linear"`), pruning_granularity (`str`, defaults to `"layer"`; or `"global"`).
        noise_sigmas (`list[float]`, defaults to `0, 0.1, 0.2, 0.3, 0.5, 0.75, 1`), noise_repeats (`int`, defaults
            to `1`): Gaussian weight noise relative to each weight tensor's std, on the topographic layers.
        downsampling_factors (`list[float]`, defaults to `1, 2, 3, 4`): φ of a φ × φ downsampling of the sheets
            (factors larger than a sheet side are skipped).
        input_rates (`list[float]`, defaults to `0, 0.05, 0.1, 0.2, 0.3`), input_repeats (`int`, defaults to `1`):
            rates of the input perturbations (random token substitution scored on the clean text, token deletion),
            see :func:`~hf_topo.analysis.perturbation.input_perturbation_sweep` (language models only).
    Temporal integration windows (:mod:`hf_topo.analysis.temporal`, off by default: it costs
    ``1 + (temporal_sequence_words − 2)`` forward passes per sequence, and the structure yoking
    ``1 + 5 · temporal_sentence_words`` per sequence):
        temporal_windows (`bool`, defaults to `False`): measure and fit every unit's window by word swaps, and its
            structure-yoking index.
        temporal_max_delta (`int`, defaults to `20`): the longest distance Δ in words (the reference: 20).
        temporal_sequence_words (`int`, defaults to `40`): words per measured sequence (the reference: 40).
        temporal_max_sequences (`int`, defaults to `100`): sequences measured for the windows.
        temporal_yoking (`bool`, defaults to `True`): with the windows, also measure the structure-yoking index
            (sequences of 5 sentences of ``temporal_sentence_words`` words). Either measurement is skipped with a
            warning (and ``report.json`` says why) when the text holds too few usable sequences or sentences.
        temporal_sentence_words (`int`, defaults to `12`): words per sentence of the yoking sequences (the
            reference: 12).
        temporal_yoking_sequences (`int`, defaults to `100`): sequences measured for the yoking (the reference: 250).
        temporal_single_token_words (`bool`, defaults to `True`): yoking sentences only of single-token words (the
            reference's choice; a small-vocabulary tokenizer may leave none, then set it to `False`).
    Other:
        seed (`int`, defaults to `0`): unit-pair subsampling, weight noise, input perturbations and word swaps.
    """

    max_tokens: int = field(default=8192, metadata={"help": "Activation samples (tokens) per layer."})
    batch_size: int = field(default=8, metadata={"help": "Sequences per forward pass."})
    n_bins: int = field(default=20, metadata={"help": "Distance bins of the correlation-vs-distance curve."})
    max_pairs: int | None = field(
        default=None, metadata={"help": "Unit pairs per layer for smoothness (stratified sample; default: all pairs)."}
    )
    min_pairs_per_bin: int = field(default=20, metadata={"help": "Bins with fewer pairs do not count in the score."})
    near_distance: float = field(
        default=2.0, metadata={"help": "Robust smoothness: the near group is the pairs at most this far apart."}
    )
    smoothness_bootstrap: int = field(default=200, metadata={"help": "Bootstrap replicates of smoothness (0: none)."})
    smoothness_shuffles: int = field(default=10, metadata={"help": "Shuffle-control layouts of smoothness (0: none)."})
    exclude_positions: int = field(
        default=EXCLUDED_POSITIONS,
        metadata={
            "help": "Effective dimensionality's late_positions variant leaves out these first tokens per block."
        },
    )
    morans_permutations: int = field(
        default=199, metadata={"help": "Permutations of the Moran's I permutation test (0 skips it)."}
    )
    morans_test_maps: int = field(default=256, metadata={"help": "Activation maps used by the Moran's I test."})
    eval_blocks: int = field(default=32, metadata={"help": "Blocks of text on which each perplexity is measured."})
    pruning_fractions: list[float] = field(
        default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
        metadata={"help": "Fractions of weights zeroed by L1 unstructured pruning."},
    )
    pruning_scope: str = field(
        default="topographic", metadata={"help": f"Weights pruned: one of {', '.join(PRUNING_SCOPES)}."}
    )
    pruning_granularity: str = field(
        default="layer", metadata={"help": "'layer' (each tensor pruned by the fraction) or 'global'."}
    )
    noise_sigmas: list[float] = field(
        default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0],
        metadata={"help": "Weight-noise σ relative to each weight tensor's std."},
    )
    noise_repeats: int = field(default=1, metadata={"help": "Noise draws averaged per σ."})
    downsampling_factors: list[float] = field(
        default_factory=lambda: [1.0, 2.0, 3.0, 4.0],
        metadata={"help": "φ of the φ×φ sheet downsampling sweep."},
    )
    downsampling_paper: bool = field(
        default=True,
        metadata={
            "help": "Next to the downsampling sweep with per-unit gains, sweep the paper's layer (no gains) too "
            "(report key 'downsampling_paper')."
        },
    )
    input_rates: list[float] = field(
        default_factory=lambda: [0.0, 0.05, 0.1, 0.2, 0.3],
        metadata={"help": "Rates of random token substitution and of token deletion (input robustness)."},
    )
    input_repeats: int = field(default=1, metadata={"help": "Input-perturbation draws averaged per rate."})
    sweeps: list[str] = field(
        default_factory=lambda: list(SWEEPS),
        metadata={"help": f"Which perturbation sweeps to run, among {', '.join(SWEEPS)}."},
    )
    temporal_windows: bool = field(
        default=False, metadata={"help": "Measure and fit temporal integration windows (word swaps)."}
    )
    temporal_max_delta: int = field(default=20, metadata={"help": "Longest word distance Δ of the windows."})
    temporal_sequence_words: int = field(default=40, metadata={"help": "Words per sequence for the windows."})
    temporal_max_sequences: int = field(default=100, metadata={"help": "Sequences measured for the windows."})
    temporal_yoking: bool = field(
        default=True, metadata={"help": "With --temporal_windows, also measure the structure-yoking index."}
    )
    temporal_sentence_words: int = field(default=12, metadata={"help": "Words per sentence for the yoking."})
    temporal_yoking_sequences: int = field(default=100, metadata={"help": "Sequences measured for the yoking."})
    temporal_single_token_words: bool = field(
        default=True, metadata={"help": "Yoking sentences of single-token words only (the reference's choice)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of pair sampling, noise, perturbations and word swaps."})

    def __post_init__(self):
        for name in (
            "max_tokens", "batch_size", "eval_blocks", "noise_repeats", "input_repeats",
            "temporal_max_delta", "temporal_max_sequences", "temporal_sequence_words", "temporal_sentence_words",
            "temporal_yoking_sequences", "morans_test_maps",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1.")
        if self.max_pairs is not None and self.max_pairs < 1:
            raise ValueError(f"max_pairs={self.max_pairs} must be at least 1, or None for every pair.")
        for name in ("smoothness_bootstrap", "smoothness_shuffles", "exclude_positions"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be 0 or more.")
        if self.morans_permutations < 0:
            raise ValueError(f"morans_permutations={self.morans_permutations} must be 0 (no test) or more.")
        if self.near_distance < 1:
            raise ValueError(f"near_distance={self.near_distance} must be at least 1 (adjacent units).")
        if self.pruning_scope not in PRUNING_SCOPES:
            raise ValueError(f"pruning_scope={self.pruning_scope!r} must be one of {PRUNING_SCOPES}.")
        unknown = sorted(set(self.sweeps) - set(SWEEPS))
        if unknown:
            raise ValueError(f"Unknown sweeps {unknown}; choose among {SWEEPS}.")
        if self.pruning_granularity not in ("layer", "global"):
            raise ValueError(f"pruning_granularity={self.pruning_granularity!r} must be 'layer' or 'global'.")


@dataclass
class ModelAnalysis:
    """Everything measured on one model. ``maps`` and ``selectivity`` hold ``(height, width)`` tensors per layer
    (for the figures); the scalars, curves and sweeps go to ``report.json`` through :meth:`to_dict`. A language
    model has ``perplexity`` (and ``accuracy`` ``None``), an image classifier top-1 ``accuracy`` on its analysis
    images (and ``perplexity`` ``None``); ``n_activation_samples`` counts tokens or images.

    Measures that do not apply to a layer's sheet are left out and said why in ``skipped``
    (``{measure or "measure:layer": reason}``): the weight measures on activation sheets (no weight of their own), the
    weight sweeps on sheets that are not a Linear/Conv1D layer's output units, the temporal windows on input sheets.
    """

    label: str
    layers: list[TopoLayer]
    perplexity: float | None
    n_activation_samples: int
    smoothness: dict[str, SmoothnessResult]
    weight_smoothness: dict[str, SmoothnessResult]
    effective_dimensionality: dict[str, float]
    morans_i: dict[str, float]
    maps: dict[str, dict[str, torch.Tensor]]
    selectivity: dict[str, torch.Tensor] | None = None
    sweeps: dict[str, SweepResult] = field(default_factory=dict)
    blimp: float | None = None
    temporal: WindowFits | None = None
    temporal_windows: IntegrationWindows | None = None
    temporal_yoking: StructureYoking | None = None
    temporal_yoking_skipped: str | None = None
    temporal_skipped: str | None = None
    morans_tests: dict[str, MoranTest] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    accuracy: float | None = None
    dimensionality_variants: dict[str, EffectiveDimensionality] = field(default_factory=dict)

    def analysis_summary(self) -> AnalysisSummary:
        """The typed summary: the layer means of every measure, the perplexity and the points of each sweep."""
        mean = lambda values: float(sum(values) / len(values)) if values else math.nan  # noqa: E731
        summary = AnalysisSummary(
            smoothness=mean([r.score for r in self.smoothness.values()]),
            weight_smoothness=mean([r.score for r in self.weight_smoothness.values()]),
            effective_dimensionality=mean(list(self.effective_dimensionality.values())),
            morans_i=mean(list(self.morans_i.values())),
            robust_smoothness=mean([r.robust_score for r in self.smoothness.values()]),
            weight_robust_smoothness=mean([r.robust_score for r in self.weight_smoothness.values()]),
            morans_i_p_value=max(t.p_value for t in self.morans_tests.values()) if self.morans_tests else None,
            perplexity=self.perplexity,
            accuracy=self.accuracy,
            n_topographic_layers=len(self.layers),
            n_activation_samples=self.n_activation_samples,
            blimp=self.blimp,
            sweeps={kind: SweepSummary.from_sweep(sweep) for kind, sweep in self.sweeps.items()},
        )
        shuffles = [r for r in self.smoothness.values() if r.shuffle_score is not None]
        if shuffles:
            summary.smoothness_shuffle = mean([r.shuffle_score for r in shuffles])
            summary.robust_smoothness_shuffle = mean([r.shuffle_robust_score for r in shuffles])
        if self.dimensionality_variants:
            variants = self.dimensionality_variants.values()
            summary.effective_dimensionality_zscored = mean([v.correlation for v in variants])
            late = [v.late_positions for v in variants if v.late_positions is not None]
            summary.effective_dimensionality_late_positions = mean(late) if late else None
        if self.selectivity is not None:
            t_maps = torch.stack(list(self.selectivity.values()))
            finite = t_maps[t_maps.isfinite()]
            summary.selectivity_morans_i = float(morans_i(t_maps).nanmean())
            summary.selectivity_fraction_abs_t_above_2 = float((finite.abs() > 2).double().mean())
        if self.temporal is not None:
            summary.temporal_fractions = {
                kind: mean([f.fractions()[kind] for f in self.temporal.layers.values()]) for kind in WINDOW_KINDS
            }
            for key in ("reach", "c"):
                values = [m[key] for m in self.temporal.morans.values() if math.isfinite(m.get(key, math.nan))]
                setattr(summary, f"temporal_{key}_morans_i", mean(values) if values else math.nan)
        if self.temporal_yoking is not None:
            values = [m for m in self.temporal_yoking.morans.values() if math.isfinite(m)]
            summary.temporal_yoking_morans_i = mean(values) if values else math.nan
            medians = [float(index.nanmedian()) for index in self.temporal_yoking.index.values()]
            finite = [m for m in medians if math.isfinite(m)]
            summary.temporal_yoking_index = mean(finite) if finite else math.nan
        return summary

    def summary(self) -> dict[str, float | int]:
        """Flat scalar metrics (``report.json``'s ``"summary"``), derived from :meth:`analysis_summary`."""
        return self.analysis_summary().flat()

    def to_dict(self) -> dict:
        per_layer = {
            layer.name: {
                "sheet": layer.sheet.to_dict(),
                "smoothness": self.smoothness[layer.name].score,
                "weight_smoothness": _score(self.weight_smoothness.get(layer.name)),
                "effective_dimensionality": self.effective_dimensionality[layer.name],
                "morans_i": self.morans_i[layer.name],
                "robust_smoothness": self.smoothness[layer.name].robust_score,
                "weight_robust_smoothness": _score(self.weight_smoothness.get(layer.name), robust=True),
                "morans_i_test": self.morans_tests[layer.name].to_dict() if layer.name in self.morans_tests else None,
                **_floors(self.smoothness[layer.name], self.dimensionality_variants.get(layer.name)),
            }
            for layer in self.layers
        }
        return {
            "label": self.label,
            "summary": self.summary(),
            "analysis_summary": self.analysis_summary().to_dict(),
            "layers": per_layer,
            "curves": {
                "smoothness": {name: r.to_dict() for name, r in self.smoothness.items()},
                "weight_smoothness": {name: r.to_dict() for name, r in self.weight_smoothness.items()},
            },
            "sweeps": {kind: sweep.to_dict() for kind, sweep in self.sweeps.items()},
            "temporal_windows": self._temporal_dict(),
            "skipped": dict(self.skipped),
        }

    def _temporal_dict(self) -> dict | None:
        if self.temporal is None:
            return {"skipped": self.temporal_skipped} if self.temporal_skipped else None
        if self.temporal_yoking is not None:
            yoking = self.temporal_yoking.to_dict()
        else:
            yoking = {"skipped": self.temporal_yoking_skipped} if self.temporal_yoking_skipped else None
        return {
            "windows": self.temporal_windows.to_dict(),
            "fits": self.temporal.to_dict(),
            "structure_yoking": yoking,
        }


def _floors(result: SmoothnessResult, dimensionality: EffectiveDimensionality | None) -> dict:
    """A layer's smoothness intervals and shuffle controls, and its effective dimensionality variants."""
    return {
        "smoothness_interval": result.score_interval,
        "robust_smoothness_interval": result.robust_score_interval,
        "smoothness_shuffle": result.shuffle_score,
        "robust_smoothness_shuffle": result.shuffle_robust_score,
        "effective_dimensionality_variants": dimensionality.to_dict() if dimensionality is not None else None,
    }


def _score(result: SmoothnessResult | None, robust: bool = False) -> float | None:
    if result is None:
        return None
    return result.robust_score if robust else result.score


#: Why a measure is left out on a sheet (``ModelAnalysis.skipped``).
NO_OWN_WEIGHT = (
    "an activation sheet (a module's output or the hidden states entering it) has no weight of its own: the weight "
    "measures apply to Linear/Conv1D sheets only"
)
NOT_OUTPUT_WEIGHT_SHEET = (
    "the sweep prunes, perturbs or resamples the output units of a Linear/Conv1D layer's weight; the analysed sheets "
    "are activation or input sheets"
)
TEXT_ONLY = "a language-model measure (it perturbs or reads text); the model was analysed on images"


def _image_responses(model, images: ImageBatch, layers, settings: AnalysisSettings, progress: bool):
    """An image classifier's side of :func:`analyze_model`: one response per image and unit (a convolution's output
    channel averaged over space, a ViT feature over tokens) and the top-1 accuracy on ``images``."""
    activations = collect_image_activations(model, images.pixel_values, layers, settings.batch_size, progress)
    accuracy = evaluate_accuracy(model, images, settings.batch_size, progress=progress)
    return activations, accuracy


def analyze_model(
    model: nn.Module,
    tokenizer=None,
    text: TokenBatch | None = None,
    settings: AnalysisSettings | None = None,
    label: str = "model",
    topography: TopoConfig | None = None,
    layer_names: Sequence[str] | None = None,
    stimuli: tuple[Sequence[str], Sequence[str]] | None = None,
    blimp_data=None,
    passages: Sequence[str] | None = None,
    progress: bool = True,
    images: ImageBatch | tuple | dict | None = None,
) -> ModelAnalysis:
    """Measure a model on its topographic layers: a causal LM on ``text``, or an image classifier on ``images``.

    Args:
        model, tokenizer: a causal LM and its tokenizer, or an image classifier (called as
            ``model(pixel_values=...)``; no tokenizer).
        text: packed blocks of text (:func:`~hf_topo.evaluation.load_text_blocks`): activations are taken from
            its first ``settings.max_tokens`` tokens, perplexities on its first ``settings.eval_blocks`` blocks.
        images: for an image classifier instead of ``text``: an
            :class:`~hf_topo.analysis.image_inputs.ImageBatch` (``pixel_values`` ``(n, 3, H, W)`` normalised as the
            model expects, ``labels`` ``(n,)`` its class indices), a ``(pixel_values, labels)`` pair, a dict of both
            or a processed dataset of such rows (:func:`~hf_topo.analysis.image_inputs.as_image_batch`;
            :func:`hf_topo.vision.analyze.load_analysis_images` reads a class-subfolder folder). Every
            image gives one response per unit (a Conv2d output channel's spatial mean, a ViT feature's token
            mean) for smoothness, effective dimensionality and Moran's I (one sheet map per image), and the
            pruning, noise and downsampling sweeps are scored by top-1 accuracy on all of them (``perplexity`` is
            ``None``, ``accuracy`` set). The token perturbations, BLiMP, text stimuli and temporal windows are
            language-only (an image analysis records them in ``skipped`` when asked for).
        topography: whose layers and sheets to analyse (default: the model's own, see
            :func:`~hf_topo.analysis.activations.topographic_layers`); pass the TopoNet's for its baseline.
        layer_names: a subset of the topographic layers.
        stimuli: two lists of texts for the selectivity maps (set a over set b).
        blimp_data: BLiMP paradigms (:func:`hf_topo.blimp.load_blimp`) for BLiMP in the pruning sweep.
        passages: running text (:func:`~hf_topo.analysis.inputs.load_passages`) for the temporal integration
            windows, needed when ``settings.temporal_windows``.

    The activation measures (smoothness, effective dimensionality, Moran's I, mean-activation and selectivity maps)
    run on every sheet: a Linear/Conv1D output sheet, an input sheet (the features entering the layer) or an
    activation sheet (TopoLM's: a module's output or the residual stream entering it). The weight measures run on the
    sheets with weights of their own; the pruning, noise and downsampling sweeps on the Linear/Conv1D output sheets;
    what is left out is in ``ModelAnalysis.skipped`` with the reason (a topography record holds one kind of sheet,
    so a measure applies to all of its layers or to none).
    """
    settings = settings or AnalysisSettings()
    if (text is None) == (images is None):
        raise ValueError(
            "Give exactly one input: text= (token blocks, for a causal LM) or images= (pixel_values and labels, for "
            "an image classifier)."
        )
    if images is not None:
        images = as_image_batch(images)
        for name, given in (("tokenizer", tokenizer), ("stimuli", stimuli), ("blimp_data", blimp_data)):
            if given is not None:
                raise ValueError(f"{name} applies to language models; an image classifier is analysed on images only.")
    if settings.temporal_windows and images is None and not passages:
        raise ValueError(
            "temporal_windows needs passages of running text: analyze_model(..., passages=load_passages(...))."
        )
    layers = topographic_layers(model, topography, layer_names)
    logger.info("Analysing %s: %d topographic layer(s)", label, len(layers))
    score = None
    if images is not None:
        activations, score = _image_responses(model, images, layers, settings, progress)
    else:
        activations = collect_activations(
            model, text, layers, settings.batch_size, settings.max_tokens, progress=progress
        )
    n_samples = next(iter(activations.values())).shape[0]
    if images is None and n_samples < settings.max_tokens:
        logger.warning("Only %d activation samples (max_tokens=%d): give more text", n_samples, settings.max_tokens)
    curve_kwargs = dict(
        n_bins=settings.n_bins,
        max_pairs=settings.max_pairs,
        min_pairs_per_bin=settings.min_pairs_per_bin,
        seed=settings.seed,
        near_distance=settings.near_distance,
        n_bootstrap=settings.smoothness_bootstrap,
        n_shuffles=settings.smoothness_shuffles,
    )
    # the bootstrap resamples blocks of text (tokens of a block are not independent); ED's variant drops first tokens.
    # Images are independent samples: the bootstrap resamples them, and there are no positions to drop.
    positions, blocks = (None, None) if images is not None else token_positions(text, n_samples)
    smooth, weight_smooth, dims, dim_variants, moran, moran_tests = {}, {}, {}, {}, {}, {}
    skipped: dict[str, str] = {}
    maps: dict[str, dict[str, torch.Tensor]] = {"mean activation": {}, "weight PC1": {}}
    for layer in layers:
        acts = activations[layer.name]
        smooth[layer.name] = smoothness(acts, layer.sheet, groups=blocks, **curve_kwargs)
        if has_own_weight(layer):
            weight_smooth[layer.name] = weight_smoothness(layer, **curve_kwargs)
            maps["weight PC1"][layer.name] = weight_pc1_map(layer)
        else:
            skipped[f"weight_smoothness:{layer.name}"] = NO_OWN_WEIGHT
            skipped[f"weight_pc1_map:{layer.name}"] = NO_OWN_WEIGHT
        dim_variants[layer.name] = effective_dimensionalities(acts, positions, settings.exclude_positions)
        dims[layer.name] = dim_variants[layer.name].covariance
        moran[layer.name] = mean_morans_i(acts, layer.sheet)
        if settings.morans_permutations:
            moran_tests[layer.name] = morans_i_permutation_test(
                as_sheet_map(acts[: settings.morans_test_maps], layer.sheet),
                n_permutations=settings.morans_permutations,
                seed=settings.seed,
            )
        maps["mean activation"][layer.name] = mean_activation_map(acts, layer.sheet)
    if not weight_smooth:
        del maps["weight PC1"]
    del activations
    # A record holds one kind of sheet: the weight sweeps run on Linear/Conv1D output sheets, or not at all.
    weight_layers = layers if all(is_output_weight_sheet(layer) for layer in layers) else []

    selectivity = None
    if stimuli is not None:
        selectivity = selectivity_maps(
            model, tokenizer, stimuli[0], stimuli[1], layers, settings.batch_size, progress=progress
        )

    if images is None:
        eval_data = TokenBatch(text.input_ids[: settings.eval_blocks], None)
        score = evaluate_perplexity(model, eval_data, settings.batch_size, progress=progress)
    else:
        eval_data = images  # the weight sweeps score top-1 accuracy on the images
    common = dict(batch_size=settings.batch_size, progress=progress, reference_score=score)
    sweeps: dict[str, SweepResult] = {}
    for kind, wanted in (
        ("pruning", settings.pruning_fractions and settings.pruning_scope == "topographic"),
        ("noise", settings.noise_sigmas),
        ("downsampling", settings.downsampling_factors),
    ):
        if wanted and kind in settings.sweeps and not weight_layers:
            skipped[kind] = NOT_OUTPUT_WEIGHT_SHEET
            logger.warning("%s: %s sweep skipped: %s", label, kind, NOT_OUTPUT_WEIGHT_SHEET)
    pruning_ok = settings.pruning_scope != "topographic" or weight_layers
    if settings.pruning_fractions and "pruning" in settings.sweeps and pruning_ok:
        sweeps["pruning"] = pruning_sweep(
            model, eval_data, settings.pruning_fractions, weight_layers, settings.pruning_scope,
            settings.pruning_granularity, blimp_data, tokenizer, **common,
        )  # fmt: skip
    if settings.noise_sigmas and "noise" in settings.sweeps and weight_layers:
        sweeps["noise"] = noise_sweep(
            model, eval_data, settings.noise_sigmas, weight_layers, "topographic", settings.noise_repeats, settings.seed,
            **common,
        )  # fmt: skip
    if settings.downsampling_factors and "downsampling" in settings.sweeps and weight_layers:
        sweeps["downsampling"] = downsampling_sweep(
            model, eval_data, settings.downsampling_factors, weight_layers, **common
        )
        if settings.downsampling_paper:
            sweeps["downsampling_paper"] = downsampling_sweep(
                model, eval_data, settings.downsampling_factors, weight_layers, **common, gains=False
            )
    for kind in INPUT_PERTURBATIONS:
        if images is not None and settings.input_rates and kind in settings.sweeps:
            skipped[kind] = TEXT_ONLY
        elif settings.input_rates and kind in settings.sweeps:
            sweeps[kind] = input_perturbation_sweep(
                model, eval_data, kind, settings.input_rates, len(tokenizer) if tokenizer is not None else None,
                settings.input_repeats, settings.seed, **common,
            )  # fmt: skip
    blimp = sweeps["pruning"].reference_blimp if "pruning" in sweeps else None
    windows = fits = yoking = None
    temporal_skipped = yoking_skipped = None
    names = [layer.name for layer in layers]
    if settings.temporal_windows and images is not None:
        temporal_skipped = skipped["temporal_windows"] = TEXT_ONLY
    elif settings.temporal_windows and any(layer.sheet.units == "input" for layer in layers):
        # the windows are measured on module outputs; an input sheet's units are the tensor entering the module
        temporal_skipped = "the temporal windows read module outputs; input sheets hold the tensor entering a module"
        skipped["temporal_windows"] = temporal_skipped
        logger.warning("%s: temporal windows skipped: %s", label, temporal_skipped)
    elif settings.temporal_windows:  # last, after minutes of sweeps: too little text is a warning, not a lost run
        try:
            windows = measure_integration_windows(
                model, tokenizer, passages, names, max_delta=settings.temporal_max_delta,
                sequence_words=settings.temporal_sequence_words, max_sequences=settings.temporal_max_sequences,
                batch_size=settings.batch_size, seed=settings.seed, progress=progress,
            )  # fmt: skip
            fits = fit_integration_windows(windows)
        except NotEnoughTextError as err:
            temporal_skipped = str(err)
            logger.warning("%s: temporal windows skipped: %s", label, err)
        if settings.temporal_yoking and fits is not None:
            try:
                yoking = measure_structure_yoking(
                    model, tokenizer, passages, names, sentence_words=settings.temporal_sentence_words,
                    max_sequences=settings.temporal_yoking_sequences,
                    single_token_words=settings.temporal_single_token_words, batch_size=settings.batch_size,
                    seed=settings.seed, progress=progress,
                )  # fmt: skip
            except NotEnoughTextError as err:
                yoking_skipped = str(err)
                logger.warning("%s: structure yoking skipped: %s", label, err)
    return ModelAnalysis(
        label=label,
        layers=layers,
        perplexity=score if images is None else None,
        accuracy=score if images is not None else None,
        n_activation_samples=n_samples,
        smoothness=smooth,
        weight_smoothness=weight_smooth,
        effective_dimensionality=dims,
        morans_i=moran,
        maps=maps,
        selectivity=selectivity,
        sweeps=sweeps,
        blimp=blimp,
        temporal=fits,
        temporal_windows=windows,
        temporal_yoking=yoking,
        temporal_yoking_skipped=yoking_skipped,
        temporal_skipped=temporal_skipped,
        morans_tests=moran_tests,
        skipped=skipped,
        dimensionality_variants=dim_variants,
    )


def json_safe(value):
    """``value`` with every non-finite float (NaN, ±inf) replaced by ``None``, through dicts, lists and tuples: JSON
    that any parser reads (``json.dump`` would write the non-standard ``NaN``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _evenly_spaced(n: int, k: int) -> set[int]:
    if n <= k:
        return set(range(n))
    return {round(i * (n - 1) / (k - 1)) for i in range(k)}


def write_report(
    analysis: ModelAnalysis,
    output_dir: str | os.PathLike,
    baseline: ModelAnalysis | None = None,
    metadata: dict | None = None,
    max_map_rows: int = 6,
) -> dict:
    """Write ``report.json`` and the figures of ``analysis`` (and its ``baseline``) into ``output_dir``.

    ``report.json`` holds ``analysis_summary`` / ``baseline_analysis_summary`` (the typed
    :class:`~hf_topo.analysis.summary.AnalysisSummary` of the model and its baseline, which model cards and tables
    read), ``summary`` / ``baseline_summary`` (flat scalar metrics derived from them, kept for saved reports), ``model`` / ``baseline`` (per-layer results, correlation-vs-distance curves, sweeps),
    ``figures`` (file names relative to ``output_dir``) and ``metadata`` (whatever the caller passes: paths,
    settings). The map figures show at most ``max_map_rows`` layers (the first, the last and evenly spaced ones
    between); ``report.json`` has every layer. Returns the report.
    """
    from . import plots

    os.makedirs(output_dir, exist_ok=True)
    analyses = [analysis] + ([baseline] if baseline is not None else [])
    figures: dict[str, str] = {}

    def path(key: str) -> str:
        figures[key] = FIGURES[key]
        return os.path.join(output_dir, FIGURES[key])

    shown = _evenly_spaced(len(analysis.layers), max_map_rows)
    pick = lambda layer_maps: {name: m for i, (name, m) in enumerate(layer_maps.items()) if i in shown}  # noqa: E731
    plots.plot_sheet_maps(
        {a.label: {kind: pick(layer_maps) for kind, layer_maps in a.maps.items()} for a in analyses}, path("sheet_maps"),
        title="Topographic layers on their cortical sheets: mean activation and first principal component of the weights",
    )  # fmt: skip
    if all(a.selectivity is not None for a in analyses):
        plots.plot_sheet_maps(
            {a.label: {"selectivity t (a over b)": pick(a.selectivity)} for a in analyses}, path("selectivity"),
            title="Selectivity (Welch t, eq. 2 of the paper) of each unit for stimulus set a over set b", symmetric=True,
        )  # fmt: skip
    curves = {"activations": {a.label: a.smoothness for a in analyses}}
    weight_curves = {a.label: a.weight_smoothness for a in analyses if a.weight_smoothness}
    if weight_curves:  # activation sheets have none
        curves["weights"] = weight_curves
    plots.plot_smoothness_curves(curves, path("smoothness_curve"))
    for kind, title in (
        ("pruning", "L1 unstructured pruning"),
        ("noise", "Weight noise"),
        ("downsampling", "Downsampling"),
        ("substitution", "Input: random token substitution"),
        ("deletion", "Input: token deletion"),
    ):
        if kind in analysis.sweeps:
            shown = {a.label: a.sweeps[kind] for a in analyses if kind in a.sweeps}
            if kind == "downsampling":  # both variants in one figure: with per-unit gains, and the paper's layer
                shown = {f"{label} (gains)": sweep for label, sweep in shown.items()} | {
                    f"{a.label} (paper)": a.sweeps["downsampling_paper"]
                    for a in analyses
                    if "downsampling_paper" in a.sweeps
                }
            plots.plot_sweeps(shown, path(kind), title=title)
    for a in analyses:
        if a.temporal is None:
            continue
        slug = re.sub(r"[^\w.-]", "_", a.label)
        figures[f"temporal_summary_{slug}"] = f"temporal_summary_{slug}.png"
        plot_window_summary(
            a.temporal, os.path.join(output_dir, figures[f"temporal_summary_{slug}"]), yoking=a.temporal_yoking
        )
        map_paths = plot_window_maps(a.temporal, output_dir, prefix=f"temporal_maps_{slug}", yoking=a.temporal_yoking)
        for layer, map_path in zip(a.temporal.layers, map_paths, strict=True):
            figures[f"temporal_maps_{slug}_{layer}"] = os.path.basename(map_path)

    report = {
        "summary": analysis.summary(),
        "baseline_summary": baseline.summary() if baseline is not None else None,
        "analysis_summary": analysis.analysis_summary().to_dict(),
        "baseline_analysis_summary": baseline.analysis_summary().to_dict() if baseline is not None else None,
        "model": analysis.to_dict(),
        "baseline": baseline.to_dict() if baseline is not None else None,
        "figures": figures,
        "metadata": metadata or {},
    }
    report = json_safe(report)
    with open(os.path.join(output_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    logger.info("Report written to %s", os.path.join(output_dir, "report.json"))
    return report
