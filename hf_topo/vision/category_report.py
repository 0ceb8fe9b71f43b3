"""Category-selectivity maps of saved image models (TopoNets Fig. 5A): the TopoNet, its baseline and an untrained
model of the same architecture on one stimulus folder, as a report section and U/B/T figures.

    hf-topo analyze --model outputs/topo-resnet18-tau10 --baseline outputs/resnet18-baseline --untrained \\
        --stimuli_dir fLoc_stimuli --contrasts big:small,animate:inanimate --output_dir outputs/fig5a

Every model is analysed on the TopoNet's layers and sheets (:func:`~hf_topo.analysis.topographic_layers` with the
TopoNet's :class:`~hf_topo.config.TopoConfig`), with the TopoNet's evaluation transform. The **untrained** model is
the TopoNet's architecture (its ``config.json``) freshly initialized by ``transformers`` under a seed
(``untrained_seed``), or a saved model given as ``untrained_model``.

Figures (``selectivity_<layer>.png``, one per layer shown): one column per map (the categories, then the contrasts),
one row per model in the paper's order — untrained (U), baseline (B), TopoNet (T) — each column on one colour
scale (``±`` the largest ``|t|`` of that map over the rows), centred on 0.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch

from ..analysis.category_maps import SSIM_WINDOW, CategorySelectivity, category_selectivity, parse_contrasts
from ..analysis.plots import pyplot, save_figure
from ..targets import short_layer_name

__all__ = [
    "SELECTIVITY_FIGURE_PREFIX",
    "T_MAPS_FILE",
    "SelectivityArguments",
    "SelectivityRun",
    "add_selectivity_to_report",
    "plot_selectivity_rows",
    "run_category_selectivity",
    "selectivity_only",
    "selectivity_table",
]

logger = logging.getLogger(__name__)

#: Figures are ``<output_dir>/selectivity_<layer>.png``.
SELECTIVITY_FIGURE_PREFIX = "selectivity_"
#: Every model's t-maps (float64), keys ``"<model label>/<layer>/<map>"``.
T_MAPS_FILE = "selectivity_t_maps.safetensors"


def plot_selectivity_rows(
    t_maps: dict[str, dict[str, torch.Tensor]], path: str | os.PathLike, title: str = "Category selectivity (t)"
) -> str:
    """One layer's t-maps: one row per model (in the order given, e.g. U, B, T), one column per map.

    Args:
        t_maps: ``{model label: {map name: (height, width) t-map}}``; every model has the same maps.
        path: the PNG to write.

    Every column has one colour scale, symmetric about 0: ``±`` the largest finite ``|t|`` of that map over the
    models.
    """
    plt = pyplot()
    labels = list(t_maps)
    if not labels:
        raise ValueError("No t-maps to plot.")
    names = list(t_maps[labels[0]])
    height, width = next(iter(t_maps[labels[0]].values())).shape
    bounds = {}
    for name in names:
        values = torch.cat([t_maps[label][name].detach().double().flatten().cpu() for label in labels])
        finite = values[values.isfinite()]
        bounds[name] = max(float(finite.abs().max()), 1e-12) if finite.numel() else 1.0
    cell_w = 2.4
    cell_h = max(1.0, cell_w * height / width) + 0.5
    fig, axes = plt.subplots(
        len(labels), len(names), figsize=(cell_w * len(names), cell_h * len(labels)), squeeze=False
    )
    for row, label in enumerate(labels):
        for col, name in enumerate(names):
            ax = axes[row][col]
            shown = ax.imshow(
                t_maps[label][name].detach().float().cpu().numpy(),
                cmap="RdBu_r",
                vmin=-bounds[name],
                vmax=bounds[name],
                interpolation="nearest",
            )
            if row == 0:
                ax.set_title(name, fontsize=9)
            if col == 0:
                ax.set_ylabel(label, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == len(labels) - 1:
                fig.colorbar(shown, ax=axes[:, col].tolist(), fraction=0.046, pad=0.02, location="bottom")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


@dataclass
class SelectivityRun:
    """What :func:`run_category_selectivity` measured: ``{model label: CategorySelectivity}`` in U, B, T order,
    the report section (``section``) and the figures written (``{layer: path}``)."""

    results: dict[str, CategorySelectivity]
    section: dict
    figures: dict[str, str]


def _figure_name(layer: str) -> str:
    return SELECTIVITY_FIGURE_PREFIX + re.sub(r"[^A-Za-z0-9_.-]+", "_", short_layer_name(layer)) + ".png"


def _load_image_model(path: str, device: str):
    from transformers import AutoModelForImageClassification  # hf_topo's blur-pool ResNet is registered on import

    return AutoModelForImageClassification.from_pretrained(path, dtype=torch.float32).to(device).eval()


def _untrained_twin(model, seed: int, device: str):
    """The architecture of ``model`` (its config, topography metadata included) freshly initialized under ``seed``."""
    from transformers import AutoModelForImageClassification, set_seed

    set_seed(seed)
    return AutoModelForImageClassification.from_config(model.config).to(device).eval()


def run_category_selectivity(
    model_path: str,
    stimuli_dir: str,
    output_dir: str | None = None,
    baseline_path: str | None = None,
    untrained: bool = False,
    untrained_model: str | None = None,
    untrained_seed: int = 0,
    layer_names: Sequence[str] | None = None,
    categories: Sequence[str] | None = None,
    contrasts: str | Sequence | None = None,
    patch_threshold: float = 2.0,
    min_patch_units: int = 2,
    patch_top_fraction: float | None = None,
    ssim_window: int = SSIM_WINDOW,
    image_size: int | None = None,
    figure_layers: Sequence[str] | None = None,
    labels: tuple[str, str, str] = ("untrained", "baseline", "TopoNet"),
    batch_size: int = 64,
    device: str | None = None,
    progress: bool = True,
    include_maps: bool = False,
) -> SelectivityRun:
    """Selectivity maps of a saved image TopoNet (and its baseline and an untrained twin) on a stimulus folder.

    Args:
        model_path: the TopoNet's folder or Hub id (``AutoModelForImageClassification``).
        stimuli_dir: a folder of category subfolders (:func:`hf_topo.vision.stimuli.check_stimulus_folder`).
        output_dir: where the figures go (none written when ``None``).
        baseline_path: the baseline (same architecture, trained without TopoLoss).
        untrained: add the TopoNet's architecture freshly initialized under ``untrained_seed``.
        untrained_model: or a saved untrained model (instead of ``untrained``).
        layer_names: analyse only these topographic layers (names or suffixes); default all.
        categories, contrasts, patch_threshold, min_patch_units, patch_top_fraction, ssim_window: see
            :func:`~hf_topo.analysis.category_maps.selectivity_from_responses`.
        image_size: the evaluation crop (default: the TopoNet's image processor's).
        figure_layers: draw only these layers (names or suffixes; default every analysed layer).
        labels: the names of the untrained, baseline and TopoNet rows.
        include_maps: also put the t-maps' values into the report section (they are always saved to
            ``<output_dir>/selectivity_t_maps.safetensors``, keys ``"<model label>/<layer>/<map>"``).

    Returns:
        :class:`SelectivityRun`; ``section`` is ``{"stimuli_dir", "n_images", "categories", "contrasts", "maps",
        "settings", "layers_shown", "models": {label: CategorySelectivity.to_json()}, "figures"}``.
    """
    from ..analysis.activations import topographic_layers
    from ..config import TopoConfig
    from ..errors import InputError, parameter
    from ..loading import check_model_source
    from ..targets import matches_pattern
    from .stimuli import check_stimulus_folder, eval_transform_for, load_stimulus_images

    if untrained and untrained_model is not None:
        raise InputError(
            f"Give {parameter('untrained')} (a fresh initialization of the model's architecture) or "
            f"{parameter('untrained_model')} (a saved one), not both."
        )
    # Everything that can fail on bad input is read before any model runs.
    contrasts = parse_contrasts(contrasts)
    stimuli = check_stimulus_folder(stimuli_dir, "stimuli_dir")
    for source in (model_path, baseline_path, untrained_model):
        if source is not None:
            check_model_source(source)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = _load_image_model(model_path, device)
    layers = topographic_layers(model, None, layer_names)
    topography = TopoConfig.from_pretrained(model)
    transform = eval_transform_for(model, model_path, image_size)
    pixel_values = load_stimulus_images(stimuli, transform)
    logger.info("Stimuli: %d images of %d×%d from %s", len(pixel_values), transform.size, transform.size, stimuli_dir)
    settings = dict(
        categories=categories,
        contrasts=contrasts,
        patch_threshold=patch_threshold,
        min_patch_units=min_patch_units,
        patch_top_fraction=patch_top_fraction,
        ssim_window=ssim_window,
        batch_size=batch_size,
        progress=progress,
    )
    names = [layer.name for layer in layers]

    def measure(other) -> CategorySelectivity:
        try:
            other_layers = topographic_layers(other, topography, names)
        except ValueError as err:
            raise ValueError(
                f"This model cannot be analysed on the layers and sheets of {model_path}: {err} A baseline or "
                "untrained model is the same architecture (e.g. the τ=0 twin)."
            ) from None
        return category_selectivity(other, pixel_values, stimuli.groups, other_layers, **settings)

    untrained_label, baseline_label, model_label = labels
    results: dict[str, CategorySelectivity] = {}
    if untrained or untrained_model is not None:
        twin = (
            _untrained_twin(model, untrained_seed, device) if untrained else _load_image_model(untrained_model, device)
        )
        results[untrained_label] = measure(twin)
        del twin
    if baseline_path is not None:
        baseline = _load_image_model(baseline_path, device)
        results[baseline_label] = measure(baseline)
        del baseline
    results[model_label] = category_selectivity(model, pixel_values, stimuli.groups, layers, **settings)
    ours = results[model_label]

    shown = names
    if figure_layers is not None:
        shown = [n for n in names if matches_pattern(n, list(figure_layers))]
        if not shown:
            raise InputError(f"{parameter('figure_layers', list(figure_layers))} matches none of the layers {names}.")
    figures: dict[str, str] = {}
    if output_dir is not None:
        from safetensors.torch import save_file

        os.makedirs(output_dir, exist_ok=True)
        tensors = {
            f"{label}/{layer}/{name}": t_map.contiguous()
            for label, result in results.items()
            for layer, maps in result.t_maps.items()
            for name, t_map in maps.items()
        }
        save_file(tensors, os.path.join(output_dir, T_MAPS_FILE))
        for layer in shown:
            maps = {label: result.t_maps[layer] for label, result in results.items()}
            figures[layer] = plot_selectivity_rows(
                maps,
                os.path.join(output_dir, _figure_name(layer)),
                f"Category selectivity (t): {short_layer_name(layer)}",
            )
    section = {
        "stimuli_dir": os.path.abspath(stimuli_dir),
        "n_images": len(stimuli.files),
        "images_per_folder": stimuli.counts,
        "image_size": transform.size,
        "categories": ours.categories,
        "contrasts": [list(pair) for pair in ours.contrasts],
        "maps": ours.map_names,
        "settings": ours.settings,
        "untrained": (
            {"seed": untrained_seed, "from_config_of": model_path}
            if untrained
            else ({"path": untrained_model} if untrained_model else None)
        ),
        "layers_shown": shown,
        "models": {label: result.to_json(include_maps) for label, result in results.items()},
        "figures": {layer: os.path.abspath(path) for layer, path in figures.items()},
        "t_maps_file": T_MAPS_FILE if output_dir is not None else None,
    }
    return SelectivityRun(results=results, section=section, figures=figures)


@dataclass
class SelectivityArguments:
    """``hf-topo analyze``'s category-selectivity flags (image models; with ``--model``, ``--baseline``,
    ``--layers``, ``--output_dir``, ``--device`` of the analysis)."""

    stimuli_dir: str | None = field(
        default=None,
        metadata={
            "help": "Image models: a folder of category subfolders (fLoc's layout: faces/, bodies/, places/, ..., "
            "subcategory folders allowed): each category's selectivity t-map, its Moran's I, patches and the maps' "
            "relations in report.json's 'selectivity', and selectivity_<layer>.png."
        },
    )
    contrasts: str | None = field(
        default=None,
        metadata={
            "help": "With --stimuli_dir: two-way contrast maps 'a:b,c:d' of folder names (big:small,animate:inanimate)."
        },
    )
    stimuli_categories: list[str] | None = field(
        default=None,
        metadata={
            "help": "With --stimuli_dir: the categories with a one-vs-others t-map (default: every top-level folder)."
        },
    )
    untrained: bool = field(
        default=False,
        metadata={
            "help": "With --stimuli_dir: add --model's architecture freshly initialized (--untrained_seed) as the U row."
        },
    )
    untrained_model: str | None = field(
        default=None, metadata={"help": "With --stimuli_dir: or a saved untrained model as the U row."}
    )
    untrained_seed: int = field(default=0, metadata={"help": "Seed of the --untrained initialization."})
    patch_threshold: float = field(default=2.0, metadata={"help": "A patch's units have t above this."})
    patch_top_fraction: float | None = field(
        default=None, metadata={"help": "Or: a patch's units are the map's top fraction (e.g. 0.1), t > 0."}
    )
    min_patch_units: int = field(default=2, metadata={"help": "Smallest patch, in units (8-connected)."})
    ssim_window: int = field(default=SSIM_WINDOW, metadata={"help": "SSIM window side (odd; shrunk to fit a sheet)."})
    stimuli_image_size: int | None = field(
        default=None,
        metadata={
            "help": "Evaluation crop of the stimuli (default: --image_size, else the model's image processor's)."
        },
    )
    selectivity_figure_layers: list[str] | None = field(
        default=None, metadata={"help": "Draw selectivity_<layer>.png for these layers only (default: all analysed)."}
    )

    def to_dict(self) -> dict:
        return asdict(self)


def selectivity_only(args, selectivity: SelectivityArguments) -> bool:
    """Whether ``hf-topo analyze`` measures category selectivity alone (``--stimuli_dir`` without a text or image
    data set to analyse the model on). Called first: with ``--stimuli_dir`` it also checks the stimulus folder, the
    contrasts and the untrained-model choice, so that they fail before any model runs.

    Raises:
        InputError: ``--stimuli_dir`` with a text source (``--text_file``/``--dataset``): the stimuli are images,
            for an image model; a language model's selectivity takes ``--stimuli_a``/``--stimuli_b``. Both
            ``--untrained`` and ``--untrained_model``.
        ValueError, FileNotFoundError: a stimulus folder refused by
            :func:`~hf_topo.vision.stimuli.check_stimulus_folder`; a malformed ``--contrasts``.
    """
    from ..errors import InputError, parameter
    from .stimuli import check_stimulus_folder

    if selectivity.stimuli_dir is None:
        return False
    if args.text_file is not None or args.dataset is not None:
        raise InputError(
            f"{parameter('stimuli_dir')} holds images for an image model's category-selectivity maps; drop "
            f"{parameter('text_file')}/{parameter('dataset')} with it (a language model's selectivity takes "
            f"{parameter('stimuli_a')} and {parameter('stimuli_b')}, text files)."
        )
    if selectivity.untrained and selectivity.untrained_model is not None:
        raise InputError(
            f"Give {parameter('untrained')} (a fresh initialization of the model's architecture) or "
            f"{parameter('untrained_model')} (a saved one), not both."
        )
    parse_contrasts(selectivity.contrasts)
    check_stimulus_folder(selectivity.stimuli_dir, "stimuli_dir")
    # an image classifier's whole analysis on --image_dir runs first; the selectivity section joins its report
    return getattr(args, "image_dir", None) is None


def add_selectivity_to_report(report: dict, args, selectivity: SelectivityArguments) -> dict:
    """Run :func:`run_category_selectivity` for ``hf-topo analyze`` and put its section into ``report`` (key
    ``"selectivity"``; the figures under ``report["figures"]`` as ``selectivity_<layer>``, file names relative to
    ``args.output_dir``), then (re)write ``<output_dir>/report.json``. Returns the report.

    Args:
        report: the report so far (``{}`` or ``{"metadata": ...}`` when only selectivity is measured).
        args: ``hf-topo analyze``'s :class:`~hf_topo.analysis.run.AnalyzeArguments` (``model``, ``baseline``,
            ``layers``, ``output_dir``, ``model_label``, ``baseline_label``, ``device``, ``progress``).
        selectivity: the stimuli and the selectivity settings.
    """
    run = run_category_selectivity(
        args.model,
        selectivity.stimuli_dir,
        args.output_dir,
        baseline_path=args.baseline,
        untrained=selectivity.untrained,
        untrained_model=selectivity.untrained_model,
        untrained_seed=selectivity.untrained_seed,
        layer_names=args.layers,
        categories=selectivity.stimuli_categories,
        contrasts=selectivity.contrasts,
        patch_threshold=selectivity.patch_threshold,
        min_patch_units=selectivity.min_patch_units,
        patch_top_fraction=selectivity.patch_top_fraction,
        ssim_window=selectivity.ssim_window,
        image_size=selectivity.stimuli_image_size or getattr(args, "image_size", None),
        figure_layers=selectivity.selectivity_figure_layers,
        labels=("untrained", args.baseline_label, args.model_label),
        device=args.device,
        progress=args.progress,
    )
    report["selectivity"] = run.section
    figures = report.setdefault("figures", {})
    for path in run.figures.values():
        figures[os.path.splitext(os.path.basename(path))[0]] = os.path.basename(path)
    report.setdefault("metadata", {})["selectivity"] = selectivity.to_dict()
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    return report


def selectivity_table(section: dict) -> str:
    """A Markdown table of a report's ``"selectivity"`` section: each map's Moran's I averaged over the layers,
    one column per model (U, B, T), and the number of patches summed over the layers."""
    models = list(section["models"])
    lines = [
        "| selectivity map | " + " | ".join(f"{m}: Moran's I | {m}: patches" for m in models) + " |",
        "|---|" + "---|---|" * len(models),
    ]
    for name in section["maps"]:
        cells = []
        for label in models:
            layers = section["models"][label]["layers"].values()
            finite = [v for layer in layers if (v := layer["morans_i"][name]) is not None]
            cells.append(f"{sum(finite) / len(finite):.3f}" if finite else "n/a")
            cells.append(str(sum(layer["patches"][name]["count"] for layer in layers)))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
