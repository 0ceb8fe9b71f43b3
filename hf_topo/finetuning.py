"""LoRA fine-tuning of a TopoNet (the paper's A.11): the settings, the corpus split, and the run.

``finetune_lora(args, training_args)`` is what ``hf-topo finetune-lora`` runs and what ``hf-topo compare-lora``
repeats over models and ranks. The adapter is saved in PEFT format with ``topography.json`` beside it: the
TopoNet's own record (its τ and sheets, unchanged) with this fine-tuning appended to its ``finetuning`` list, so
``TopoConfig.from_pretrained(adapter_dir)`` reads it. With ``merge`` the merged full model (same record in its
``config.json``) goes to ``<output_dir>/merged``.

An image classifier (a vision TopoNet) is fine-tuned on a folder of class subfolders (``train_dir``, read with
``datasets``' ``imagefolder``) instead of a corpus: images resized and normalised by the model's image processor,
accuracy before and after instead of perplexity, the classifier head trained in full beside the adapter, and a new
head when the folder's classes are not the model's labels (:func:`hf_topo.lora.load_lora_image_classifier` loads
the base with it).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from dataclasses import dataclass, field

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, Trainer, default_data_collator, set_seed

from .checkpoints import resolve_checkpoint
from .config import TopoConfig
from .errors import InputError, MissingFileError, parameter
from .hub.card import add_card_tags
from .loading import check_data_file, check_model_source, load_tokenizer
from .lora import CORPUS_PRESETS, corpus_text, wrap_with_lora
from .metadata import TOPOGRAPHY_KEY, stored_topography, write_adapter_record
from .topo_regularizer import TopoRegularizer, attach_inferred_topography
from .trainer import MODEL_TAGS, TopoTrainer, TopoTrainingArguments

logger = logging.getLogger(__name__)

__all__ = ["LoraArguments", "finetune_lora", "load_lora_corpus", "load_lora_images"]


@dataclass
class LoraArguments:
    """Model, corpus and adapter of a LoRA fine-tuning run."""

    model_name_or_path: str = field(metadata={"help": "A TopoNet (local dir or Hub id) saved by hf_topo."})
    dataset: str = field(
        default="shakespeare",
        metadata={
            "help": f"Corpus preset ({', '.join(CORPUS_PRESETS)}): its token budget, its Hub dataset when no local "
            "text is given, and its name in the records."
        },
    )
    train_file: str | None = field(default=None, metadata={"help": "Local text for the corpus (wins over the Hub)."})
    code_dir: str | None = field(default=None, metadata={"help": "Directory of .py files for the corpus."})
    train_dir: str | None = field(
        default=None,
        metadata={"help": "Images (an image classifier): a folder with one subfolder of images per class."},
    )
    validation_dir: str | None = field(
        default=None,
        metadata={"help": "Images: held-out folder with the same class subfolders (else validation_fraction)."},
    )
    max_train_tokens: int | None = field(
        default=None, metadata={"help": "Token budget of the training split (default: the preset's, 300k / 1M)."}
    )
    validation_fraction: float = field(default=0.1, metadata={"help": "Fraction of the corpus held out (its end)."})
    block_size: int = field(default=128, metadata={"help": "Tokens per training sequence."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA alpha (scaling = alpha / r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Layers to adapt (default: the family's attention projections)."}
    )
    merge: bool = field(default=False, metadata={"help": "Also save the merged full model to <output_dir>/merged."})
    infer_topography: bool = field(
        default=False, metadata={"help": "Attach inferred sheets to a model without topography metadata."}
    )

    def __post_init__(self):
        if self.lora_r < 1:
            raise InputError(f"{parameter('lora_r', self.lora_r)}: a LoRA rank is a whole number >= 1 (e.g. 4 or 8).")
        if not self.lora_alpha > 0:
            raise InputError(
                f"{parameter('lora_alpha', self.lora_alpha)} must be > 0 (the update is scaled by alpha / r)."
            )
        if not 0 <= self.lora_dropout < 1:
            raise InputError(f"{parameter('lora_dropout', self.lora_dropout)} must be in [0, 1).")
        if self.block_size < 1:
            raise InputError(f"{parameter('block_size', self.block_size)} must be a positive number of tokens.")
        if self.max_train_tokens is not None and self.max_train_tokens < 1:
            raise InputError(f"{parameter('max_train_tokens', self.max_train_tokens)} must be positive (or left out).")
        if not 0 < self.validation_fraction < 0.5:
            raise InputError(
                f"{parameter('validation_fraction', self.validation_fraction)} must be in (0, 0.5), e.g. 0.1."
            )

    def check_sources(self) -> None:
        """Refuse, before any model is loaded, a model or local corpus that is not there (or a file without text)."""
        check_model_source(self.model_name_or_path)
        if self.train_file and self.code_dir:
            raise InputError(f"Give one local source: {parameter('train_file')} or {parameter('code_dir')}, not both.")
        if self.train_file:
            check_data_file(self.train_file, "train_file")
        if self.code_dir and not os.path.isdir(self.code_dir):
            raise MissingFileError(f"{parameter('code_dir', repr(self.code_dir))} is not a directory.")
        if self.train_dir is not None and (self.train_file or self.code_dir):
            raise InputError(
                f"{parameter('train_dir')} (images) cannot be combined with {parameter('train_file')}/"
                f"{parameter('code_dir')} (text)."
            )
        if self.validation_dir is not None and self.train_dir is None:
            raise InputError(f"{parameter('validation_dir')} is for images: give {parameter('train_dir')} too.")
        for name, folder in (("train_dir", self.train_dir), ("validation_dir", self.validation_dir)):
            if folder is not None and not os.path.isdir(folder):
                raise MissingFileError(
                    f"{parameter(name, repr(folder))} is not a directory: pass a folder with one subfolder of images "
                    "per class."
                )

    def corpus_source(self) -> str:
        """Where the text came from: the local file or folder, else the preset's Hub dataset (images: the folder)."""
        if self.train_dir:
            return os.path.abspath(self.train_dir)
        if self.train_file or self.code_dir:
            return os.path.abspath(self.train_file or self.code_dir)
        return CORPUS_PRESETS.get(self.dataset, {}).get("hub", self.dataset)


#: Defaults of the LoRA command that differ from `TrainingArguments`: no TopoLoss unless asked, LoRA's higher
#: learning rate, no intermediate checkpoints, no reporting integrations.
LORA_TRAINING_DEFAULTS = {"tau": 0.0, "learning_rate": 1e-3, "save_strategy": "no", "report_to": "none"}


def _blocks(ids: list[int], block_size: int) -> Dataset:
    usable = len(ids) // block_size * block_size
    blocks = [ids[i : i + block_size] for i in range(0, usable, block_size)]
    return Dataset.from_dict({"input_ids": blocks, "labels": [list(b) for b in blocks]})


def load_lora_corpus(args: LoraArguments, tokenizer) -> tuple[Dataset, Dataset]:
    """Tokenized corpus split into train (within the token budget) and held-out validation blocks (its end)."""
    budget = args.max_train_tokens or CORPUS_PRESETS.get(args.dataset, {}).get("tokens")
    # At most ~6 characters per token, plus the held-out part: enough text for the budget, not a whole library.
    max_chars = int(budget * 6 / (1 - args.validation_fraction)) if budget else None
    text = corpus_text(args.dataset, args.train_file, args.code_dir, max_chars=max_chars)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    # The held-out part is the end of the text, validation_fraction of what is used (not of all that was read).
    used = min(len(ids), int(budget / (1 - args.validation_fraction))) if budget else len(ids)
    n_validation = int(used * args.validation_fraction)
    train_ids = ids[: len(ids) - n_validation][:budget]
    train, validation = _blocks(train_ids, args.block_size), _blocks(ids[len(ids) - n_validation :], args.block_size)
    if len(train) == 0 or len(validation) == 0:
        raise InputError(
            f"The corpus ({len(ids)} tokens) is too small for training and validation blocks of {args.block_size} "
            f"tokens (validation fraction {args.validation_fraction}): give more text or a smaller "
            f"{parameter('block_size')}."
        )
    logger.info(
        "Corpus: %d train tokens, %d validation blocks of %d", len(train_ids), len(validation), args.block_size
    )
    return train, validation


def finetune_lora(args: LoraArguments, training_args: TopoTrainingArguments) -> dict:
    """Fine-tune ``args.model_name_or_path`` with a LoRA adapter; returns the metrics written to
    ``lora_metrics.json`` (validation loss and perplexity before and after, TopoLoss before and after).

    Everything that can fail on bad input (the model folder, the corpus, the output folder, the LoRA settings) is
    checked before the model is evaluated or trained. With ``args.train_dir`` the model is an image classifier
    fine-tuned on that image folder (:func:`load_lora_images`); its metrics hold accuracy instead of perplexity."""
    args.check_sources()
    image_model = _is_image_classifier_source(args.model_name_or_path)
    if args.train_dir is not None or image_model:
        if not image_model:
            raise InputError(
                f"{parameter('train_dir')} is for image classifiers, but {args.model_name_or_path} is not one (its "
                "config names no *ForImageClassification architecture): fine-tune a causal LM on "
                f"{parameter('train_file')} or {parameter('code_dir')}."
            )
        if args.train_dir is None:
            raise InputError(
                f"{args.model_name_or_path} is an image classifier: pass {parameter('train_dir')} (a folder with one "
                "subfolder of images per class), not a text corpus."
            )
        return _finetune_image_classifier(args, training_args)
    checkpoint = resolve_checkpoint(training_args)  # never mix two runs in one folder
    set_seed(training_args.seed)
    tokenizer = load_tokenizer(args.model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(args.model_name_or_path, dtype=torch.float32)
    has_topography = isinstance(stored_topography(model), dict)
    if not has_topography:
        if args.infer_topography:
            attach_inferred_topography(model)
            has_topography = True
        elif training_args.tau > 0:
            raise InputError(
                f"{args.model_name_or_path} has no topography metadata, so {parameter('tau', training_args.tau)} has "
                f"no layers to act on. Pass {parameter('infer_topography', True)} to attach most-square sheets on the "
                f"family's MLP layer, or {parameter('tau', 0)}."
            )
        else:
            logger.warning("%s has no topography metadata: TopoLoss is not reported.", args.model_name_or_path)
    original_topography = copy.deepcopy(stored_topography(model))

    train, validation = load_lora_corpus(args, tokenizer)
    topo = None
    if has_topography:
        stored = TopoConfig.from_pretrained(model)  # checks the stored sheets against the weights
        topo = TopoConfig.from_dict(stored.to_dict() | {"tau": {"value": training_args.tau, "schedule": []}})

    common = dict(
        args=training_args, train_dataset=train, eval_dataset=validation, data_collator=default_data_collator
    )
    model, trainer, trainable, (before, after), (topo_before, topo_after) = _train_adapter(
        model, topo, common, args, training_args, checkpoint
    )

    record = None
    if original_topography is not None:  # the TopoNet's own record stays; the fine-tuning is added to it
        run = {
            "method": "lora", "tau": training_args.tau, "r": args.lora_r, "alpha": args.lora_alpha,
            "target_modules": sorted(model.peft_config["default"].target_modules), "corpus": args.dataset,
            "corpus_source": args.corpus_source(), "steps": trainer.state.global_step,
        }  # fmt: skip
        record = _record_with_run(model, original_topography, run)
    if trainer.is_world_process_zero():
        _save_adapter(model, tokenizer, record, training_args.output_dir, args.merge)

    metrics = {
        "model": args.model_name_or_path,
        "corpus": args.dataset,
        "corpus_source": args.corpus_source(),
        "lora_r": args.lora_r,
        "tau": training_args.tau,
        "trainable_parameters": trainable,
        "eval_loss_before": before["eval_loss"],
        "eval_loss_after": after["eval_loss"],
        "delta_eval_loss": after["eval_loss"] - before["eval_loss"],
        "perplexity_before": math.exp(min(before["eval_loss"], 50)),
        "perplexity_after": math.exp(min(after["eval_loss"], 50)),
        "topo_loss_before": topo_before,
        "topo_loss_after": topo_after,
        "eval_history": [h for h in trainer.state.log_history if "eval_loss" in h],
        "output_dir": os.path.abspath(training_args.output_dir),
    }
    if trainer.is_world_process_zero():
        with open(os.path.join(training_args.output_dir, "lora_metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
    return metrics


# ---- image classifiers ----------------------------------------------------------------------------------------


def _is_image_classifier_source(model_name_or_path: str) -> bool:
    """Whether the saved model's ``config.json`` names an image-classification architecture."""
    from transformers import AutoConfig

    architectures = getattr(AutoConfig.from_pretrained(model_name_or_path), "architectures", None) or []
    return any(name.endswith("ForImageClassification") for name in architectures)


def _image_dataset_name(args: LoraArguments) -> str:
    """The name of an image folder in the records: ``--dataset`` when set to something else than a text preset,
    else the folder's name."""
    if args.dataset not in CORPUS_PRESETS:
        return args.dataset
    return os.path.basename(os.path.normpath(args.train_dir))


def load_lora_images(args: LoraArguments, image_processor, seed: int = 0) -> tuple[Dataset, Dataset, list[str]]:
    """``(train, validation, class names)`` of ``args.train_dir`` (``datasets``' ``imagefolder``: one subfolder per
    class), the validation split from ``args.validation_dir`` or the held-out ``validation_fraction`` (seeded).

    The datasets yield ``pixel_values`` (the ``image_processor``'s resize and normalisation, no augmentation) and
    ``labels`` on the fly.
    """
    from datasets import load_dataset

    def read(folder: str, name: str) -> Dataset:
        try:
            data = load_dataset("imagefolder", data_dir=folder, split="train")
        except (ValueError, FileNotFoundError) as err:
            raise InputError(
                f"{parameter(name, repr(folder))} could not be read as an image folder "
                f"({str(err).splitlines()[0]}): expected one subfolder of images (PNG, JPEG, ...) per class."
            ) from None
        if "label" not in data.features or not hasattr(data.features["label"], "names"):
            raise InputError(
                f"{parameter(name, repr(folder))} has no class subfolders: put each class's images in its own folder."
            )
        return data

    train = read(args.train_dir, "train_dir")
    classes = list(train.features["label"].names)
    if len(classes) < 2:
        raise InputError(
            f"{parameter('train_dir', repr(args.train_dir))} has {len(classes)} class folder(s): a classifier needs "
            "two."
        )
    if args.validation_dir is not None:
        validation = read(args.validation_dir, "validation_dir")
        if list(validation.features["label"].names) != classes:
            raise InputError(
                f"{parameter('validation_dir', repr(args.validation_dir))} has classes "
                f"{validation.features['label'].names}, but {parameter('train_dir')} has {classes}: give both folders "
                "the same class subfolders."
            )
    else:
        n_validation = int(len(train) * args.validation_fraction)
        if n_validation < 1 or len(train) - n_validation < 1:
            raise InputError(
                f"{parameter('train_dir', repr(args.train_dir))} has {len(train)} images: too few for "
                f"{parameter('validation_fraction', args.validation_fraction)}. Add images or pass "
                f"{parameter('validation_dir')}."
            )
        split = train.train_test_split(test_size=n_validation, seed=seed)
        train, validation = split["train"], split["test"]

    def transform(batch):
        images = [image.convert("RGB") for image in batch["image"]]
        pixel_values = image_processor(images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixel_values, "labels": torch.as_tensor(batch["label"])}

    logger.info("Images: %d train, %d validation, %d classes", len(train), len(validation), len(classes))
    return train.with_transform(transform), validation.with_transform(transform), classes


class _Accuracy:
    """Top-1 accuracy (and top-5 with 5 classes or more) for ``Trainer``'s ``compute_metrics``."""

    def __init__(self, n_classes: int):
        self.n_classes = n_classes

    def __call__(self, prediction) -> dict[str, float]:
        logits, labels = torch.as_tensor(prediction.predictions), torch.as_tensor(prediction.label_ids)
        metrics = {"accuracy": (logits.argmax(-1) == labels).double().mean().item()}
        if self.n_classes >= 5:
            top5 = logits.topk(5, dim=-1).indices
            metrics["top5_accuracy"] = (top5 == labels[:, None]).any(-1).double().mean().item()
        return metrics


def _finetune_image_classifier(args: LoraArguments, training_args: TopoTrainingArguments) -> dict:
    """:func:`finetune_lora` of an image classifier on ``args.train_dir`` (see the module docstring)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

    checkpoint = resolve_checkpoint(training_args)  # never mix two runs in one folder
    set_seed(training_args.seed)
    try:
        image_processor = AutoImageProcessor.from_pretrained(args.model_name_or_path)
    except (OSError, ValueError) as err:
        raise ValueError(
            f"{args.model_name_or_path} has no image processor (preprocessor_config.json), so its images' size and "
            f"normalisation are unknown ({str(err).splitlines()[0]}). Save the processor the model was trained with "
            "into its folder (image_processor.save_pretrained(MODEL_DIR))."
        ) from None
    train, validation, classes = load_lora_images(args, image_processor, seed=training_args.seed)
    base_labels = AutoConfig.from_pretrained(args.model_name_or_path).id2label or {}
    new_head = [base_labels.get(i, base_labels.get(str(i))) for i in range(len(base_labels))] != classes
    head_kwargs = (
        {
            "num_labels": len(classes),
            "id2label": dict(enumerate(classes)),
            "label2id": {name: i for i, name in enumerate(classes)},
            "ignore_mismatched_sizes": True,
        }
        if new_head
        else {}
    )
    if new_head:
        logger.info(
            "The folder's classes %s are not the model's labels: a new head of %d classes", classes, len(classes)
        )
    model = AutoModelForImageClassification.from_pretrained(
        args.model_name_or_path, dtype=torch.float32, **head_kwargs
    )
    has_topography = isinstance(stored_topography(model), dict)
    if not has_topography:
        if args.infer_topography:
            attach_inferred_topography(model)
            has_topography = True
        elif training_args.tau > 0:
            raise InputError(
                f"{args.model_name_or_path} has no topography metadata, so {parameter('tau', training_args.tau)} has "
                "no layers to act on: fine-tune a vision TopoNet (hf-topo pretrain --train_dir) or pass "
                f"{parameter('tau', 0)}."
            )
        else:
            logger.warning("%s has no topography metadata: TopoLoss is not reported.", args.model_name_or_path)
    original_topography = copy.deepcopy(stored_topography(model))
    topo = None
    if has_topography:
        stored = TopoConfig.from_pretrained(model)  # checks the stored sheets against the weights
        topo = TopoConfig.from_dict(stored.to_dict() | {"tau": {"value": training_args.tau, "schedule": []}})
    # The adapter (and the head) must be all that changes: a ResNet's BatchNorm running statistics, which training
    # would update in place and the adapter does not save, are frozen (momentum 0; batches are still normalised
    # with their own statistics during training).
    batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in batch_norms:
        norm.momentum = 0.0

    training_args.remove_unused_columns = False  # the images become pixel_values in the datasets' transform
    accuracy = _Accuracy(len(classes))
    common = dict(
        args=training_args,
        train_dataset=train,
        eval_dataset=validation,
        data_collator=default_data_collator,
        compute_metrics=accuracy,
    )
    model, trainer, trainable, (before, after), (topo_before, topo_after) = _train_adapter(
        model, topo, common, args, training_args, checkpoint
    )

    dataset_name = _image_dataset_name(args)
    record = None
    if original_topography is not None:  # the TopoNet's own record stays; the fine-tuning is added to it
        targets = model.peft_config["default"].target_modules
        run = {
            "method": "lora", "tau": training_args.tau, "r": args.lora_r, "alpha": args.lora_alpha,
            "target_modules": targets if isinstance(targets, str) else sorted(targets),
            "modules_to_save": sorted(model.peft_config["default"].modules_to_save or []),
            "dataset": dataset_name, "dataset_source": args.corpus_source(), "steps": trainer.state.global_step,
            "new_head": new_head,
        }  # fmt: skip
        if batch_norms:
            run["batch_norm"] = "running statistics frozen"
        if new_head:
            run["classes"] = classes
        record = _record_with_run(model, original_topography, run)
    if trainer.is_world_process_zero():
        _save_adapter(model, image_processor, record, training_args.output_dir, args.merge)

    metrics = {
        "model": args.model_name_or_path,
        "dataset": dataset_name,
        "dataset_source": args.corpus_source(),
        "classes": classes,
        "new_head": new_head,
        "lora_r": args.lora_r,
        "tau": training_args.tau,
        "trainable_parameters": trainable,
        "eval_loss_before": before["eval_loss"],
        "eval_loss_after": after["eval_loss"],
        "delta_eval_loss": after["eval_loss"] - before["eval_loss"],
        "accuracy_before": before["eval_accuracy"],
        "accuracy_after": after["eval_accuracy"],
        "topo_loss_before": topo_before,
        "topo_loss_after": topo_after,
        "eval_history": [h for h in trainer.state.log_history if "eval_loss" in h],
        "output_dir": os.path.abspath(training_args.output_dir),
    }
    if "eval_top5_accuracy" in after:
        metrics["top5_accuracy_before"] = before["eval_top5_accuracy"]
        metrics["top5_accuracy_after"] = after["eval_top5_accuracy"]
    if trainer.is_world_process_zero():
        with open(os.path.join(training_args.output_dir, "lora_metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
    return metrics


def _record_with_run(model, original_topography: dict, run: dict) -> dict:
    """The TopoNet's own record with this fine-tuning run appended, set on the base model's config."""
    record = original_topography | {"finetuning": (original_topography.get("finetuning") or []) + [run]}
    setattr(model.get_base_model().config, TOPOGRAPHY_KEY, record)
    return record


def _save_adapter(model, processor, record: dict | None, output_dir: str, merge: bool) -> None:
    """The adapter (with its card tags, the tokenizer or image processor, and the topography record beside it, since
    an adapter folder has no config.json) and, with ``merge``, the merged model in ``<output_dir>/merged``."""
    model.save_pretrained(output_dir)
    add_card_tags(os.path.join(output_dir, "README.md"), MODEL_TAGS)
    processor.save_pretrained(output_dir)
    if record is not None:
        write_adapter_record(output_dir, record)
    if merge:
        merged = model.merge_and_unload()
        merged.save_pretrained(os.path.join(output_dir, "merged"))
        processor.save_pretrained(os.path.join(output_dir, "merged"))


def _train_adapter(model, topo, common: dict, args, training_args, checkpoint):
    """Evaluate ``model``, wrap it with LoRA, train the adapter (with ``TopoTrainer`` when ``topo`` is set) and evaluate
    again; returns ``(model, trainer, trainable parameters, (metrics before, after), (TopoLoss before, after))``."""
    before = Trainer(model=model, **{**common, "args": copy.copy(training_args)}).evaluate()
    topo_before = TopoRegularizer(topo)(model).item() if topo else None
    model = wrap_with_lora(model, args.lora_r, args.lora_alpha, args.lora_dropout, args.lora_target_modules)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    trainer = TopoTrainer(model=model, topo_config=topo, **common) if topo else Trainer(model=model, **common)
    trainer.train(resume_from_checkpoint=checkpoint)
    after = trainer.evaluate()
    topo_after = TopoRegularizer(topo)(model).item() if topo else None
    return model, trainer, trainable, (before, after), (topo_before, topo_after)
