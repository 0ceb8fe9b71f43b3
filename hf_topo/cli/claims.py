"""The claims table: every CPU-testable claim of the TopoNets, Weight / Activation Similarity and TopoLM papers, and
hf_topo's own controls, measured over several seeds against a baseline on one recipe, and the TopoNets paper's designs
across a τ sweep. Not run in CI (the default 4 × 128 recipe trains 9 models per seed; docs/claims.md states the CPU
budget; run one seed per invocation and resume with `--reuse_trained true`):

    hf-topo claims --train_file wikitext-2/test.txt --lora_train_file tinyshakespeare.txt --lora_code true \\
        --blimp_dir blimp/ --seeds 0 1 2 --taus 0 0.5 1 5 10 50 --reuse_trained true --output_dir outputs/claims \\
        --output benchmarks/results/paper_claims.json

Each seed trains a baseline (τ = 0), a TopoNet (TopoLoss, `--topo_tau`) and one more per τ of `--taus`
(`hf_topo.experiments.tau_sweep`: Fig. 2B, 3B / A.9, 4A, 4B / A.10), a Weight Similarity, an Activation
Similarity and a TopoLM model, arranges the baseline's and the TopoNet's units post hoc (`--families` picks a
subset), analyses them on the held-out end of `--train_file`, fine-tunes the baseline and the TopoNet with LoRA at
`--lora_ranks` (2 4 8) on `--lora_train_file` and, with `--lora_code true`, on Python code (A.11), measures the
window kinds per layer of the baseline, the TopoNet and the arranged baseline (Fig. 5B; 21 lags, 100 sequences), and
judges every claim of `hf_topo.experiments.claims.CLAIMS` by a two-sided paired t-test
over the seeds, Holm-corrected across the table (the rule is in `hf_topo.experiments.claims`). Writes `paper_claims.json`, `paper_claims.md` and `paper_claims.png` to
`--output_dir` (and the JSON to `--output`), and prints the table.

Judging again without training: `hf-topo claims --from_results paper_claims.json [--output_dir DIR] [--output JSON]
[--alpha 0.05]` reads the per-seed measures of an earlier run and applies the current claims and verdict rule,
and computes the τ sweep's designs again from them (their figures are drawn again).

    hf-topo claims --domain vision --seeds 0 1 2 3 4 --output benchmarks/results/paper_claims_vision.json

`--domain vision` runs the vision rows instead (`hf_topo.experiments.vision_claims`; `hf-topo claims --domain vision
--help` lists its flags): per seed, a tiny-resnet TopoNet, its τ = 0 twin and an untrained model, and Truong &
Hasson's CNN without a regularizer, with Weight and with Activation Similarity, on scikit-learn's digits, judged on
the TopoNets paper's vision claims and Truong & Hasson's (about 10 minutes per seed on a loaded 2-core machine).
"""

from __future__ import annotations

import sys

from hf_topo.cli.arguments import (
    make_argument_parser,
    parse_command_line,
    run_command,
    setup_logging,
    split_domain,
)
from hf_topo.errors import InputError
from hf_topo.experiments.claims import (
    ClaimsArguments,
    claims_markdown,
    portable_command,
    reevaluate,
    run_claims,
    write_results,
)


def make_parser(prog: str | None = None):
    return make_argument_parser((ClaimsArguments,), prog, __doc__)


def make_vision_parser(prog: str | None = None):
    import hf_topo.experiments.vision_claims as vision_claims

    return make_argument_parser((vision_claims.VisionClaimsArguments,), prog, vision_claims.__doc__)


def vision_main(argv: list[str], prog: str | None = None) -> dict:
    """``hf-topo claims --domain vision``: the vision rows of the claims table."""
    from hf_topo.experiments.vision_claims import run_vision_claims, vision_claims_markdown

    setup_logging()
    (args,) = parse_command_line(make_vision_parser(prog), argv)
    result = run_vision_claims(args, command=portable_command(["hf-topo", "claims", "--domain", "vision", *argv]))
    print("\n" + vision_claims_markdown(result))
    return result


def _from_results(argv: list[str], prog: str | None) -> dict:
    import argparse
    import json
    import os

    parser = argparse.ArgumentParser(prog=prog, description="Judge the claims again from a results JSON.")
    parser.add_argument("--from_results", required=True, help="A paper_claims.json with per-seed measures.")
    parser.add_argument("--output_dir", default="outputs/claims", help="Where paper_claims.json/.md/.png go.")
    parser.add_argument("--output", default=None, help="Also write the JSON here.")
    parser.add_argument("--alpha", type=float, default=None, help="Significance level (default: the results').")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.from_results):
        raise InputError(f"--from_results {args.from_results}: no such file; give a paper_claims.json.")
    with open(args.from_results) as f:
        result = reevaluate(json.load(f), args.alpha)
    result["reevaluated"] = {
        "command": portable_command(["hf-topo", "claims", *argv]),
        "from": os.path.basename(args.from_results),
    }
    targets = write_results(result, args.output_dir, args.output)
    if result.get("tau_sweep"):  # the sweep's figures, drawn again from the recomputed designs
        from hf_topo.experiments.tau_sweep import plot_tau_sweep

        for directory in {os.path.abspath(os.path.dirname(target)) for target in targets}:
            plot_tau_sweep(result["tau_sweep"], directory)
    return result


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    domain, argv = split_domain(sys.argv[1:] if argv is None else argv)
    if domain == "vision":
        return vision_main(argv, prog)
    if domain != "language":
        raise ValueError(f"--domain {domain!r}: choose language (the default) or vision.")
    setup_logging()
    if any(arg == "--from_results" or arg.startswith("--from_results=") for arg in argv):
        result = _from_results(argv, prog)
        print("\n" + claims_markdown(result))
        return result
    (args,) = parse_command_line(make_parser(prog), argv)
    result = run_claims(args, command=portable_command(["hf-topo", "claims", *argv]))
    print("\n" + claims_markdown(result))
    return result


if __name__ == "__main__":
    sys.exit(run_command(main, prog="hf-topo claims"))
