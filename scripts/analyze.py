"""Analyse a TopoNet and its baseline: `hf-topo analyze` as a script.

    python scripts/analyze.py --model outputs/demo/toponet --baseline outputs/demo/baseline \
        --text_file heldout.txt --output_dir outputs/analysis

The code and every flag are in `hf_topo.cli.analyze` (`hf-topo analyze --help`).
"""

import sys

from hf_topo.cli.analyze import main
from hf_topo.cli.arguments import run_command

if __name__ == "__main__":
    sys.exit(run_command(main))
