"""Pretraining a TopoNet: the model and data settings and the run itself.

``pretrain(model_args, data_args, training_args)`` is what ``hf-topo pretrain`` (and its script form ``scripts/pretrain.py``)
runs: load and pack the text, build or load the model, train it with :class:`~hf_topo.TopoTrainer`, save the model
with its ``topography`` record, its tokenizer, ``trainer_state.json`` and ``metrics.json``. The experiments (the demo,
the comparisons, the claims) call it with the dataclasses of :func:`hf_topo.experiments.recipes.small_cpu_recipe`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field

import torch
from transformers import default_data_collator, set_seed

from .blimp import BlimpCallback, load_blimp
from .checkpoints import resolve_checkpoint
from .config import TopoConfig
from .data import load_text_datasets, pack_into_blocks, train_bpe_tokenizer
from .errors import InputError, parameter
from .loading import check_model_source, load_tokenizer
from .models import build_model
from .presets import MODEL_PRESETS, TARGET_PRESETS
from .trainer import TopoTrainer, TopoTrainingArguments

logger = logging.getLogger(__name__)


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
    # Image classification (hf_topo.vision): a folder of class subfolders instead of text.
    train_dir: str | None = field(
        default=None,
        metadata={"help": "Images: a folder with one subfolder of images per class (trains a classifier)."},
    )
    validation_dir: str | None = field(
        default=None, metadata={"help": "Images: held-out folder with the same class subfolders (else a split)."}
    )
    image_size: int = field(default=224, metadata={"help": "Images: side of the square model input, in pixels."})


def _use_family_targets(model, training_args: TopoTrainingArguments) -> None:
    """Left at TopoConfig's default (GPT-2's ``mlp.c_fc``), ``--topo_target_modules`` becomes the MLP expansion layer
    of the model's family (:data:`hf_topo.presets.TARGET_PRESETS`) when the model has no ``mlp.c_fc``: GPT-NeoX's
    ``mlp.dense_h_to_4h``, Llama's ``mlp.up_proj``. Only the default is replaced, and only where it matches nothing."""
    default = TopoConfig.__dataclass_fields__["target_modules"].default_factory()
    family = TARGET_PRESETS.get(getattr(model.config, "model_type", None))
    if training_args.topo_loss_type == "spatial_correlation" or training_args.topo_target_modules != default:
        return
    if family is None or family == default or any(name.endswith(".mlp.c_fc") for name, _ in model.named_modules()):
        return
    logger.info("topo_target_modules: %s, the MLP expansion layer of %s", family, model.config.model_type)
    training_args.topo_target_modules = list(family)


def _tokenizer(model_args: ModelArguments, raw, data_args: DataArguments):
    name = model_args.tokenizer_name or model_args.model_name_or_path
    if name is not None:
        tokenizer = load_tokenizer(name)
    else:
        logger.info(
            "Training a byte-level BPE tokenizer (vocab %d) on the training text", model_args.tokenizer_vocab_size
        )
        texts = (example[data_args.text_column] for example in raw["train"])
        tokenizer = train_bpe_tokenizer(texts, vocab_size=model_args.tokenizer_vocab_size)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _check_arguments(data_args: DataArguments, training_args: TopoTrainingArguments) -> None:
    if data_args.streaming and training_args.max_steps <= 0:
        raise InputError(
            f"A streamed dataset has no length, so the run is counted in optimizer steps: set {parameter('max_steps')} "
            f"(the learning-rate and τ schedules, evaluations and checkpoints all follow it; "
            f"{parameter('num_train_epochs')} is ignored)."
        )
    if data_args.streaming_shuffle_buffer and not data_args.streaming:
        raise InputError(
            f"{parameter('streaming_shuffle_buffer')} applies to {parameter('streaming')}; on-disk data is shuffled by "
            "the Trainer."
        )


def pretrain(model_args: ModelArguments, data_args: DataArguments, training_args: TopoTrainingArguments) -> dict:
    """Train, save and evaluate a TopoNet (τ = 0: its baseline); returns the metrics written to ``metrics.json``.

    Everything that can fail on bad input (arguments, data, BLiMP files, the output folder) is checked before the
    first training step. ``resume_from_checkpoint`` may be ``true`` (the last checkpoint in ``output_dir``) or a
    checkpoint folder; a fresh run into a folder that holds another run is refused (:func:`resolve_checkpoint`).
    The model, its tokenizer, ``trainer_state.json`` (the log history) and ``metrics.json``
    (eval loss and perplexity, TopoLoss per layer, τ, BLiMP when asked) are saved to ``training_args.output_dir``.
    """
    if data_args.train_dir is not None:  # image classification: the same trainer on an image folder
        from .vision.training import pretrain_image_classifier

        return pretrain_image_classifier(model_args, data_args, training_args)
    _check_arguments(data_args, training_args)
    if model_args.model_name_or_path is not None:
        check_model_source(model_args.model_name_or_path)
    checkpoint = resolve_checkpoint(training_args)  # never mix two runs in one folder
    set_seed(training_args.seed)
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
    _use_family_targets(model, training_args)

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
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()
    trainer.save_state()  # trainer_state.json: the full log history (loss, topo_loss, tau per logging step)

    metrics = {"train_" + k.removeprefix("train_"): v for k, v in train_result.metrics.items()}
    metrics.update(trainer.evaluate())
    metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 50.0))
    eval_batch = None
    if trainer.topo_loss.config.reads_activations:  # Activation Similarity is measured on the first evaluation batch
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
