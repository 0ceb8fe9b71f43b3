"""Forward time of topographically downsampled layers and models vs the originals, next to the parameters kept.

    python benchmarks/bench_downsampling.py                         # GPT-2-124M shapes, CPU, φ = 1, 2, 3
    python benchmarks/bench_downsampling.py --factors 1 2 3 4 --repeats 20 --threads 2
    python benchmarks/bench_downsampling.py --n_layer 2 --n_embd 128 --repeats 3   # smoke configuration
    python benchmarks/bench_downsampling.py --device cuda

Two measurements, each against the unmodified original in the same run:

* layers: the ``--n_layer`` MLP expansion layers of GPT-2 (transformers ``Conv1D(4·n_embd, n_embd)``, GPT-2-124M:
  12 × (768 → 3072), a 48 × 64 sheet of depth 768), each applied to the same ``--batch_size`` × ``--seq_len``
  hidden states; vs :class:`hf_topo.downsampling.TopoDownsampledLinear` built from them at each φ (``φh = φw``).
* model: a whole ``GPT2LMHeadModel`` (random weights, no download; the defaults are GPT-2-124M with its 50257-token
  vocabulary), logits of ``--batch_size`` × ``--seq_len`` random tokens; vs ``downsample_model(model, φ)``, which
  downsamples the same ``mlp.c_fc`` layers.

Parity first: at φ = 1 the downsampled layers and model must reproduce the originals (max |Δ| ≤ ``--tol``).
Timing: under ``torch.inference_mode``, ``--warmup`` untimed passes, then ``--repeats`` rounds that time one pass of
every variant in turn (the order rotates each round, so machine noise hits all alike); medians in ms. Reported
for each φ: the reduced sheet, the fraction of parameters kept (of the layers' weights, or of the whole model) and
the fraction of time taken (``ms / original ms``) — if downsampling "runs faster in proportion", the two agree.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from _common import default_output, device_info, device_line, synchronize, write_json
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

from hf_topo.downsampling import TopoDownsampledLinear, downsample_model, parameter_count


def time_rotating(passes: dict[str, Callable[[], object]], args: argparse.Namespace) -> dict[str, list[float]]:
    """Seconds of each pass, ``args.repeats`` per variant, in rotating interleaved rounds after ``args.warmup``."""
    order = list(passes)
    times: dict[str, list[float]] = {name: [] for name in order}
    with torch.inference_mode():
        for round_index in range(args.warmup + args.repeats):
            shift = round_index % len(order)
            for name in order[shift:] + order[:shift]:
                synchronize(args.device)
                start = time.perf_counter()
                passes[name]()
                synchronize(args.device)
                if round_index >= args.warmup:
                    times[name].append(time.perf_counter() - start)
    return times


def bench_layers(args: argparse.Namespace) -> list[dict]:
    torch.manual_seed(args.seed)
    units, depth = 4 * args.n_embd, args.n_embd
    originals = [Conv1D(units, depth).to(args.device) for _ in range(args.n_layer)]
    for layer in originals:
        nn.init.normal_(layer.weight, std=0.02)
    variants: dict[str, list[nn.Module]] = {"original": originals}
    for factor in args.factors:
        variants[f"φ={factor:g}"] = [TopoDownsampledLinear.from_layer(layer, factor) for layer in originals]
    hidden = torch.randn(args.batch_size, args.seq_len, depth, device=args.device)

    with torch.inference_mode():
        for name, layers in variants.items():
            if name == "φ=1":
                diff = max((a(hidden) - b(hidden)).abs().max().item() for a, b in zip(layers, originals, strict=True))
                if diff > args.tol:
                    raise SystemExit(f"φ=1 layers differ from the originals by {diff:.2e} > --tol {args.tol:g}.")
                print(f"parity: φ=1 layers reproduce the originals, max |Δ| = {diff:.1e}")

    def run(layers: list[nn.Module]) -> Callable[[], None]:
        def apply() -> None:
            for layer in layers:
                layer(hidden)

        return apply

    times = time_rotating({name: run(layers) for name, layers in variants.items()}, args)
    original_ms = statistics.median(times["original"]) * 1e3
    original_weights = sum(layer.weight.numel() for layer in originals)
    rows = []
    for name, layers in variants.items():
        ms = statistics.median(times[name]) * 1e3
        first = layers[0]
        sheet = (
            (first.reduced_height, first.reduced_width) if isinstance(first, TopoDownsampledLinear) else (None, None)
        )
        kept = sum(layer.weight.numel() for layer in layers) / original_weights
        rows.append(
            {
                "variant": name,
                "reduced_sheet": None if sheet[0] is None else list(sheet),
                "weight_parameters": sum(layer.weight.numel() for layer in layers),
                "weight_fraction_kept": kept,
                "ms_median": ms,
                "ms_all": [t * 1e3 for t in times[name]],
                "time_fraction": ms / original_ms,
                "speedup": original_ms / ms,
            }
        )
    return rows


def bench_model(args: argparse.Namespace) -> list[dict]:
    torch.manual_seed(args.seed)
    config = GPT2Config(n_layer=args.n_layer, n_embd=args.n_embd, n_head=max(1, args.n_embd // 64))
    original = GPT2LMHeadModel(config).to(args.device).eval()
    variants = {"original": original}
    for factor in args.factors:
        variants[f"φ={factor:g}"] = downsample_model(original, factor)
    ids = torch.randint(0, config.vocab_size, (args.batch_size, args.seq_len), device=args.device)

    with torch.inference_mode():
        if "φ=1" in variants:
            diff = (variants["φ=1"](ids).logits - original(ids).logits).abs().max().item()
            if diff > args.tol:
                raise SystemExit(f"The φ=1 model differs from the original by {diff:.2e} > --tol {args.tol:g}.")
            print(f"parity: φ=1 model reproduces the original, max |Δ logits| = {diff:.1e}")

    times = time_rotating({name: (lambda m=model: m(ids)) for name, model in variants.items()}, args)
    original_ms = statistics.median(times["original"]) * 1e3
    original_count = parameter_count(original)
    rows = []
    for name, model in variants.items():
        ms = statistics.median(times[name]) * 1e3
        count = parameter_count(model)
        rows.append(
            {
                "variant": name,
                "parameters": count,
                "parameter_fraction_kept": count / original_count,
                "ms_median": ms,
                "ms_all": [t * 1e3 for t in times[name]],
                "time_fraction": ms / original_ms,
                "speedup": original_ms / ms,
            }
        )
    return rows


def print_tables(results: dict) -> None:
    cfg = results["config"]
    print(f"\n{device_line(results['device_info'])}; {cfg['batch_size']}×{cfg['seq_len']} tokens per forward\n")
    print(f"{cfg['n_layer']} GPT-2 c_fc layers ({cfg['n_embd']} → {4 * cfg['n_embd']}), forward:\n")
    print("| variant | reduced sheet | weights kept | ms (median) | time fraction | speed-up |")
    print("|---|---|---|---|---|---|")
    for row in results["layers"]:
        sheet = "full" if row["reduced_sheet"] is None else "×".join(map(str, row["reduced_sheet"]))
        print(
            f"| {row['variant']} | {sheet} | {100 * row['weight_fraction_kept']:.1f}% | {row['ms_median']:.1f} | "
            f"{100 * row['time_fraction']:.1f}% | {row['speedup']:.2f}× |"
        )
    print(f"\nwhole GPT2LMHeadModel ({cfg['n_layer']} layers × {cfg['n_embd']}), forward to logits:\n")
    print("| variant | parameters | parameters kept | ms (median) | time fraction | speed-up |")
    print("|---|---|---|---|---|---|")
    for row in results["model"]:
        print(
            f"| {row['variant']} | {row['parameters'] / 1e6:.1f}M | {100 * row['parameter_fraction_kept']:.1f}% | "
            f"{row['ms_median']:.1f} | {100 * row['time_fraction']:.1f}% | {row['speedup']:.2f}× |"
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--factors", type=float, nargs="+", default=[1.0, 2.0, 3.0], help="φ values (φh = φw)")
    parser.add_argument("--n_layer", type=int, default=12, help="GPT-2 blocks (GPT-2-124M: 12)")
    parser.add_argument("--n_embd", type=int, default=768, help="GPT-2 width; c_fc has 4·n_embd units")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10, help="timed passes per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed passes per variant first")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tol", type=float, default=1e-4, help="largest |Δ| accepted between φ=1 and the original")
    parser.add_argument("--skip_model", action="store_true", help="time the layers only")
    parser.add_argument("--output", default=default_output(__file__), help="results JSON")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch.")
    if any(f < 1 for f in args.factors):
        parser.error(f"--factors {args.factors}: every φ must be >= 1.")
    return args


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    layers = bench_layers(args)
    model = [] if args.skip_model else bench_model(args)
    results = {
        "benchmark": "forward of topographically downsampled GPT-2 c_fc layers and models vs the originals",
        "device_info": device_info(args.device),
        "config": {k: v for k, v in vars(args).items() if k != "output"},
        "layers": layers,
        "model": model,
    }
    print_tables(results)
    write_json(args.output, results)


if __name__ == "__main__":
    main()
