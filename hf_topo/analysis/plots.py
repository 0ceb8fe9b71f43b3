"""Figures of the analyses (matplotlib, Agg backend, PNG): sheet maps, correlation-vs-distance curves, sweeps.

Every function takes results keyed by a model label (``{"TopoNet": ..., "baseline": ...}``) so that a TopoNet
and its baseline are drawn side by side or overlaid, writes one PNG and returns its path.
"""

from __future__ import annotations

import math
import os

import torch

from ..targets import short_layer_name
from .perturbation import SweepResult
from .smoothness import SmoothnessResult

__all__ = ["plot_sheet_maps", "plot_smoothness_curves", "plot_sweeps", "pyplot", "save_figure"]

_COLORS = ("tab:red", "black", "tab:blue", "tab:green", "tab:purple")


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend (no display needed); imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> str:
    """Write ``fig`` to ``path`` (PNG; folders created), close it, and return the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return str(path)


def plot_sheet_maps(
    maps: dict[str, dict[str, dict[str, torch.Tensor]]],
    path: str | os.PathLike,
    title: str = "Cortical-sheet maps",
    symmetric: bool = False,
) -> str:
    """A grid of sheet maps: one row per layer, one column per ``(model label, map kind)``.

    Args:
        maps: ``{model label: {map kind: {layer name: (height, width) tensor}}}``, e.g.
            ``{"TopoNet": {"mean activation": {...}, "weight PC1": {...}}, "baseline": {...}}``; layers are matched by
            position, so a baseline's maps line up with the TopoNet's.
        symmetric: centre the colour scale on 0 (for t-values).
    """
    plt = pyplot()
    columns = [(label, kind) for label, kinds in maps.items() for kind in kinds]
    if not columns:
        raise ValueError("No maps to plot.")
    n_rows = max(len(layer_maps) for kinds in maps.values() for layer_maps in kinds.values())
    first = next(iter(next(iter(maps.values())).values()))
    height, width = next(iter(first.values())).shape
    cell_w = 3.2
    cell_h = max(1.2, cell_w * height / width + 0.6)
    fig, axes = plt.subplots(n_rows, len(columns), figsize=(cell_w * len(columns), cell_h * n_rows), squeeze=False)
    for col, (label, kind) in enumerate(columns):
        for row, (layer, image) in enumerate(maps[label][kind].items()):
            ax = axes[row][col]
            values = image.detach().float().cpu()
            finite = values[values.isfinite()]
            bound = float(finite.abs().max()) if symmetric and finite.numel() else None
            shown = ax.imshow(
                values.numpy(),
                cmap="RdBu_r" if symmetric else "viridis",
                vmin=-bound if bound else None,
                vmax=bound if bound else None,
                interpolation="nearest",
            )
            ax.set_title(f"{label}: {kind}\n{short_layer_name(layer)}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
        for row in range(len(maps[label][kind]), n_rows):
            axes[row][col].axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_smoothness_curves(curves: dict[str, dict[str, dict[str, SmoothnessResult]]], path: str | os.PathLike) -> str:
    """Correlation vs distance on the sheet: one panel per measure, each model's layers as thin lines and their
    mean as a thick one.

    Args:
        curves: ``{measure: {model label: {layer name: SmoothnessResult}}}``, e.g.
            ``{"activations": {"TopoNet": {...}, "baseline": {...}}, "weights": {...}}``.
    """
    plt = pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), squeeze=False)
    for ax, (measure, by_model) in zip(axes[0], curves.items(), strict=True):
        for color, (label, by_layer) in zip(_COLORS, by_model.items(), strict=False):
            stacked = torch.tensor([r.correlations for r in by_layer.values()], dtype=torch.float64)
            distances = next(iter(by_layer.values())).distances
            for row in stacked:
                ax.plot(distances, row.tolist(), color=color, alpha=0.25, linewidth=0.8)
            mean = stacked.nanmean(dim=0)
            score = sum(r.score for r in by_layer.values()) / len(by_layer)
            ax.plot(distances, mean.tolist(), color=color, linewidth=2.2, label=f"{label} (smoothness {score:.3f})")
        ax.axhline(0, color="gray", linewidth=0.6)
        ax.set(
            title=f"Pairwise correlation of {measure} vs distance",
            xlabel="distance on the cortical sheet (units)",
            ylabel="mean Pearson r",
        )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_sweeps(sweeps: dict[str, SweepResult], path: str | os.PathLike, title: str | None = None) -> str:
    """Δ perplexity (and Δ BLiMP when measured) against the sweep's strength, the models overlaid.

    For downsampling the x-axis is the percentage of the model's parameters kept, each point labelled with its φ.
    """
    plt = pyplot()
    first = next(iter(sweeps.values()))
    with_blimp = any(s.blimp is not None for s in sweeps.values())
    fig, axes = plt.subplots(1, 2 if with_blimp else 1, figsize=(11 if with_blimp else 5.8, 4), squeeze=False)
    for color, (label, sweep) in zip(_COLORS, sweeps.items(), strict=False):
        downsampling = sweep.parameters_kept is not None
        xs = [100 * k for k in sweep.parameters_kept] if downsampling else sweep.x
        style = dict(color=color, marker="o", markerfacecolor=color if color != "black" else "white")
        axes[0][0].plot(xs, sweep.delta_perplexity, label=f"{label} (ppl {sweep.reference_perplexity:.2f})", **style)
        if downsampling:
            for x, y, phi in zip(xs, sweep.delta_perplexity, sweep.x, strict=True):
                axes[0][0].annotate(f"φ={phi:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if with_blimp and sweep.delta_blimp is not None:
            axes[0][1].plot(xs, [100 * d for d in sweep.delta_blimp], label=label, **style)
    x_label = "% of parameters kept" if first.parameters_kept is not None else first.x_label
    axes[0][0].set(xlabel=x_label, ylabel="Δ perplexity (perturbed − original)", title=title or first.kind)
    if first.parameters_kept is not None:
        axes[0][0].invert_xaxis()
    if with_blimp:
        axes[0][1].set(xlabel=x_label, ylabel="Δ BLiMP accuracy (points)", title=f"{title or first.kind}: BLiMP")
    for ax in axes[0]:
        ax.axhline(0, color="gray", linewidth=0.6)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    # Δ perplexity explodes at high pruning fractions: a symmetric log scale keeps the small differences readable
    if max((abs(v) for s in sweeps.values() for v in s.delta_perplexity if math.isfinite(v)), default=0) > 20:
        axes[0][0].set_yscale("symlog", linthresh=1.0)
    fig.tight_layout()
    return save_figure(fig, path)
