"""Compare the regularizers: no regularizer, TopoLoss, Weight Similarity, Activation Similarity and TopoLM's
spatial-correlation loss on the same tiny model and data, at a few strengths each; a table and a figure of what each
does to the model.

    hf-topo compare-regularizers --train_file tinyshakespeare.txt \\
        --strengths topo=1,5 ws=0.5,2 as=0.5,2 topolm=5,20 --max_steps 300 --output_dir outputs/regularizers

Every model is one `hf_topo.pretraining.pretrain` run of one recipe (`small_cpu_recipe`) (data, tokenizer, seed, optimizer, steps); only the regularizer
(`--topo_loss_type`) and its strength (`--tau`) differ. The baseline (τ=0) trains the byte-level BPE tokenizer and
every other model reuses it. Weight / Activation Similarity use `--topo_distance correlation` (Truong & Hasson's
choice) unless told otherwise. TopoLM models put the loss on TopoLM's sites (`--topolm_placement`, default the
residual stream after every attention and MLP: `hf_topo.presets.topolm_targets`) with `--topolm_radius` (default 3,
a 5×5 window, since a tiny model's hidden size is a small sheet) and `--topolm_neighbourhoods`. Without `--validation_file`, the last `--validation_fraction` of the training file's
lines is held out (written to `<output_dir>/data/`): models are evaluated and analysed on it only.

Each model is then analysed on the held-out text with `hf_topo.analysis.analyze_model`, all on the baseline's layers
and sheets: eval loss and perplexity, the three regularizers measured post hoc with shared settings (TopoLoss with
the default blur, WS and AS with the comparison's distance, TopoLM's loss with the comparison's radius on the analysed
layers' activations; `hf_topo.analysis.regularizer_values`), smoothness of
activations and weights, Moran's I, effective dimensionality, and Δ perplexity under weight noise, random token
substitution and token deletion (`--sweeps` adds `pruning`, `downsampling`). Every `AnalysisSettings` field is a flag
(`--max_tokens`, `--eval_blocks`, `--noise_sigmas 0 0.5 1`, `--input_rates 0 0.1 0.3`, ...); any flag this script
does not know is a `hf-topo pretrain` setting applied to every model alike (e.g. `--weight_decay 0.05`). `--seed` seeds every
model's initialization and data order, and the analysis.

Writes `comparison.json` (the recipe and everything measured), `comparison.md` (the table) and `regularizers.png`
to `--output_dir`, and prints the table.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

import hf_topo
from hf_topo.analysis import (
    AnalysisSettings,
    AnalysisSummary,
    analyze_model,
    collect_activations,
    load_text_blocks,
    regularizer_values,
)
from hf_topo.analysis.plots import pyplot, save_figure
from hf_topo.cli.arguments import explicit_flags, make_argument_parser, parse_command_line, run_command, setup_logging
from hf_topo.config import TopoConfig
from hf_topo.models import apply_overrides, preset_config
from hf_topo.presets import topolm_targets
from hf_topo.pretraining import DataArguments, ModelArguments, hold_out_lines, pretrain, small_cpu_recipe
from hf_topo.regularizers import registered_regularizers
from hf_topo.trainer import TopoTrainingArguments

#: `--strengths` family → the regularizer (`--topo_loss_type`), and its name in the table.
FAMILIES = {
    "topo": "laplacian_pyramid",
    "topo_input": "laplacian_pyramid",
    "topo_bias": "laplacian_pyramid",
    "ws": "weight_similarity",
    "as": "activation_similarity",
    "topolm": "spatial_correlation",
}
#: The TopoLoss sheets of topoloss's LaplacianPyramidOnInput / OnBias: the family's own pretraining settings.
FAMILY_SETTINGS = {"topo_input": {"topo_sheet": "input"}, "topo_bias": {"topo_include_bias": True}}
DISPLAY = {
    "none": "none", "topo": "TopoLoss", "topo_input": "TopoLoss (input sheet)", "topo_bias": "TopoLoss + bias sheet",
    "ws": "WS", "as": "AS", "topolm": "TopoLM",
}  # fmt: skip
COLORS = {
    "none": "black", "topo": "tab:red", "topo_input": "tab:orange", "topo_bias": "tab:brown", "ws": "tab:blue",
    "as": "tab:green", "topolm": "tab:purple",
}  # fmt: skip
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


def make_parser(prog: str | None = None):
    parser = make_argument_parser((CompareArguments, AnalysisSettings), prog, __doc__)
    # A comparison of seven models on a CPU: a modest analysis budget unless told otherwise.
    parser.set_defaults(
        max_tokens=4096, eval_blocks=32, noise_sigmas=[0.0, 0.5, 1.0], input_rates=[0.0, 0.1, 0.3],
        sweeps=["noise", "substitution", "deletion"],
    )  # fmt: skip
    return parser


def parse_args(
    argv: list[str] | None = None, prog: str | None = None
) -> tuple[CompareArguments, AnalysisSettings, dict]:
    """The comparison's arguments, the analysis settings and the pretraining settings given as extra flags."""
    args, settings, extra = parse_command_line(make_parser(prog), argv, allow_extra_flags=True)
    pretrain_settings = explicit_flags((ModelArguments, DataArguments, TopoTrainingArguments), extra)
    clashing = [name for name in pretrain_settings if name in OWN_PRETRAIN_SETTINGS]
    if clashing:
        raise ValueError(
            f"{['--' + name for name in clashing]} would change what the comparison sets per model; use this "
            "command's own flags (--strengths, --train_file, --validation_file, --topo_distance, --seed, ...)."
        )
    if args.topolm_placement not in ("residual", "outputs"):
        raise ValueError(f"--topolm_placement {args.topolm_placement!r}: choose residual or outputs.")
    if not 0 < args.validation_fraction < 1:
        raise ValueError(f"--validation_fraction {args.validation_fraction} must be between 0 and 1.")
    return args, settings, pretrain_settings


def parse_strengths(entries: list[str]) -> list[tuple[str, float]]:
    """``["topo=1,5", "ws=0.5"]`` → ``[("topo", 1.0), ("topo", 5.0), ("ws", 0.5)]``."""
    runs = []
    for entry in entries:
        family, _, values = entry.partition("=")
        if family not in FAMILIES or not values:
            raise ValueError(
                f"--strengths {entry!r}: expected FAMILY=τ1,τ2,… with FAMILY among {list(FAMILIES)}, e.g. topo=1,5."
            )
        for value in values.split(","):
            tau = float(value)
            if not (math.isfinite(tau) and tau > 0):
                raise ValueError(f"--strengths {entry!r}: τ={value} must be > 0 (the baseline is the τ=0 model).")
            runs.append((family, tau))
    return runs


def held_out_split(args: CompareArguments) -> tuple[str, str]:
    """The training and held-out files: the given ones, or the training file split by lines (the last lines held out)."""
    if args.validation_file is not None:
        return args.train_file, args.validation_file
    return hold_out_lines(args.train_file, args.validation_fraction, os.path.join(args.output_dir, "data"))


def recipe_settings(
    args: CompareArguments, seed: int, files: tuple[str, str], loss: str, tau: float, name: str, tokenizer: str | None
) -> dict:
    """The `small_cpu_recipe` settings of one model: the same for every model but the regularizer, τ, its folder and
    (for every model after the baseline) the baseline's tokenizer."""
    settings = dict(
        train_file=files[0], validation_file=files[1], output_dir=os.path.join(args.output_dir, name), tau=tau,
        max_steps=args.max_steps, batch_size=args.train_batch_size, learning_rate=args.learning_rate,
        block_size=args.block_size, seed=seed, model_preset=args.model_preset, vocab_size=args.vocab_size,
        max_eval_blocks=args.max_eval_blocks, tokenizer=tokenizer, topo_loss_type=loss,
        topo_distance=args.topo_distance, topo_neighbourhood=args.topo_neighbourhood, disable_tqdm=not args.progress,
        topo_radius=args.topolm_radius, topo_neighbourhoods_per_batch=args.topolm_neighbourhoods,
    )  # fmt: skip
    if loss == "spatial_correlation":  # TopoLM's sites in this architecture, instead of the MLP expansion layer
        sites = topolm_targets(_architecture(args), args.topolm_placement)
        targets = sites["target_modules"]
        settings["topo_target_modules"] = [f"re:{targets}"] if isinstance(targets, str) else targets
        settings["topo_sheet"] = sites["sheet"]
    if args.config_overrides:
        settings["config_overrides"] = args.config_overrides
    if args.device == "cpu":
        settings["use_cpu"] = True
    return settings


def _architecture(args: CompareArguments):
    """The config of the compared architecture (preset and overrides), to find TopoLM's sites in."""
    return apply_overrides(preset_config(args.model_preset, args.vocab_size, args.block_size), args.config_overrides)


def train(settings: dict, reuse: bool) -> dict:
    """One pretraining run (or, with ``reuse``, the model already saved there): its metrics and log history."""
    model_args, data_args, training_args = small_cpu_recipe(**settings)
    directory = os.path.abspath(training_args.output_dir)
    saved = [os.path.join(directory, name) for name in ("config.json", "trainer_state.json")]
    metrics: dict = {"output_dir": directory, "tau": training_args.tau}
    if reuse and all(os.path.isfile(path) for path in saved):
        metrics["reused"] = True
    else:
        start = time.perf_counter()
        metrics = pretrain(model_args, data_args, training_args)
        metrics["wall_time_s"] = time.perf_counter() - start
    metrics_file = os.path.join(directory, "metrics.json")
    if metrics.get("reused") and os.path.isfile(metrics_file):
        with open(metrics_file) as f:
            metrics = json.load(f) | metrics
    with open(saved[1]) as f:
        history = json.load(f)["log_history"]
    metrics["log_history"] = [
        {k: h[k] for k in ("step", "task_loss", "topo_loss", "loss") if k in h} for h in history if "task_loss" in h
    ]
    metrics["train_runtime"] = next((h["train_runtime"] for h in history if "train_runtime" in h), None)
    return metrics


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
            "regularizer": DISPLAY[run["family"]],
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
    colors = [COLORS[run["family"]] for run in runs]
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
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    plan = [("none", "laplacian_pyramid", 0.0)] + [(f, FAMILIES[f], tau) for f, tau in parse_strengths(args.strengths)]
    files = held_out_split(args)  # checks the training text before anything is written
    os.makedirs(args.output_dir, exist_ok=True)
    print(f"Training text: {files[0]}\nHeld-out text: {files[1]}")

    runs: list[dict] = []
    for i, (family, loss, tau) in enumerate(plan, start=1):
        name = "baseline" if family == "none" else f"{family}-tau{tau:g}"
        print(f"\n=== [{i}/{len(plan)}] Training {name}: {DISPLAY[family]}, τ={tau:g} ===", flush=True)
        tokenizer = runs[0]["output_dir"] if runs else None  # the baseline trains the tokenizer; the others share it
        recipe = (
            recipe_settings(args, settings.seed, files, loss, tau, name, tokenizer)
            | FAMILY_SETTINGS.get(family, {})
            | pretrain_settings
        )
        metrics = train(recipe, args.reuse_trained)
        with open(os.path.join(metrics["output_dir"], "config.json")) as f:
            record = json.load(f)["topography"]
        runs.append(
            {
                "name": name, "family": family, "loss": loss, "tau": tau, "output_dir": metrics["output_dir"],
                "pretrain_settings": recipe,
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
                "hf_topo": hf_topo.__version__,
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


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    setup_logging(logging.WARNING)  # seven trainings and analyses: their progress bars say enough
    argv = sys.argv[1:] if argv is None else argv
    return compare_regularizers(*parse_args(argv, prog), command="hf-topo compare-regularizers " + " ".join(argv))


if __name__ == "__main__":
    sys.exit(run_command(main, prog="hf-topo compare-regularizers"))
