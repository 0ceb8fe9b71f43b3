"""Cross-check hf_topo's BLiMP with lm-evaluation-harness's ``HFLM`` on the same model object (run with lm-eval).

    python benchmarks/crosscheck_blimp_lm_eval.py --model outputs/demo/toponet --blimp_dir ../shared/data/blimp_sample

Checks that lm-eval's ``TaskManager`` indexes the task yamls shipped in ``hf_topo.blimp.LM_EVAL_TASKS_DIR``, then
evaluates the model in memory with ``lm_eval.simple_evaluate(HFLM(pretrained=model, tokenizer=...))`` on the local
jsonl files (task yamls from ``write_lm_eval_tasks``) and with ``evaluate_blimp``, and prints both accuracies ±
standard errors.
"""

from __future__ import annotations

import argparse
import tempfile

import lm_eval
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_topo.blimp import LM_EVAL_TASKS_DIR, evaluate_blimp, write_lm_eval_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="Local model directory (with tokenizer).")
    parser.add_argument("--blimp_dir", required=True, help="Folder of BLiMP's <paradigm>.jsonl files.")
    parser.add_argument("--limit", type=int, default=200, help="Pairs per paradigm.")
    parser.add_argument("--batch_size", type=int, default=64)
    args = parser.parse_args()

    shipped = [t for t in TaskManager(include_path=str(LM_EVAL_TASKS_DIR)).all_tasks if t.startswith("hftopo_blimp")]
    print(f"lm-eval indexes {len(shipped)} shipped tasks and groups (group hftopo_blimp: {'hftopo_blimp' in shipped})")
    model = AutoModelForCausalLM.from_pretrained(args.model)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    with tempfile.TemporaryDirectory() as tasks_dir:
        tasks = write_lm_eval_tasks(tasks_dir, blimp_dir=args.blimp_dir)
        harness = lm_eval.simple_evaluate(
            model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size),
            tasks=tasks,
            task_manager=TaskManager(include_path=tasks_dir),
            limit=args.limit,
        )["results"]
    ours = evaluate_blimp(
        model, tokenizer, blimp_dir=args.blimp_dir, limit=args.limit, batch_size=args.batch_size, progress=False
    )
    print("| paradigm | lm-eval `HFLM` | hf_topo `evaluate_blimp` |\n|---|---|---|")
    for task in tasks:
        uid = task.removeprefix("hftopo_blimp_")
        row = harness[task]
        print(
            f"| {uid} | {row['acc,none']:.3f} ± {row['acc_stderr,none']:.4f} "
            f"| {ours.paradigms[uid]:.3f} ± {ours.paradigm_stderrs[uid]:.4f} |"
        )


if __name__ == "__main__":
    main()
