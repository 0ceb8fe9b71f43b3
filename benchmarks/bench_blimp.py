"""BLiMP: hf_topo vs lm-evaluation-harness 0.4.x on the same model and paradigm files, in one run.

    pip install "lm-eval==0.4.13"        # into the same or another environment (see --lm_eval_python)
    python benchmarks/bench_blimp.py --model outputs/demo/toponet --blimp_dir ../shared/data/blimp_sample

Both run as fresh processes, timed end to end (process start to results written), on CPU, float32, same batch
size. The harness reads the local jsonl files through generated task yamls (`dataset_path: json`,
`dataset_kwargs.data_files`) that copy its `blimp` template (empty context, choices `[sentence_good,
sentence_bad]`, target 0, metric acc). The script prints per-paradigm accuracies of both, their largest
difference, and the speed-up.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import write_json

ROOT = Path(__file__).resolve().parents[1]

TASK_TEMPLATE = """task: hftopo_blimp_{uid}
dataset_path: json
dataset_kwargs:
  data_files:
    train: {path}
output_type: multiple_choice
validation_split: train
doc_to_text: ""
doc_to_target: 0
doc_to_choice: "{{{{[sentence_good, sentence_bad]}}}}"
num_fewshot: 0
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="Local model directory (with tokenizer).")
    parser.add_argument("--blimp_dir", default=str(ROOT.parent / "shared/data/blimp_sample"))
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument(
        "--lm_eval_python", default=sys.executable, help="Python of an environment with lm-eval 0.4.x."
    )
    parser.add_argument("--output", default="benchmarks/results/bench_blimp.json")
    args = parser.parse_args()

    files = sorted(glob.glob(os.path.join(args.blimp_dir, "*.jsonl")))
    if not files:
        raise SystemExit(f"No BLiMP jsonl files in {args.blimp_dir}.")
    uids = [Path(f).stem for f in files]
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    work = Path(tempfile.mkdtemp(prefix="bench_blimp_"))
    try:
        tasks = work / "tasks"
        tasks.mkdir()
        for uid, path in zip(uids, files, strict=True):
            (tasks / f"hftopo_blimp_{uid}.yaml").write_text(TASK_TEMPLATE.format(uid=uid, path=os.path.abspath(path)))

        ours_json = work / "ours.json"
        ours_cmd = [
            sys.executable,
            str(ROOT / "scripts/eval_blimp.py"),
            "--model",
            args.model,
            "--blimp_dir",
            args.blimp_dir,
        ]
        ours_cmd += ["--batch_size", str(args.batch_size), "--output", str(ours_json)]
        harness_cmd = [
            args.lm_eval_python,
            "-m",
            "lm_eval",
            "--model",
            "hf",
            "--model_args",
            f"pretrained={args.model},dtype=float32",
        ]
        harness_cmd += ["--tasks", ",".join(f"hftopo_blimp_{u}" for u in uids), "--include_path", str(tasks)]
        harness_cmd += [
            "--device",
            "cpu",
            "--batch_size",
            str(args.batch_size),
            "--output_path",
            str(work / "harness"),
        ]

        harness_s = timed(harness_cmd, env)
        ours_s = timed(ours_cmd, env)

        ours = json.loads(ours_json.read_text())["paradigms"]
        result_file = sorted(glob.glob(str(work / "harness" / "**" / "results_*.json"), recursive=True))[-1]
        harness_results = json.loads(Path(result_file).read_text())["results"]
        harness = {u: harness_results[f"hftopo_blimp_{u}"]["acc,none"] for u in uids}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    diff = max(abs(ours[u] - harness[u]) for u in uids)
    print(f"BLiMP, {len(uids)} paradigms, model {args.model}, batch {args.batch_size}, CPU float32\n")
    print("| paradigm | hf_topo | lm-evaluation-harness |")
    print("|---|---|---|")
    for u in uids:
        print(f"| {u} | {ours[u]:.4f} | {harness[u]:.4f} |")
    print(f"\nlargest accuracy difference: {diff:.4f}")
    print(
        f"end to end: hf_topo {ours_s:.1f} s, lm-evaluation-harness {harness_s:.1f} s, speed-up {harness_s / ours_s:.2f}×"
    )
    write_json(  # the shared writer: no machine-specific paths in the results
        args.output,
        {"model": args.model, "paradigms": uids, "hf_topo": ours, "lm_eval": harness, "max_abs_diff": diff,
         "hf_topo_s": ours_s, "lm_eval_s": harness_s, "speedup": harness_s / ours_s, "batch_size": args.batch_size},
    )  # fmt: skip


if __name__ == "__main__":
    main()
