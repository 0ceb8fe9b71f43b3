"""BLiMP: hf_topo vs lm-evaluation-harness 0.4.x on the same model and paradigm files, in one run.

    pip install "lm-eval==0.4.13"        # into the same or another environment (see --lm_eval_python)
    python benchmarks/bench_blimp.py --shape gpt2-124m --lm_eval_python /tmp/lmeval-venv/bin/python
    python benchmarks/bench_blimp.py --model outputs/demo/toponet --lm_eval_python ...

The model is ``--model`` (a folder with its tokenizer) or, with ``--shape``, a randomly initialised GPT-2 (seed 0)
built here: ``gpt2-124m`` is GPT-2-124M (12 layers × 768, 12 heads, 1024 positions, vocabulary 50257), ``tiny`` the
demo's TopoNet shape (4 × 128, vocabulary 4096). Both use a byte-level BPE tokenizer of 4096 tokens trained on
wikitext-2 (``--corpus``) like the demo's. Randomly initialised weights cost the same time as trained ones, and
their near-uniform predictions make near-ties likelier, which is the harder test of identical decisions.

Both tools run as fresh processes, timed end to end (process start to results written), on CPU, float32, the same
batch size, ``--repeats`` times in alternation; the script reports the median wall time and the median CPU time of
each (CPU seconds are less sensitive to other load on the machine than wall seconds). The harness reads the local
jsonl files through the task yamls that :func:`hf_topo.blimp.write_lm_eval_tasks` writes (a copy of its ``blimp``
template) and logs every pair (``--log_samples``): the script checks that every pair is decided the same way by
both, and prints per-paradigm accuracies with standard errors and the speed-up.

``--scorer_only`` times our :class:`hf_topo.blimp.SentenceScorer` alone, in this process, on ``--limit`` pairs per
paradigm: :meth:`~hf_topo.blimp.SentenceScorer.score_pairs` (what ``eval-blimp`` runs: each pair from its first
differing token, the LM head only where such a token is read), ``score`` of whole sentences with the head at the
read positions only (``gather_head=True``), and with the head at every position of every row (``gather_head=False``,
the scorer before these changes), and with ``--unshared`` each sentence on its own; ``--repeats`` rounds, the order rotated each round. It prints the positions the head ran on, the median
wall and CPU seconds, the load average, and the largest score difference between the variants (decisions must be
identical); results go to ``benchmarks/results/bench_blimp_head.json`` unless ``--output`` says otherwise.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import write_json

from hf_topo.blimp import write_lm_eval_tasks

ROOT = Path(__file__).resolve().parents[1]

SHAPES = {
    "gpt2-124m": dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024, vocab_size=50257),
    "tiny": dict(n_embd=128, n_layer=4, n_head=4, n_positions=128, vocab_size=4096),
}


def build_model(shape: str, corpus: Path, folder: Path) -> None:
    """A randomly initialised GPT-2 of ``shape`` (seed 0) with a 4096-token BPE tokenizer trained on ``corpus``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from hf_topo.data import train_bpe_tokenizer

    lines = [line for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]
    tokenizer = train_bpe_tokenizer(lines, vocab_size=4096)
    torch.manual_seed(0)
    config = GPT2Config(**SHAPES[shape], bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child process tree) of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def harness_decisions(folder: Path, tasks: list[str]) -> dict[str, list[bool]]:
    """Per-pair decisions from the harness's ``--log_samples`` files, in document order."""
    decisions = {}
    for task in tasks:
        files = sorted(glob.glob(str(folder / "**" / f"samples_{task}_*.jsonl"), recursive=True))
        rows = [json.loads(line) for line in Path(files[-1]).read_text().splitlines() if line.strip()]
        decisions[task] = [bool(r["acc"]) for r in sorted(rows, key=lambda r: r["doc_id"])]
    return decisions


def scorer_only(args: argparse.Namespace, model_folder: str) -> None:
    """Time the scorer's variants in this process, rotating their order each round (see the module docstring)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_topo.blimp import SentenceScorer, load_blimp

    model = AutoModelForCausalLM.from_pretrained(model_folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_folder)
    data = load_blimp(blimp_dir=args.blimp_dir, limit=args.limit)
    pairs = [pair for p in data for pair in p.pairs]
    sentences = [s for pair in pairs for s in pair]
    # name: (SentenceScorer arguments, score pairs from their first differing token (True) or whole sentences)
    variants = {
        "pairs_gathered_head": (dict(gather_head=True), True),
        "sentences_gathered_head": (dict(gather_head=True), False),
        "full_head": (dict(gather_head=False), False),
    }
    if args.unshared:
        variants["unshared"] = (dict(share_prefixes=False), False)
    names = list(variants)
    times: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    stats, diffs = {}, {}
    load = [os.getloadavg()]
    for round_ in range(args.repeats):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            kwargs, by_pair = variants[name]
            scorer = SentenceScorer(model, tokenizer, batch_size=args.batch_size, **kwargs)
            scorer.score(sentences[:2], progress=False)  # the self-checks, outside the timing
            wall, cpu = time.perf_counter(), time.process_time()
            if by_pair:
                scores = scorer.score_pairs(pairs, progress=False)
            else:
                flat = scorer.score(sentences, progress=False)
                scores = [(flat[2 * i], flat[2 * i + 1]) for i in range(len(pairs))]
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
            stats[name] = dict(scorer.last_stats)
            diffs[name] = [g - b for g, b in scores]  # score(good) - score(bad): what decides a pair
        load.append(os.getloadavg())
    gap = {n: max(abs(a - b) for a, b in zip(diffs[n], diffs["full_head"], strict=True)) for n in names}
    differ = {n: sum((a >= 0) != (b >= 0) for a, b in zip(diffs[n], diffs["full_head"], strict=True)) for n in names}
    wall = {n: statistics.median(w for w, _ in v) for n, v in times.items()}
    cpu = {n: statistics.median(c for _, c in v) for n, v in times.items()}
    print(f"SentenceScorer alone, {len(pairs)} pairs ({len(data)} paradigms), batch {args.batch_size}, CPU float32")
    print(f"torch threads {torch.get_num_threads()}, load average (1 min) {[round(x[0], 2) for x in load]}\n")
    print(
        "| variant | head positions run | read | tokens run | wall s | CPU s | max |Δ(good - bad)| vs full_head | decisions differing |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for n in names:
        st = stats[n]
        print(
            f"| {n} | {st['head_positions_run']} | {st['head_positions_read']} | {st['tokens_run']} | {wall[n]:.2f} "
            f"| {cpu[n]:.2f} | {gap[n]:.2g} | {differ[n]} |"
        )
    for n in [n for n in names if n != "full_head"]:
        print(
            f"{n} over full_head: {wall['full_head'] / wall[n]:.2f}× wall, "
            f"{cpu['full_head'] / cpu[n]:.2f}× CPU (median of {args.repeats})"
        )
    record = {
        "model": args.model if args.model else f"random GPT-2 {args.shape} (seed 0), 4096-token BPE on wikitext-2",
        "shape": SHAPES.get(args.shape),
        "paradigms": [p.uid for p in data],
        "pairs": len(pairs),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "limit": args.limit,
        "torch_threads": torch.get_num_threads(),
        "loadavg_1_5_15_per_round": [[round(x, 2) for x in la] for la in load],
        "stats": stats,
        "wall_s": {n: [round(w, 3) for w, _ in v] for n, v in times.items()},
        "cpu_s": {n: [round(c, 3) for _, c in v] for n, v in times.items()},
        "max_abs_pair_difference_gap_vs_full_head": gap,
        "decisions_differing_vs_full_head": differ,
        "speedup_wall_over_full_head": {n: wall["full_head"] / wall[n] for n in names if n != "full_head"},
        "speedup_cpu_over_full_head": {n: cpu["full_head"] / cpu[n] for n in names if n != "full_head"},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
    }
    write_json(args.output or "benchmarks/results/bench_blimp_head.json", record)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="Local model directory (with tokenizer).")
    source.add_argument("--shape", choices=sorted(SHAPES), help="Build a random GPT-2 of this shape.")
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared/data/wikitext-2/valid.txt"))
    parser.add_argument("--blimp_dir", default=str(ROOT.parent / "shared/data/blimp_sample"))
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="Pairs per paradigm (default: all; for a smoke run).")
    parser.add_argument("--repeats", type=int, default=1, help="Runs of each tool, alternating.")
    parser.add_argument("--unshared", action="store_true", help="Also time hf_topo with --no_share_prefixes.")
    parser.add_argument(
        "--lm_eval_python", default=sys.executable, help="Python of an environment with lm-eval 0.4.x."
    )
    parser.add_argument(
        "--scorer_only",
        action="store_true",
        help="Time only our scorer, in-process: LM head at the read positions vs at every position (no lm-eval).",
    )
    parser.add_argument(
        "--output",
        default=None,
        help="Results JSON (default benchmarks/results/bench_blimp.json, bench_blimp_head.json with --scorer_only).",
    )
    args = parser.parse_args()

    files = sorted(glob.glob(os.path.join(args.blimp_dir, "*.jsonl")))
    if not files:
        raise SystemExit(f"No BLiMP jsonl files in {args.blimp_dir}.")
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    work = Path(tempfile.mkdtemp(prefix="bench_blimp_"))
    try:
        model = args.model
        if model is None:
            model = str(work / args.shape)
            build_model(args.shape, Path(args.corpus), Path(model))
        if args.scorer_only:
            scorer_only(args, model)
            return
        tasks = write_lm_eval_tasks(work / "tasks", blimp_dir=args.blimp_dir)
        uids = [t.removeprefix("hftopo_blimp_") for t in tasks]

        ours_json = work / "ours.json"
        ours_cmd = [sys.executable, "-m", "hf_topo.cli", "eval-blimp", "--model", model, "--blimp_dir", args.blimp_dir]
        ours_cmd += ["--batch_size", str(args.batch_size), "--output", str(ours_json)]
        harness_cmd = [args.lm_eval_python, "-m", "lm_eval", "--model", "hf"]
        harness_cmd += ["--model_args", f"pretrained={model},dtype=float32", "--tasks", ",".join(tasks)]
        harness_cmd += ["--include_path", str(work / "tasks"), "--device", "cpu", "--batch_size", str(args.batch_size)]
        harness_cmd += ["--output_path", str(work / "harness"), "--log_samples"]
        if args.limit is not None:
            ours_cmd += ["--limit", str(args.limit)]
            harness_cmd += ["--limit", str(args.limit)]
        runs: dict[str, list[tuple[float, float]]] = {"lm_eval": [], "hf_topo": []}
        if args.unshared:
            runs["hf_topo_unshared"] = []
        for _ in range(args.repeats):
            runs["lm_eval"].append(timed(harness_cmd, env))
            runs["hf_topo"].append(timed(ours_cmd, env))
            if args.unshared:
                runs["hf_topo_unshared"].append(timed([*ours_cmd, "--no_share_prefixes"], env))

        ours = json.loads(ours_json.read_text())
        result_file = sorted(glob.glob(str(work / "harness" / "**" / "results_*.json"), recursive=True))[-1]
        harness_results = json.loads(Path(result_file).read_text())["results"]
        harness = {u: harness_results[f"hftopo_blimp_{u}"]["acc,none"] for u in uids}
        harness_stderr = {u: harness_results[f"hftopo_blimp_{u}"]["acc_stderr,none"] for u in uids}
        theirs = harness_decisions(work / "harness", tasks)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    differing = {
        u: sum(a != b for a, b in zip(ours["decisions"][u], theirs[f"hftopo_blimp_{u}"], strict=True)) for u in uids
    }
    wall = {k: statistics.median(w for w, _ in v) for k, v in runs.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
    print(f"BLiMP, {len(uids)} paradigms, model {args.model or args.shape}, batch {args.batch_size}, CPU float32\n")
    print("| paradigm | hf_topo | lm-evaluation-harness | pairs decided differently |")
    print("|---|---|---|---|")
    for u in uids:
        print(
            f"| {u} | {ours['paradigms'][u]:.3f} ± {ours['paradigm_stderrs'][u]:.3f} "
            f"| {harness[u]:.3f} ± {harness_stderr[u]:.3f} | {differing[u]} |"
        )
    print(f"\npairs decided differently: {sum(differing.values())} of {sum(ours['n_pairs'].values())}")
    print(f"tokens run: {ours['extra']['tokens_run']} of {ours['extra']['tokens_unshared']} (prefix sharing)")
    print(f"near-ties rescored: {ours['extra']['near_ties_rescored']}")
    for name in runs:
        print(f"{name}: wall {wall[name]:.1f} s, CPU {cpu[name]:.1f} s (median of {args.repeats})")
    for name in [n for n in runs if n != "lm_eval"]:
        print(
            f"speed-up of {name} over lm-evaluation-harness: {wall['lm_eval'] / wall[name]:.2f}× wall, "
            f"{cpu['lm_eval'] / cpu[name]:.2f}× CPU"
        )
    args.output = args.output or "benchmarks/results/bench_blimp.json"
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    record = {
        "model": args.model if args.model else f"random GPT-2 {args.shape} (seed 0), 4096-token BPE on wikitext-2",
        "shape": SHAPES.get(args.shape),
        "paradigms": uids,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "limit": args.limit,
        "hf_topo": ours["paradigms"],
        "hf_topo_stderr": ours["paradigm_stderrs"],
        "lm_eval": harness,
        "lm_eval_stderr": harness_stderr,
        "pairs_decided_differently": differing,
        "tokens_run": ours["extra"]["tokens_run"],
        "tokens_unshared": ours["extra"]["tokens_unshared"],
        "near_ties_rescored": ours["extra"]["near_ties_rescored"],
        "wall_s": {k: [round(w, 2) for w, _ in v] for k, v in runs.items()},
        "cpu_s": {k: [round(c, 2) for _, c in v] for k, v in runs.items()},
        "speedup_wall": {n: wall["lm_eval"] / wall[n] for n in runs if n != "lm_eval"},
        "speedup_cpu": {n: cpu["lm_eval"] / cpu[n] for n in runs if n != "lm_eval"},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
    }
    write_json(args.output, record)


if __name__ == "__main__":
    main()
