"""Topographic downsampling: forward time vs the originals, and what per-unit gains buy on trained TopoNets.

    python benchmarks/bench_downsampling.py                         # GPT-2-124M shapes, CPU, φ = 1, 2, 3
    python benchmarks/bench_downsampling.py --factors 1 2 3 4 --repeats 20 --threads 2
    python benchmarks/bench_downsampling.py --n_layer 2 --n_embd 128 --repeats 3   # smoke configuration
    python benchmarks/bench_downsampling.py --device cuda
    # quality: Δ held-out perplexity of trained models, the paper's layer against the gains variants
    python benchmarks/bench_downsampling.py --quality --models toponet_seed0=runs/toponet baseline_seed0=runs/baseline \
        --text_file heldout.txt --calibration_file train.txt --factors 2 3 --distill_steps 50

Speed (default), each against the unmodified original in the same run:

* layers: the ``--n_layer`` MLP expansion layers of GPT-2 (transformers ``Conv1D(4·n_embd, n_embd)``, GPT-2-124M:
  12 × (768 → 3072), a 48 × 64 sheet of depth 768), each applied to the same ``--batch_size`` × ``--seq_len``
  hidden states; vs :class:`hf_topo.downsampling.TopoDownsampledLinear` built from them at each φ (``φh = φw``),
  the paper's layer (``φ=k``) and with per-unit gains (``φ=k +gains``).
* model: a whole ``GPT2LMHeadModel`` (random weights, no download; the defaults are GPT-2-124M with its 50257-token
  vocabulary), logits of ``--batch_size`` × ``--seq_len`` random tokens; vs ``downsample_model(model, φ)``, which
  downsamples the same ``mlp.c_fc`` layers, with and without gains.

Parity first: at φ = 1 the downsampled layers and model must reproduce the originals (max |Δ| ≤ ``--tol``).
Timing: under ``torch.inference_mode``, ``--warmup`` untimed passes, then ``--repeats`` rounds that time one pass of
every variant in turn (the order rotates each round, so machine noise hits all alike); medians in ms. Reported
for each φ: the reduced sheet, the fraction of parameters kept (of the layers' weights, or of the whole model) and
the fraction of time taken (``ms / original ms``) — if downsampling "runs faster in proportion", the two agree.

Quality (``--quality``): for each saved model (``label=path``), its perplexity on ``--eval_blocks`` blocks of
``--text_file`` (held-out text) and, at each φ, the Δ perplexity of every downsampled variant: ``paper`` (no gains),
``closed_form`` (``g_u = ‖W_u‖/‖blur(W)_u‖``), ``least_squares`` (gains fitted on ``--calibration_blocks`` blocks
of ``--calibration_file``) and ``closed_form+distill`` (``--distill_steps`` steps of distillation of the reduced
weights and gains on that text); plus, per layer, the mean norm ratio ``‖blur(W)_u‖/‖W_u‖`` and cosine of the
paper's blurred rows. Results in ``bench_downsampling_quality.json``.
"""

from __future__ import annotations

import argparse
import os
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
        variants[f"φ={factor:g}"] = [
            TopoDownsampledLinear.from_layer(layer, factor, gain=False) for layer in originals
        ]
        variants[f"φ={factor:g} +gains"] = [TopoDownsampledLinear.from_layer(layer, factor) for layer in originals]
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
        kept = sum(sum(p.numel() for n, p in layer.named_parameters() if n != "bias") for layer in layers)
        kept /= original_weights
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
        variants[f"φ={factor:g}"] = downsample_model(original, factor, gains=False)
        variants[f"φ={factor:g} +gains"] = downsample_model(original, factor)
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


QUALITY_VARIANTS = ("paper", "closed_form", "least_squares", "closed_form+distill")
QUALITY_ONLY_KEYS = ("quality", "models", "text_file", "calibration_file", "eval_blocks", "calibration_blocks",
                     "block_size", "distill_steps", "distill_learning_rate")  # fmt: skip
QUALITY_CONFIG_KEYS = ("factors", "batch_size", "seed", "threads", *QUALITY_ONLY_KEYS)


def blur_statistics(model: nn.Module, factor: float) -> dict[str, dict[str, float]]:
    """Per downsampled layer: mean ``‖blur(W)_u‖ / ‖W_u‖`` and mean cosine of ``blur(W)_u`` and ``W_u``."""
    small = downsample_model(model, factor, gains=False)
    stats = {}
    for name, layer in small.named_modules():
        if isinstance(layer, TopoDownsampledLinear):
            blurred = layer.applied_weight(gains=False, dtype=torch.float64)
            original = model.get_submodule(name).weight.detach().double()
            original = original.T if layer.layer_type == "Conv1D" else original  # (units, in)
            ratio = blurred.norm(dim=1) / original.norm(dim=1)
            cosine = torch.nn.functional.cosine_similarity(blurred, original, dim=1)
            stats[name] = {"norm_ratio": ratio.mean().item(), "cosine": cosine.mean().item()}
    return stats


def bench_quality(args: argparse.Namespace) -> list[dict]:
    from transformers import AutoModelForCausalLM

    from hf_topo.evaluation import evaluate_perplexity, load_text_blocks
    from hf_topo.loading import load_tokenizer

    rows = []
    for spec in args.models:
        label, _, path = spec.rpartition("=")
        label = label or path
        torch.manual_seed(args.seed)
        tokenizer = load_tokenizer(path)
        held_out = load_text_blocks(tokenizer, args.block_size, text_file=args.text_file, max_blocks=args.eval_blocks)
        calibration = load_text_blocks(
            tokenizer, args.block_size, text_file=args.calibration_file, max_blocks=args.calibration_blocks
        )
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        topography = getattr(model.config, "topography", None) or {}
        reference = evaluate_perplexity(model, held_out, args.batch_size, progress=False)
        row = {
            "model": label,
            "tau": (topography.get("tau") or {}).get("value"),
            "perplexity": reference,
            "eval_tokens": held_out.n_tokens,
            "calibration_tokens": calibration.n_tokens,
            "factors": {},
        }
        for factor in args.factors:
            point: dict = {"blur": blur_statistics(model, factor), "delta_perplexity": {}, "parameters": {}}
            for variant in QUALITY_VARIANTS:
                kwargs = {
                    "paper": {"gains": False},
                    "closed_form": {"gains": "closed_form"},
                    "least_squares": {"gains": "least_squares", "calibration_tokens": calibration},
                    "closed_form+distill": {
                        "gains": "closed_form",
                        "calibration_tokens": calibration,
                        "distill_steps": args.distill_steps,
                        "distill_learning_rate": args.distill_learning_rate,
                    },
                }[variant]
                if variant.endswith("distill") and not args.distill_steps:
                    continue
                start = time.perf_counter()
                small = downsample_model(model, factor, batch_size=args.batch_size, **kwargs)
                fit_s = time.perf_counter() - start
                perplexity = evaluate_perplexity(small, held_out, args.batch_size, progress=False)
                point["delta_perplexity"][variant] = perplexity - reference
                point["parameters"][variant] = parameter_count(small)
                point.setdefault("fit_seconds", {})[variant] = fit_s
                print(f"{label} φ={factor:g} {variant}: Δ perplexity {perplexity - reference:+.3f}", flush=True)
            point["parameters_original"] = parameter_count(model)
            row["factors"][f"{factor:g}"] = point
        rows.append(row)
    return rows


def print_quality(rows: list[dict], args: argparse.Namespace) -> None:
    variants = [v for v in QUALITY_VARIANTS if args.distill_steps or not v.endswith("distill")]
    print("\nΔ held-out perplexity, every topographic layer downsampled φ × φ:\n")
    print("| model | τ | perplexity | φ | " + " | ".join(variants) + " | mean ‖blur(W)_u‖/‖W_u‖ | mean cos |")
    print("|---|---|---|---|" + "---|" * (len(variants) + 2))
    for row in rows:
        for factor, point in row["factors"].items():
            blur = list(point["blur"].values())
            ratio = sum(b["norm_ratio"] for b in blur) / len(blur)
            cosine = sum(b["cosine"] for b in blur) / len(blur)
            deltas = " | ".join(f"{point['delta_perplexity'][v]:+.2f}" for v in variants)
            print(
                f"| {row['model']} | {row['tau']} | {row['perplexity']:.2f} | {factor} | {deltas} | {ratio:.3f} | "
                f"{cosine:.3f} |"
            )


def print_tables(results: dict) -> None:
    cfg = results["config"]
    print(f"\n{device_line(results['device_info'])}; {cfg['batch_size']}×{cfg['seq_len']} tokens per forward\n")
    print(f"{cfg['n_layer']} GPT-2 c_fc layers ({cfg['n_embd']} → {4 * cfg['n_embd']}), forward:\n")
    print("| variant | reduced sheet | weights (+gains) kept | ms (median) | time fraction | speed-up |")
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
    parser.add_argument("--output", default=None, help="results JSON (default: benchmarks/results/<mode>.json)")
    quality = parser.add_argument_group("quality (--quality)")
    quality.add_argument("--quality", action="store_true", help="Δ perplexity of saved models instead of speed")
    quality.add_argument("--models", nargs="+", default=[], help="saved models, as label=path or path")
    quality.add_argument("--text_file", help="held-out text the perplexity is measured on")
    quality.add_argument("--calibration_file", help="text the least-squares gains and the distillation use")
    quality.add_argument("--eval_blocks", type=int, default=32)
    quality.add_argument("--calibration_blocks", type=int, default=32)
    quality.add_argument("--block_size", type=int, default=128)
    quality.add_argument("--distill_steps", type=int, default=50)
    quality.add_argument("--distill_learning_rate", type=float, default=1e-3)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible to torch.")
    if any(f < 1 for f in args.factors):
        parser.error(f"--factors {args.factors}: every φ must be >= 1.")
    if args.quality and not (args.models and args.text_file and args.calibration_file):
        parser.error("--quality needs --models, --text_file (held-out) and --calibration_file.")
    if args.output is None:
        stem = "bench_downsampling_quality" if args.quality else "bench_downsampling"
        args.output = default_output(stem)
    return args


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quality:
        rows = bench_quality(args)
        print_quality(rows, args)
        config = {k: v for k, v in vars(args).items() if k in QUALITY_CONFIG_KEYS}
        config["models"] = [spec.rpartition("=")[0] or os.path.basename(spec) for spec in args.models]
        config["text_file"] = os.path.basename(args.text_file)
        config["calibration_file"] = os.path.basename(args.calibration_file)
        results = {
            "benchmark": "Δ held-out perplexity of downsampled trained models: the paper's layer vs per-unit gains",
            "device_info": device_info(args.device),
            "config": config,
            "models": rows,
        }
        write_json(args.output, results)
        return
    layers = bench_layers(args)
    model = [] if args.skip_model else bench_model(args)
    results = {
        "benchmark": "forward of topographically downsampled GPT-2 c_fc layers and models vs the originals",
        "device_info": device_info(args.device),
        "config": {k: v for k, v in vars(args).items() if k not in ("output", *QUALITY_ONLY_KEYS)},
        "layers": layers,
        "model": model,
    }
    print_tables(results)
    write_json(args.output, results)


if __name__ == "__main__":
    main()
