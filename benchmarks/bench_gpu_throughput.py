"""Training throughput (tokens/s) and peak GPU memory of TopoTrainer vs ``transformers.Trainer``, GPT-2-124M, bf16.

    python benchmarks/bench_gpu_throughput.py                                  # GPT-2-124M, 1 GPU, bf16
    python benchmarks/bench_gpu_throughput.py --batch_size 8 --grad_accum 4 --max_steps 40 --repeats 3

The model is GPT-2-124M (``GPT2Config()``: 12 layers, 768 wide, vocabulary 50257, 1024 positions), randomly
initialized so nothing is downloaded; both trainers start from the same weights and see the same random token
batches (``--batch_size`` × ``--seq_len`` tokens per micro-batch, ``--grad_accum`` micro-batches per optimizer step)
with the same arguments: ``bf16=True`` autocast, fused AdamW, SDPA attention. TopoTrainer adds τ · TopoLoss on the
``mlp.c_fc`` layers (12 sheets of 48×64 units, depth 768) once per optimizer step, as in the paper's NanoGPT runs.

Each optimizer step is timed from ``on_step_begin`` to ``on_step_end`` with ``torch.cuda.synchronize()`` around it;
the first ``--warmup_steps`` steps of every run are dropped (CUDA/cuBLAS warm-up). Runs alternate plain/topo
``--repeats`` times in one process; tokens/s is tokens per step / median step time over all timed steps. Peak
memory is ``torch.cuda.max_memory_allocated`` over each run (reset before it), the maximum over repeats. Printed:
both trainers' tokens/s and peak memory, their ratios, and whether the throughput overhead meets the goal (≤ 1 %).
Results go to ``benchmarks/results/bench_gpu_throughput.json`` with the GPU named.

Without a CUDA device the script stops with a message: CPU timings say nothing about the GPU overhead (see
``bench_trainer_step.py`` for the CPU step-time benchmark).
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
from _common import default_output, device_info, device_line, write_json
from bench_trainer_step import build_dataset, train_once
from transformers import GPT2Config, GPT2LMHeadModel
from transformers import logging as hf_logging

TARGET_MODULES = ["mlp.c_fc"]
OVERHEAD_GOAL_PCT = 1.0
PLAIN, TOPO = "plain Trainer", "TopoTrainer"


def build_gpt2_124m(seed: int) -> GPT2LMHeadModel:
    """GPT-2-124M with SDPA attention, randomly initialized (the same weights for every call)."""
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(attn_implementation="sdpa"))


def train_once_bf16(topo: bool, args: argparse.Namespace, dataset) -> dict:
    """One run of ``args.max_steps`` optimizer steps on the GPU in bf16: timed step seconds and peak allocated bytes."""
    extra = {
        "learning_rate": 6e-4,
        "optim": "adamw_torch_fused",
        "bf16": True,
        "dataloader_num_workers": 2,
        "dataloader_pin_memory": True,
    }
    return train_once(
        topo, args, dataset, model=build_gpt2_124m(args.seed), extra_args=extra, untimed_steps=args.warmup_steps
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch_size", type=int, default=16, help="sequences per micro-batch")
    parser.add_argument("--seq_len", type=int, default=1024, help="tokens per sequence (GPT-2: at most 1024)")
    parser.add_argument("--grad_accum", type=int, default=2, help="micro-batches per optimizer step")
    parser.add_argument("--max_steps", type=int, default=30, help="optimizer steps per run")
    parser.add_argument("--warmup_steps", type=int, default=5, help="first steps of each run not timed")
    parser.add_argument("--repeats", type=int, default=2, help="plain/topo run pairs, alternated")
    parser.add_argument("--tau", type=float, default=1.0, help="TopoLoss weight of TopoTrainer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=default_output(__file__), help="results JSON")
    args = parser.parse_args()
    if args.max_steps <= args.warmup_steps:
        parser.error("--max_steps must exceed --warmup_steps: the warm-up steps are not timed.")
    if not 1 <= args.seq_len <= 1024:
        parser.error("--seq_len must be between 1 and 1024 (GPT-2's positions).")
    return args


def main() -> None:
    args = parse_args()
    if not torch.cuda.is_available():
        sys.exit(
            "bench_gpu_throughput.py measures GPU throughput and memory and needs a CUDA device, but torch sees none "
            f"(torch {torch.__version__}). Run it on a machine with an NVIDIA GPU and a CUDA build of torch; for CPU "
            "step times use benchmarks/bench_trainer_step.py."
        )
    if not torch.cuda.is_bf16_supported():
        sys.exit(f"{torch.cuda.get_device_name()} does not support bf16; this benchmark trains in bf16.")
    hf_logging.set_verbosity_error()
    dataset = build_dataset(args, GPT2Config().vocab_size)
    tokens_per_step = args.batch_size * args.seq_len * args.grad_accum

    runs: dict[str, list[dict]] = {PLAIN: [], TOPO: []}
    for repeat in range(args.repeats):
        for name in (PLAIN, TOPO):
            run = train_once_bf16(name == TOPO, args, dataset)
            runs[name].append(run)
            print(
                f"run {repeat + 1}/{args.repeats} {name}: median step {statistics.median(run['step_s']):.4f} s, "
                f"peak {run['peak_allocated_bytes'] / 2**30:.2f} GiB",
                flush=True,
            )
    trainers = {}
    for name, name_runs in runs.items():
        steps = [t for run in name_runs for t in run["step_s"]]
        median = statistics.median(steps)
        trainers[name] = {
            "median_step_s": median,
            "tokens_per_s": tokens_per_step / median,
            "step_s": steps,
            "peak_allocated_bytes": max(run["peak_allocated_bytes"] for run in name_runs),
        }
    throughput_ratio = trainers[TOPO]["tokens_per_s"] / trainers[PLAIN]["tokens_per_s"]
    memory_ratio = trainers[TOPO]["peak_allocated_bytes"] / trainers[PLAIN]["peak_allocated_bytes"]
    overhead_pct = (1 / throughput_ratio - 1) * 100
    results = {
        "benchmark": "TopoTrainer vs transformers.Trainer, GPT-2-124M bf16 training throughput and peak memory",
        "device_info": device_info("cuda"),
        "config": {k: v for k, v in vars(args).items() if k != "output"} | {"tokens_per_step": tokens_per_step},
        "trainers": trainers,
        "throughput_ratio": throughput_ratio,
        "peak_memory_ratio": memory_ratio,
        "overhead_pct": overhead_pct,
        "overhead_goal_pct": OVERHEAD_GOAL_PCT,
        "overhead_met": overhead_pct <= OVERHEAD_GOAL_PCT,
    }
    print(
        f"\nGPT-2-124M, bf16, micro-batch {args.batch_size} × {args.seq_len}, accumulation {args.grad_accum} "
        f"({tokens_per_step} tokens/step), τ = {args.tau:g} on {', '.join(TARGET_MODULES)}; "
        f"{device_line(results['device_info'])}\n"
    )
    print("| trainer | tokens/s | median step (s) | peak memory (GiB) |")
    print("|---|---|---|---|")
    for name in (PLAIN, TOPO):
        row = trainers[name]
        print(
            f"| {name} | {row['tokens_per_s']:,.0f} | {row['median_step_s']:.4f} | "
            f"{row['peak_allocated_bytes'] / 2**30:.2f} |"
        )
    print(
        f"\nthroughput TopoTrainer / Trainer: {throughput_ratio:.4f} (overhead {overhead_pct:+.2f} %, goal ≤ "
        f"{OVERHEAD_GOAL_PCT:g} %: {'met' if results['overhead_met'] else 'NOT met'}); peak memory ratio "
        f"{memory_ratio:.4f}"
    )
    write_json(args.output, results)


if __name__ == "__main__":
    main()
