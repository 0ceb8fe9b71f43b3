"""The regularizer comparison as a script: `hf-topo compare-regularizers`.

    python scripts/compare_regularizers.py --train_file tinyshakespeare.txt --strengths topo=1,5 ws=0.5,2 as=0.5,2 \
        --max_steps 300 --output_dir outputs/regularizers

The flags are in `hf_topo.cli.compare_regularizers`, the code in `hf_topo.experiments.compare_regularizers` (`hf-topo compare-regularizers --help`).
"""

import sys

from hf_topo.cli.arguments import run_command
from hf_topo.cli.compare_regularizers import main

if __name__ == "__main__":
    sys.exit(run_command(main))
