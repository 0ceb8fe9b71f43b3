"""Pretraining an image-classification TopoNet: what ``hf-topo pretrain --train_dir DIR`` runs.

    hf-topo pretrain --train_dir images/train --validation_dir images/val --model_preset tiny-resnet \\
        --image_size 32 --tau 1 --max_steps 300 --per_device_train_batch_size 64 --output_dir outputs/resnet-topo

The same :class:`~hf_topo.TopoTrainer`, arguments, checkpoint rules (:func:`~hf_topo.checkpoints.resolve_checkpoint`:
``--resume_from_checkpoint``, a second run into one folder refused) and τ schedules as for language models; only
the data (:mod:`hf_topo.vision.data`), the model (:mod:`hf_topo.vision.models`) and the metrics
(:mod:`hf_topo.vision.metrics`) differ. ``--topo_target_modules`` left at its default becomes the family's layers
(:data:`hf_topo.presets.TARGET_PRESETS`: ResNet's block convolutions, ViT's ``mlp.fc2``).
"""

from __future__ import annotations

import json
import logging
import math
import os

from transformers import TrainerCallback, set_seed

from ..checkpoints import resolve_checkpoint
from ..config import TopoConfig
from ..errors import InputError, parameter
from ..presets import TARGET_PRESETS, VISION_MODEL_PRESETS
from ..trainer import TopoTrainer, TopoTrainingArguments
from .augmentation import TrainTransform
from .data import collate_images, image_processor_for, load_image_datasets, with_image_transforms
from .metrics import ClassificationAccuracy
from .models import build_vision_model

__all__ = ["pretrain_image_classifier", "PREDICTIONS_FILE", "AugmentationEpochCallback", "use_family_targets"]

logger = logging.getLogger(__name__)

#: The final evaluation's labels and top-k predictions, written next to the model.
PREDICTIONS_FILE = "eval_predictions.json"


class AugmentationEpochCallback(TrainerCallback):
    """Tells the training augmentation which epoch starts (its draws are keyed by seed, epoch and image index).

    Called before the epoch's ``DataLoader`` iterator (and its workers) exist; a resumed run starts in the epoch of
    its checkpoint (``state.epoch`` is restored)."""

    def __init__(self, transform: TrainTransform):
        self.transform = transform

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.transform.epoch = math.floor(state.epoch + 1e-6)
        if args.dataloader_persistent_workers and args.dataloader_num_workers > 0 and self.transform.epoch > 0:
            logger.warning(
                "--dataloader_persistent_workers: the workers keep the first epoch's augmentation keys, so every "
                "epoch crops each image alike; leave it off for new crops per epoch."
            )
        return control


def use_family_targets(model, training_args: TopoTrainingArguments) -> None:
    """Left at its default (GPT-2's ``mlp.c_fc``), ``--topo_target_modules`` becomes the vision family's layers
    (:data:`hf_topo.presets.TARGET_PRESETS`: ResNet's block convolutions, ViT's ``mlp.fc2``)."""
    default = TopoConfig.__dataclass_fields__["target_modules"].default_factory()
    family = TARGET_PRESETS.get(getattr(model.config, "model_type", None))
    if training_args.topo_target_modules != default or training_args.topo_loss_type == "spatial_correlation":
        return
    if family is not None:
        logger.info("--topo_target_modules: %s, the topographic layers of %s", family, model.config.model_type)
        training_args.topo_target_modules = list(family)


def _check_arguments(model_args, data_args, training_args: TopoTrainingArguments) -> None:
    text = [flag for flag in ("train_file", "validation_file", "dataset_name") if getattr(data_args, flag)]
    if text:
        raise InputError(
            f"{parameter('train_dir')} (images) and {parameter(text[0])} (text) were both given: a run trains on one "
            "kind of data; drop one."
        )
    if data_args.streaming or data_args.blimp_dir or data_args.blimp_dataset:
        raise InputError(
            f"{parameter('streaming')} and BLiMP ({parameter('blimp_dir')}, {parameter('blimp_dataset')}) apply to "
            "text; an image folder is read from disk and scored by accuracy."
        )
    if data_args.image_size < 8:
        raise InputError(
            f"{parameter('image_size', data_args.image_size)} is too small: pass 8 pixels or more (e.g. 32, 224)."
        )
    if model_args.model_name_or_path is None and model_args.model_preset not in VISION_MODEL_PRESETS:
        default = type(model_args).__dataclass_fields__["model_preset"].default
        if model_args.model_preset != default:
            raise InputError(
                f"{parameter('model_preset', model_args.model_preset)} is a language model; an image folder needs one "
                f"of {', '.join(VISION_MODEL_PRESETS)}, or {parameter('model_name_or_path')} of an image classifier."
            )
        logger.info("--train_dir: training the image-classification preset tiny-resnet (--model_preset)")
        model_args.model_preset = "tiny-resnet"
    # The transforms read the `image` and `label` columns, which the model's forward does not name.
    training_args.remove_unused_columns = False


def pretrain_image_classifier(model_args, data_args, training_args: TopoTrainingArguments) -> dict:
    """Train, save and evaluate an image-classification TopoNet (τ = 0: its baseline); returns ``metrics.json``.

    ``model_args``, ``data_args``: :class:`hf_topo.pretraining.ModelArguments` and ``DataArguments`` (``train_dir``,
    ``validation_dir``, ``validation_split_percentage``, ``image_size``). The folders, every image in them, the
    arguments and the output folder are checked before the first step (:mod:`hf_topo.vision.data`). Saved to
    ``output_dir``: the model (``AutoModelForImageClassification``, ``id2label`` from the class folders, the
    ``topography`` record), its image processor, ``trainer_state.json`` (losses, τ, TopoLoss and accuracy at every
    evaluation), ``eval_results.json``, ``metrics.json`` and :data:`PREDICTIONS_FILE`.
    """
    from ..loading import check_model_source

    _check_arguments(model_args, data_args, training_args)
    if model_args.model_name_or_path is not None:
        check_model_source(model_args.model_name_or_path)
    checkpoint = resolve_checkpoint(training_args)  # never mix two runs in one folder
    set_seed(training_args.seed)
    with training_args.main_process_first(desc="checking and indexing the image folders"):
        datasets, classes = load_image_datasets(
            data_args.train_dir,
            data_args.validation_dir,
            data_args.validation_split_percentage,
            seed=training_args.seed,
        )
    logger.info(
        "Images: %d training, %d validation, %d classes",
        len(datasets["train"]),
        len(datasets["validation"]),
        len(classes),
    )
    model = build_vision_model(
        model_args.model_preset,
        classes,
        data_args.image_size,
        model_name_or_path=model_args.model_name_or_path,
        config_overrides=model_args.config_overrides,
    )
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("Model: %s, %.2fM parameters", type(model).__name__, n_params / 1e6)
    use_family_targets(model, training_args)
    processor = image_processor_for(model, data_args.image_size, model_args.model_name_or_path)
    transformed, augmentation = with_image_transforms(
        datasets, data_args.image_size, processor.image_mean, processor.image_std, seed=training_args.seed
    )
    accuracy = ClassificationAccuracy(len(classes))

    trainer = TopoTrainer(
        model=model,
        args=training_args,
        train_dataset=transformed["train"],
        eval_dataset=transformed["validation"],
        processing_class=processor,
        data_collator=collate_images,
        compute_metrics=accuracy,
        preprocess_logits_for_metrics=accuracy.preprocess_logits_for_metrics,
        callbacks=[AugmentationEpochCallback(augmentation)],
    )
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()

    metrics = {"train_" + k.removeprefix("train_"): v for k, v in train_result.metrics.items()}
    eval_metrics = trainer.evaluate()
    trainer.save_metrics("eval", eval_metrics)  # eval_results.json
    trainer.save_state()  # trainer_state.json: the log history, the final evaluation's accuracy included
    metrics.update(eval_metrics)
    eval_batch = None
    if trainer.topo_loss.config.reads_activations:  # Activation Similarity is measured on the first evaluation batch
        batch = next(iter(trainer.get_eval_dataloader()))
        eval_batch = {k: v.to(trainer.model.device) for k, v in batch.items()}
    topo, per_layer = trainer.topo_loss.evaluate(trainer.model, eval_batch)
    metrics["topo_loss"] = topo.item()
    metrics["topo_loss_per_layer"] = {trainer.topo_loss_label(n): v.item() for n, v in per_layer.items()}
    metrics["tau"] = training_args.tau
    metrics["classes"] = classes
    metrics["n_train_images"], metrics["n_eval_images"] = len(datasets["train"]), len(datasets["validation"])
    metrics["n_parameters"] = n_params
    metrics["output_dir"] = os.path.abspath(training_args.output_dir)
    if trainer.is_world_process_zero():
        accuracy.save_predictions(os.path.join(training_args.output_dir, PREDICTIONS_FILE))
        with open(os.path.join(training_args.output_dir, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
    return metrics
