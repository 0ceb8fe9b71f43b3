"""The hf_topo demo as a script: `hf-topo demo` (what `scripts/run_demo.sh` runs after setting up).

    python scripts/demo.py --output_dir outputs/demo

The flags are in `hf_topo.cli.demo`, the code in `hf_topo.experiments.demo` (`hf-topo demo --help`).
"""

import sys

from hf_topo.cli.arguments import run_command
from hf_topo.cli.demo import main

if __name__ == "__main__":
    sys.exit(run_command(main))
