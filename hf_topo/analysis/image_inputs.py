"""The images an image classifier is analysed on: ``pixel_values`` with their labels, and top-1 accuracy on them.

An :class:`ImageBatch` holds processed images (normalised as the model expects) and their class indices;
:func:`hf_topo.vision.analyze.load_analysis_images` reads one from a folder of class subfolders with the model's
evaluation transform. :func:`evaluate_accuracy` is the score of an image classifier's perturbation sweeps
(:mod:`hf_topo.analysis.perturbation`), as perplexity is a language model's.

    from hf_topo.analysis import AnalysisSettings, ImageBatch, analyze_model

    images = ImageBatch(pixel_values, labels)        # (n, 3, H, W) normalised, (n,) class indices
    analysis = analyze_model(model, images=images, settings=AnalysisSettings(pruning_fractions=[0, 0.5, 0.9]))
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ..evaluation import model_device

__all__ = ["ImageBatch", "as_image_batch", "evaluate_accuracy"]

logger = logging.getLogger(__name__)


@dataclass
class ImageBatch:
    """Processed images and their class indices: ``pixel_values`` ``(n_images, 3, H, W)`` (normalised as the model
    expects) and ``labels`` ``(n_images,)`` (indices into the model's ``id2label``)."""

    pixel_values: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        if not isinstance(self.pixel_values, torch.Tensor) or self.pixel_values.ndim != 4:
            shape = tuple(self.pixel_values.shape) if isinstance(self.pixel_values, torch.Tensor) else None
            raise ValueError(
                f"pixel_values must be a (n_images, channels, height, width) tensor, got {shape or type(self.pixel_values)}."
            )
        labels = torch.as_tensor(self.labels)
        if labels.ndim != 1 or labels.shape[0] != self.pixel_values.shape[0]:
            raise ValueError(
                f"labels must hold one class index per image: {tuple(labels.shape)} for "
                f"{self.pixel_values.shape[0]} images."
            )
        if labels.dtype.is_floating_point:
            raise TypeError(f"labels must be integer class indices, got {labels.dtype}.")
        self.labels = labels.long()
        if self.pixel_values.shape[0] == 0:
            raise ValueError("No images were given: pass at least one image.")

    def __len__(self) -> int:
        return self.pixel_values.shape[0]


def as_image_batch(images) -> ImageBatch:
    """An :class:`ImageBatch` from an ``ImageBatch``, a ``(pixel_values, labels)`` pair, a mapping with
    ``pixel_values`` and ``labels`` (a collated batch), or a sequence of such rows (a processed dataset whose rows
    are ``{"pixel_values": (3, H, W), "labels": int}``, e.g. :func:`hf_topo.vision.data.with_image_transforms`'s)."""
    if isinstance(images, ImageBatch):
        return images
    if isinstance(images, tuple) and len(images) == 2:
        return ImageBatch(images[0], torch.as_tensor(images[1]))
    if isinstance(images, Mapping) and "pixel_values" in images and "labels" in images:
        return ImageBatch(images["pixel_values"], torch.as_tensor(images["labels"]))
    if isinstance(images, Sequence) or (hasattr(images, "__getitem__") and hasattr(images, "__len__")):
        rows = [images[i] for i in range(len(images))]
        if rows and all(isinstance(r, Mapping) and "pixel_values" in r and "labels" in r for r in rows):
            pixel_values = torch.stack([torch.as_tensor(r["pixel_values"]) for r in rows])
            return ImageBatch(pixel_values, torch.tensor([int(r["labels"]) for r in rows]))
    raise TypeError(
        f"images={type(images).__name__}: pass an ImageBatch(pixel_values, labels), a (pixel_values, labels) pair, a "
        "dict with both, or a processed dataset whose rows hold 'pixel_values' and 'labels'."
    )


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, images: ImageBatch, batch_size: int = 64, progress: bool = False) -> float:
    """Top-1 accuracy of ``model`` (called as ``model(pixel_values=...)``, in eval mode; its mode is restored) on
    ``images``: the share of images whose largest logit is their label. Ties go to the lowest class index."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be a positive number of images per forward pass.")
    device = model_device(model)
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for start in tqdm(range(0, len(images), batch_size), desc="Accuracy", disable=not progress):
            pixel_values = images.pixel_values[start : start + batch_size].to(device)
            logits = model(pixel_values=pixel_values).logits
            correct += (logits.argmax(dim=-1).cpu() == images.labels[start : start + batch_size]).sum().item()
    finally:
        model.train(was_training)
    return correct / len(images)
