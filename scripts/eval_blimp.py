"""Evaluate a causal LM on BLiMP with lm-evaluation-harness's convention (see hf_topo.blimp).

    python scripts/eval_blimp.py --model outputs/demo/toponet --blimp_dir ../shared/data/blimp_sample --output blimp.json
    python scripts/eval_blimp.py --model openai-community/gpt2 --dataset nyu-mll/blimp --limit 200 --output gpt2_blimp.json

Writes the results JSON (`overall`, `paradigms`, `fields`, `terms`, `n_pairs`, `model`, `convention`) and prints a
markdown table (also saved next to the JSON as `.md`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from hf_topo.blimp import evaluate_blimp


@dataclass
class EvalBlimpArguments:
    """BLiMP evaluation settings."""

    model: str = field(
        metadata={"help": "Local model directory or Hub id of a causal LM (its tokenizer is loaded too)."}
    )
    output: str = field(metadata={"help": "Where to write the results JSON."})
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


def main(args: EvalBlimpArguments) -> dict:
    results = evaluate_blimp(
        args.model,
        blimp_dir=args.blimp_dir,
        dataset=args.dataset,
        paradigms=args.paradigms,
        limit=args.limit,
        batch_size=args.batch_size,
        dtype=args.dtype,
        prefix_token_id=args.prefix_token_id,
    )
    results.to_json(args.output)
    markdown = results.to_markdown()
    Path(args.output).with_suffix(".md").write_text(markdown)
    print(markdown)
    print(f"Results written to {args.output}")
    return results.to_dict()


if __name__ == "__main__":
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    (arguments,) = HfArgumentParser(EvalBlimpArguments).parse_args_into_dataclasses()
    main(arguments)
