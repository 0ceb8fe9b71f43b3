"""Pretrain a topographic GPT (TopoNet) with TopoLoss on its MLP expansion layers.

    # a tiny TopoNet on any local text, on CPU, offline (a tokenizer is trained on the text)
    hf-topo pretrain --train_file corpus.txt --model_preset tiny-gpt2 --tau 1 \\
        --max_steps 300 --per_device_train_batch_size 16 --output_dir outputs/toponet-tiny

    # the same settings from a file (flags after it override): hf-topo pretrain recipe.yaml --tau 2

    # GPT-2-124M shapes on a Hub corpus, 8 GPUs (DDP; or fsdp2.yaml, deepspeed_zero3.yaml), streaming
    accelerate launch --config_file examples/accelerate/ddp.yaml --num_processes 8 -m hf_topo.cli.pretrain \\
        --model_preset gpt2-124m --tokenizer_name openai-community/gpt2 \\
        --dataset_name HuggingFaceFW/fineweb-edu --dataset_config sample-10BT --streaming \\
        --validation_documents 2000 --streaming_shuffle_buffer 10000 --block_size 1024 --max_steps 20000 \\
        --tau 1 --bf16 --save_steps 1000 --output_dir outputs/toponet-124m
    # ... and after an interruption, the same command with --resume_from_checkpoint true (the last checkpoint)

    # an image classifier on a folder of class subfolders (docs/vision_training.md)
    hf-topo pretrain --train_dir images/train --model_preset tiny-resnet --image_size 32 --tau 1 \\
        --max_steps 300 --per_device_train_batch_size 64 --output_dir outputs/resnet-topo

All `TrainingArguments` and the TopoLoss settings (`--tau`, `--topo_target_modules`, `--topo_factor_h`, ...) are
flags. The output directory holds an ordinary Hugging Face model whose `config.json` carries the `"topography"`
record, its tokenizer, `trainer_state.json` and `metrics.json`.
"""

from __future__ import annotations

import sys

from hf_topo.cli.arguments import make_argument_parser, parse_command_line, run_command, setup_logging
from hf_topo.pretraining import DataArguments, ModelArguments, pretrain
from hf_topo.trainer import TopoTrainingArguments


def make_parser(prog: str | None = None):
    return make_argument_parser((ModelArguments, DataArguments, TopoTrainingArguments), prog, __doc__)


def main(argv: list[str] | None = None, prog: str | None = None) -> dict:
    setup_logging()
    model_args, data_args, training_args = parse_command_line(
        make_parser(prog), sys.argv[1:] if argv is None else argv
    )
    metrics = pretrain(model_args, data_args, training_args)
    if "eval_accuracy" in metrics:  # an image classifier (--train_dir)
        top5 = f"  top-5 {metrics['eval_top5_accuracy']:.4f}" if "eval_top5_accuracy" in metrics else ""
        print(f"\nTopoNet saved to {metrics['output_dir']}\n  accuracy {metrics['eval_accuracy']:.4f}{top5}  "
              f"topo loss {metrics['topo_loss']:.4f}  (tau {metrics['tau']:g})")  # fmt: skip
        return metrics
    print(
        f"\nTopoNet saved to {metrics['output_dir']}\n"
        f"  eval loss {metrics['eval_loss']:.4f}  perplexity {metrics['eval_perplexity']:.2f}  "
        f"topo loss {metrics['topo_loss']:.4f}  (tau {metrics['tau']:g})"
        + (f"  BLiMP {metrics['blimp_overall']:.4f}" if "blimp_overall" in metrics else "")
    )
    return metrics


if __name__ == "__main__":
    sys.exit(run_command(main, prog="hf-topo pretrain"))
