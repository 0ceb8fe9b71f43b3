"""Pretrain a topographic GPT (TopoNet) with TopoLoss on its MLP expansion layers.

    # a tiny TopoNet on any local text, on CPU, offline (a tokenizer is trained on the text)
    python scripts/pretrain.py --train_file corpus.txt --model_preset tiny-gpt2 --tau 1 \
        --max_steps 300 --per_device_train_batch_size 16 --output_dir outputs/toponet-tiny

    # GPT-2-124M shapes on a Hub corpus, 8 GPUs (DDP; or fsdp2.yaml, deepspeed_zero3.yaml), streaming
    accelerate launch --config_file examples/accelerate/ddp.yaml --num_processes 8 scripts/pretrain.py \
        --model_preset gpt2-124m --tokenizer_name openai-community/gpt2 \
        --dataset_name HuggingFaceFW/fineweb-edu --dataset_config sample-10BT --streaming \
        --validation_documents 2000 --streaming_shuffle_buffer 10000 --block_size 1024 --max_steps 20000 \
        --tau 1 --bf16 --save_steps 1000 --output_dir outputs/toponet-124m
    # ... and after an interruption, the same command with --resume_from_checkpoint outputs/toponet-124m/checkpoint-N

All `TrainingArguments` and the TopoLoss settings (`--tau`, `--topo_target_modules`, `--topo_factor_h`,
`--topo_factor_w`, `--topo_interpolation`, `--topo_sheet_shape`, `--topo_watch_modules`, `--tau_schedule`) are
flags; `--help` lists them. The output directory holds an ordinary Hugging Face model whose `config.json`
carries the `"topography"` metadata, its tokenizer, and `metrics.json`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field

import torch
import transformers
from transformers import AutoTokenizer, HfArgumentParser, default_data_collator, set_seed

from hf_topo import TopoTrainer, TopoTrainingArguments
from hf_topo.blimp import BlimpCallback, load_blimp
from hf_topo.data import load_text_datasets, pack_into_blocks, train_bpe_tokenizer
from hf_topo.models import MODEL_PRESETS, build_model

logger = logging.getLogger("pretrain")


@dataclass
class ModelArguments:
    """Which model and tokenizer to train."""

    model_preset: str = field(
        default="tiny-gpt2", metadata={"help": f"Architecture from scratch: {', '.join(MODEL_PRESETS)}."}
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Continue from a Hub id or local checkpoint instead of a preset."}
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": "Override preset config fields, e.g. 'n_embd=64,n_layer=2'."}
    )
    tokenizer_name: str | None = field(
        default=None,
        metadata={"help": "Hub id or path of a tokenizer. Default: the model's, or one trained on the data."},
    )
    tokenizer_vocab_size: int = field(
        default=8192, metadata={"help": "Vocabulary size of the byte-level BPE tokenizer trained when none is given."}
    )
    block_size: int = field(default=128, metadata={"help": "Tokens per training sequence (packed blocks)."})


@dataclass
class DataArguments:
    """Which text to train on."""

    dataset_name: str | None = field(default=None, metadata={"help": "Hub dataset id (e.g. wikitext)."})
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset config (e.g. wikitext-2-raw-v1)."})
    train_file: str | None = field(default=None, metadata={"help": "Local training text (.txt) or .jsonl file."})
    validation_file: str | None = field(default=None, metadata={"help": "Local validation file (same format)."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Stream the dataset (packed on the fly; needs --max_steps). Resuming skips the consumed data."
        },
    )
    validation_documents: int | None = field(
        default=None,
        metadata={
            "help": "Streaming without a validation split or file: hold out the first N documents of the stream."
        },
    )
    streaming_shuffle_buffer: int = field(
        default=0,
        metadata={
            "help": "Streaming: shuffle documents in a buffer of this size, seeded by --data_seed (else --seed); "
            "0 keeps the stream order. Either way the order is deterministic, so a resumed run sees the same data."
        },
    )
    validation_split_percentage: int = field(
        default=5, metadata={"help": "Percent of the training data held out when there is no validation split."}
    )
    max_eval_blocks: int | None = field(default=None, metadata={"help": "Evaluate on at most this many blocks."})
    blimp_dir: str | None = field(
        default=None, metadata={"help": "BLiMP jsonl directory: BLiMP at every evaluation and after training."}
    )
    blimp_dataset: str | None = field(default=None, metadata={"help": "Or a Hub BLiMP dataset (nyu-mll/blimp)."})
    blimp_paradigms: str | None = field(
        default=None, metadata={"help": "Comma-separated BLiMP paradigms (default all)."}
    )
    blimp_limit: int | None = field(default=None, metadata={"help": "At most this many BLiMP pairs per paradigm."})
    preprocessing_num_workers: int | None = field(default=None, metadata={"help": "Processes for tokenization."})


def _tokenizer(model_args: ModelArguments, raw, data_args: DataArguments):
    name = model_args.tokenizer_name or model_args.model_name_or_path
    if name is not None:
        tokenizer = AutoTokenizer.from_pretrained(name)
    else:
        logger.info(
            "Training a byte-level BPE tokenizer (vocab %d) on the training text", model_args.tokenizer_vocab_size
        )
        texts = (example[data_args.text_column] for example in raw["train"])
        tokenizer = train_bpe_tokenizer(texts, vocab_size=model_args.tokenizer_vocab_size)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def main(model_args: ModelArguments, data_args: DataArguments, training_args: TopoTrainingArguments) -> dict:
    """Train, save and evaluate; returns the metrics also written to `<output_dir>/metrics.json`."""
    set_seed(training_args.seed)
    if data_args.streaming and training_args.max_steps <= 0:
        raise ValueError(
            "A streamed dataset has no length, so the run is counted in optimizer steps: set --max_steps (the "
            "learning-rate and τ schedules, evaluations and checkpoints all follow it; --num_train_epochs is ignored)."
        )
    if data_args.streaming_shuffle_buffer and not data_args.streaming:
        raise ValueError("--streaming_shuffle_buffer applies to --streaming; on-disk data is shuffled by the Trainer.")

    raw = load_text_datasets(
        data_args.dataset_name,
        data_args.dataset_config,
        data_args.train_file,
        data_args.validation_file,
        data_args.text_column,
        data_args.validation_split_percentage,
        data_args.streaming,
        validation_documents=data_args.validation_documents,
    )
    if data_args.streaming_shuffle_buffer:
        seed = training_args.data_seed if training_args.data_seed is not None else training_args.seed
        raw["train"] = raw["train"].shuffle(seed=seed, buffer_size=data_args.streaming_shuffle_buffer)
    tokenizer = _tokenizer(model_args, raw, data_args)
    with training_args.main_process_first(desc="tokenizing and packing"):
        blocks = pack_into_blocks(
            raw, tokenizer, model_args.block_size, data_args.text_column, num_proc=data_args.preprocessing_num_workers
        )
    eval_blocks = blocks["validation"]
    if data_args.max_eval_blocks is not None:
        eval_blocks = (
            eval_blocks.take(data_args.max_eval_blocks)
            if data_args.streaming
            else eval_blocks.select(range(min(data_args.max_eval_blocks, len(eval_blocks))))
        )

    blimp = None
    if data_args.blimp_dir or data_args.blimp_dataset:  # loaded (and checked) before any training
        blimp = load_blimp(
            data_args.blimp_dir, data_args.blimp_dataset, data_args.blimp_paradigms, data_args.blimp_limit
        )

    model = build_model(
        model_args.model_preset,
        vocab_size=len(tokenizer),
        block_size=model_args.block_size,
        model_name_or_path=model_args.model_name_or_path,
        config_overrides=model_args.config_overrides,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("Model: %s, %.2fM parameters", type(model).__name__, n_params / 1e6)

    trainer = TopoTrainer(
        model=model,
        args=training_args,
        train_dataset=blocks["train"],
        eval_dataset=eval_blocks,
        processing_class=tokenizer,
        data_collator=default_data_collator,
    )
    blimp_callback = None
    if blimp is not None:
        blimp_callback = BlimpCallback(trainer, data=blimp, batch_size=training_args.per_device_eval_batch_size)
        trainer.add_callback(blimp_callback)
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()
    trainer.save_state()  # trainer_state.json: the full log history (loss, topo_loss, tau per logging step)

    metrics = {"train_" + k.removeprefix("train_"): v for k, v in train_result.metrics.items()}
    metrics.update(trainer.evaluate())
    metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 50.0))
    eval_batch = None
    if trainer.topo_loss.needs_activations:  # Activation Similarity is measured on the first evaluation batch
        batch = next(iter(trainer.get_eval_dataloader()))
        eval_batch = {k: v.to(trainer.model.device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
    topo, per_layer = trainer.topo_loss.evaluate(trainer.model, eval_batch)
    metrics["topo_loss"] = topo.item()
    metrics["topo_loss_per_layer"] = {trainer.topo_loss_label(n): v.item() for n, v in per_layer.items()}
    metrics["tau"] = training_args.tau
    if blimp_callback is not None:
        results = blimp_callback.last_results  # computed by the callback during the final trainer.evaluate()
        metrics["blimp_overall"] = results.overall
        metrics["blimp_fields"] = results.fields
        if trainer.is_world_process_zero():
            results.to_json(os.path.join(training_args.output_dir, "blimp.json"))
    metrics["n_parameters"] = n_params
    metrics["output_dir"] = os.path.abspath(training_args.output_dir)
    if trainer.is_world_process_zero():
        with open(os.path.join(training_args.output_dir, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
    return metrics


def recipe_argv(
    train_file: str,
    validation_file: str,
    output_dir: str,
    *,
    tau: float,
    max_steps: int,
    batch_size: int,
    learning_rate: float,
    block_size: int,
    seed: int,
    model_preset: str = "tiny-gpt2",
    vocab_size: int = 4096,
    max_eval_blocks: int = 200,
    tokenizer: str | None = None,
) -> list[str]:
    """The argv of one small CPU run of this script, as the demo and the comparison commands train their models:
    cosine schedule with 5 % warm-up, weight decay 0.1, no checkpoints or evaluations during training, offline.
    ``tokenizer``: a model directory whose tokenizer to reuse (default: train one of ``vocab_size`` on the data)."""
    argv = [
        "--train_file", train_file, "--validation_file", validation_file, "--output_dir", output_dir,
        "--model_preset", model_preset, "--block_size", str(block_size), "--max_eval_blocks", str(max_eval_blocks),
        "--tau", str(tau), "--max_steps", str(max_steps),
        "--per_device_train_batch_size", str(batch_size), "--per_device_eval_batch_size", str(batch_size),
        "--learning_rate", str(learning_rate), "--lr_scheduler_type", "cosine",
        "--warmup_steps", str(max(1, max_steps // 20)), "--weight_decay", "0.1",
        "--logging_steps", str(max(1, max_steps // 50)), "--save_strategy", "no", "--eval_strategy", "no",
        "--report_to", "none", "--seed", str(seed), "--dataloader_num_workers", "0",
    ]  # fmt: skip
    return argv + (["--tokenizer_name", tokenizer] if tokenizer else ["--tokenizer_vocab_size", str(vocab_size)])


def parse_args(argv: list[str] | None = None) -> tuple[ModelArguments, DataArguments, TopoTrainingArguments]:
    parser = HfArgumentParser((ModelArguments, DataArguments, TopoTrainingArguments))
    if argv is None and len(sys.argv) == 2 and sys.argv[1].endswith((".json", ".yaml", ".yml")):
        path = os.path.abspath(sys.argv[1])
        return parser.parse_yaml_file(path) if path.endswith((".yaml", ".yml")) else parser.parse_json_file(path)
    return parser.parse_args_into_dataclasses(args=argv)


if __name__ == "__main__":
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    model_args, data_args, training_args = parse_args()
    metrics = main(model_args, data_args, training_args)
    print(
        f"\nTopoNet saved to {metrics['output_dir']}\n"
        f"  eval loss {metrics['eval_loss']:.4f}  perplexity {metrics['eval_perplexity']:.2f}  "
        f"topo loss {metrics['topo_loss']:.4f}  (tau {metrics['tau']:g})"
        + (f"  BLiMP {metrics['blimp_overall']:.4f}" if "blimp_overall" in metrics else "")
    )
