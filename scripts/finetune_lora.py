"""LoRA fine-tuning of a TopoNet: `hf-topo finetune-lora` as a script (`accelerate launch scripts/finetune_lora.py`).

    python scripts/finetune_lora.py --model_name_or_path outputs/demo/toponet --train_file tinyshakespeare.txt \
        --lora_r 4 --max_steps 200 --output_dir outputs/lora-shakespeare

The code and every flag are in `hf_topo.cli.finetune_lora` (`hf-topo finetune-lora --help`).
"""

import sys

from hf_topo.cli.arguments import run_command
from hf_topo.cli.finetune_lora import main

if __name__ == "__main__":
    sys.exit(run_command(main))
