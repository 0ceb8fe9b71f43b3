"""Arrange the MLP units of a saved model on their cortical sheets without changing what it computes.

    # the τ=0 baseline of the demo, arranged to minimise TopoLoss (the "arranged baseline" control)
    hf-topo arrange --model outputs/demo/baseline --output_dir outputs/demo/baseline-arranged

    # any Hub GPT-2, Weight Similarity instead, more swap rounds
    hf-topo arrange --model openai-community/gpt2 --objective weight_similarity --max_rounds 400 \\
        --output_dir outputs/gpt2-arranged

The hidden units of every target MLP expansion layer are permuted together with the matching inputs of the MLP's
contraction layer, so the saved model's logits are those of `--model`. The arrangement (objective before and after
per layer, seed, rounds) is recorded in config.json's "topography" record; `<output_dir>/arrangement.json` also holds
every layer's permutation. `hf-topo analyze --model <output_dir>` analyses the arranged model.
"""

from __future__ import annotations

import sys

from hf_topo.arrangement.run import ArrangeArguments, arrange_saved_model
from hf_topo.cli.arguments import make_argument_parser, parse_command_line, run_command, setup_logging


def make_parser(prog: str | None = None):
    return make_argument_parser((ArrangeArguments,), prog, __doc__)


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    setup_logging()
    (args,) = parse_command_line(make_parser(prog), sys.argv[1:] if argv is None else argv)
    report, path = arrange_saved_model(args)
    print(f"\n| layer | {report.objective} before | after | swaps |")
    print("|---|---|---|---|")
    for name, layer in report.layers.items():
        print(f"| {name} | {layer.before:.5f} | {layer.after:.5f} | {layer.swaps} |")
    print(f"| mean | {report.mean_before:.5f} | {report.mean_after:.5f} | |")
    print(f"\nArranged model: {args.output_dir}\nReport: {path}")
    return report.to_record()


if __name__ == "__main__":
    sys.exit(run_command(main, prog="hf-topo arrange"))
