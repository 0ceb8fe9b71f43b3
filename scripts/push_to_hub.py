"""Push a TopoNet to the Hub with its card and maps: `hf-topo push` as a script.

    python scripts/push_to_hub.py --model outputs/toponet --repo_id you/toponet-tiny --dry_run

The code and every flag are in `hf_topo.cli.push` (`hf-topo push --help`).
"""

import sys

from hf_topo.cli.arguments import run_command
from hf_topo.cli.push import main

if __name__ == "__main__":
    sys.exit(run_command(main))
