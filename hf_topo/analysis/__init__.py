"""Measuring TopoNets: the analyses of Deb, Deb & Murty (ICLR 2025, §2.3, §3.2–3.4, A.5, A.6) as a library.

========================  =====================================================================================
module                    what it measures
========================  =====================================================================================
``inputs``                running passages; stimulus files → padded batches (packed blocks of text and perplexity:
                          :mod:`hf_topo.evaluation`)
``activations``           which layers are topographic; their units' activations (forward hooks, padding left out)
``image_activations``     an image model's units: one response per image (a channel's spatial mean, a ViT
                          feature's token mean)
``image_inputs``          labelled images for an image classifier's analysis (``ImageBatch``) and top-1 accuracy
                          on them (a folder of images: :mod:`hf_topo.vision.analyze`)
``hooks``                 the one forward-output capture (eval mode, no gradients, hooks removed on exit)
``smoothness``            correlation vs distance on the sheet; smoothness = highest − lowest binned correlation,
                          pairs per bin, a robust near − far variant, bootstrap intervals and a shuffle control
``dimensionality``        effective dimensionality ``(Σλ)² / Σλ²`` of the activations' covariance, of the z-scored
                          units, and without the first positions of each block
``spatial``               Moran's I of activation maps (queen neighbours), averaged over inputs; permutation test
``selectivity``           Welch's t of every unit between two stimulus sets (eq. 2), as sheet maps
``category_maps``         an image model's category-selectivity t-maps (Fig. 5A): Moran's I, patches, SSIM / r
                          between maps, contrasts (saved models, U/B/T figures: :mod:`hf_topo.vision.category_report`)
``maps``                  values on the sheet: mean activation, first principal component of the weights
``perturbation``          perplexity (language) or top-1 accuracy (vision) under L1 pruning, weight noise, topographic downsampling and input
                          perturbations (token substitution / deletion) — the sweeps
``regularizers``          TopoLoss, Weight / Activation Similarity of any model, post hoc, with shared settings
``temporal``              temporal integration windows by word swaps, fitted per unit (power law / exponential),
                          and each unit's structure-yoking index (Skrill & Norman-Haignere's procedure)
``plots``                 PNG figures; ``report``: everything for a model (and its baseline) → report.json
``summary``               the typed summary (measures, sweep points) that cards and tables iterate over
========================  =====================================================================================

Example::

    from hf_topo.analysis import topographic_layers, collect_activations, smoothness
    from hf_topo.evaluation import load_text_blocks

    blocks = load_text_blocks(tokenizer, block_size=128, text_file="valid.txt", max_blocks=64)
    layers = topographic_layers(model)
    acts = collect_activations(model, blocks, layers, max_samples=8192)
    smoothness(acts[layers[0].name], layers[0].sheet).score
"""

from .activations import collect_activations, token_positions, topographic_layers
from .category_maps import CategorySelectivity, category_selectivity
from .dimensionality import EffectiveDimensionality, effective_dimensionalities, effective_dimensionality
from .hooks import CapturedOutputs, capture_outputs
from .image_activations import collect_image_activations
from .image_inputs import ImageBatch, evaluate_accuracy
from .inputs import load_passages, read_stimuli, tokenize_stimuli
from .maps import as_sheet_map, mean_activation_map, unit_weights, weight_pc1_map
from .perturbation import (
    INPUT_PERTURBATIONS,
    PRUNING_SCOPES,
    SweepResult,
    add_weight_noise_,
    delete_tokens,
    downsampling_sweep,
    input_perturbation_sweep,
    l1_prune_,
    noise_sweep,
    prunable_weights,
    pruning_sweep,
    restored_weights,
    substitute_tokens,
)
from .regularizers import RegularizerValue, regularizer_values
from .report import FIGURES, SWEEPS, AnalysisSettings, ModelAnalysis, analyze_model, write_report
from .selectivity import selectivity_maps, selectivity_t
from .smoothness import SmoothnessResult, correlation_vs_distance, smoothness, weight_smoothness
from .spatial import MoranTest, mean_morans_i, morans_i, morans_i_permutation_test
from .summary import AnalysisSummary, SweepPoint, SweepSummary
from .temporal import (
    WINDOW_KINDS,
    IntegrationWindows,
    LayerWindowFit,
    StructureYoking,
    WindowFits,
    aggregate_windows,
    fit_integration_windows,
    fit_window_curves,
    measure_integration_windows,
    measure_structure_yoking,
    plot_window_maps,
    plot_window_summary,
    window_morans_i,
)

__all__ = [
    "CapturedOutputs",
    "StructureYoking",
    "aggregate_windows",
    "capture_outputs",
    "measure_structure_yoking",
    "IntegrationWindows",
    "LayerWindowFit",
    "WINDOW_KINDS",
    "WindowFits",
    "fit_integration_windows",
    "fit_window_curves",
    "load_passages",
    "measure_integration_windows",
    "plot_window_maps",
    "plot_window_summary",
    "window_morans_i",
    "AnalysisSettings",
    "CategorySelectivity",
    "category_selectivity",
    "AnalysisSummary",
    "FIGURES",
    "ImageBatch",
    "INPUT_PERTURBATIONS",
    "ModelAnalysis",
    "PRUNING_SCOPES",
    "RegularizerValue",
    "SmoothnessResult",
    "SWEEPS",
    "SweepResult",
    "SweepPoint",
    "SweepSummary",
    "add_weight_noise_",
    "analyze_model",
    "as_sheet_map",
    "collect_activations",
    "collect_image_activations",
    "correlation_vs_distance",
    "delete_tokens",
    "downsampling_sweep",
    "effective_dimensionality",
    "evaluate_accuracy",
    "effective_dimensionalities",
    "EffectiveDimensionality",
    "token_positions",
    "input_perturbation_sweep",
    "l1_prune_",
    "mean_activation_map",
    "mean_morans_i",
    "MoranTest",
    "morans_i_permutation_test",
    "morans_i",
    "noise_sweep",
    "prunable_weights",
    "pruning_sweep",
    "read_stimuli",
    "regularizer_values",
    "restored_weights",
    "selectivity_maps",
    "selectivity_t",
    "smoothness",
    "substitute_tokens",
    "tokenize_stimuli",
    "topographic_layers",
    "unit_weights",
    "weight_pc1_map",
    "weight_smoothness",
    "write_report",
]
