"""The measurement floors of smoothness and effective dimensionality: their cost, and what they show on a model.

    # the cost on a 1,024-unit 32 × 32 sheet × 4,096 samples (random activations)
    python benchmarks/bench_smoothness_floors.py --timing

    # a trained model: per-position variance, effective dimensionality by excluded first positions and z-scored,
    # and layer 0's smoothness with its bootstrap interval and shuffle floor (held-out text in blocks of 128)
    python benchmarks/bench_smoothness_floors.py --model_dir <model> --text_file <held_out.txt>

docs/analysis.md ("Smoothness floors", "Effective dimensionality: z-scored and without the first positions") quotes
its output; the model there is the claims recipe's baseline shrunk to 4 × 128 and 100 steps
(`hf_topo.experiments.families.train_family("baseline", ..., max_steps=100, config_overrides="n_layer=4,n_embd=128,
n_head=4")` on WikiText-2 test with 10 % of its lines held out).
"""

import argparse
import time

import torch


def timing() -> None:
    from hf_topo.analysis import correlation_vs_distance

    x = torch.randn(4096, 1024, generator=torch.Generator().manual_seed(0))
    for kwargs in (
        dict(n_bootstrap=0, n_shuffles=0), dict(n_bootstrap=0, n_shuffles=10), dict(n_bootstrap=200, n_shuffles=0),
        dict(), dict(max_pairs=200_000, n_bootstrap=0, n_shuffles=0),
    ):  # fmt: skip
        start = time.perf_counter()
        result = correlation_vs_distance(x, (32, 32), **kwargs)
        print(f"{kwargs or 'defaults'}: {time.perf_counter() - start:.2f} s, {result.n_pairs} pairs")


def model_floors(model_dir: str, text_file: str, max_tokens: int = 4096) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_topo.analysis import (
        collect_activations,
        effective_dimensionality,
        smoothness,
        token_positions,
        topographic_layers,
    )
    from hf_topo.evaluation import load_text_blocks

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    blocks = load_text_blocks(AutoTokenizer.from_pretrained(model_dir), 128, text_file=text_file, max_blocks=64)
    layers = topographic_layers(model)
    acts = collect_activations(model, blocks, layers, max_samples=max_tokens, progress=False)
    positions, block_ids = token_positions(blocks, max_tokens)
    for layer in layers:
        a = acts[layer.name].double()
        energy = (a - a.mean(0)).pow(2).sum(1)
        per_position = [round(float(energy[positions == p].mean() / energy.mean()), 2) for p in range(8)]
        by_k = {k: round(effective_dimensionality(a[positions >= k]), 2) for k in (0, 1, 2, 4, 8, 16)}
        zscored = round(effective_dimensionality(a, standardize=True), 2)
        print(f"{layer.name}: variance at positions 0-7 / mean {per_position}; ED by k {by_k}; z-scored {zscored}")
    layer = layers[0]
    start = time.perf_counter()
    r = smoothness(acts[layer.name], layer.sheet, groups=block_ids)
    print(
        f"{layer.name} ({layer.sheet.height}x{layer.sheet.width}): smoothness {r.score:.3f} {r.score_interval}, "
        f"shuffle {r.shuffle_score:.3f}; robust {r.robust_score:.4f} {r.robust_score_interval}, shuffle "
        f"{r.shuffle_robust_score:.4f}; max bin {r.max_bin}, min bin {r.min_bin}, pairs per bin {r.pair_counts}; "
        f"{time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timing", action="store_true")
    parser.add_argument("--model_dir")
    parser.add_argument("--text_file")
    args = parser.parse_args()
    if args.timing:
        timing()
    if args.model_dir:
        model_floors(args.model_dir, args.text_file)
