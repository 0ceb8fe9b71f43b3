"""Truong & Hasson's convolutional setting ("Beyond topography"), reproduced end to end on CPU.

    hf-topo truong-hasson --seeds 0 1 2 --output_dir outputs/truong_hasson \\
        --output benchmarks/results/truong_hasson.json

**Setting.** A small CNN whose penultimate layer ``fc1`` has 121 units laid out 11 × 11
(:class:`~hf_topo.vision.truong_hasson_cnn.TruongHassonCNNForImageClassification`) is trained with
``TopoTrainer``: ``loss = cross-entropy + λ · L``, with ``L`` Weight Similarity (WS: mean correlation distance
``1 − r`` between neighbouring units' incoming weights) or Activation Similarity (AS: the same between neighbouring
units' pre-activation responses over the batch), queen neighbours (radius 1), λ over their range
``{0.1, 0.3, 0.5, 1, 2, 3}``, and the unregularized baseline (λ = 0). Every model of a seed shares the
initialization and the data order; only the regularizer and λ differ.

**Data.** scikit-learn's ``load_digits`` (1,797 grayscale 8 × 8 digits, shipped in its wheel) with the vision
demo's fixed split (:func:`hf_topo.experiments.vision_demo.digits_split`: every fifth image of each class held out,
364 test images); pixels scaled from 0–16 to ``[0, 1]``.

**Measures** (on the 364 test images; each model's record in ``runs`` of the result):

==================================  ===============================================================================
key                                 what it is
==================================  ===============================================================================
``family``, ``lambda``, ``seed``    ``"baseline"`` (λ = 0), ``"ws"`` or ``"as"``; λ; the training seed
``clean_accuracy``                  top-1 accuracy on the clean test images
``input_noise[kind]``               for ``kind`` in ``gaussian``, ``pink``, ``salt_and_pepper``
                                    (:mod:`hf_topo.analysis.image_noise` defines each level): ``levels``,
                                    ``accuracy`` (mean over ``noise_repeats`` draws), ``delta_accuracy``
                                    (accuracy − clean accuracy) per level, ``mean_delta_accuracy`` over the levels
``weight_noise``                    every Conv2d / Linear weight perturbed in place by ``σ · std(W) · ε``
                                    (:func:`hf_topo.analysis.add_weight_noise_`) at each relative ``sigmas``
                                    entry: ``accuracy``, ``delta_accuracy`` (means over ``weight_noise_repeats``
                                    draws), ``mean_delta_accuracy``
``morans_i``                        Moran's I of each test image's ``fc1`` map (pre-activation), averaged
``activation_smoothness``           smoothness of ``fc1``'s responses vs sheet distance
                                    (:mod:`hf_topo.analysis.smoothness`: the paper's score; ``_robust``: the
                                    near − far variant)
``weight_smoothness``               the same for the units' incoming weight vectors (and ``_robust``)
``neighbour_correlation``           Pearson r of each of the 420 neighbouring unit pairs' responses over the test
                                    images, summarized by
                                    :func:`hf_topo.analysis.neighbours.neighbour_correlation_summary`: ``mean``,
                                    ``median``, ``sd``, ``bimodality_coefficient`` (Sarle's; > 5/9 suggests
                                    bimodality), ``bimodal``, ``gmm_delta_bic``, ``values``
``weight_neighbour_correlation``    the same summary for the neighbours' incoming weights (no ``values``, no
                                    ``gmm_delta_bic``)
``pair_correlation``                the same summary over *every* pair of units (not only neighbours), with
                                    ``histogram`` (counts in 40 bins on [-1, 1]) instead of ``values`` (no
                                    ``gmm_delta_bic``)
``ws_loss``, ``as_loss``            both regularizers' values on the trained model (AS over the test images)
``maps``                            ``activation_example`` (test image 0's ``fc1`` map), ``mean_activation``,
                                    ``weight_pc1`` (11 × 11 lists)
``train``                           ``wall_time_s``, ``steps``, ``final_task_loss``, ``final_topo_loss``
==================================  ===============================================================================

The noise of a (kind, level, repeat) and of a (σ, repeat) is drawn from a generator seeded by ``noise_seed`` and
those keys only, so every model sees the same noisy images and the same weight-noise directions (paired
comparisons). ``summary`` holds each condition's mean and standard deviation over seeds; ``truong_hasson.png`` the
accuracy-vs-noise curves, the neighbour-correlation histograms and 11 × 11 maps; ``truong_hasson_lambda.png`` the
measures against λ.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
import zlib
from dataclasses import asdict, dataclass, field

import torch

from ..errors import InputError, parameter

logger = logging.getLogger(__name__)

__all__ = [
    "FAMILY_REGULARIZERS",
    "LAMBDAS",
    "TruongHassonArguments",
    "digits_tensors",
    "measure_model",
    "plot_truong_hasson",
    "run_truong_hasson",
    "summarize_runs",
    "train_model",
]

#: Truong & Hasson's range of λ (the weight of the spatial loss).
LAMBDAS = (0.1, 0.3, 0.5, 1.0, 2.0, 3.0)
#: family → the ``topo_loss_type`` it trains with (the baseline trains with λ = 0 and logs Weight Similarity).
FAMILY_REGULARIZERS = {"baseline": None, "ws": "weight_similarity", "as": "activation_similarity"}
#: The topographic layer of the CNN.
TARGET = "fc1"


@dataclass
class TruongHassonArguments:
    """The Truong & Hasson run: which models, the recipe, the measures, where results go."""

    output_dir: str = field(default="outputs/truong_hasson", metadata={"help": "Folder for models, JSON, figures."})
    output: str | None = field(default=None, metadata={"help": "Also write the results JSON to this path."})
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "Training seeds (>= 3 for claims)."})
    lambdas: list[float] = field(
        default_factory=lambda: list(LAMBDAS),
        metadata={"help": "λ of WS and AS (Truong & Hasson: 0.1 0.3 0.5 1 2 3)."},
    )
    families: list[str] = field(
        default_factory=lambda: ["baseline", "ws", "as"], metadata={"help": "Of baseline, ws, as."}
    )
    max_steps: int = field(default=300, metadata={"help": "Optimizer steps per model."})
    batch_size: int = field(default=64, metadata={"help": "Images per step (AS's responses are over this batch)."})
    learning_rate: float = field(
        default=3e-3, metadata={"help": "AdamW peak learning rate (linear decay, 5% warm-up)."}
    )
    noise_levels: list[float] = field(
        default_factory=lambda: [0.01, 0.02, 0.05, 0.1, 0.15, 0.2],
        metadata={"help": "Input noise levels (see hf_topo.analysis.image_noise)."},
    )
    noise_repeats: int = field(default=3, metadata={"help": "Noise draws averaged per kind and level."})
    weight_noise_sigmas: list[float] = field(
        default_factory=lambda: [0.05, 0.1, 0.2, 0.3, 0.5],
        metadata={"help": "Weight noise σ relative to each weight tensor's standard deviation."},
    )
    weight_noise_repeats: int = field(default=5, metadata={"help": "Weight-noise draws averaged per σ."})
    noise_seed: int = field(default=1234, metadata={"help": "Seed of every input and weight noise draw."})
    num_threads: int = field(
        default=1, metadata={"help": "torch threads (1 is fastest for this small CNN on a shared CPU)."}
    )
    save_models: bool = field(default=True, metadata={"help": "Save every trained model under output_dir/models."})
    figure_lambda: float | None = field(
        default=None, metadata={"help": "λ of the WS/AS curves and maps in the figure (default: the largest)."}
    )


# ---- data --------------------------------------------------------------------------------------------------------


def digits_tensors() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{"train": (pixel_values, labels), "test": (...)}``: the digits on the vision demo's fixed split, pixel values
    in ``[0, 1]`` as ``(n, 1, 8, 8)`` float32, labels int64 (1,433 training and 364 test images)."""
    from .vision_demo import digits_split

    images, labels, is_validation = digits_split()
    pixels = torch.as_tensor(images / 16.0, dtype=torch.float32).unsqueeze(1)  # (1797, 1, 8, 8) in [0, 1]
    labels = torch.as_tensor(labels, dtype=torch.long)
    held_out = torch.as_tensor(is_validation)
    return {"train": (pixels[~held_out], labels[~held_out]), "test": (pixels[held_out], labels[held_out])}


class _ImageDataset(torch.utils.data.Dataset):
    def __init__(self, pixel_values: torch.Tensor, labels: torch.Tensor):
        self.pixel_values, self.labels = pixel_values, labels

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pixel_values[index], "labels": self.labels[index]}


# ---- training ----------------------------------------------------------------------------------------------------


def _model_name(family: str, lam: float, seed: int) -> str:
    return f"{family}_seed{seed}" if family == "baseline" else f"{family}_lambda{lam:g}_seed{seed}"


def train_model(
    family: str,
    lam: float,
    seed: int,
    train: tuple[torch.Tensor, torch.Tensor],
    args: TruongHassonArguments,
    output_dir: str,
):
    """Train one CNN of ``family`` (``"baseline"``, ``"ws"``, ``"as"``) with ``λ = lam`` through ``TopoTrainer``.

    Returns ``(model, info)``: the trained model (eval mode) and ``{"wall_time_s", "steps", "final_task_loss",
    "final_topo_loss"}``. The model is saved to ``output_dir`` when ``args.save_models``.
    """
    from transformers import set_seed

    from ..trainer import TopoTrainer, TopoTrainingArguments
    from ..vision.truong_hasson_cnn import TruongHassonCNNForImageClassification
    from ..vision.truong_hasson_cnn_config import TruongHassonCNNConfig

    regularizer = FAMILY_REGULARIZERS[family]
    set_seed(seed)  # the same initialization for every family of a seed
    model = TruongHassonCNNForImageClassification(
        TruongHassonCNNConfig(num_labels=10, id2label={i: str(i) for i in range(10)})
    )
    training_args = TopoTrainingArguments(
        output_dir=output_dir, tau=0.0 if regularizer is None else lam,
        topo_loss_type=regularizer or "weight_similarity", topo_target_modules=[TARGET], topo_distance="correlation",
        topo_neighbourhood=1, max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, lr_scheduler_type="linear", warmup_steps=max(1, args.max_steps // 20),
        weight_decay=0.0, logging_steps=max(1, args.max_steps // 10), save_strategy="no", eval_strategy="no",
        report_to="none", seed=seed, dataloader_num_workers=0, use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    trainer = TopoTrainer(model=model, args=training_args, train_dataset=_ImageDataset(*train))
    start = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - start
    history = [h for h in trainer.state.log_history if "task_loss" in h]
    if args.save_models:
        trainer.save_model(output_dir)
    model.eval()
    return model, {
        "wall_time_s": wall,
        "steps": trainer.state.global_step,
        "final_task_loss": history[-1]["task_loss"] if history else None,
        "final_topo_loss": history[-1]["topo_loss"] if history else None,
    }


# ---- measures ----------------------------------------------------------------------------------------------------


def _generator(*keys) -> torch.Generator:
    """A generator seeded by ``keys`` alone (crc32 of their text): the same draws for every model."""
    return torch.Generator().manual_seed(zlib.crc32("/".join(str(k) for k in keys).encode()))


@torch.no_grad()
def _accuracy(model, pixel_values: torch.Tensor, labels: torch.Tensor, batch_size: int = 512) -> float:
    correct = 0
    for start in range(0, labels.shape[0], batch_size):
        logits = model(pixel_values=pixel_values[start : start + batch_size]).logits
        correct += int((logits.argmax(-1) == labels[start : start + batch_size]).sum())
    return correct / labels.shape[0]


def _curve(xs, accuracies, clean: float, key: str) -> dict:
    deltas = [a - clean for a in accuracies]
    return {
        key: list(xs),
        "accuracy": accuracies,
        "delta_accuracy": deltas,
        "mean_delta_accuracy": sum(deltas) / len(deltas),
    }


def _rounded(values, digits: int = 5):
    """Nested lists of floats rounded for the JSON (``None`` kept)."""
    if isinstance(values, list):
        return [_rounded(v, digits) for v in values]
    return None if values is None else round(values, digits)


def _all_pairs_summary(responses: torch.Tensor, summarize) -> dict:
    """The distribution of Pearson r over every pair of units (7,260 on 121 units), with a 40-bin histogram on
    [-1, 1] (``histogram``: counts) for the figure."""
    r = torch.corrcoef(responses.double().T)  # (units, units); nan rows for constant units
    first, second = torch.triu_indices(r.shape[0], r.shape[0], offset=1)
    values = r[first, second]
    values = values[~values.isnan()]
    summary = summarize(values, mixture=False)  # EM on 7,260 values costs more than the rest of the measures
    summary["histogram"] = torch.histc(values.clamp(-1, 1), bins=40, min=-1, max=1).long().tolist()
    return summary


def measure_model(model, test: tuple[torch.Tensor, torch.Tensor], args: TruongHassonArguments) -> dict:
    """Every measure of one trained CNN on the test images (the keys of the module docstring's table, except
    ``family``, ``lambda``, ``seed``, ``train``)."""
    from ..analysis import topographic_layers
    from ..analysis.image_activations import collect_image_activations
    from ..analysis.image_noise import NOISE_KINDS, add_image_noise
    from ..analysis.maps import unit_weights, weight_pc1_map
    from ..analysis.neighbours import correlation_distribution_summary, neighbour_correlation_summary
    from ..analysis.perturbation import add_weight_noise_, restored_weights
    from ..analysis.smoothness import smoothness, weight_smoothness
    from ..analysis.spatial import mean_morans_i
    from ..config import TopoConfig
    from ..regularizers.similarity import neighbour_distance_loss

    pixel_values, labels = test
    model.eval()
    clean = _accuracy(model, pixel_values, labels)
    record: dict = {"clean_accuracy": clean, "input_noise": {}}
    for kind in NOISE_KINDS:
        accuracies = []
        for level in args.noise_levels:
            draws = [
                _accuracy(
                    model,
                    add_image_noise(pixel_values, kind, level, _generator(args.noise_seed, kind, level, r)),
                    labels,
                )
                for r in range(args.noise_repeats)
            ]
            accuracies.append(sum(draws) / len(draws))
        record["input_noise"][kind] = _curve(args.noise_levels, accuracies, clean, "levels")

    weights = {name: p for name, p in model.named_parameters() if p.ndim >= 2}  # conv and linear weights, no biases
    accuracies = []
    for sigma in args.weight_noise_sigmas:
        draws = []
        for r in range(args.weight_noise_repeats):
            with torch.no_grad(), restored_weights(weights):
                add_weight_noise_(weights, sigma, _generator(args.noise_seed, "weights", sigma, r))
                draws.append(_accuracy(model, pixel_values, labels))
        accuracies.append(sum(draws) / len(draws))
    record["weight_noise"] = _curve(args.weight_noise_sigmas, accuracies, clean, "sigmas")

    (layer,) = topographic_layers(model, TopoConfig(target_modules=[TARGET], tau=0.0))
    sheet = layer.sheet
    responses = collect_image_activations(model, pixel_values, [layer], progress=False)[layer.name]  # (n, 121)
    activation = smoothness(responses, sheet)
    weight = weight_smoothness(layer)
    unit_weight_rows = unit_weights(layer).cpu()  # (121, depth)
    weight_neighbours = neighbour_correlation_summary(unit_weight_rows.T, sheet, keep_values=False, mixture=False)
    neighbours = neighbour_correlation_summary(responses, sheet)
    neighbours["values"] = _rounded(neighbours["values"], 6)
    record.update(
        morans_i=mean_morans_i(responses, sheet),
        activation_smoothness=activation.score,
        activation_smoothness_robust=activation.robust_score,
        weight_smoothness=weight.score,
        weight_smoothness_robust=weight.robust_score,
        neighbour_correlation=neighbours,
        weight_neighbour_correlation=weight_neighbours,
        pair_correlation=_all_pairs_summary(responses, correlation_distribution_summary),
        ws_loss=float(neighbour_distance_loss(unit_weight_rows.reshape(sheet.height, sheet.width, -1))),
        as_loss=float(neighbour_distance_loss(responses.T.reshape(sheet.height, sheet.width, -1))),
        maps={
            "activation_example": _rounded(responses[0].reshape(sheet.height, sheet.width).tolist()),
            "mean_activation": _rounded(responses.mean(dim=0).reshape(sheet.height, sheet.width).tolist()),
            "weight_pc1": _rounded(weight_pc1_map(layer).tolist()),
        },
    )
    return record


# ---- aggregation and figures -------------------------------------------------------------------------------------

#: The scalar measures ``summary`` aggregates over seeds.
SUMMARY_MEASURES = (
    "clean_accuracy",
    "morans_i",
    "activation_smoothness",
    "activation_smoothness_robust",
    "weight_smoothness",
    "weight_smoothness_robust",
    "neighbour_correlation.mean",
    "neighbour_correlation.bimodality_coefficient",
    "neighbour_correlation.gmm_delta_bic",
    "pair_correlation.mean",
    "pair_correlation.bimodality_coefficient",
    "input_noise.gaussian.mean_delta_accuracy",
    "input_noise.pink.mean_delta_accuracy",
    "input_noise.salt_and_pepper.mean_delta_accuracy",
    "weight_noise.mean_delta_accuracy",
)


def _get(run: dict, dotted: str):
    value = run
    for key in dotted.split("."):
        value = value[key]
    return value


def summarize_runs(runs: list[dict]) -> list[dict]:
    """One row per condition (family, λ): ``{"family", "lambda", "n_seeds", "<measure>": {"mean", "sd"}}`` for every
    :data:`SUMMARY_MEASURES` entry (``sd`` over seeds, ``n − 1``; 0 for one seed)."""
    conditions: dict[tuple[str, float], list[dict]] = {}
    for run in runs:
        conditions.setdefault((run["family"], run["lambda"]), []).append(run)
    rows = []
    for (family, lam), members in conditions.items():
        row: dict = {"family": family, "lambda": lam, "n_seeds": len(members)}
        for measure in SUMMARY_MEASURES:
            values = [float(_get(m, measure)) for m in members]
            mean = sum(values) / len(values)
            sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
            row[measure] = {"mean": mean, "sd": sd}
        rows.append(row)
    return rows


def summary_markdown(rows: list[dict]) -> list[str]:
    """The summary as a Markdown table (mean ± sd over seeds)."""
    columns = [
        ("clean acc.", "clean_accuracy"),
        ("Δacc Gauss", "input_noise.gaussian.mean_delta_accuracy"),
        ("Δacc pink", "input_noise.pink.mean_delta_accuracy"),
        ("Δacc s&p", "input_noise.salt_and_pepper.mean_delta_accuracy"),
        ("Δacc weights", "weight_noise.mean_delta_accuracy"),
        ("Moran's I", "morans_i"),
        ("act. smooth.", "activation_smoothness_robust"),
        ("wt. smooth.", "weight_smoothness_robust"),
        ("neighbour r", "neighbour_correlation.mean"),
        ("BC", "neighbour_correlation.bimodality_coefficient"),
    ]
    lines = [
        "| model | λ | seeds | " + " | ".join(name for name, _ in columns) + " |",
        "|---|---|---|" + "---|" * len(columns),
    ]
    for row in rows:
        cells = [f"{row[key]['mean']:.3f} ± {row[key]['sd']:.3f}" for _, key in columns]
        lines.append(f"| {row['family']} | {row['lambda']:g} | {row['n_seeds']} | " + " | ".join(cells) + " |")
    return lines


_COLORS = {"baseline": "black", "ws": "tab:blue", "as": "tab:green"}
_LABELS = {"baseline": "baseline", "ws": "WS", "as": "AS"}


def plot_truong_hasson(result: dict, output_dir: str, figure_lambda: float | None = None) -> list[str]:
    """``truong_hasson.png`` (accuracy minus clean accuracy against input noise of each kind and weight noise, mean ±
    sd over seeds; the neighbour-correlation histograms pooled over seeds; seed 0's 11 × 11 maps of test image 0) for
    the baseline and WS / AS at ``figure_lambda`` (default: the largest λ), and ``truong_hasson_lambda.png`` (the
    measures against λ). Returns the two paths."""
    import numpy as np

    from ..analysis.plots import pyplot, save_figure

    plt = pyplot()
    runs = result["runs"]
    lambdas = sorted({r["lambda"] for r in runs if r["family"] != "baseline"})
    shown_lambda = figure_lambda if figure_lambda is not None else (max(lambdas) if lambdas else 0.0)

    def members(family: str) -> list[dict]:
        return [r for r in runs if r["family"] == family and (family == "baseline" or r["lambda"] == shown_lambda)]

    families = [f for f in ("baseline", "ws", "as") if members(f)]
    fig, axes = plt.subplots(2, 5, figsize=(21, 8))
    panels = [("input_noise", kind) for kind in ("gaussian", "pink", "salt_and_pepper")] + [("weight_noise", None)]
    for ax, (section, kind) in zip(axes[0][:4], panels, strict=True):
        for family in families:
            curves = [r[section][kind] if kind else r[section] for r in members(family)]
            xs = curves[0]["levels" if kind else "sigmas"]
            deltas = np.array([c["delta_accuracy"] for c in curves])
            label = _LABELS[family] + ("" if family == "baseline" else f" λ={shown_lambda:g}")
            ax.errorbar(xs, deltas.mean(0), yerr=deltas.std(0), color=_COLORS[family], marker="o", ms=3, label=label)
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(f"{kind.replace('_', ' ')} noise" if kind else "weight noise (σ × std(W))", fontsize=10)
        ax.set_xlabel("noise level" if kind else "relative σ")
        ax.set_ylabel("accuracy − clean accuracy")
        ax.legend(fontsize=8)
    bins = np.linspace(-1, 1, 41)
    for family in families:
        values = [v for r in members(family) for v in r["neighbour_correlation"]["values"] if v is not None]
        bc = np.mean([r["neighbour_correlation"]["bimodality_coefficient"] for r in members(family)])
        axes[1][0].hist(values, bins=bins, histtype="step", density=True, color=_COLORS[family], lw=1.5,
                        label=f"{_LABELS[family]} (BC {bc:.2f})")  # fmt: skip
        counts = np.sum([r["pair_correlation"]["histogram"] for r in members(family)], axis=0)
        bc = np.mean([r["pair_correlation"]["bimodality_coefficient"] for r in members(family)])
        axes[0][4].stairs(counts / counts.sum() / np.diff(bins), bins, color=_COLORS[family], lw=1.5,
                          label=f"{_LABELS[family]} (BC {bc:.2f})")  # fmt: skip
    for ax, title in ((axes[1][0], "neighbouring"), (axes[0][4], "all")):
        ax.set_title(f"r of {title} fc1 unit pairs (pooled over seeds)", fontsize=10)
        ax.set_xlabel("Pearson r over the test images")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
    axes[1][4].axis("off")
    for ax, family in zip(axes[1][1:4], ("baseline", "ws", "as"), strict=True):
        chosen = sorted(members(family), key=lambda r: r["seed"])
        if not chosen:
            ax.axis("off")
            continue
        image = ax.imshow(np.asarray(chosen[0]["maps"]["activation_example"]), cmap="RdBu_r")
        ax.set_title(
            f"{_LABELS[family]}" + ("" if family == "baseline" else f" λ={shown_lambda:g}")
            + f", seed {chosen[0]['seed']}: fc1 map of test image 0\nMoran's I {chosen[0]['morans_i']:.2f}",
            fontsize=9,
        )  # fmt: skip
        ax.axis("off")
        fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    paths = [save_figure(fig, os.path.join(output_dir, "truong_hasson.png"), dpi=100)]

    rows = result["summary"]
    measures = [
        ("clean_accuracy", "clean accuracy"),
        ("morans_i", "Moran's I of fc1 maps"),
        ("activation_smoothness_robust", "activation smoothness (near − far)"),
        ("weight_smoothness_robust", "weight smoothness (near − far)"),
        ("neighbour_correlation.bimodality_coefficient", "bimodality coefficient of neighbour r"),
        ("weight_noise.mean_delta_accuracy", "mean Δaccuracy, weight noise"),
    ]
    fig, axes = plt.subplots(1, len(measures), figsize=(3.4 * len(measures), 3.2))
    for ax, (key, title) in zip(axes, measures, strict=True):
        for family in ("ws", "as"):
            points = sorted((r["lambda"], r[key]["mean"], r[key]["sd"]) for r in rows if r["family"] == family)
            if points:
                xs, means, sds = zip(*points, strict=True)
                ax.errorbar(xs, means, yerr=sds, color=_COLORS[family], marker="o", ms=3, label=_LABELS[family])
        for r in rows:
            if r["family"] == "baseline":
                ax.axhline(r[key]["mean"], color="black", lw=1, ls="--", label="baseline")
        if key.endswith("bimodality_coefficient"):
            ax.axhline(5 / 9, color="grey", lw=0.8, ls=":", label="5/9")
        ax.set_xscale("log")
        ax.set_xlabel("λ")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(save_figure(fig, os.path.join(output_dir, "truong_hasson_lambda.png"), dpi=100))
    return paths


# ---- the run -----------------------------------------------------------------------------------------------------


def _check_arguments(args: TruongHassonArguments) -> None:
    unknown = [f for f in args.families if f not in FAMILY_REGULARIZERS]
    if unknown or not args.families:
        raise InputError(
            f"{parameter('families', repr(args.families))}: choose one or more of {list(FAMILY_REGULARIZERS)}."
        )
    if not args.seeds:
        raise InputError(f"{parameter('seeds')} is empty: give at least one training seed (3 or more for claims).")
    if any(isinstance(v, bool) or not (isinstance(v, (int, float)) and v > 0) for v in args.lambdas):
        raise InputError(f"{parameter('lambdas', repr(args.lambdas))}: every λ must be a number > 0.")
    if not args.noise_levels or any(not 0 <= v <= 1 for v in args.noise_levels):
        raise InputError(f"{parameter('noise_levels', repr(args.noise_levels))}: give levels in [0, 1].")
    if not args.weight_noise_sigmas or any(v < 0 for v in args.weight_noise_sigmas):
        raise InputError(f"{parameter('weight_noise_sigmas', repr(args.weight_noise_sigmas))}: give sigmas >= 0.")
    for name in ("max_steps", "batch_size", "noise_repeats", "weight_noise_repeats", "num_threads"):
        if getattr(args, name) < 1:
            raise InputError(f"{parameter(name, getattr(args, name))} must be at least 1.")


def _conditions(args: TruongHassonArguments) -> list[tuple[str, float]]:
    conditions = []
    for family in args.families:
        lambdas = [0.0] if family == "baseline" else [float(v) for v in args.lambdas]
        conditions += [(family, lam) for lam in lambdas]
    return conditions


def run_truong_hasson(args: TruongHassonArguments, command: str | None = None) -> dict:
    """Train and measure every (family, λ, seed) of ``args``; write ``results.json``, ``summary.md`` and the figures
    into ``args.output_dir`` (and the JSON to ``args.output``). Returns the result: ``settings``, ``data``,
    ``noise_definitions``, ``runs`` (one record per model, keys in the module docstring), ``summary``
    (:func:`summarize_runs`), ``table`` (Markdown lines), ``figures``, timings and the machine's load."""
    from ..analysis.image_noise import __doc__ as noise_doc

    _check_arguments(args)
    os.makedirs(args.output_dir, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.num_threads)
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    start, cpu_start = time.perf_counter(), sum(os.times()[:2])
    try:
        data = digits_tensors()
        runs = []
        conditions = _conditions(args)
        total = len(conditions) * len(args.seeds)
        for seed in args.seeds:
            for family, lam in conditions:
                name = _model_name(family, lam, seed)
                logger.info("[%d/%d] training %s", len(runs) + 1, total, name)
                model, info = train_model(
                    family, lam, seed, data["train"], args, os.path.join(args.output_dir, "models", name)
                )
                record = {"family": family, "lambda": lam, "seed": seed, "model": name}
                record.update(measure_model(model, data["test"], args))
                record["train"] = info
                logger.info(
                    "%s: clean accuracy %.3f, Moran's I %.3f, neighbour r %.3f (BC %.3f), %.0f s",
                    name, record["clean_accuracy"], record["morans_i"], record["neighbour_correlation"]["mean"],
                    record["neighbour_correlation"]["bimodality_coefficient"], info["wall_time_s"],
                )  # fmt: skip
                runs.append(record)
    finally:
        torch.set_num_threads(threads)
    result: dict = {
        "setting": "Truong & Hasson, 'Beyond topography': a CNN with a 121-unit fc1 on an 11x11 sheet, WS/AS with "
        "correlation distance, queen neighbours",
        "command": command,
        "settings": asdict(args),
        "data": {
            "name": "sklearn.datasets.load_digits (1,797 grayscale 8x8 digits, 10 classes), pixels / 16 in [0, 1]",
            "split": "every 5th image of each class held out (hf_topo.experiments.vision_demo.digits_split)",
            "n_train": int(data["train"][1].shape[0]),
            "n_test": int(data["test"][1].shape[0]),
        },
        "noise_definitions": {
            "gaussian": "x + level * N(0, 1) per pixel, clipped to [0, 1]",
            "pink": "x + level * (unit-RMS 1/f-amplitude noise field per image), clipped to [0, 1]",
            "salt_and_pepper": "each pixel replaced with probability level by 0 or 1 (even odds)",
            "weights": "every Conv2d/Linear weight W += sigma * std(W) * N(0, 1); biases untouched",
            "module": (noise_doc or "").strip().splitlines()[0],
        },
        "runs": runs,
    }
    result["summary"] = summarize_runs(runs)
    result["table"] = summary_markdown(result["summary"])
    result["figures"] = [os.path.abspath(p) for p in plot_truong_hasson(result, args.output_dir, args.figure_lambda)]
    result["wall_time_s"] = time.perf_counter() - start
    result["cpu_time_s"] = sum(os.times()[:2]) - cpu_start
    result["machine"] = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": args.num_threads,
        "load_average_start": load_start,
        "load_average_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
    }
    paths = [os.path.join(args.output_dir, "results.json")] + ([args.output] if args.output else [])
    for path in paths:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
    with open(os.path.join(args.output_dir, "summary.md"), "w") as f:
        f.write("\n".join(result["table"]) + "\n")
    return result
