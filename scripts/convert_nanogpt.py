"""Convert a nanoGPT TopoNet checkpoint to a Hugging Face GPT-2: `hf-topo convert-nanogpt` as a script.

    python scripts/convert_nanogpt.py murtylab/topo-nanogpt-fineweb10B --tau 50 --output outputs/toponet-tau50

The code and every flag are in `hf_topo.cli.convert_nanogpt` (`hf-topo convert-nanogpt --help`).
"""

import sys

from hf_topo.cli.arguments import run_command
from hf_topo.cli.convert_nanogpt import main

if __name__ == "__main__":
    sys.exit(run_command(main))
