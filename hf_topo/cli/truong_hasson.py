"""Truong & Hasson's convolutional setting end to end: a CNN with an 11 × 11 ``fc1``, Weight and Activation
Similarity (correlation distance) over λ ∈ {0.1, 0.3, 0.5, 1, 2, 3} and the baseline, on scikit-learn's digits (the
`vision-demo` extra); input-noise and weight-noise robustness, Moran's I, smoothness and the neighbour-correlation
bimodality of every model:

    hf-topo truong-hasson --seeds 0 1 2 --output_dir outputs/truong_hasson \\
        --output benchmarks/results/truong_hasson.json
    hf-topo truong-hasson --seeds 0 --lambdas 1 3 --max_steps 100      # a quick look

Writes `results.json`, `summary.md`, `truong_hasson.png` and `truong_hasson_lambda.png` to `--output_dir` (the models
under `models/`) and prints the table (see docs/truong_hasson.md and `hf_topo.experiments.truong_hasson`).
"""

from __future__ import annotations

import sys

from hf_topo.cli.arguments import make_argument_parser, parse_command_line, run_command, setup_logging
from hf_topo.experiments.truong_hasson import TruongHassonArguments, run_truong_hasson


def make_parser(prog: str | None = None):
    return make_argument_parser((TruongHassonArguments,), prog, __doc__)


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    setup_logging()
    argv = sys.argv[1:] if argv is None else argv
    (args,) = parse_command_line(make_parser(prog), argv)
    result = run_truong_hasson(args, command=" ".join(["hf-topo", "truong-hasson", *argv]))
    print("\n".join(result["table"]))
    print(f"\nResults: {args.output_dir}/results.json; figures: {', '.join(result['figures'])}")
    return result


if __name__ == "__main__":
    sys.exit(run_command(main, prog="hf-topo truong-hasson"))
