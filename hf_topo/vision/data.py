"""Image folders for image classification: checked before training, read with ``datasets``' ``imagefolder``.

A training folder holds one subfolder per class (the subfolder's name is the class name, the model's ``id2label``,
in sorted order) with that class's images; ``--validation_dir`` has the same class subfolders, or a stratified
``--validation_split_percentage`` of the training images (at least one per class) is held out.

Bad folders fail before any training step, with the file or folder and the fix in the message
(:func:`check_image_folder`):

==========================================  ===================================================================
input                                       what happens
==========================================  ===================================================================
a folder that does not exist, or a file     refused: "train_dir=... does not exist"
no class subfolders (images at the top)     refused: put each class's images in a subfolder named after it
one class only                              refused: a classifier needs two classes or more
an empty class folder                       refused, naming the folder
a folder inside a class folder              refused, naming it (``imagefolder`` would take it for a class)
a file PIL cannot read, or a truncated one  refused, naming the file (every image is decoded once)
an image with a non-image suffix (x.bin)    refused, naming the file (``imagefolder`` would skip it)
hidden files (``.DS_Store``, ``.*``)        skipped
validation classes differ from training's   refused, listing the classes missing on either side
grayscale, palette, RGBA, CMYK, 16-bit      converted to RGB when loaded (alpha dropped; 16-bit rescaled to 0–255)
images smaller than ``--image_size``        scaled up by the crop's resize (documented, not refused)
==========================================  ===================================================================
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
from datasets import DatasetDict, load_dataset
from PIL import Image, UnidentifiedImageError

from ..errors import InputError, MissingFileError, parameter
from .augmentation import EvalTransform, TrainTransform

__all__ = [
    "ImageFolderSummary",
    "check_image_folder",
    "load_image_datasets",
    "image_processor_for",
    "with_image_transforms",
    "collate_images",
]

logger = logging.getLogger(__name__)

#: ImageNet's per-channel mean and standard deviation (the ResNet processors' normalization).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ImageFolderSummary:
    """What :func:`check_image_folder` found: the class names (sorted) and the number of images of each."""

    path: str
    classes: list[str]
    counts: dict[str, int]
    modes: dict[str, int]
    smallest: tuple[int, int]
    files: list[str]

    @property
    def n_images(self) -> int:
        return sum(self.counts.values())


def _visible(names: list[str]) -> list[str]:
    return sorted(n for n in names if not n.startswith("."))


def _check_image_file(path: str) -> tuple[str, tuple[int, int], str]:
    """Decode ``path`` fully (a truncated file fails only when its pixels are read); its mode, size and format."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.mode, image.size, image.format or "image"
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ValueError(
            f"{path} is not a readable image ({type(err).__name__}: {err}). Remove it from the folder, or replace it "
            "with a complete image file (JPEG, PNG, BMP, GIF, TIFF, WebP, ...)."
        ) from None


def _image_suffixes() -> set[str]:
    """The file suffixes ``datasets``' ``imagefolder`` reads as images (lower case, with the dot)."""
    from datasets.packaged_modules.imagefolder.imagefolder import ImageFolder

    return {suffix.lower() for suffix in ImageFolder.EXTENSIONS}


def check_image_folder(path: str, name: str = "train_dir") -> ImageFolderSummary:
    """Check a folder of class subfolders before anything is trained (see the module docstring for every case).

    Every image is opened and decoded once, so a corrupt file is found now rather than mid-run (on ImageNet's
    1.28M files this takes minutes of CPU time, once per run).

    Args:
        path: the folder.
        name: the parameter that gave it, as messages name it (``"train_dir"``, ``"validation_dir"``; see
            :func:`hf_topo.errors.parameter`).

    Raises:
        MissingFileError: ``path`` does not exist (a ``FileNotFoundError``).
        ValueError: anything else of the module docstring's table that is refused (an :class:`InputError` where
            the message names ``name``).
    """
    given = parameter(name, repr(path))
    if not os.path.exists(path):
        raise MissingFileError(
            f"{given} does not exist: pass a folder with one subfolder of images per class "
            "(e.g. train/cat/*.jpg, train/dog/*.jpg)."
        )
    if not os.path.isdir(path):
        raise InputError(
            f"{given} is a file: pass a folder with one subfolder of images per class "
            "(e.g. train/cat/*.jpg, train/dog/*.jpg)."
        )
    entries = _visible(os.listdir(path))
    classes = [n for n in entries if os.path.isdir(os.path.join(path, n))]
    loose = [n for n in entries if n not in classes]
    if not classes:
        shown = f" (it holds {', '.join(loose[:3])}{', ...' if len(loose) > 3 else ''})" if loose else " (it is empty)"
        raise InputError(
            f"{given} has no class subfolders{shown}: put each class's images in a subfolder named after the class "
            "(e.g. train/cat/*.jpg, train/dog/*.jpg)."
        )
    if loose:
        raise InputError(
            f"{given} holds files beside its class subfolders ({', '.join(loose[:3])}"
            f"{', ...' if len(loose) > 3 else ''}): move each image into its class's subfolder, and other files out "
            "of the folder."
        )
    if len(classes) == 1:
        raise InputError(
            f"{given} has one class only ({classes[0]!r}): a classifier needs two classes or more; add a "
            "subfolder of images for each other class."
        )
    counts: dict[str, int] = {}
    modes: dict[str, int] = {}
    smallest = (1 << 30, 1 << 30)
    paths: list[str] = []
    for class_name in classes:
        folder = os.path.join(path, class_name)
        files = _visible(os.listdir(folder))
        nested = [f for f in files if os.path.isdir(os.path.join(folder, f))]
        if nested:
            raise ValueError(
                f"{os.path.join(folder, nested[0])} is a folder inside the class folder {folder!r}: a class folder "
                "holds image files only. Move its images up into the class folder, or make it a class of its own."
            )
        if not files:
            raise ValueError(
                f"The class folder {folder!r} holds no images: put that class's images in it, or remove the folder."
            )
        for file in files:
            paths.append(os.path.join(folder, file))
            mode, size, image_format = _check_image_file(paths[-1])
            if os.path.splitext(file)[1].lower() not in _image_suffixes():
                raise ValueError(
                    f"{paths[-1]} is a {image_format} image whose suffix datasets' imagefolder does not read as an "
                    f"image (it would be skipped): rename it with its format's suffix (.png, .jpg, ...)."
                )
            modes[mode] = modes.get(mode, 0) + 1
            smallest = min(smallest, size, key=lambda s: s[0] * s[1])
        counts[class_name] = len(files)
    if len(modes) > 1 or "RGB" not in modes:
        logger.info("%s=%r: image modes %s; every image is converted to RGB when loaded", name, path, modes)
    return ImageFolderSummary(path=path, classes=classes, counts=counts, modes=modes, smallest=smallest, files=paths)


def load_image_datasets(
    train_dir: str,
    validation_dir: str | None = None,
    validation_split_percentage: int = 5,
    seed: int = 0,
    cache_dir: str | None = None,
) -> tuple[DatasetDict, list[str]]:
    """``({"train", "validation"}, class names)``: the folders checked by :func:`check_image_folder`, then read with
    ``load_dataset("imagefolder", data_files=...)`` (the files found by the check) (columns ``image``, ``label``; labels index the sorted class names).

    Without ``validation_dir``, ``validation_split_percentage`` % of the training images (at least one per class,
    stratified by class, seeded by ``seed``) are held out.

    Raises:
        FileNotFoundError, ValueError: a folder refused by :func:`check_image_folder`; validation classes that differ
            from the training classes; a class with a single image when a validation split must be held out of it.
    """
    train_summary = check_image_folder(train_dir, "train_dir")
    classes = train_summary.classes
    if validation_dir is not None:
        validation_summary = check_image_folder(validation_dir, "validation_dir")
        if validation_summary.classes != classes:
            missing = sorted(set(classes) - set(validation_summary.classes))
            extra = sorted(set(validation_summary.classes) - set(classes))
            raise InputError(
                f"{parameter('validation_dir', repr(validation_dir))} and {parameter('train_dir', repr(train_dir))} "
                "have different classes "
                f"(missing from validation: {missing or 'none'}; not in training: {extra or 'none'}): give both "
                "folders the same class subfolders."
            )
    elif not 0 < validation_split_percentage < 100:
        raise InputError(
            f"{parameter('validation_split_percentage', validation_split_percentage)} must be between 1 and 99, or "
            f"pass {parameter('validation_dir')}."
        )
    else:
        single = [name for name, n in train_summary.counts.items() if n < 2]
        if single:
            raise InputError(
                f"The class folder {os.path.join(train_dir, single[0])!r} holds one image: a held-out validation split "
                "takes at least one image of every class and needs another to train on. Add images to it, or pass "
                f"{parameter('validation_dir')}."
            )

    # The checked files are passed as data_files: imagefolder then labels them by their folders without walking the
    # tree again (and without picking up the hidden files skipped above).
    train = load_dataset("imagefolder", data_files={"train": train_summary.files}, split="train", cache_dir=cache_dir)
    _check_labels(train, classes, train_dir, len(train_summary.files))
    if validation_dir is not None:
        validation = load_dataset(
            "imagefolder", data_files={"train": validation_summary.files}, split="train", cache_dir=cache_dir
        )
        _check_labels(validation, classes, validation_dir, len(validation_summary.files))
        return DatasetDict(train=train, validation=validation), classes
    n_validation = max(len(classes), round(validation_split_percentage * len(train) / 100))
    if n_validation > len(train) - len(classes):
        raise InputError(
            f"{parameter('train_dir', repr(train_dir))} has {len(train)} images in {len(classes)} classes: too few to "
            f"hold out {validation_split_percentage} % (at least one per class) and train on the rest. Add images, "
            f"lower {parameter('validation_split_percentage')}, or pass {parameter('validation_dir')}."
        )
    split = train.train_test_split(test_size=n_validation, stratify_by_column="label", seed=seed)
    return DatasetDict(train=split["train"], validation=split["test"]), classes


def _check_labels(dataset, classes: list[str], folder: str, n_files: int) -> None:
    names = dataset.features["label"].names if "label" in dataset.features else None
    if names != classes or len(dataset) != n_files:
        raise ValueError(
            f"datasets' imagefolder read {folder!r} as classes {names} ({len(dataset)} images), not as its "
            f"subfolders {classes} ({n_files} images): check that every image file has an image suffix "
            "(.jpg, .png, ...)."
        )


def image_processor_for(model, image_size: int, model_name_or_path: str | None = None):
    """The image processor saved with the model: its normalization is what training and evaluation use.

    A model loaded from a folder or Hub id with an image processor keeps that one's ``image_mean``/``image_std``
    (its size set to ``image_size``); a new ResNet gets ImageNet's mean and std (``ConvNextImageProcessorPil``:
    shorter side to ``image_size / 0.875``, central crop, the evaluation transform), a new ViT ViT's 0.5 / 0.5
    (``ViTImageProcessorPil``). The PIL backends need no torchvision.
    """
    from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    mean, std = None, None
    if model_name_or_path is not None:
        from transformers import AutoImageProcessor

        try:
            loaded = AutoImageProcessor.from_pretrained(model_name_or_path)
            mean, std = list(loaded.image_mean), list(loaded.image_std)
        except (OSError, ValueError, AttributeError, TypeError):
            logger.info("%s has no image processor: using the family's default normalization", model_name_or_path)
    if model.config.model_type == "vit":
        return ViTImageProcessorPil(
            size={"height": image_size, "width": image_size},
            image_mean=mean or [0.5, 0.5, 0.5],
            image_std=std or [0.5, 0.5, 0.5],
        )
    return ConvNextImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_pct=0.875,
        image_mean=mean or list(IMAGENET_MEAN),
        image_std=std or list(IMAGENET_STD),
    )


def with_image_transforms(
    datasets: DatasetDict, image_size: int, mean, std, seed: int | None = None
) -> tuple[DatasetDict, TrainTransform]:
    """The training split with :class:`TrainTransform` (its generator seeded by ``seed``), the validation split with
    :class:`EvalTransform`, applied when rows are read (``with_transform``): rows become
    ``{"pixel_values": (3, S, S) tensor, "labels": int}``. Returns the datasets and the training transform."""
    transforms = {
        "train": TrainTransform(image_size, mean, std, seed=seed),
        "validation": EvalTransform(image_size, mean, std),
    }

    def transformer(transform):
        def apply(batch: dict) -> dict:
            pixels = [transform(image, index) for image, index in zip(batch["image"], batch["index"], strict=True)]
            return {"pixel_values": pixels, "labels": batch["label"]}

        return apply

    transformed = DatasetDict()
    for split in datasets:  # the row's index keys its random crop and flip (TrainTransform.generator_for)
        indexed = datasets[split].add_column("index", list(range(len(datasets[split]))))
        transformed[split] = indexed.with_transform(transformer(transforms[split]))
    return transformed, transforms["train"]


def collate_images(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack transformed rows into ``pixel_values`` ``(B, 3, S, S)`` and ``labels`` ``(B,)``."""
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
        "labels": torch.tensor([e["labels"] for e in examples], dtype=torch.long),
    }
