"""Compare the regularizers on one recipe: a τ = 0 baseline, TopoLoss, Weight / Activation Similarity and TopoLM's
spatial-correlation loss at a few strengths each (:data:`~hf_topo.experiments.families.FAMILIES`), every model
analysed on the baseline's layers and sheets; a table and a figure. ``hf-topo compare-regularizers`` runs
:func:`compare_regularizers` (its flags and what it measures are in that command's ``--help``).

    from hf_topo.analysis import AnalysisSettings
    from hf_topo.experiments.compare_regularizers import CompareArguments, compare_regularizers

    compare_regularizers(CompareArguments(train_file="corpus.txt", output_dir="outputs/regularizers",
                                          strengths=["topo=1,5", "ws=0.5,2"]), AnalysisSettings(), {})
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

from .._version import __version__
from ..analysis import AnalysisSettings, AnalysisSummary, analyze_model, collect_activations, regularizer_values
from ..analysis.plots import pyplot, save_figure
from ..config import TopoConfig
from ..errors import InputError, parameter
from ..evaluation import load_text_blocks
from ..regularizers import registered_regularizers
from .families import FAMILIES, family_by_short_name, family_recipe, train_family
from .recipes import hold_out_lines

__all__ = ["CompareArguments", "OWN_PRETRAIN_SETTINGS", "compare_regularizers", "parse_strengths"]

#: The families `--strengths` may name (:attr:`Family.short`); the baseline (`none`) is always trained.
STRENGTH_FAMILIES = tuple(family.short for family in FAMILIES.values() if family.regularizer is not None)
#: Settings the comparison sets per model: taking them from the extra flags would break the comparison.
OWN_PRETRAIN_SETTINGS = (
    "tau", "topo_loss_type", "output_dir", "tokenizer_name", "train_file", "validation_file",
    "model_name_or_path", "topo_distance", "topo_neighbourhood", "seed", "topo_radius",
    "topo_neighbourhoods_per_batch", "topo_target_modules", "topo_sheet", "topo_include_bias",
)  # fmt: skip


@dataclass
class CompareArguments:
    """The models to train (the recipe every model shares) and where the comparison goes."""

    train_file: str = field(metadata={"help": "Training text (.txt or .jsonl), the same for every model."})
    output_dir: str = field(metadata={"help": "Where the models, comparison.json/.md and regularizers.png go."})
    validation_file: str | None = field(
        default=None, metadata={"help": "Held-out text for evaluation and analysis (default: split off the end)."}
    )
    validation_fraction: float = field(
        default=0.1, metadata={"help": "Without --validation_file: the last fraction of lines held out."}
    )
    strengths: list[str] = field(
        default_factory=lambda: ["topo=1,5", "ws=0.5,2", "as=0.5,2"],
        metadata={
            "help": "τ values per regularizer: topo=… (TopoLoss), topo_input=… / topo_bias=… (TopoLoss on the "
            "input sheet / with the bias sheet), ws=… (Weight / as=… Activation Similarity), topolm=… (TopoLM's "
            "spatial correlation)."
        },
    )
    topo_distance: str = field(
        default="correlation", metadata={"help": "Neighbour distance of WS/AS in training and post hoc."}
    )
    topo_neighbourhood: int = field(default=1, metadata={"help": "Neighbourhood radius of WS/AS (1 = 3x3)."})
    topolm_placement: str = field(
        default="residual", metadata={"help": "TopoLM's sites: residual (its main models) or outputs (attn, MLP)."}
    )
    topolm_radius: int = field(
        default=3, metadata={"help": "TopoLM's radius in training and post hoc (3 = 5x5 windows; TopoLM uses 5)."}
    )
    topolm_neighbourhoods: int = field(default=5, metadata={"help": "TopoLM's neighbourhoods per micro-batch."})
    model_preset: str = field(default="tiny-gpt2", metadata={"help": "Architecture of every model (models.py)."})
    config_overrides: str | None = field(
        default=None, metadata={"help": "Preset config overrides, e.g. 'n_embd=32,n_layer=2'."}
    )
    vocab_size: int = field(default=4096, metadata={"help": "Vocabulary of the tokenizer trained once (baseline)."})
    block_size: int = field(default=128, metadata={"help": "Tokens per sequence in training and analysis."})
    max_steps: int = field(default=300, metadata={"help": "Optimizer steps per model."})
    train_batch_size: int = field(default=16, metadata={"help": "Sequences per optimizer step."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak learning rate (cosine schedule, 5% warmup)."})
    max_eval_blocks: int = field(
        default=64,
        metadata={
            "help": "Held-out blocks of the training run's own evaluation (the table's eval loss is the analysis')."
        },
    )
    device: str | None = field(default=None, metadata={"help": "cpu or cuda (default: cuda when available)."})
    reuse_trained: bool = field(
        default=False,
        metadata={
            "help": "Do not retrain a model whose directory already holds its config.json and trainer_state.json."
        },
    )
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self):
        if self.topolm_placement not in ("residual", "outputs"):
            raise InputError(
                f"{parameter('topolm_placement', repr(self.topolm_placement))}: choose residual or outputs."
            )
        if not 0 < self.validation_fraction < 1:
            raise InputError(f"{parameter('validation_fraction', self.validation_fraction)} must be between 0 and 1.")


#: Settings of the analysis the comparison runs unless told otherwise: seven models on a CPU, a modest budget.
ANALYSIS_DEFAULTS = dict(
    max_tokens=4096, eval_blocks=32, noise_sigmas=[0.0, 0.5, 1.0], input_rates=[0.0, 0.1, 0.3],
    sweeps=["noise", "substitution", "deletion"],
)  # fmt: skip


def check_pretrain_settings(pretrain_settings: dict) -> None:
    """Refuse extra pretraining settings that would change what the comparison sets per model
    (:data:`OWN_PRETRAIN_SETTINGS`)."""
    clashing = [name for name in pretrain_settings if name in OWN_PRETRAIN_SETTINGS]
    if clashing:
        raise InputError(
            f"{', '.join(parameter(name) for name in clashing)} would change what the comparison sets per model; use "
            f"this command's own settings ({parameter('strengths')}, {parameter('train_file')}, "
            f"{parameter('validation_file')}, {parameter('topo_distance')}, {parameter('seed')}, ...)."
        )


def parse_strengths(entries: list[str]) -> list[tuple[str, float]]:
    """``["topo=1,5", "ws=0.5"]`` → ``[("topo", 1.0), ("topo", 5.0), ("ws", 0.5)]``."""
    runs = []
    for entry in entries:
        short, _, values = entry.partition("=")
        if short not in STRENGTH_FAMILIES or not values:
            raise InputError(
                f"{parameter('strengths', repr(entry))}: expected FAMILY=τ1,τ2,… with FAMILY among "
                f"{list(STRENGTH_FAMILIES)}, e.g. topo=1,5."
            )
        for value in values.split(","):
            tau = float(value)
            if not (math.isfinite(tau) and tau > 0):
                raise InputError(
                    f"{parameter('strengths', repr(entry))}: τ={value} must be > 0 (the baseline is the τ=0 model)."
                )
            runs.append((short, tau))
    return runs


def held_out_split(args: CompareArguments) -> tuple[str, str]:
    """The training and held-out files: the given ones, or the training file split by lines (the last lines held out)."""
    if args.validation_file is not None:
        return args.train_file, args.validation_file
    return hold_out_lines(args.train_file, args.validation_fraction, os.path.join(args.output_dir, "data"))


def recipe_settings(
    args: CompareArguments, seed: int, files: tuple[str, str], tau: float, name: str, tokenizer: str | None
) -> dict:
    """The recipe every model shares (:func:`~hf_topo.experiments.families.train_family`'s settings) but τ, its
    folder and (for every model after the baseline) the baseline's tokenizer."""
    settings = dict(
        train_file=files[0], validation_file=files[1], output_dir=os.path.join(args.output_dir, name), tau=tau,
        max_steps=args.max_steps, batch_size=args.train_batch_size, learning_rate=args.learning_rate,
        block_size=args.block_size, seed=seed, model_preset=args.model_preset, vocab_size=args.vocab_size,
        max_eval_blocks=args.max_eval_blocks, tokenizer=tokenizer,
        topo_distance=args.topo_distance, topo_neighbourhood=args.topo_neighbourhood, disable_tqdm=not args.progress,
        topo_radius=args.topolm_radius, topo_neighbourhoods_per_batch=args.topolm_neighbourhoods,
    )  # fmt: skip
    if args.config_overrides:
        settings["config_overrides"] = args.config_overrides
    if args.device == "cpu":
        settings["use_cpu"] = True
    return settings


def analyse(run: dict, tokenizer, text, settings: AnalysisSettings, topography: TopoConfig, args) -> dict:
    """Analysis summary, sweeps and post-hoc regularizer values of one trained model, on the baseline's sheets."""
    model = AutoModelForCausalLM.from_pretrained(run["output_dir"], dtype=torch.float32).to(args.device)
    set_seed(settings.seed)
    start = time.perf_counter()
    analysis = analyze_model(
        model, tokenizer, text, settings, label=run["name"], topography=topography, progress=args.progress
    )
    activations = collect_activations(
        model, text, analysis.layers, settings.batch_size, settings.max_tokens, progress=False
    )
    posthoc = regularizer_values(
        analysis.layers,
        activations,
        settings=TopoConfig(
            distance=args.topo_distance, neighbourhood=args.topo_neighbourhood, radius=args.topolm_radius
        ),
    )
    report = analysis.to_dict()
    return {
        "summary": report["summary"],  # flat, derived from analysis_summary (the comparison table's keys)
        "analysis_summary": report["analysis_summary"],
        "layers": report["layers"],
        "sweeps": report["sweeps"],
        "curves": report["curves"],  # correlation vs distance on the sheet, per layer (activations and weights)
        "posthoc": {loss: value.to_dict() for loss, value in posthoc.items()},
        "wall_time_s": time.perf_counter() - start,
    }


# The scalar columns after the model's name: (header, key into flat_metrics, format).
SCALAR_COLUMNS = (
    ("regularizer", "regularizer", "s"),
    ("τ", "tau", "g"),
    ("eval loss", "eval_loss", ".4f"),
    ("perplexity", "perplexity", ".2f"),
    ("TopoLoss", "topo_loss", ".4f"),
    ("WS", "weight_similarity", ".4f"),
    ("AS", "activation_similarity", ".4f"),
    ("TopoLM", "spatial_correlation", ".4f"),
    ("smoothness", "smoothness", ".3f"),
    ("weight smoothness", "weight_smoothness", ".3f"),
    ("Moran's I", "morans_i", ".3f"),
    ("eff. dim", "effective_dimensionality", ".1f"),
)
# The sweeps shown as Δ perplexity columns, in this order, with how a column names a strength x.
SWEEP_HEADERS = {
    "noise": lambda x: f"Δppl noise σ={x:g}",
    "substitution": lambda x: f"Δppl substitution p={x:g}",
    "deletion": lambda x: f"Δppl deletion p={x:g}",
    "pruning": lambda x: f"Δppl pruned {round(100 * x)}%",
}


def table_columns(runs: list[dict]) -> list[tuple[str, Callable[[dict], Any], str]]:
    """``(header, value of a run, format)`` for every column after the model's name: the scalars, then Δ perplexity
    at every perturbed strength that any run's typed analysis summary measured."""
    columns = [(header, lambda run, key=key: flat_metrics(run).get(key), fmt) for header, key, fmt in SCALAR_COLUMNS]
    summaries = [_analysis_summary(run) for run in runs]
    for kind, header in SWEEP_HEADERS.items():
        strengths = sorted({p.x for s in summaries if kind in s.sweeps for p in s.sweeps[kind].perturbed_points()})
        columns += [
            (header(x), lambda run, kind=kind, x=x: _analysis_summary(run).delta_perplexity(kind, x), ".2f")
            for x in strengths
        ]
    return columns


def _analysis_summary(run: dict) -> AnalysisSummary:
    return AnalysisSummary.from_dict(run["analysis_summary"], source=run["name"])


def flat_metrics(run: dict) -> dict:
    """The scalars of one model: training results, post-hoc regularizers and the analysis summary in one dict."""
    return (
        {
            "regularizer": family_by_short_name(run["family"]).display,
            "tau": run["tau"],
            # ln(perplexity) of the analysis: every model on the same held-out blocks, by the same code
            "eval_loss": math.log(run["summary"]["perplexity"]),
        }
        | {("topo_loss" if loss == "laplacian_pyramid" else loss): v["mean"] for loss, v in run["posthoc"].items()}
        | run["summary"]
    )


def markdown_table(runs: list[dict]) -> list[str]:
    columns = table_columns(runs)
    rows = ["| model | " + " | ".join(header for header, _, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for run in runs:
        cells = []
        for _, value_of, fmt in columns:
            value = value_of(run)
            cells.append("n/a" if value is None else format(value, fmt))
        rows.append(f"| {run['name']} | " + " | ".join(cells) + " |")
    return rows


def plot(runs: list[dict], settings: AnalysisSettings, path: str) -> str:
    """Bars per model for each scalar metric, training curves, and the robustness sweeps overlaid."""
    plt = pyplot()

    bars = [
        ("eval_loss", "Eval loss (held out, nats/token)"),
        ("topo_loss", "TopoLoss (post hoc, φ=3)"),
        ("weight_similarity", "WS (post hoc)"),
        ("activation_similarity", "AS (post hoc, held-out tokens)"),
        ("spatial_correlation", "TopoLM spatial loss (post hoc)"),
        ("smoothness", "Smoothness (activations)"),
        ("weight_smoothness", "Smoothness (weights)"),
        ("morans_i", "Moran's I (activations)"),
        ("effective_dimensionality", "Effective dimensionality"),
    ]
    sweeps = [
        kind for kind in ("noise", "substitution", "deletion", "pruning", "downsampling") if kind in settings.sweeps
    ]
    n_panels = len(bars) + 1 + len(sweeps)
    n_cols = 3
    n_rows = math.ceil(n_panels / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(5.2 * n_cols, 3.6 * n_rows), squeeze=False)
    axes = [ax for row in axes for ax in row]
    names = [run["name"] for run in runs]
    colors = [family_by_short_name(run["family"]).color for run in runs]
    flats = [flat_metrics(run) for run in runs]
    for ax, (key, title) in zip(axes, bars, strict=False):
        values = [m.get(key, math.nan) for m in flats]
        ax.bar(range(len(runs)), values, color=colors, alpha=0.8)
        ax.set_xticks(range(len(runs)), names, rotation=45, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        finite = [v for v in values if math.isfinite(v)]
        if finite and key in ("eval_loss", "effective_dimensionality"):  # differences are small next to the values
            low, high = min(finite), max(finite)
            ax.set_ylim(low - 0.5 * (high - low + 1e-3), high + 0.5 * (high - low + 1e-3))
    curves = axes[len(bars)]
    for run, color in zip(runs, colors, strict=True):
        history = run["training"]["log_history"]
        curves.plot(
            [h["step"] for h in history], [h["task_loss"] for h in history], color=color, label=run["name"],
            alpha=_alpha(run, runs),
        )  # fmt: skip
    curves.set_title("Task loss (training)", fontsize=10)
    curves.set(xlabel="optimizer step", ylabel="cross-entropy")
    curves.grid(alpha=0.3)
    curves.legend(fontsize=7)
    for ax, kind in zip(axes[len(bars) + 1 :], sweeps, strict=False):
        for run, color in zip(runs, colors, strict=True):
            sweep = run["sweeps"].get(kind)
            if sweep is None:
                continue
            ax.plot(
                sweep["x"], sweep["delta_perplexity"], marker="o", ms=3, color=color, alpha=_alpha(run, runs),
                label=f"{run['name']} (ppl {sweep['reference_perplexity']:.1f})",
            )  # fmt: skip
            ax.set(xlabel=sweep["x_label"])
        ax.set_title(f"Robustness: {kind}", fontsize=10)
        ax.set(ylabel="Δ perplexity (perturbed − clean)")
        ax.axhline(0, color="gray", linewidth=0.6)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[n_panels:]:
        ax.axis("off")
    fig.suptitle("Regularizers compared (same model, data and recipe; only the regularizer and τ differ)")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return path


def _alpha(run: dict, runs: list[dict]) -> float:
    """Stronger τ within a family: more opaque."""
    taus = sorted({r["tau"] for r in runs if r["family"] == run["family"]})
    return 1.0 if len(taus) < 2 else 0.45 + 0.55 * taus.index(run["tau"]) / (len(taus) - 1)


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


def compare_regularizers(
    args: CompareArguments, settings: AnalysisSettings, pretrain_settings: dict, command: str | None = None
) -> dict:
    """Train every model, analyse them, write comparison.json/.md and regularizers.png; returns comparison.json.

    ``pretrain_settings``: further `hf-topo pretrain` settings for every model alike; ``command``: the command line,
    recorded with the recipe."""
    check_pretrain_settings(pretrain_settings)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    plan = [(FAMILIES["baseline"], 0.0)] + [
        (family_by_short_name(short), tau) for short, tau in parse_strengths(args.strengths)
    ]
    files = held_out_split(args)  # checks the training text before anything is written
    os.makedirs(args.output_dir, exist_ok=True)
    print(f"Training text: {files[0]}\nHeld-out text: {files[1]}")

    runs: list[dict] = []
    for i, (family, tau) in enumerate(plan, start=1):
        name = "baseline" if family.regularizer is None else f"{family.short}-tau{tau:g}"
        print(f"\n=== [{i}/{len(plan)}] Training {name}: {family.display}, τ={tau:g} ===", flush=True)
        tokenizer = runs[0]["output_dir"] if runs else None  # the baseline trains the tokenizer; the others share it
        recipe = family_recipe(
            family, args.topolm_placement,
            **recipe_settings(args, settings.seed, files, tau, name, tokenizer) | pretrain_settings,
        )  # fmt: skip
        metrics = train_family(family, reuse=args.reuse_trained, **recipe)
        with open(os.path.join(metrics["output_dir"], "config.json")) as f:
            record = json.load(f)["topography"]
        runs.append(
            {
                "name": name, "family": family.short, "loss": recipe["topo_loss_type"], "tau": tau,
                "output_dir": metrics["output_dir"], "pretrain_settings": recipe,
                "saved_topography": {
                    key: record.get(key) for key in ("loss", "distance", "tau", "sheet", "include_bias")
                },
                "training": {k: v for k, v in metrics.items() if k != "topo_loss_per_layer"},
            }
        )  # fmt: skip

    tokenizer = AutoTokenizer.from_pretrained(runs[0]["output_dir"])
    max_blocks = max(settings.eval_blocks, math.ceil(settings.max_tokens / args.block_size))
    text = load_text_blocks(tokenizer, args.block_size, text_file=files[1], max_blocks=max_blocks)
    topography = TopoConfig.from_pretrained(runs[0]["output_dir"])  # every model on the baseline's layers and sheets
    for i, run in enumerate(runs, start=1):
        print(f"\n=== [{i}/{len(runs)}] Analysing {run['name']} ===", flush=True)
        run.update(analyse(run, tokenizer, text, settings, topography, args))

    rows = markdown_table(runs)
    figure = plot(runs, settings, os.path.join(args.output_dir, "regularizers.png"))
    comparison = {
        "recipe": {
            "command": command,
            "arguments": asdict(args),
            "analysis_settings": asdict(settings),
            "pretrain_extra_settings": pretrain_settings,
            "train_file": os.path.abspath(files[0]),
            "held_out_file": os.path.abspath(files[1]),
            "analysis_text": {"blocks": len(text), "block_size": args.block_size},
            "analysed_layers": list(topography.layers),
            "posthoc_settings": "TopoLoss: TopoConfig() defaults (φ=3, bilinear); WS/AS: "
            f"distance={args.topo_distance}, neighbourhood={args.topo_neighbourhood}; AS over the analysis activations; "
            f"TopoLM: radius={args.topolm_radius} (clipped to the sheets), up to 64 seeded neighbourhoods per layer",
            "versions": {
                "hf_topo": __version__,
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            },
            "device": args.device,
            "torch_threads": torch.get_num_threads(),
        },
        "losses": list(registered_regularizers()),
        "models": runs,
        "table": [{"name": run["name"]} | flat_metrics(run) for run in runs],
        "figure": os.path.abspath(figure),
    }
    comparison = _finite_or_none(comparison)
    with open(os.path.join(args.output_dir, "comparison.json"), "w") as f:
        json.dump(comparison, f, indent=2)
    with open(os.path.join(args.output_dir, "comparison.md"), "w") as f:
        f.write("\n".join(rows) + "\n")
    print("\n" + "\n".join(rows))
    print(
        f"\nFigure: {os.path.abspath(figure)}\nResults: {os.path.abspath(os.path.join(args.output_dir, 'comparison.json'))}"
    )
    return comparison
