"""BLiMP with lm-evaluation-harness's convention: `hf-topo eval-blimp` as a script.

    python scripts/eval_blimp.py --model outputs/demo/toponet --blimp_dir blimp_sample --output blimp.json

The code and every flag are in `hf_topo.cli.eval_blimp` (`hf-topo eval-blimp --help`).
"""

import sys

from hf_topo.cli.arguments import run_command
from hf_topo.cli.eval_blimp import main

if __name__ == "__main__":
    sys.exit(run_command(main))
