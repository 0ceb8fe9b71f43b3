"""Temporal integration windows of a language model's units, as Skrill & Norman-Haignere measure them.

How far back does a unit look, and is its window tied to sentences? Following Skrill & Norman-Haignere ("Large
language models transition from integrating across position-yoked, exponential windows to structure-yoked,
power-law windows", NeurIPS 2023; code: ``github.com/dskrill/TemporalIntegration``), as used by the TopoNets paper
(Deb, Deb & Murty, ICLR 2025, §2.3, §3.4, Fig. 5B, A.7, on the topographic ``c_fc`` layers instead of ``c_proj``):

=====================  =========================================================================================
module                 what it does
=====================  =========================================================================================
``words``              words, the reference's text cleaning, sequences and sentences, the swap-word pools
``measure``            the word swaps, the response changes ``D[i, j]`` and the windows (per-word ``Δ = 0``
                       normalization, median over measured words): :func:`measure_integration_windows`
``fit``                ``θ(Δ) ≈ c·(Δ+1)^(−a) + (1−c)·e^(−bΔ)`` per unit, kinds, Moran's I of the fit maps
``structure``          the structure-yoking index per unit (the paper's sentence-yoked map)
``kinds``              Fig. 5B / Fig. 8: the paper's three kinds per layer, the first-to-middle-layer trend, the
                       kinds' clustering on the sheet (Moran's I, same-kind patches), fits of an arranged model
=====================  =========================================================================================

The figures are in :mod:`hf_topo.analysis.plots` (:func:`plot_window_maps`, :func:`plot_window_summary`, re-exported
here). ``docs/analysis.md`` lists every step with its source in the reference code.
"""

from ..plots import plot_window_maps, plot_window_summary
from .fit import (
    WINDOW_KINDS,
    LayerWindowFit,
    WindowFits,
    fit_integration_windows,
    fit_window_curves,
    window_function,
    window_morans_i,
)
from .kinds import (
    PAPER_KINDS,
    kind_clustering,
    kind_shares,
    layer_trend,
    paper_kind_index,
    permute_window_fits,
    permute_yoking,
    same_kind_patches,
    window_kind_summary,
)
from .measure import DIFFERENCES, IntegrationWindows, aggregate_windows, measure_integration_windows
from .structure import SWAPS, StructureYoking, measure_structure_yoking, structure_yoking_index
from .words import NotEnoughTextError, natural_word_runs, normalize_word, sentences_of_length, word_token_spans

__all__ = [
    "DIFFERENCES",
    "PAPER_KINDS",
    "SWAPS",
    "WINDOW_KINDS",
    "IntegrationWindows",
    "LayerWindowFit",
    "NotEnoughTextError",
    "StructureYoking",
    "WindowFits",
    "aggregate_windows",
    "fit_integration_windows",
    "fit_window_curves",
    "kind_clustering",
    "kind_shares",
    "layer_trend",
    "measure_integration_windows",
    "measure_structure_yoking",
    "natural_word_runs",
    "normalize_word",
    "paper_kind_index",
    "permute_window_fits",
    "permute_yoking",
    "plot_window_maps",
    "plot_window_summary",
    "same_kind_patches",
    "sentences_of_length",
    "structure_yoking_index",
    "window_function",
    "window_kind_summary",
    "window_morans_i",
    "word_token_spans",
]
