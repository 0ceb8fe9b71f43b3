"""Category stimuli for selectivity maps: a folder of category subfolders (fLoc's layout), read and processed.

A stimulus folder holds one subfolder per **category**; a category folder holds images, subcategory folders, or
both, to any depth (fLoc: ``faces/adult``, ``faces/child``, ``bodies/body``, ``bodies/limb``, ``places/house``, ...;
Konkle & Caramazza's objects: ``big/animate``, ``big/inanimate``, ``small/animate``, ``small/inanimate``). Each
image's **group** is its folder path relative to the root (``"faces/adult"``); its category is the first component
(``"faces"``). A contrast names groups by folder names (``big`` vs ``small``, ``animate`` vs ``inanimate``): see
:func:`hf_topo.analysis.category_maps.group_mask`.

Bad folders are refused before any model runs (:func:`check_stimulus_folder`):

=========================================  ===================================================================
input                                      what happens
=========================================  ===================================================================
a folder that does not exist, or a file    refused: ``stimuli_dir=... does not exist`` / ``is a file``
no category subfolders                     refused: put each category's images in a subfolder named after it
images beside the category folders         refused, naming them (an image must belong to a category)
fewer than two categories                  refused: a t-map compares a category with the others
a category (or subfolder) without images   refused, naming the folder
a file PIL cannot read, or a truncated     refused, naming the file (every image is decoded once)
one; a file with a non-image suffix
hidden files and folders (``.*``)          skipped
grayscale, palette, RGBA, CMYK             converted to RGB when loaded (alpha dropped)
=========================================  ===================================================================

Images are processed with the model's evaluation transform
(:class:`~hf_topo.vision.augmentation.EvalTransform`: shorter side to ``size / 0.875``, central crop, the image
processor's mean and std), as the model saw its validation images.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
from PIL import Image, UnidentifiedImageError

from ..errors import InputError, MissingFileError, parameter
from .augmentation import EvalTransform

__all__ = ["StimulusFolder", "check_stimulus_folder", "load_stimulus_images", "eval_transform_for"]

logger = logging.getLogger(__name__)

#: File suffixes read as images (lower case).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass
class StimulusFolder:
    """What :func:`check_stimulus_folder` found.

    Attributes:
        path: the root folder.
        files: every image, in sorted order (category folders, then subfolders, then files).
        groups: each image's folder path relative to ``path``, ``/``-separated (``"faces/adult"``).
        categories: the category folders (the groups' first components), sorted.
    """

    path: str
    files: list[str]
    groups: list[str]
    categories: list[str]

    @property
    def counts(self) -> dict[str, int]:
        """Images per group (``"faces/adult"``: 144, ...)."""
        counts: dict[str, int] = {}
        for group in self.groups:
            counts[group] = counts.get(group, 0) + 1
        return counts


def _visible(names: list[str]) -> list[str]:
    return sorted(n for n in names if not n.startswith("."))


def _check_image(path: str) -> None:
    if os.path.splitext(path)[1].lower() not in IMAGE_SUFFIXES:
        raise ValueError(
            f"{path} is not an image file (suffix not one of {', '.join(IMAGE_SUFFIXES)}): remove it from the "
            "stimulus folder, or give it its format's suffix."
        )
    try:
        with Image.open(path) as image:
            image.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ValueError(
            f"{path} is not a readable image ({type(err).__name__}: {err}). Remove it from the stimulus folder, or "
            "replace it with a complete image file."
        ) from None


def _walk_category(folder: str, group: str, files: list[str], groups: list[str]) -> None:
    """Collect the images under ``folder`` (subfolders first-class: any depth), refusing empty folders."""
    entries = _visible(os.listdir(folder))
    if not entries:
        raise ValueError(
            f"The stimulus folder {folder!r} holds no images: put that category's images in it, or remove it."
        )
    for entry in entries:
        path = os.path.join(folder, entry)
        if os.path.isdir(path):
            _walk_category(path, f"{group}/{entry}", files, groups)
        else:
            _check_image(path)
            files.append(path)
            groups.append(group)


def check_stimulus_folder(path: str, name: str = "stimuli_dir") -> StimulusFolder:
    """Check a folder of category subfolders (nested subcategories allowed) and list its images.

    Every image is decoded once, so a broken file is found before any model runs (see the module docstring for
    every case refused).

    Args:
        path: the root folder.
        name: the parameter that gave it, as the messages name it.

    Raises:
        MissingFileError: ``path`` does not exist.
        ValueError: anything else the module docstring's table refuses (an :class:`~hf_topo.errors.InputError`
            where the message names ``name``).
    """
    given = parameter(name, repr(path))
    layout = "one subfolder of images per category (e.g. stimuli/faces/*.jpg, stimuli/places/*.jpg)"
    if not os.path.exists(path):
        raise MissingFileError(f"{given} does not exist: pass a folder with {layout}.")
    if not os.path.isdir(path):
        raise InputError(f"{given} is a file: pass a folder with {layout}.")
    entries = _visible(os.listdir(path))
    categories = [n for n in entries if os.path.isdir(os.path.join(path, n))]
    loose = [n for n in entries if n not in categories]
    if not categories:
        held = f" (it holds {', '.join(loose[:3])}{', ...' if len(loose) > 3 else ''})" if loose else " (it is empty)"
        raise InputError(f"{given} has no category subfolders{held}: give it {layout}.")
    if loose:
        raise InputError(
            f"{given} holds files beside its category subfolders ({', '.join(loose[:3])}"
            f"{', ...' if len(loose) > 3 else ''}): move each image into its category's subfolder, and other files "
            "out of the folder."
        )
    if len(categories) < 2:
        raise InputError(
            f"{given} has one category only ({categories[0]!r}): a selectivity t-map compares a category's images "
            "with the other categories' images; add a subfolder for each other category."
        )
    files: list[str] = []
    groups: list[str] = []
    for category in categories:
        _walk_category(os.path.join(path, category), category, files, groups)
    logger.info("%s=%r: %d images in %d categories", name, path, len(files), len(categories))
    return StimulusFolder(path=path, files=files, groups=groups, categories=categories)


def eval_transform_for(model, model_name_or_path: str | None = None, image_size: int | None = None) -> EvalTransform:
    """The evaluation transform of a saved image model: its image processor's size, mean and std.

    The size is the processor's crop size (``crop_size``, or ``size``'s ``shortest_edge`` / ``height``); without a
    processor (or with ``image_size`` given) ``image_size``, else ``model.config.image_size``, else 224; the mean and
    std are the processor's, or the family's defaults (:func:`hf_topo.vision.data.image_processor_for`).
    """
    from .data import image_processor_for

    size = image_size
    if size is None and model_name_or_path is not None:
        size = _processor_size(model_name_or_path)
    if size is None:
        size = int(getattr(model.config, "image_size", 0) or 224)
    processor = image_processor_for(model, size, model_name_or_path)
    return EvalTransform(size, processor.image_mean, processor.image_std)


def _processor_size(model_name_or_path: str) -> int | None:
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(model_name_or_path)
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    for attribute in ("crop_size", "size"):
        value = getattr(processor, attribute, None)
        if isinstance(value, dict):
            value = value.get("shortest_edge") or value.get("height")
        elif value is not None and not isinstance(value, int):
            value = getattr(value, "shortest_edge", None) or getattr(value, "height", None)
        if value:
            return int(value)
    return None


def load_stimulus_images(stimuli: StimulusFolder, transform: EvalTransform) -> torch.Tensor:
    """``pixel_values`` ``(n_images, 3, size, size)`` of the folder's images, in ``stimuli.files`` order."""
    pixels = []
    for file in stimuli.files:
        with Image.open(file) as image:
            pixels.append(transform(image))
    return torch.stack(pixels)
