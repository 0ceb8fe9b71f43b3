"""The demo: pretrain a small TopoNet and its τ=0 twin on real text, offline, on CPU, in minutes; analyse both and
report. ``hf-topo demo`` runs :func:`run_demo` (what it writes is in that command's ``--help``).

    from hf_topo.experiments.demo import DemoArguments, run_demo

    summary = run_demo(DemoArguments(output_dir="outputs/demo", max_steps=300))

Both models are :func:`~hf_topo.experiments.families.train_family` runs of one recipe (data, tokenizer, seed); only
τ differs. The last 5 % of the corpus (by lines) is held out: both models are evaluated and analysed on it. Like a
script, the demo prints its progress and tables.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch

from ..analysis.maps import weight_pc1_map
from ..analysis.plots import pyplot, save_figure
from ..analysis.report import AnalysisSettings
from ..analysis.run import AnalyzeArguments, analyze_saved_models
from ..analysis.summary import AnalysisSummary
from ..config import TopoConfig
from ..data import write_python_corpus
from ..errors import InputError, parameter
from ..topo_regularizer import TopoRegularizer
from .families import train_family
from .recipes import hold_out_lines

__all__ = ["DemoArguments", "run_demo"]


@dataclass
class DemoArguments:
    """The demo's corpus, recipe and output."""

    output_dir: str = field(default="outputs/demo", metadata={"help": "Where both models and the report go."})
    train_file: str | None = field(
        default=None, metadata={"help": "Any text file; default: Python standard-library sources."}
    )
    corpus_bytes: int = field(default=2_000_000, metadata={"help": "Bytes of stdlib source for the default corpus."})
    tau: float = field(default=5.0, metadata={"help": "τ of the TopoNet (the baseline has τ=0)."})
    max_steps: int = field(default=500, metadata={"help": "Optimizer steps per model."})
    batch_size: int = field(default=16, metadata={"help": "Sequences per step (training and evaluation)."})
    block_size: int = field(default=128, metadata={"help": "Tokens per sequence."})
    learning_rate: float = field(default=2e-3, metadata={"help": "Peak learning rate (cosine, 5 % warm-up)."})
    vocab_size: int = field(default=4096, metadata={"help": "Vocabulary of the BPE tokenizer trained on the corpus."})
    seed: int = field(default=0, metadata={"help": "Seed of both models (initialization, data order, analysis)."})
    blimp_dir: str | None = field(
        default=None, metadata={"help": "BLiMP jsonl files (<paradigm>.jsonl): score both models."}
    )
    blimp_limit: int | None = field(default=None, metadata={"help": "At most this many BLiMP pairs per paradigm."})
    skip_analysis: bool = field(default=False, metadata={"help": "Train and report only; do not run the analysis."})
    domain: str = field(
        default="language",
        metadata={
            "help": "language (this demo) or vision: `hf-topo demo --domain vision --help` (hf_topo.experiments.vision_demo)."
        },
    )


#: The demo's analysis table: a measure (a field of AnalysisSummary) or a sweep point (kind, strength) per row.
ANALYSIS_ROWS: tuple[tuple[str | tuple[str, float], str], ...] = (
    ("smoothness", "smoothness (activations)"),
    ("weight_smoothness", "smoothness (weights)"),
    ("morans_i", "Moran's I of activation maps"),
    ("effective_dimensionality", "effective dimensionality"),
    ("perplexity", "held-out perplexity"),
    (("downsampling", 2.0), "Δ perplexity, sheets downsampled 2×2"),
    (("pruning", 0.5), "Δ perplexity, 50 % L1 pruning of c_fc"),
    (("noise", 0.5), "Δ perplexity, weight noise σ = 0.5·std"),
    (("substitution", 0.1), "Δ perplexity, 10 % of input tokens replaced"),
    ("temporal_reach_morans_i", "Moran's I of the units' temporal reach"),
)


def _row_value(summary: AnalysisSummary | None, what: str | tuple[str, float]) -> float | None:
    if summary is None:
        return None
    return summary.measure(what) if isinstance(what, str) else summary.delta_perplexity(*what)


def analysis_rows(report: dict) -> list[str]:
    """The demo's table of the analysis: TopoNet vs baseline on the main measures."""
    summaries = [AnalysisSummary.from_report(report, "model"), AnalysisSummary.from_report(report, "baseline")]
    rows = ["| measure (held-out text) | TopoNet | baseline |", "|---|---|---|"]
    for what, label in ANALYSIS_ROWS:
        values = [_row_value(summary, what) for summary in summaries]
        rows.append(f"| {label} | " + " | ".join("n/a" if v is None else f"{v:.4g}" for v in values) + " |")
    return rows


def analyze_pair(args: DemoArguments, heldout: str, toponet_dir: str, baseline_dir: str) -> dict:
    """`hf-topo analyze` on the TopoNet and its baseline, with a budget that keeps the demo to minutes."""
    analysis = AnalyzeArguments(
        model=toponet_dir, baseline=baseline_dir, text_file=heldout, output_dir=os.path.join(args.output_dir, "analysis"),
        block_size=args.block_size, save_downsampled=2, model_label=f"TopoNet τ={args.tau:g}", baseline_label="baseline τ=0",
    )  # fmt: skip
    settings = AnalysisSettings(
        max_tokens=4096, eval_blocks=24, batch_size=args.batch_size, pruning_fractions=[0, 0.3, 0.5, 0.7, 0.9],
        noise_sigmas=[0, 0.5, 1], downsampling_factors=[1, 2, 3], input_rates=[0, 0.1, 0.3], temporal_windows=True,
        temporal_max_delta=min(8, args.block_size // 8), temporal_max_sequences=40, seed=args.seed,
        # runs of words that fit a block (the reference's 40 words need ≈ 60 tokens); a short yoking budget
        temporal_sequence_words=max(min(8, args.block_size // 8) + 3, args.block_size // 4),
        temporal_sentence_words=max(3, min(12, args.block_size // 16)), temporal_yoking_sequences=20,
    )  # fmt: skip
    return analyze_saved_models(analysis, settings)


def train_one(
    args: DemoArguments, train_file: str, heldout: str, tau: float, name: str, tokenizer: str | None
) -> dict:
    """One of the demo's two models (``name``: ``"baseline"`` or ``"toponet"``): its metrics and training log."""
    blimp = {"blimp_dir": args.blimp_dir, "blimp_limit": args.blimp_limit} if args.blimp_dir else {}
    return train_family(
        name, train_file=train_file, validation_file=heldout, output_dir=os.path.join(args.output_dir, name), tau=tau,
        max_steps=args.max_steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
        block_size=args.block_size, seed=args.seed, vocab_size=args.vocab_size, tokenizer=tokenizer, use_cpu=True,
        **blimp,
    )  # fmt: skip


def sheet_pc1_maps(model_dir: str) -> dict[str, torch.Tensor]:
    """First principal component of each unit's weights, on the sheet, for the first and last topographic layer."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    layers = TopoRegularizer(TopoConfig.from_pretrained(model)).layers(model)
    return {layer.name: weight_pc1_map(layer) for layer in (layers[0], layers[-1])}


def plot(results: dict[str, dict], output_dir: str) -> list[str]:
    plt = pyplot()

    paths = []
    fig, (ax_task, ax_topo) = plt.subplots(1, 2, figsize=(11, 4))
    for name, metrics in results.items():
        history = [h for h in metrics["log_history"] if "task_loss" in h]
        steps = [h["step"] for h in history]
        ax_task.plot(steps, [h["task_loss"] for h in history], label=f"{name} (τ={metrics['tau']:g})")
        ax_topo.plot(steps, [h["topo_loss"] for h in history], label=f"{name} (τ={metrics['tau']:g})")
    ax_task.set(title="Task loss (training)", xlabel="optimizer step", ylabel="cross-entropy")
    ax_topo.set(title="TopoLoss (mean over c_fc layers)", xlabel="optimizer step", ylabel="1 − mean cos(C, blur C)")
    for ax in (ax_task, ax_topo):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(os.path.join(output_dir, "training_curves.png"))
    save_figure(fig, paths[-1], dpi=120)

    fig, axes = plt.subplots(len(results), 2, figsize=(9, 2.6 * len(results)), squeeze=False)
    for row, (name, metrics) in enumerate(results.items()):
        for col, (layer, pc1) in enumerate(sheet_pc1_maps(metrics["output_dir"]).items()):
            image = axes[row][col].imshow(pc1.numpy(), cmap="RdBu_r")
            axes[row][col].set_title(f"{name} τ={metrics['tau']:g}\n{layer}: weight PC1", fontsize=9)
            axes[row][col].axis("off")
            fig.colorbar(image, ax=axes[row][col], fraction=0.03)
    fig.tight_layout()
    paths.append(os.path.join(output_dir, "sheet_maps.png"))
    save_figure(fig, paths[-1], dpi=120)
    return paths


def run_demo(args: DemoArguments) -> dict:
    """Train both models, analyse them, write summary.json/.md and the figures; returns the summary."""
    for name in ("baseline", "toponet"):  # refused before anything is trained, never overwritten
        previous = os.path.join(args.output_dir, name)
        if os.path.isdir(previous) and os.listdir(previous):
            raise InputError(
                f"{os.path.abspath(previous)} holds a previous demo run; pass another {parameter('output_dir')} or "
                "remove that folder to run the demo again."
            )
    os.makedirs(args.output_dir, exist_ok=True)
    data_dir = os.path.join(args.output_dir, "data")
    corpus = args.train_file or write_python_corpus(
        os.path.join(data_dir, "python_stdlib.txt"), max_bytes=args.corpus_bytes
    )
    train_file, heldout = hold_out_lines(corpus, 0.05, data_dir)  # the user's file stays as it is
    print(f"Corpus: {corpus} ({os.path.getsize(corpus) / 1e6:.1f} MB; last 5 % held out: {heldout})")

    if args.blimp_dir:
        print(f"BLiMP: {args.blimp_dir}")
    else:
        print("BLiMP: not evaluated (no data given; pass --blimp_dir DIR with BLiMP's <paradigm>.jsonl files)")
    results: dict[str, dict] = {}
    for name, tau in (("baseline", 0.0), ("toponet", args.tau)):
        tokenizer = results["baseline"]["output_dir"] if results else None  # train the tokenizer once, share it
        print(f"\n=== Training {name} (τ={tau:g}) ===")
        results[name] = train_one(args, train_file, heldout, tau, name, tokenizer)

    rows = [
        "| model | τ | eval loss | perplexity | TopoLoss | BLiMP | train time (s) | saved to |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in results.items():
        blimp = f"{m['blimp_overall']:.4f}" if "blimp_overall" in m else "n/a"
        rows.append(
            f"| {name} | {m['tau']:g} | {m['eval_loss']:.4f} | {m['eval_perplexity']:.2f} | {m['topo_loss']:.4f} | "
            f"{blimp} | {m['wall_time_s']:.0f} | {m['output_dir']} |"
        )
    figures = plot(results, args.output_dir)
    summary = {name: {k: v for k, v in m.items() if k != "log_history"} for name, m in results.items()}
    summary["figures"] = [os.path.abspath(p) for p in figures]
    if not args.skip_analysis:
        print("\n=== Analysing both models on the held-out text (hf-topo analyze) ===")
        report = analyze_pair(args, heldout, results["toponet"]["output_dir"], results["baseline"]["output_dir"])
        rows += ["", *analysis_rows(report)]
        analysis_dir = os.path.abspath(os.path.join(args.output_dir, "analysis"))
        summary["analysis"] = {
            "report": os.path.join(analysis_dir, "report.json"),
            "toponet": report["summary"],
            "baseline": report["baseline_summary"],
            "downsampled_model": report["metadata"]["downsampled"]["path"],
        }
    with open(os.path.join(args.output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(args.output_dir, "summary.md"), "w") as f:
        f.write("\n".join(rows) + "\n")
    print("\n" + "\n".join(rows))
    if "analysis" in summary:
        print(f"\nAnalysis (report.json, maps, curves, temporal windows): {analysis_dir}")
        print(
            f"TopoNet downsampled 2x2, loadable with AutoModelForCausalLM: {summary['analysis']['downsampled_model']}"
        )
    print(f"\nFigures: {', '.join(summary['figures'])}")
    print(f"Summary: {os.path.abspath(os.path.join(args.output_dir, 'summary.json'))}")
    print(
        "Load a model with: AutoModelForCausalLM.from_pretrained(<saved to>); hf_topo.TopoConfig.from_pretrained(<saved to>)"
    )
    return summary
