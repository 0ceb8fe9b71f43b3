"""Figures of the analyses (matplotlib, Agg backend, PNG): sheet maps, correlation-vs-distance curves, sweeps.

Every function takes results keyed by a model label (``{"TopoNet": ..., "baseline": ...}``) so that a TopoNet
and its baseline are drawn side by side or overlaid, writes one PNG and returns its path.
"""

from __future__ import annotations

import math
import os
import re
from typing import TYPE_CHECKING

import torch

from ..targets import short_layer_name
from .perturbation import SweepResult
from .smoothness import SmoothnessResult

if TYPE_CHECKING:  # the temporal package imports this module for its re-exports
    from .temporal import StructureYoking, WindowFits

__all__ = [
    "plot_sheet_maps",
    "plot_smoothness_curves",
    "plot_sweeps",
    "plot_window_maps",
    "plot_window_summary",
    "pyplot",
    "save_figure",
]

_COLORS = ("tab:red", "black", "tab:blue", "tab:green", "tab:purple")
_KIND_COLORS = ("tab:green", "tab:red", "tab:gray", "tab:blue")  # in the order of temporal.WINDOW_KINDS


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
    """Δ score (the sweeps' metric: perplexity, or top-1 accuracy in percentage points; Δ BLiMP too when measured)
    against the sweep's strength, the models overlaid.

    For downsampling the x-axis is the percentage of the model's parameters kept, each point labelled with its φ.
    """
    plt = pyplot()
    first = next(iter(sweeps.values()))
    accuracy = first.metric == "accuracy"
    with_blimp = any(s.blimp is not None for s in sweeps.values())
    fig, axes = plt.subplots(1, 2 if with_blimp else 1, figsize=(11 if with_blimp else 5.8, 4), squeeze=False)
    for color, (label, sweep) in zip(_COLORS, sweeps.items(), strict=False):
        downsampling = sweep.parameters_kept is not None
        xs = [100 * k for k in sweep.parameters_kept] if downsampling else sweep.x
        style = dict(color=color, marker="o", markerfacecolor=color if color != "black" else "white")
        ys = [100 * d for d in sweep.delta] if accuracy else sweep.delta
        reference = f"top-1 {100 * sweep.reference:.1f} %" if accuracy else f"ppl {sweep.reference:.2f}"
        axes[0][0].plot(xs, ys, label=f"{label} ({reference})", **style)
        if downsampling:
            for x, y, phi in zip(xs, ys, sweep.x, strict=True):
                axes[0][0].annotate(f"φ={phi:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if with_blimp and sweep.delta_blimp is not None:
            axes[0][1].plot(xs, [100 * d for d in sweep.delta_blimp], label=label, **style)
    x_label = "% of parameters kept" if first.parameters_kept is not None else first.x_label
    y_label = "Δ top-1 accuracy (points, perturbed − original)" if accuracy else "Δ perplexity (perturbed − original)"
    axes[0][0].set(xlabel=x_label, ylabel=y_label, title=title or first.kind)
    if first.parameters_kept is not None:
        axes[0][0].invert_xaxis()
    if with_blimp:
        axes[0][1].set(xlabel=x_label, ylabel="Δ BLiMP accuracy (points)", title=f"{title or first.kind}: BLiMP")
    for ax in axes[0]:
        ax.axhline(0, color="gray", linewidth=0.6)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    # Δ perplexity explodes at high pruning fractions: a symmetric log scale keeps the small differences readable
    if not accuracy and max((abs(v) for s in sweeps.values() for v in s.delta if math.isfinite(v)), default=0) > 20:
        axes[0][0].set_yscale("symlog", linthresh=1.0)
    fig.tight_layout()
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------------------------
# Temporal integration windows
# ---------------------------------------------------------------------------------------------------------------


def _file_name(name: str) -> str:
    return re.sub(r"[^\w.-]", "_", name)


def plot_window_maps(
    fits: WindowFits,
    output_dir: str | os.PathLike,
    prefix: str = "temporal_windows",
    yoking: StructureYoking | None = None,
) -> list[str]:
    """One PNG per layer with its ``a``, ``b``, ``c``, ``R²``, reach and kind maps on the sheet (and, given
    ``yoking``, the structure-yoking index: the paper's Fig. 5B maps power law, exponential and sentence-yoked
    coefficients); returns the paths."""
    from matplotlib.colors import ListedColormap

    plt = pyplot()
    os.makedirs(output_dir, exist_ok=True)
    panels = [
        ("a", "power-law exponent a", "viridis"),
        ("b", "exponential rate b", "viridis"),
        ("c", "power-law share c", "coolwarm"),
        ("r2", "fit R²", "magma"),
        ("reach", "reach: mean θ(Δ≥1)", "viridis"),
    ]
    if yoking is not None:
        panels.append(("yoking", "structure-yoking index", "PuOr_r"))
    kind_colors = ListedColormap(list(_KIND_COLORS))
    paths = []
    morans = fits.morans_i()
    for name, fit in fits.layers.items():
        maps = fit.maps()
        layer_morans = dict(morans.get(name, {}))
        if yoking is not None and name in yoking.index:
            maps["yoking"] = yoking.maps()[name]
            layer_morans["yoking"] = yoking.morans.get(name, float("nan"))
        elif yoking is not None:
            maps["yoking"] = torch.full(fit.sheet, float("nan"), dtype=torch.float64)
        height, width = fit.sheet
        n_panels = len(panels) + 1
        fig, axes = plt.subplots(1, n_panels, figsize=(3.2 * n_panels, 3.2 * height / max(width, 1) + 1.2))
        for ax, (key, title, cmap) in zip(axes[:-1], panels, strict=True):
            values = maps[key]
            finite = values[torch.isfinite(values)]
            # 2nd–98th percentiles, so that a map's structure shows even when its values span a narrow range
            low, high = (float(finite.quantile(q)) for q in (0.02, 0.98)) if finite.numel() else (None, None)
            image = ax.imshow(values.numpy(), cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
            moran = layer_morans.get(key, float("nan"))
            ax.set_title(f"{title}\nMoran's I {moran:.2f}", fontsize=8)
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
        ax = axes[-1]
        n_kinds = len(fits.kinds)
        ax.imshow(maps["kind"].numpy(), cmap=kind_colors, vmin=-0.5, vmax=n_kinds - 0.5, interpolation="nearest")
        shares = fit.fractions()
        ax.set_title(
            "kinds: exp {:.0%} / power {:.0%}\nneither {:.0%} / delta {:.0%}".format(
                shares["exponential"], shares["power_law"], shares["neither"], shares["delta"]
            ),
            fontsize=8,
        )
        for axis in axes:
            axis.set_xticks([])
            axis.set_yticks([])
        fig.suptitle(f"{name}: integration windows on the {height}x{width} sheet", fontsize=9)
        fig.tight_layout()
        path = os.path.join(output_dir, f"{prefix}_{_file_name(name)}.png")
        paths.append(save_figure(fig, path))
    return paths


def plot_window_summary(fits: WindowFits, path: str | os.PathLike, yoking: StructureYoking | None = None) -> str:
    """The layer-by-layer picture: each layer's mean window, shares of the kinds and median ``a``, ``b``, ``c``, reach
    (and, given ``yoking``, the median structure-yoking index)."""
    plt = pyplot()
    names = list(fits.layers)
    short = [short_layer_name(name) for name in names]
    deltas = fits.deltas.numpy()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    colors = plt.cm.viridis(torch.linspace(0, 1, max(len(names), 2)).numpy())
    for color, label, fit in zip(colors, short, fits.layers.values(), strict=False):
        axes[0].plot(deltas, fit.mean_window.numpy(), color=color, label=label, marker=".")
    axes[0].set_xscale("symlog", linthresh=1)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("Δ (words)")
    axes[0].set_ylabel("mean normalized window θ(Δ)")
    axes[0].legend(fontsize=7)
    positions = range(len(names))
    bottom = [0.0] * len(names)
    for kind, color in zip(fits.kinds, _KIND_COLORS, strict=True):
        shares = [fit.fractions()[kind] for fit in fits.layers.values()]
        axes[1].bar(positions, shares, bottom=bottom, color=color, label=kind)
        bottom = [b + s for b, s in zip(bottom, shares, strict=True)]
    axes[1].set_ylabel("share of units")
    axes[1].legend(fontsize=7)
    for key, marker in (("a", "o"), ("b", "s"), ("c", "^"), ("reach", "d")):
        medians = [_finite_median(getattr(fit, key)) for fit in fits.layers.values()]
        axes[2].plot(
            positions, [float("nan") if m is None else m for m in medians], marker=marker, label=f"median {key}"
        )
    if yoking is not None:
        medians = [
            yoking.index[name].nanmedian() if name in yoking.index else torch.tensor(math.nan) for name in names
        ]
        axes[2].plot(positions, [float(m) for m in medians], marker="x", label="median yoking index")
    axes[2].set_yscale("symlog", linthresh=0.1)
    axes[2].legend(fontsize=7)
    for ax in axes[1:]:
        ax.set_xticks(list(positions))
        ax.set_xticklabels(short, rotation=45, ha="right", fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def _finite_median(values: torch.Tensor) -> float | None:
    finite = values[torch.isfinite(values)]
    return float(finite.median()) if finite.numel() else None
