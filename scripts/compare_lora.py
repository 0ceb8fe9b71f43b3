"""One command for the paper's LoRA comparison (Figures 11-12 analog): same LoRA recipe on a τ=0 baseline and on
TopoNets, several ranks; table of validation-loss Δ and a plot of the loss curves.

    python scripts/compare_lora.py --models outputs/demo/baseline outputs/demo/toponet \
        --ranks 2 4 8 --train_file ../shared/data/tinyshakespeare.txt --output_dir outputs/lora-compare

Each run is `scripts/finetune_lora.py` with the given recipe (`--max_steps`, `--learning_rate`, batch, block size,
`--tau` during fine-tuning, LoRA targets); the models' τ is read from their `topography` metadata. Writes
`comparison.json`, `comparison.md` and `lora_comparison.png` to `--output_dir`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import finetune_lora  # noqa: E402  (the sibling script; the comparison is a grid of its main)
from transformers import AutoConfig  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", required=True, help="Model directories (a τ=0 baseline and TopoNets).")
    parser.add_argument("--ranks", nargs="+", type=int, default=[2, 4, 8])
    parser.add_argument("--dataset", default="shakespeare")
    parser.add_argument("--train_file", default=None)
    parser.add_argument("--code_dir", default=None)
    parser.add_argument("--max_train_tokens", type=int, default=None)
    parser.add_argument("--max_steps", type=int, default=200)
    parser.add_argument("--eval_steps", type=int, default=25)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--block_size", type=int, default=128)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--tau", type=float, default=0.0, help="TopoLoss weight during fine-tuning.")
    parser.add_argument("--lora_target_modules", nargs="+", default=None)
    parser.add_argument("--output_dir", default="outputs/lora-compare")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def model_tau(path: str) -> float | None:
    record = getattr(AutoConfig.from_pretrained(path), "topography", None)
    return record["tau"]["value"] if isinstance(record, dict) else None


def run(args: argparse.Namespace, model: str, rank: int) -> dict:
    name = f"{os.path.basename(os.path.normpath(model))}-r{rank}"
    argv = [
        "--model_name_or_path", model, "--dataset", args.dataset, "--lora_r", str(rank), "--lora_alpha", str(2 * rank),
        "--block_size", str(args.block_size), "--max_steps", str(args.max_steps), "--eval_strategy", "steps",
        "--eval_steps", str(args.eval_steps), "--per_device_train_batch_size", str(args.batch_size),
        "--per_device_eval_batch_size", str(args.batch_size), "--learning_rate", str(args.learning_rate),
        "--tau", str(args.tau), "--seed", str(args.seed), "--use_cpu", "true", "--logging_steps", str(args.eval_steps),
        "--output_dir", os.path.join(args.output_dir, name), "--disable_tqdm", "true",
    ]  # fmt: skip
    for flag in ("train_file", "code_dir", "max_train_tokens"):
        if getattr(args, flag) is not None:
            argv += [f"--{flag}", str(getattr(args, flag))]
    if args.lora_target_modules:
        argv += ["--lora_target_modules", *args.lora_target_modules]
    return finetune_lora.main(*finetune_lora.parse_args(argv))


def plot(results: list[dict], ranks: list[int], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    args = parse_args()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    os.makedirs(args.output_dir, exist_ok=True)
    results = []
    for model in args.models:
        tau = model_tau(model)
        label = (
            f"{os.path.basename(os.path.normpath(model))} (τ={tau:g})" if tau is not None else os.path.basename(model)
        )
        for rank in args.ranks:
            print(f"=== {label}, LoRA rank {rank} ===", flush=True)
            results.append(run(args, model, rank) | {"label": label, "model_tau": tau})

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
        json.dump({"recipe": vars(args), "runs": results}, f, indent=2)
    with open(os.path.join(args.output_dir, "comparison.md"), "w") as f:
        f.write("\n".join(rows) + "\n")
    print("\n" + "\n".join(rows))
    print(f"\nFigure: {os.path.abspath(figure)}")


if __name__ == "__main__":
    main()
