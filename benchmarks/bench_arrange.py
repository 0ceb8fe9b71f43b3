"""The control the field lacks: how much of a TopoNet's topography and resilience can a mere permutation give?

    # everything in one process: train the demo's pair per seed (skipped when already there), arrange, measure
    nice -n 10 python benchmarks/bench_arrange.py --seeds 0 --max_steps 500 --arrange_seeds 0 1

    # the same in three processes side by side (what produced results/bench_arrange.json), then merged
    for part in baseline toponet curve; do
        nice -n 10 python benchmarks/bench_arrange.py --part $part --seeds 0 --arrange_seeds 0 1 \
            --output /tmp/part_$part.json &
    done; wait
    python benchmarks/bench_arrange.py --merge /tmp/part_*.json --seeds 0 --arrange_seeds 0 1 --skip_gpt2
    python benchmarks/bench_arrange.py --only_gpt2 --gpt2_layers 2   # GPT-2-124M's shapes, own JSON

For every seed, four models: the τ=0 baseline, the baseline with its `c_fc` units arranged by `hf_topo.arrange_units`
(TopoLoss objective), the τ=5 TopoNet, and the arranged TopoNet. Each is measured on the held-out 5 % of the corpus
with `hf_topo.analysis.analyze_model`: TopoLoss, smoothness of activations, Moran's I, effective dimensionality
(a permutation cannot change it), Δ perplexity under 2×2 downsampling of the sheets and under 50 % L1 pruning of
`c_fc`. Also: the arranged objective against a random-permutation null (20 draws per layer) and the identity; the
objective against the number of swap rounds; the time to arrange GPT-2-124M's shapes (12 × 3072 units of depth 768,
random weights). Every arranged model is checked to compute what its original computes (max |Δ logit|).
Writes benchmarks/results/bench_arrange.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import time

import torch
from _common import RESULTS_DIR, device_info, device_line

from hf_topo import TopoConfig, TopoRegularizer, arrange_units
from hf_topo.analysis import AnalysisSettings, analyze_model
from hf_topo.arrangement import find_arrangement, sheet_objective
from hf_topo.arrangement.mlp import unit_vectors
from hf_topo.data import write_python_corpus
from hf_topo.evaluation import load_text_blocks
from hf_topo.experiments.recipes import hold_out_lines, small_cpu_recipe
from hf_topo.models import build_model
from hf_topo.pretraining import pretrain

MODELS = ("baseline", "baseline_arranged", "toponet", "toponet_arranged")


def train(args, seed: int) -> dict[str, str]:
    """The demo's pair for ``seed`` (trained unless already there): ``{"baseline": dir, "toponet": dir}``."""
    root = os.path.join(args.work_dir, f"seed{seed}")
    data_dir = os.path.join(args.work_dir, "data")
    corpus = os.path.join(data_dir, "python_stdlib.txt")
    if not os.path.isfile(corpus):
        write_python_corpus(corpus, max_bytes=args.corpus_bytes)
    train_file, heldout = (os.path.join(data_dir, f"{split}.txt") for split in ("train", "validation"))
    if not (os.path.isfile(train_file) and os.path.isfile(heldout)):  # written once: parts read them side by side
        train_file, heldout = hold_out_lines(corpus, 0.05, data_dir)
    dirs = {}
    for name, tau in (("baseline", 0.0), ("toponet", args.tau)):
        out = os.path.join(root, name)
        dirs[name] = out
        if os.path.isfile(os.path.join(out, "config.json")) or name not in args.train_names:
            continue
        tokenizer = args.tokenizer_from or (dirs["baseline"] if name == "toponet" else None)
        recipe = small_cpu_recipe(
            train_file, heldout, out, tau=tau, max_steps=args.max_steps, batch_size=16, learning_rate=2e-3,
            block_size=128, seed=seed, tokenizer=tokenizer, use_cpu=True,
        )  # fmt: skip
        start = time.perf_counter()
        pretrain(*recipe)
        print(f"seed {seed}: trained {name} (τ={tau:g}) in {time.perf_counter() - start:.0f} s", flush=True)
    dirs["heldout"] = heldout
    return dirs


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def measure(model, tokenizer, text, seed: int) -> dict:
    settings = AnalysisSettings(
        max_tokens=2048, max_pairs=50_000, eval_blocks=16, batch_size=16, sweeps=["pruning", "downsampling"],
        pruning_fractions=[0.0, 0.5], downsampling_factors=[1.0, 2.0], seed=seed,
    )  # fmt: skip
    config = TopoConfig.from_pretrained(model)
    analysis = analyze_model(model, tokenizer, text, settings, topography=config, progress=False)
    summary = analysis.analysis_summary()
    return {
        "topoloss": float(TopoRegularizer(config).evaluate(model)[0]),
        "smoothness": summary.smoothness,
        "weight_smoothness": summary.weight_smoothness,
        "morans_i": summary.morans_i,
        "effective_dimensionality": summary.effective_dimensionality,
        "perplexity": summary.perplexity,
        # the paper's layer (the published figures were taken before per-unit gains became the default)
        "delta_perplexity_downsampled_2x2": summary.delta_perplexity("downsampling_paper", 2.0),
        "delta_perplexity_downsampled_2x2_gains": summary.delta_perplexity("downsampling", 2.0),
        "delta_perplexity_pruned_50pct": summary.delta_perplexity("pruning", 0.5),
    }


def null_and_identity(model, seed: int, draws: int) -> dict:
    """Per layer: TopoLoss of the units where they are, and of ``draws`` random permutations."""
    config = TopoConfig.from_pretrained(model)
    generator = torch.Generator().manual_seed(1000 + seed)
    out = {}
    for layer in TopoRegularizer(config).layers(model):
        state = sheet_objective(unit_vectors(layer.module), layer.sheet.height, layer.sheet.width, "topoloss")
        n = layer.sheet.n_units
        values = [state.refresh(torch.randperm(n, generator=generator)) for _ in range(draws)]
        out[layer.sheet.module_name] = {
            "identity": state.refresh(torch.arange(n)),
            "random_mean": statistics.fmean(values),
            "random_std": statistics.stdev(values),
        }
    return out


def run_seed(args, seed: int, names=("baseline", "toponet")) -> dict:
    """The pair of training seed ``seed``: both models as trained, and arranged with every seed of ``--arrange_seeds``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dirs = train(args, seed)
    tokenizer = AutoTokenizer.from_pretrained(dirs["baseline"])
    text = load_text_blocks(tokenizer, 128, text_file=dirs["heldout"], max_blocks=16)
    probe = text.input_ids[:4]
    result = {"models": {}, "arranged": {}, "null": {}, "arrangement": {}}
    for name in names:
        original = AutoModelForCausalLM.from_pretrained(dirs[name], dtype=torch.float32).eval()
        result["models"][name] = measure(original, tokenizer, text, seed)
        print(f"seed {seed} {name}: {json.dumps(result['models'][name])}", flush=True)
        result["null"][name] = null_and_identity(original, seed, args.null_draws)
        for arrange_seed in args.arrange_seeds:
            arranged = copy.deepcopy(original)
            start = time.perf_counter()
            report = arrange_units(arranged, seed=arrange_seed, max_rounds=args.max_rounds, progress=False)
            seconds = time.perf_counter() - start
            max_diff = float((_logits(original, probe) - _logits(arranged, probe)).abs().max())
            label = f"{name}_arranged"
            result["arrangement"].setdefault(label, {})[str(arrange_seed)] = {
                "seconds": seconds, "max_abs_logit_difference": max_diff, "record": report.to_record(),
            }  # fmt: skip
            measured = measure(arranged, tokenizer, text, seed)
            result["arranged"].setdefault(label, {})[str(arrange_seed)] = measured
            print(f"seed {seed} {label} (arrangement seed {arrange_seed}, {seconds:.0f} s, max |Δ logit| "
                  f"{max_diff:.2e}): {json.dumps(measured)}", flush=True)  # fmt: skip
        runs = result["arranged"][f"{name}_arranged"].values()
        result["models"][f"{name}_arranged"] = {
            key: statistics.fmean(run[key] for run in runs) for key in result["models"][name]
        }
    return result


def rounds_curve(args) -> dict:
    """TopoLoss of the first layer of the first seed's baseline against swap rounds, from the identity and from MDS."""
    from transformers import AutoModelForCausalLM

    seed = args.seeds[0]
    model = AutoModelForCausalLM.from_pretrained(os.path.join(args.work_dir, f"seed{seed}", "baseline"))
    layer = TopoRegularizer(TopoConfig.from_pretrained(model)).layers(model)[0]
    curves = {}
    for init in ("identity", "mds"):
        result = find_arrangement(
            unit_vectors(layer.module), layer.sheet.height, layer.sheet.width, init=init, max_rounds=args.curve_rounds,
            patience=args.curve_rounds, generator=torch.Generator().manual_seed(0), progress=False,
        )  # fmt: skip
        curves[init] = {"seed": seed, "layer": layer.sheet.module_name, "objective_after_round": result.history}
    return curves


def gpt2_timing(args) -> dict:
    """Wall and CPU seconds to arrange ``--gpt2_layers`` of GPT-2-124M's c_fc sheets (48×64, depth 768; random
    weights: the timing, not the values), with ``--gpt2_rounds`` swap rounds per layer."""
    torch.manual_seed(0)
    model = build_model("gpt2-124m", vocab_size=50257, block_size=1024)
    targets = f"transformer\\.h\\.({'|'.join(str(i) for i in range(args.gpt2_layers))})\\.mlp\\.c_fc"
    wall, cpu = time.perf_counter(), time.process_time()
    report = arrange_units(model, targets, max_rounds=args.gpt2_rounds, progress=False, record=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "layers_arranged": len(report.layers), "max_rounds": args.gpt2_rounds, "wall_seconds": wall,
        "cpu_seconds": cpu, "cpu_seconds_per_layer": cpu / len(report.layers),
        "mean_before": report.mean_before, "mean_after": report.mean_after,
        "rounds": {name: layer.rounds for name, layer in report.layers.items()},
    }  # fmt: skip


def _command() -> str:
    """This command line, with file paths reduced to their names (no machine-specific paths in the results)."""
    return " ".join(
        ["python benchmarks/bench_arrange.py"] + [os.path.basename(a) if os.sep in a else a for a in sys.argv[1:]]
    )


def _write(path: str, results: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max_steps", type=int, default=500, help="Training steps per model (the demo's: 500).")
    parser.add_argument("--tau", type=float, default=5.0)
    parser.add_argument("--corpus_bytes", type=int, default=2_000_000)
    parser.add_argument("--max_rounds", type=int, default=100, help="Swap rounds per layer of arrange_units.")
    parser.add_argument("--arrange_seeds", type=int, nargs="+", default=[0, 1, 2], help="Seeds of the arrangement.")
    parser.add_argument("--null_draws", type=int, default=20)
    parser.add_argument("--curve_rounds", type=int, default=200)
    parser.add_argument("--gpt2_rounds", type=int, default=100)
    parser.add_argument("--gpt2_layers", type=int, default=12, help="How many of GPT-2-124M's 12 layers to time.")
    parser.add_argument("--only_gpt2", action="store_true", help="Time GPT-2-124M's shapes only (own JSON).")
    parser.add_argument("--skip_gpt2", action="store_true")
    parser.add_argument("--train_only", action="store_true", help="Train the pairs and stop.")
    parser.add_argument("--train_names", nargs="+", default=["baseline", "toponet"], help="Which models to train.")
    parser.add_argument(
        "--tokenizer_from", help="A model folder whose tokenizer both models use (default: the baseline trains one)."
    )
    parser.add_argument(
        "--part", choices=["baseline", "toponet", "curve"], help="Measure one part only, into --output (then --merge)."
    )
    parser.add_argument("--merge", nargs="+", help="Merge the JSON files of the parts into --output.")
    parser.add_argument("--work_dir", default="outputs/bench_arrange")
    parser.add_argument("--output", default=str(RESULTS_DIR / "bench_arrange.json"))
    args = parser.parse_args()
    if args.train_only:
        for seed in args.seeds:
            train(args, seed)
        return
    info = device_info("cpu")
    print(f"Machine: {device_line(info)}", flush=True)
    if args.only_gpt2:
        timing = gpt2_timing(args) | {
            "machine": info,
            "command": _command(),
        }
        with open(RESULTS_DIR / "bench_arrange_gpt2_timing.json", "w") as f:
            json.dump(timing, f, indent=2)
        print(json.dumps(timing, indent=2))
        return
    if args.part in ("baseline", "toponet"):  # one model of every pair (run the parts side by side, then --merge)
        part = {str(seed): run_seed(args, seed, (args.part,)) for seed in args.seeds}
        _write(args.output, {"machine": info, "part": args.part, "per_seed": part})
        return
    if args.part == "curve":
        _write(args.output, {"machine": info, "part": "curve", "rounds_curve": rounds_curve(args)})
        return
    if args.merge:
        parts = []
        for path in args.merge:
            with open(path) as f:
                parts.append(json.load(f))
        per_seed: dict = {}
        for part in parts:
            for seed, result in part.get("per_seed", {}).items():
                merged = per_seed.setdefault(seed, {"models": {}, "arranged": {}, "null": {}, "arrangement": {}})
                for key in merged:
                    merged[key].update(result[key])
        curve = next((part["rounds_curve"] for part in parts if "rounds_curve" in part), None)
    else:
        per_seed = {str(seed): run_seed(args, seed) for seed in args.seeds}
        curve = rounds_curve(args)
    seeds = list(per_seed)
    table = {}
    for label in MODELS:
        table[label] = {}
        for key in per_seed[seeds[0]]["models"][label]:
            values = [per_seed[s]["models"][label][key] for s in seeds]
            values = [v for v in values if v is not None and math.isfinite(v)]
            table[label][key] = {
                "mean": statistics.fmean(values) if values else None,
                "std": statistics.stdev(values) if len(values) > 1 else None,
            }
    results = {
        "machine": info,
        "command": _command(),
        "recipe": {
            "preset": "tiny-gpt2",
            "max_steps": args.max_steps,
            "tau": args.tau,
            "batch_size": 16,
            "block_size": 128,
            "learning_rate": 2e-3,
            "corpus": "Python stdlib source",
            "corpus_bytes": args.corpus_bytes,
            "arrange_max_rounds": args.max_rounds,
        },  # fmt: skip
        "seeds": [int(s) for s in seeds],
        "arrange_seeds": args.arrange_seeds,
        "summary": table,
        "per_seed": per_seed,
        "rounds_curve": curve,
    }
    if not args.skip_gpt2:
        results["gpt2_124m_timing"] = gpt2_timing(args)
    _write(args.output, results)
    print("\n| model | " + " | ".join(table["baseline"]) + " |")
    print("|---|" + "---|" * len(table["baseline"]))
    for label, row in table.items():
        cells = [f"{v['mean']:.4g}" + (f" ± {v['std']:.2g}" if v["std"] is not None else "") for v in row.values()]
        print(f"| {label} | " + " | ".join(cells) + " |")
    if "gpt2_124m_timing" in results:
        timing = results["gpt2_124m_timing"]
        print(f"\nGPT-2-124M shapes, {timing['layers_arranged']} layers: {timing['wall_seconds']:.0f} s")
    print(f"Results: {args.output}")


if __name__ == "__main__":
    main()
