"""The hf_topo demo as a script: `hf-topo demo` (what `scripts/run_demo.sh` runs after setting up).

    python scripts/demo.py --output_dir outputs/demo

The code and every flag are in `hf_topo.cli.demo` (`hf-topo demo --help`).
"""

import sys

from hf_topo.cli.arguments import run_command
from hf_topo.cli.demo import main

if __name__ == "__main__":
    sys.exit(run_command(main))
