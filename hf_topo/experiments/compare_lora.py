"""The paper's LoRA comparison (Figures 11-12 analog): one LoRA recipe on a τ=0 baseline and on TopoNets at several
ranks; a table of validation-loss Δ and a plot of the loss curves. ``hf-topo compare-lora`` runs :func:`compare_lora`.

    from hf_topo.experiments.compare_lora import CompareLoraArguments, compare_lora

    compare_lora(CompareLoraArguments(models=["outputs/demo/baseline", "outputs/demo/toponet"], ranks=[2, 4, 8],
                                      train_file="tinyshakespeare.txt", output_dir="outputs/lora-compare"))

Each run is :func:`hf_topo.finetuning.finetune_lora` with the given recipe; the models' τ is read from their
``topography`` metadata. Writes ``comparison.json``, ``comparison.md`` and ``lora_comparison.png`` to ``output_dir``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from transformers import AutoConfig

from ..analysis.plots import pyplot, save_figure
from ..checkpoints import resolve_checkpoint
from ..errors import InputError, parameter
from ..finetuning import LORA_TRAINING_DEFAULTS, LoraArguments, finetune_lora
from ..trainer import TopoTrainingArguments

__all__ = ["CompareLoraArguments", "compare_lora", "plan_runs"]


@dataclass
class CompareLoraArguments:
    """The models, the ranks and the one recipe every run shares."""

    models: list[str] = field(metadata={"help": "Model directories (a τ=0 baseline and TopoNets)."})
    ranks: list[int] = field(default_factory=lambda: [2, 4, 8], metadata={"help": "LoRA ranks (alpha = 2 × rank)."})
    dataset: str = field(default="shakespeare", metadata={"help": "Corpus preset (see hf-topo finetune-lora)."})
    train_file: str | None = field(default=None, metadata={"help": "Local text for the corpus."})
    code_dir: str | None = field(default=None, metadata={"help": "Directory of .py files for the corpus."})
    max_train_tokens: int | None = field(default=None, metadata={"help": "Token budget of the training split."})
    max_steps: int = field(default=200, metadata={"help": "Optimizer steps per run."})
    eval_steps: int = field(default=25, metadata={"help": "Evaluate (and log) every this many steps."})
    batch_size: int = field(default=16, metadata={"help": "Sequences per step (training and evaluation)."})
    block_size: int = field(default=128, metadata={"help": "Tokens per sequence."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Learning rate."})
    tau: float = field(default=0.0, metadata={"help": "TopoLoss weight during fine-tuning."})
    lora_target_modules: list[str] | None = field(default=None, metadata={"help": "Layers to adapt."})
    output_dir: str = field(default="outputs/lora-compare", metadata={"help": "Where runs and the comparison go."})
    seed: int = field(default=0, metadata={"help": "Seed of every run."})

    def __post_init__(self):
        if not self.models:
            raise InputError(
                f"{parameter('models')} needs at least one model folder (e.g. a τ=0 baseline and a TopoNet)."
            )
        if not self.ranks or any(rank < 1 for rank in self.ranks):
            raise InputError(
                f"{parameter('ranks', self.ranks)}: give LoRA ranks >= 1, e.g. {parameter('ranks', '2 4 8')}."
            )
        for name in ("max_steps", "eval_steps", "batch_size", "block_size"):
            if getattr(self, name) < 1:
                raise InputError(f"{parameter(name, getattr(self, name))} must be at least 1.")


def model_tau(path: str) -> float | None:
    record = getattr(AutoConfig.from_pretrained(path), "topography", None)
    return record["tau"]["value"] if isinstance(record, dict) else None


def run_settings(args: CompareLoraArguments, model: str, rank: int) -> tuple[LoraArguments, TopoTrainingArguments]:
    """The settings of one fine-tuning run of the comparison's recipe."""
    name = f"{os.path.basename(os.path.normpath(model))}-r{rank}"
    lora_args = LoraArguments(
        model_name_or_path=model, dataset=args.dataset, train_file=args.train_file, code_dir=args.code_dir,
        max_train_tokens=args.max_train_tokens, block_size=args.block_size, lora_r=rank, lora_alpha=2 * rank,
        lora_target_modules=args.lora_target_modules,
    )  # fmt: skip
    training_args = TopoTrainingArguments(
        **LORA_TRAINING_DEFAULTS | dict(
            output_dir=os.path.join(args.output_dir, name), max_steps=args.max_steps, eval_strategy="steps",
            eval_steps=args.eval_steps, logging_steps=args.eval_steps, per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=args.batch_size, learning_rate=args.learning_rate, tau=args.tau,
            seed=args.seed, use_cpu=True, disable_tqdm=True,
        )
    )  # fmt: skip
    return lora_args, training_args


def plan_runs(args: CompareLoraArguments) -> list[tuple[str, int, LoraArguments, TopoTrainingArguments]]:
    """Every (model, rank) run with its settings, each checked (model folder, corpus, output folder) before the first
    one starts, so that a bad entry is refused before any fine-tuning, not after the runs before it."""
    runs = [(model, rank, *run_settings(args, model, rank)) for model in args.models for rank in args.ranks]
    folders = [training_args.output_dir for *_, training_args in runs]
    shared = sorted({folder for folder in folders if folders.count(folder) > 1})
    if shared:
        raise InputError(
            f"Several runs would be written to {shared}: two {parameter('models')} (or {parameter('ranks')}) share a "
            "name. Give each model folder its own name and each rank once."
        )
    for _, _, lora_args, training_args in runs:
        lora_args.check_sources()
        resolve_checkpoint(training_args)  # a previous comparison in --output_dir is refused, not overwritten
    return runs


def plot(results: list[dict], ranks: list[int], path: str) -> None:
    plt = pyplot()

    models = list(dict.fromkeys(r["label"] for r in results))
    fig, axes = plt.subplots(1, len(ranks) + 1, figsize=(4.2 * (len(ranks) + 1), 3.6))
    for ax, rank in zip(axes[:-1], ranks, strict=True):
        for r in (r for r in results if r["lora_r"] == rank):
            steps = [0] + [h["step"] for h in r["eval_history"]]
            losses = [r["eval_loss_before"]] + [h["eval_loss"] for h in r["eval_history"]]
            ax.plot(steps, losses, marker="o", ms=3, label=r["label"])
        ax.set(title=f"LoRA rank {rank}", xlabel="optimizer step", ylabel="validation loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    width = 0.8 / len(models)
    for i, label in enumerate(models):
        deltas = [
            next(r["delta_eval_loss"] for r in results if r["label"] == label and r["lora_r"] == k) for k in ranks
        ]
        axes[-1].bar([j + i * width for j in range(len(ranks))], deltas, width, label=label)
    axes[-1].set_xticks([j + width * (len(models) - 1) / 2 for j in range(len(ranks))], [f"r={k}" for k in ranks])
    axes[-1].set(title="Δ validation loss (after − before)", ylabel="Δ loss")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def compare_lora(args: CompareLoraArguments) -> dict:
    """Every model × every rank with one recipe; writes comparison.json/.md and lora_comparison.png, returns the
    comparison (the recipe and every run's metrics)."""
    runs = plan_runs(args)
    os.makedirs(args.output_dir, exist_ok=True)
    results = []
    for model, rank, lora_args, training_args in runs:
        tau = model_tau(model)
        label = (
            f"{os.path.basename(os.path.normpath(model))} (τ={tau:g})" if tau is not None else os.path.basename(model)
        )
        print(f"=== {label}, LoRA rank {rank} ===", flush=True)
        results.append(finetune_lora(lora_args, training_args) | {"label": label, "model_tau": tau})

    rows = [
        "| model | " + " | ".join(f"Δ val loss r={k}" for k in args.ranks) + " | val loss before |",
        "|---" * (len(args.ranks) + 2) + "|",
    ]
    for label in dict.fromkeys(r["label"] for r in results):
        mine = {r["lora_r"]: r for r in results if r["label"] == label}
        rows.append(
            f"| {label} | "
            + " | ".join(f"{mine[k]['delta_eval_loss']:+.4f}" for k in args.ranks)
            + f" | {mine[args.ranks[0]]['eval_loss_before']:.4f} |"
        )
    figure = os.path.join(args.output_dir, "lora_comparison.png")
    plot(results, args.ranks, figure)
    with open(os.path.join(args.output_dir, "comparison.json"), "w") as f:
        json.dump({"recipe": asdict(args), "runs": results}, f, indent=2)
    with open(os.path.join(args.output_dir, "comparison.md"), "w") as f:
        f.write("\n".join(rows) + "\n")
    print("\n" + "\n".join(rows))
    print(f"\nFigure: {os.path.abspath(figure)}")
    return {"recipe": asdict(args), "runs": results, "figure": os.path.abspath(figure)}
