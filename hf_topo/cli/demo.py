"""The hf_topo demo: pretrain a small TopoNet and a τ=0 baseline on real text, offline, on CPU, in minutes.

    hf-topo demo                                  # Python's standard library as the corpus
    hf-topo demo --train_file tinyshakespeare.txt --tau 5 --max_steps 800 --blimp_dir blimp_sample

Both models share the data, tokenizer, seed and recipe; only τ differs. The last 5 % of the corpus (by lines) is
held out: both models are evaluated on it, and `hf-topo analyze` measures both on it afterwards. The demo prints
and saves (`<output_dir>/summary.json`, `summary.md`) their validation loss, perplexity, TopoLoss and BLiMP, their
topography (smoothness, Moran's I), effective dimensionality and how much perplexity they lose under 2×2
downsampling of the sheets, 50 % L1 pruning and weight noise; where each model is; the training curves
(`training_curves.png`) and the first principal component of each model's first and last `c_fc` weights on its
cortical sheet (`sheet_maps.png`): smooth patches for the TopoNet, salt and pepper for the baseline. The full
analysis (report.json, maps, correlation-vs-distance curves, sweeps, temporal integration windows, and the TopoNet
downsampled 2×2 as a loadable model) is in `<output_dir>/analysis/`. The experiment is `hf_topo.experiments.demo`.

    hf-topo demo --domain vision                  # a tiny-resnet TopoNet and its twin on handwritten digits

`--domain vision` runs the vision demo instead (`hf_topo.experiments.vision_demo`; `hf-topo demo --domain vision
--help` lists its flags).
"""

from __future__ import annotations

import os
import sys

from hf_topo.cli.arguments import (
    make_argument_parser,
    parse_command_line,
    run_command,
    setup_logging,
    split_domain,
)
from hf_topo.experiments.demo import DemoArguments, run_demo
from hf_topo.experiments.vision_demo import VisionDemoArguments, run_vision_demo


def make_parser(prog: str | None = None):
    return make_argument_parser(DemoArguments, prog, __doc__)


def make_vision_parser(prog: str | None = None):
    import hf_topo.experiments.vision_demo as vision_demo

    return make_argument_parser(VisionDemoArguments, prog, vision_demo.__doc__)


def vision_main(argv: list[str], prog: str | None = None) -> dict:
    """``hf-topo demo --domain vision``: a tiny-resnet TopoNet and its twin on handwritten digits."""
    setup_logging()
    (args,) = parse_command_line(make_vision_parser(prog), argv)
    summary = run_vision_demo(args)
    print("\n" + "\n".join(summary["table"]))
    print(f"\nSummary: {os.path.abspath(os.path.join(args.output_dir, 'summary.json'))}")
    print(f"Load a model with: AutoModelForImageClassification.from_pretrained({summary['toponet']['output_dir']!r})")
    return summary


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    domain, argv = split_domain(sys.argv[1:] if argv is None else argv)
    if domain == "vision":
        return vision_main(argv, prog)
    if domain != "language":
        raise ValueError(f"--domain {domain!r}: choose language (the default) or vision.")
    setup_logging()
    (args,) = parse_command_line(make_parser(prog), argv)
    return run_demo(args)


if __name__ == "__main__":
    sys.exit(run_command(main, prog="hf-topo demo"))
