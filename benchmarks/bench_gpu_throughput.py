"""Training throughput and peak GPU memory of TopoTrainer vs ``transformers.Trainer``: GPT-2-124M or ResNet-18, bf16.

    python benchmarks/bench_gpu_throughput.py                                  # GPT-2-124M, 1 GPU, bf16
    python benchmarks/bench_gpu_throughput.py --batch_size 8 --grad_accum 4 --max_steps 40 --repeats 3
    python benchmarks/bench_gpu_throughput.py --model resnet-18                # ResNet-18, 256 images of 224²

``--model gpt2-124m`` (default): GPT-2-124M (``GPT2Config()``: 12 layers, 768 wide, vocabulary 50257, 1024
positions), randomly initialized so nothing is downloaded; both trainers start from the same weights and see the same
random token batches (a ``torch.utils.data.Dataset``, ``--batch_size`` × ``--seq_len`` tokens per micro-batch, ``--grad_accum`` micro-batches per
optimizer step) with the same arguments: ``bf16=True`` autocast, fused AdamW, SDPA attention. TopoTrainer adds
τ · TopoLoss on the ``mlp.c_fc`` layers (12 sheets of 48×64 units, depth 768) once per optimizer step, as in the
paper's NanoGPT runs.

``--model resnet-18``: hf_topo's ``resnet-18`` preset (transformers' ``ResNetForImageClassification`` with
torchvision's ResNet-18 shapes, 1000 classes), randomly initialized, on random ``--image_size``² images (a pool of
256 random images in bf16, cycled, with random labels; 8 data-loader workers, so the GPU is not kept waiting), same
arguments as above. TopoTrainer adds τ · TopoLoss on the paper's layers: the 19 convolutions of the residual blocks
(``hf_topo.presets.TARGET_PRESETS["resnet"]``). Throughput is then in images/s.

Each optimizer step is timed from ``on_step_begin`` to ``on_step_end`` with ``torch.cuda.synchronize()`` around it;
the first ``--warmup_steps`` steps of every run are dropped (CUDA/cuBLAS warm-up). Runs alternate plain/topo
``--repeats`` times in one process; tokens/s (images/s) is tokens (images) per step / median step time over all
timed steps. Peak
memory is ``torch.cuda.max_memory_allocated`` over each run (reset before it), the maximum over repeats. Printed:
both trainers' tokens/s and peak memory, their ratios, and whether the throughput overhead meets the goal (≤ 1 %).
Results go to ``benchmarks/results/bench_gpu_throughput.json`` (``bench_gpu_throughput_resnet18.json`` for
ResNet-18) with the GPU named.

Without a CUDA device the script stops with a message: CPU timings say nothing about the GPU overhead (see
``bench_trainer_step.py`` for the CPU step-time benchmark).
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch
from _common import RESULTS_DIR, device_info, device_line, write_json
from bench_trainer_step import train_once
from transformers import AutoModelForImageClassification, GPT2Config, GPT2LMHeadModel, PreTrainedModel
from transformers import logging as hf_logging

from hf_topo.presets import TARGET_PRESETS
from hf_topo.vision.paper_models import paper_vision_config

#: Per model: TopoTrainer's topographic layers, the default micro-batch, and the unit of throughput.
MODELS = {
    "gpt2-124m": {"targets": ["mlp.c_fc"], "batch_size": 16, "unit": "tokens", "output": "bench_gpu_throughput"},
    "resnet-18": {
        "targets": list(TARGET_PRESETS["resnet"]),
        "batch_size": 256,
        "unit": "images",
        "output": "bench_gpu_throughput_resnet18",
    },
}
IMAGE_POOL = 256
OVERHEAD_GOAL_PCT = 1.0
PLAIN, TOPO = "plain Trainer", "TopoTrainer"


def build_gpt2_124m(seed: int) -> GPT2LMHeadModel:
    """GPT-2-124M with SDPA attention, randomly initialized (the same weights for every call)."""
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(attn_implementation="sdpa"))


def build_resnet18(seed: int) -> PreTrainedModel:
    """hf_topo's ``resnet-18`` preset (torchvision's ResNet-18 shapes, 1000 classes), randomly initialized."""
    torch.manual_seed(seed)
    return AutoModelForImageClassification.from_config(paper_vision_config("resnet-18"))


class RandomTokens(torch.utils.data.Dataset):
    """``length`` random token sequences of ``seq_len`` ids below ``vocab_size``, with ``labels = input_ids``."""

    def __init__(self, length: int, seq_len: int, vocab_size: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, vocab_size, (length, seq_len), generator=generator)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "labels": self.ids[index]}


class RandomImages(torch.utils.data.Dataset):
    """``length`` examples cycling through a pool of random bf16 images, with random labels of ``classes``."""

    def __init__(self, length: int, image_size: int, classes: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        pool = torch.randn(IMAGE_POOL, 3, image_size, image_size, generator=generator)
        self.pixels = pool.to(torch.bfloat16)
        self.labels = torch.randint(0, classes, (length,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.pixels[index % IMAGE_POOL], "labels": self.labels[index]}


def train_once_bf16(topo: bool, args: argparse.Namespace, dataset) -> dict:
    """One run of ``args.max_steps`` optimizer steps on the GPU in bf16: timed step seconds and peak allocated bytes."""
    vision = args.model == "resnet-18"
    extra = {
        "learning_rate": 6e-4,
        "optim": "adamw_torch_fused",
        "bf16": True,
        "dataloader_num_workers": 8 if vision else 2,
        "dataloader_pin_memory": True,
    }
    model = build_resnet18(args.seed) if vision else build_gpt2_124m(args.seed)
    return train_once(
        topo,
        args,
        dataset,
        model=model,
        extra_args=extra,
        untimed_steps=args.warmup_steps,
        target_modules=MODELS[args.model]["targets"],
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="gpt2-124m", choices=list(MODELS), help="the model trained")
    parser.add_argument(
        "--batch_size", type=int, default=None, help="sequences (images) per micro-batch (default: 16; ResNet-18: 256)"
    )
    parser.add_argument("--seq_len", type=int, default=1024, help="tokens per sequence (GPT-2: at most 1024)")
    parser.add_argument("--image_size", type=int, default=224, help="image side in pixels (ResNet-18)")
    parser.add_argument("--grad_accum", type=int, default=2, help="micro-batches per optimizer step")
    parser.add_argument("--max_steps", type=int, default=30, help="optimizer steps per run")
    parser.add_argument("--warmup_steps", type=int, default=5, help="first steps of each run not timed")
    parser.add_argument("--repeats", type=int, default=2, help="plain/topo run pairs, alternated")
    parser.add_argument("--tau", type=float, default=1.0, help="TopoLoss weight of TopoTrainer")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="results JSON (default: benchmarks/results/, by model)")
    args = parser.parse_args()
    model = MODELS[args.model]
    args.batch_size = args.batch_size or model["batch_size"]
    args.output = args.output or str(RESULTS_DIR / f"{model['output']}.json")
    if args.max_steps <= args.warmup_steps:
        parser.error("--max_steps must exceed --warmup_steps: the warm-up steps are not timed.")
    if not 1 <= args.seq_len <= 1024:
        parser.error("--seq_len must be between 1 and 1024 (GPT-2's positions).")
    if args.image_size < 32:
        parser.error("--image_size must be at least 32 pixels (ResNet-18 downsamples by 32).")
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
    unit = MODELS[args.model]["unit"]
    if args.model == "resnet-18":
        dataset = RandomImages(args.batch_size * args.grad_accum * args.max_steps, args.image_size, 1000, args.seed)
        per_step = args.batch_size * args.grad_accum
    else:
        rows = args.batch_size * args.grad_accum * args.max_steps
        dataset = RandomTokens(rows, args.seq_len, GPT2Config().vocab_size, args.seed)
        per_step = args.batch_size * args.seq_len * args.grad_accum

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
            f"{unit}_per_s": per_step / median,
            "step_s": steps,
            "peak_allocated_bytes": max(run["peak_allocated_bytes"] for run in name_runs),
        }
    throughput_ratio = trainers[TOPO][f"{unit}_per_s"] / trainers[PLAIN][f"{unit}_per_s"]
    memory_ratio = trainers[TOPO]["peak_allocated_bytes"] / trainers[PLAIN]["peak_allocated_bytes"]
    overhead_pct = (1 / throughput_ratio - 1) * 100
    results = {
        "benchmark": f"TopoTrainer vs transformers.Trainer, {args.model} bf16 training throughput and peak memory",
        "device_info": device_info("cuda"),
        "config": {k: v for k, v in vars(args).items() if k != "output"} | {f"{unit}_per_step": per_step},
        "trainers": trainers,
        "throughput_ratio": throughput_ratio,
        "peak_memory_ratio": memory_ratio,
        "overhead_pct": overhead_pct,
        "overhead_goal_pct": OVERHEAD_GOAL_PCT,
        "overhead_met": overhead_pct <= OVERHEAD_GOAL_PCT,
    }
    batch = f"{args.batch_size} × {args.seq_len}" if unit == "tokens" else f"{args.batch_size} × {args.image_size}²"
    print(
        f"\n{args.model}, bf16, micro-batch {batch}, accumulation {args.grad_accum} ({per_step} {unit}/step), "
        f"τ = {args.tau:g} on {', '.join(MODELS[args.model]['targets'])}; {device_line(results['device_info'])}\n"
    )
    print(f"| trainer | {unit}/s | median step (s) | peak memory (GiB) |")
    print("|---|---|---|---|")
    for name in (PLAIN, TOPO):
        row = trainers[name]
        print(
            f"| {name} | {row[f'{unit}_per_s']:,.0f} | {row['median_step_s']:.4f} | "
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
