"""Evaluate a causal LM on BLiMP with lm-evaluation-harness's convention (see hf_topo.blimp).

    hf-topo eval-blimp --model outputs/demo/toponet --blimp_dir blimp_sample --output blimp.json
    hf-topo eval-blimp --model openai-community/gpt2 --dataset nyu-mll/blimp --limit 200 --output gpt2_blimp.json

Writes the results JSON (`overall`, `paradigms`, `fields`, `terms`, `n_pairs`, their standard errors, `model`,
`convention`), the same results in lm-evaluation-harness's results-JSON shape next to it (`<output>.lm_eval.json`:
`results["blimp_<paradigm>"]["acc,none"]`, `"acc_stderr,none"`), and prints a markdown table (also saved next to
the JSON as `.md`). `--lm_eval_tasks DIR` also writes the harness's task yamls for the same pairs, to cross-check
with `lm_eval --include_path DIR --tasks hftopo_blimp_<paradigm>,...`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hf_topo.blimp import evaluate_blimp, write_lm_eval_tasks
from hf_topo.cli.arguments import make_argument_parser, parse_command_line, run_command, setup_logging


@dataclass
class EvalBlimpArguments:
    """BLiMP evaluation settings."""

    model: str = field(
        metadata={"help": "Local model directory or Hub id of a causal LM (its tokenizer is loaded too)."}
    )
    output: str = field(metadata={"help": "Where to write the results JSON."})
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Hub id or folder of the tokenizer (default: the model's own)."}
    )
    blimp_dir: str | None = field(default=None, metadata={"help": "Directory of BLiMP's <paradigm>.jsonl files."})
    dataset: str | None = field(
        default=None, metadata={"help": "Hub dataset with one config per paradigm: nyu-mll/blimp."}
    )
    paradigms: str | None = field(default=None, metadata={"help": "Comma-separated paradigm UIDs (default: all)."})
    limit: int | None = field(default=None, metadata={"help": "At most this many pairs per paradigm."})
    batch_size: int = field(default=64, metadata={"help": "Sentences per forward pass."})
    dtype: str = field(default="float32", metadata={"help": "float32 (default) or bfloat16."})
    prefix_token_id: int | None = field(
        default=None, metadata={"help": "Conditioning token (default: BOS, else EOS)."}
    )
    share_prefixes: bool = field(
        default=True,
        metadata={"help": "Run every shared token prefix once (a prefix tree); false scores each sentence alone."},
    )
    tie_tolerance: float = field(
        default=1e-3,
        metadata={"help": "Pairs whose scores differ by at most this (nats) are rescored sentence by sentence."},
    )
    lm_eval_tasks: str | None = field(
        default=None,
        metadata={"help": "Also write lm-evaluation-harness task yamls for these pairs into this folder."},
    )


def lm_eval_output_path(output: str | os.PathLike) -> Path:
    """Where the harness-shaped results go: ``blimp.json`` -> ``blimp.lm_eval.json``."""
    return Path(output).with_suffix(".lm_eval.json")


def make_parser(prog: str | None = None):
    return make_argument_parser(EvalBlimpArguments, prog, __doc__)


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    setup_logging()
    (args,) = parse_command_line(make_parser(prog), sys.argv[1:] if argv is None else argv)
    if os.path.isdir(args.output):  # found before the scoring, not when the results are written
        raise ValueError(
            f"--output {args.output} is a folder; give a file, e.g. {os.path.join(args.output, 'blimp.json')}."
        )
    results = evaluate_blimp(
        args.model,
        tokenizer=args.tokenizer_name,
        blimp_dir=args.blimp_dir,
        dataset=args.dataset,
        paradigms=args.paradigms,
        limit=args.limit,
        batch_size=args.batch_size,
        dtype=args.dtype,
        prefix_token_id=args.prefix_token_id,
        share_prefixes=args.share_prefixes,
        tie_tolerance=args.tie_tolerance,
    )
    results.to_json(args.output)
    lm_eval_json = lm_eval_output_path(args.output)
    results.to_lm_eval_json(lm_eval_json)
    if args.lm_eval_tasks is not None:
        tasks = write_lm_eval_tasks(args.lm_eval_tasks, blimp_dir=args.blimp_dir, paradigms=list(results.paradigms))
        print(f"lm-evaluation-harness tasks written to {args.lm_eval_tasks}: --tasks {','.join(tasks)}")
    markdown = results.to_markdown()
    Path(args.output).with_suffix(".md").write_text(markdown)
    print(markdown)
    print(f"Results written to {args.output} (lm-evaluation-harness shape: {lm_eval_json})")
    return results.to_dict()


if __name__ == "__main__":
    sys.exit(run_command(main, prog="hf-topo eval-blimp"))
