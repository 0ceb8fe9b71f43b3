"""Downsample a TopoNet's topographic layers on their cortical sheets and save the smaller model (paper A.5, with gains).

    # φ = 3: the MLP expansion layers keep 1/9 of their weights; per-unit gains in closed form (the default)
    hf-topo downsample --model outputs/demo/toponet --factor 3 --eval_text_file heldout.txt --output_dir outputs/small

    # the paper's layer (no gains), or gains fitted by least squares on some text, then 100 distillation steps
    hf-topo downsample --model outputs/demo/toponet --factor 3 --gains none --output_dir outputs/small-paper
    hf-topo downsample --model outputs/demo/toponet --factor 3 --gains least_squares --distill_steps 100 \\
        --text_file train.txt --eval_text_file heldout.txt --output_dir outputs/small-fitted

Writes the downsampled model with its tokenizer (it loads with `AutoModelForCausalLM.from_pretrained` after
`import hf_topo`) and `downsampling.json` (the record of `config.json`, parameter counts, and with `--eval_text_file`
the perplexity of both models on that held-out text). Every setting is a flag.
"""

from __future__ import annotations

import os
import sys

from hf_topo.cli.arguments import make_argument_parser, parse_command_line, run_command, setup_logging
from hf_topo.downsampling.run import SUMMARY_FILE, DownsampleArguments, downsample_saved_model


def make_parser(prog: str | None = None):
    return make_argument_parser((DownsampleArguments,), prog, __doc__)


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    setup_logging()
    (args,) = parse_command_line(make_parser(prog), sys.argv[1:] if argv is None else argv)
    summary = downsample_saved_model(args)
    record = summary["record"]
    print(
        f"Downsampled {len(record['layers'])} layer(s) by {record['factor_h']:g} × {record['factor_w']:g}, "
        f"variant {record['variant']!r} (gains: {record['gains']}, distillation steps: {record['distill_steps']}): "
        f"{summary['parameters_original']} -> {summary['parameters']} parameters "
        f"({100 * summary['parameters'] / summary['parameters_original']:.1f} %)."
    )
    if "perplexity" in summary:
        print(
            f"Held-out perplexity ({summary['eval_tokens']} tokens): {summary['perplexity_original']:.4g} -> "
            f"{summary['perplexity']:.4g} (Δ {summary['delta_perplexity']:+.4g})."
        )
    print(f"Saved to {os.path.abspath(args.output_dir)} (summary: {SUMMARY_FILE}).")
    return summary


if __name__ == "__main__":
    sys.exit(run_command(main, prog="hf-topo downsample"))
