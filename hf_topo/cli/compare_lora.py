"""One command for the paper's LoRA comparison (Figures 11-12 analog): same LoRA recipe on a τ=0 baseline and on
TopoNets, several ranks; table of validation-loss Δ and a plot of the loss curves.

    hf-topo compare-lora --models outputs/demo/baseline outputs/demo/toponet \\
        --ranks 2 4 8 --train_file tinyshakespeare.txt --output_dir outputs/lora-compare

Each run is `hf_topo.finetuning.finetune_lora` with the given recipe (`--max_steps`, `--learning_rate`, batch, block
size, `--tau` during fine-tuning, LoRA targets); the models' τ is read from their `topography` metadata. Writes
`comparison.json`, `comparison.md` and `lora_comparison.png` to `--output_dir`. The experiment is
`hf_topo.experiments.compare_lora`.
"""

from __future__ import annotations

import logging
import sys

from hf_topo.cli.arguments import make_argument_parser, parse_command_line, run_command, setup_logging
from hf_topo.experiments.compare_lora import CompareLoraArguments, compare_lora


def make_parser(prog: str | None = None):
    return make_argument_parser(CompareLoraArguments, prog, __doc__)


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    setup_logging(logging.WARNING)
    (args,) = parse_command_line(make_parser(prog), sys.argv[1:] if argv is None else argv)
    return compare_lora(args)


if __name__ == "__main__":
    sys.exit(run_command(main, prog="hf-topo compare-lora"))
