"""Optimizer-step time of TopoTrainer vs plain transformers.Trainer on a GPT-2-124M-shaped model.

    python benchmarks/bench_trainer_step.py                                  # GPT-2-124M, 4 × 128 tokens, accumulation 4
    python benchmarks/bench_trainer_step.py --n_layer 2 --n_embd 128 --max_steps 3   # smoke configuration

Both trainers get the same randomly initialized model (same seed), data, optimizer and arguments; only
TopoLoss (τ=1 on the 12 `mlp.c_fc` layers) differs. Runs alternate plain/topo `--repeats` times in one process
to spread machine noise over both; the time of each optimizer step is taken by a callback
(`on_step_begin` → `on_step_end`), the first step of every run is discarded as warm-up, and medians are compared.
The time of one TopoLoss forward+backward on the same model is printed too: the overhead the design predicts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_topoloss import device_line  # noqa: E402

from hf_topo import TopoLoss, TopoTrainer, TopoTrainingArguments  # noqa: E402


class StepTimer(TrainerCallback):
    def __init__(self, device: str):
        self.device, self.times, self._start = device, [], 0.0

    def _sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        self.times.append(time.perf_counter() - self._start)


def run(topo: bool, args, dataset: Dataset) -> list[float]:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=args.n_layer, n_embd=args.n_embd, n_head=max(1, args.n_embd // 64)))
    common = dict(
        output_dir="/tmp/hf_topo_bench", per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum, max_steps=args.max_steps, learning_rate=1e-4,
        report_to=[], save_strategy="no", logging_steps=10_000, use_cpu=args.device == "cpu",
        bf16=args.bf16, dataloader_num_workers=0, disable_tqdm=True, seed=0,
    )  # fmt: skip
    timer = StepTimer(args.device)
    if topo:
        trainer = TopoTrainer(
            model=model, args=TopoTrainingArguments(tau=1.0, **common), train_dataset=dataset, callbacks=[timer]
        )
    else:
        trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=dataset, callbacks=[timer])
    trainer.train()
    return timer.times[1:]


def topoloss_alone_ms(args) -> float:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=args.n_layer, n_embd=args.n_embd, n_head=max(1, args.n_embd // 64)))
    model.to("cuda" if args.device == "cuda" else "cpu")
    topo = TopoLoss(target_modules=["mlp.c_fc"])
    topo(model).backward()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        topo(model).backward()
        if args.device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--n_layer", type=int, default=12)
    parser.add_argument("--n_embd", type=int, default=768)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--grad_accum", type=int, default=4)
    parser.add_argument("--max_steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--output", default="benchmarks/results/bench_trainer_step.json")
    args = parser.parse_args()

    n = args.batch_size * args.grad_accum * (args.max_steps + 1)
    ids = torch.randint(0, 50257, (n, args.seq_len), generator=torch.Generator().manual_seed(0)).tolist()
    dataset = Dataset.from_dict({"input_ids": ids, "labels": ids})
    times = {"plain Trainer": [], "TopoTrainer": []}
    for _ in range(args.repeats):
        times["plain Trainer"] += run(False, args, dataset)
        times["TopoTrainer"] += run(True, args, dataset)
    plain, topo = statistics.median(times["plain Trainer"]), statistics.median(times["TopoTrainer"])
    alone = topoloss_alone_ms(args)
    results = {
        "device": device_line(args.device),
        "config": vars(args),
        "plain_step_s": plain,
        "topo_step_s": topo,
        "overhead_pct": (topo / plain - 1) * 100,
        "topoloss_fwd_bwd_ms": alone,
        "predicted_overhead_pct": alone / 1e3 / plain * 100,
        "step_times_s": times,
    }
    shape = (
        f"GPT-2 {args.n_layer}×{args.n_embd}, batch {args.batch_size}×{args.seq_len}, accumulation {args.grad_accum}"
    )
    print(f"Optimizer step, {shape}, {results['device']}\n")
    print("| trainer | median step (s) | steps timed |")
    print("|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.3f} | {len(values)} |")
    print(
        f"\nTopoTrainer overhead: {results['overhead_pct']:+.2f}% (goal ≤ 1%); one TopoLoss forward+backward alone: "
        f"{alone:.1f} ms = {results['predicted_overhead_pct']:.2f}% of a plain step"
    )
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
