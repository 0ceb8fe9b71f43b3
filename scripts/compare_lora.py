"""The LoRA comparison as a script: `hf-topo compare-lora`.

    python scripts/compare_lora.py --models outputs/demo/baseline outputs/demo/toponet --ranks 2 4 8 \
        --train_file tinyshakespeare.txt --output_dir outputs/lora-compare

The flags are in `hf_topo.cli.compare_lora`, the code in `hf_topo.experiments.compare_lora` (`hf-topo compare-lora --help`).
"""

import sys

from hf_topo.cli.arguments import run_command
from hf_topo.cli.compare_lora import main

if __name__ == "__main__":
    sys.exit(run_command(main))
