"""Pretrain a TopoNet: `hf-topo pretrain` as a script, for `accelerate launch scripts/pretrain.py ...`.

    accelerate launch scripts/pretrain.py --train_file corpus.txt --tau 1 --max_steps 300 --output_dir outputs/toponet

The code and every flag are in `hf_topo.cli.pretrain` (`hf-topo pretrain --help`).
"""

import sys

from hf_topo.cli.arguments import run_command
from hf_topo.cli.pretrain import main

if __name__ == "__main__":
    sys.exit(run_command(main))
