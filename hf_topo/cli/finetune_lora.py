"""LoRA fine-tuning of a TopoNet with PEFT (the paper's A.11), offline-capable, under the command or accelerate.

    # Shakespeare (~300k tokens) on a TopoNet, LoRA rank 4 on the attention projections
    hf-topo finetune-lora --model_name_or_path outputs/demo/toponet --dataset shakespeare \\
        --train_file tinyshakespeare.txt --lora_r 4 --max_steps 200 --output_dir outputs/lora-shakespeare

    # Python code (~1M tokens) from the standard library, LoRA also on c_fc with TopoLoss kept through the adapter
    hf-topo finetune-lora --model_name_or_path outputs/demo/toponet --dataset code --code_dir "$(python -c \\
        'import sysconfig; print(sysconfig.get_paths()["stdlib"])')" --lora_target_modules attn.c_attn mlp.c_fc \\
        --tau 1 --merge --output_dir outputs/lora-code

    # a vision TopoNet (image classifier) on a folder of class subfolders: LoRA on a ViT's attention projections
    # (a ResNet: its block convolutions), the classifier head trained in full, TopoLoss kept on its sheets
    hf-topo finetune-lora --model_name_or_path outputs/tiny-vit --train_dir images/train --lora_r 4 --tau 1 \
        --max_steps 200 --output_dir outputs/lora-vit

    accelerate launch -m hf_topo.cli.finetune_lora --model_name_or_path ... --output_dir ...

Without `--train_file`/`--code_dir` the presets read their Hub datasets (`karpathy/tiny_shakespeare`,
`nampdn-ai/tiny-codes` Python rows). The output directory holds the adapter in PEFT format
(`PeftModel.from_pretrained(base, dir)`), `topography.json` (the TopoNet's record with this fine-tuning appended;
`TopoConfig.from_pretrained(dir)` reads it), the tokenizer, `lora_metrics.json` (validation loss and perplexity
before and after, TopoLoss before and after), and with `--merge` a full model in `merged/`.
"""

from __future__ import annotations

import sys

from hf_topo.cli.arguments import make_argument_parser, parse_command_line, run_command, setup_logging
from hf_topo.finetuning import LORA_TRAINING_DEFAULTS, LoraArguments, finetune_lora
from hf_topo.trainer import TopoTrainingArguments


def make_parser(prog: str | None = None):
    parser = make_argument_parser((LoraArguments, TopoTrainingArguments), prog, __doc__)
    parser.set_defaults(**LORA_TRAINING_DEFAULTS)
    return parser


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    setup_logging()
    args, training_args = parse_command_line(make_parser(prog), sys.argv[1:] if argv is None else argv)
    m = finetune_lora(args, training_args)
    if "accuracy_after" in m:  # an image classifier
        print(
            f"\nLoRA r={m['lora_r']} on {m['dataset']} ({len(m['classes'])} classes): validation loss "
            f"{m['eval_loss_before']:.4f} -> {m['eval_loss_after']:.4f}, accuracy {m['accuracy_before']:.3f} -> "
            f"{m['accuracy_after']:.3f}"
            + (
                f"  TopoLoss {m['topo_loss_before']:.4f} -> {m['topo_loss_after']:.4f}"
                if m["topo_loss_before"] is not None
                else ""
            )
            + f"\nAdapter saved to {m['output_dir']}"
        )
        return m
    topo_line = (
        f"  TopoLoss {m['topo_loss_before']:.4f} -> {m['topo_loss_after']:.4f}"
        if m["topo_loss_before"] is not None
        else ""
    )
    print(
        f"\nLoRA r={m['lora_r']} on {m['corpus']}: validation loss {m['eval_loss_before']:.4f} -> "
        f"{m['eval_loss_after']:.4f} (Δ {m['delta_eval_loss']:+.4f}), perplexity {m['perplexity_before']:.2f} -> "
        f"{m['perplexity_after']:.2f}{topo_line}\nAdapter saved to {m['output_dir']}"
    )
    return m


if __name__ == "__main__":
    sys.exit(run_command(main, prog="hf-topo finetune-lora"))
