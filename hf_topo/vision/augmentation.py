"""The standard ImageNet augmentation, written with PIL and torch (no torchvision).

=================  ===========================================================================================
split              transform (``size`` = ``--image_size``)
=================  ===========================================================================================
training           random resized crop: a box of ``scale ∈ [0.08, 1]`` of the image's area and aspect ratio
                   ``∈ [3/4, 4/3]`` (log-uniform), 10 tries, else the largest central box within the ratio bounds;
                   resized (bilinear) to ``size × size``; flipped left-right with probability 1/2
evaluation         the shorter side resized (bilinear) to ``int(size / 0.875)`` (224 → 256), then the central
                   ``size × size`` crop
both               converted to RGB first (grayscale, palette, RGBA, CMYK: alpha dropped), then to floats in
                   ``[0, 1]``, normalized with the image processor's ``image_mean`` / ``image_std``
=================  ===========================================================================================

The crop box and the flip follow torchvision's ``RandomResizedCrop`` and ``RandomHorizontalFlip`` (the same draws
in the same order). In training each image's draws come from a generator keyed by ``(seed, epoch, image index)``,
so a run resumed from a checkpoint crops and flips exactly as the uninterrupted run did (torch's global generator
would not do: accelerate reads a batch ahead, and the Trainer restores that generator only after the resumed run's
first batch is read). Images smaller than ``size`` are scaled up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

__all__ = [
    "EVAL_CROP_FRACTION",
    "random_resized_crop_box",
    "center_crop_box",
    "to_rgb",
    "to_normalized_tensor",
    "TrainTransform",
    "EvalTransform",
]

#: The central crop's share of the resized shorter side at evaluation (torchvision's 224 of 256).
EVAL_CROP_FRACTION = 0.875


def random_resized_crop_box(
    width: int,
    height: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
    generator: torch.Generator | None = None,
) -> tuple[int, int, int, int]:
    """A random crop box ``(top, left, box_height, box_width)`` of a ``width × height`` image, as torchvision's
    ``RandomResizedCrop.get_params`` draws it (from ``generator``; default torch's global generator).

    Each try draws an area fraction uniformly in ``scale`` and an aspect ratio (width / height) log-uniformly in
    ``ratio``; the first box that fits is placed uniformly at random. After ``attempts`` misses, the largest central
    box whose aspect ratio is clamped into ``ratio`` is returned.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator).item())
        box_width = int(round(math.sqrt(target_area * aspect)))
        box_height = int(round(math.sqrt(target_area / aspect)))
        if 0 < box_width <= width and 0 < box_height <= height:
            top = torch.randint(0, height - box_height + 1, size=(1,), generator=generator).item()
            left = torch.randint(0, width - box_width + 1, size=(1,), generator=generator).item()
            return top, left, box_height, box_width
    in_ratio = width / height
    if in_ratio < min(ratio):
        box_width, box_height = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        box_height, box_width = height, int(round(height * max(ratio)))
    else:
        box_width, box_height = width, height
    return (height - box_height) // 2, (width - box_width) // 2, box_height, box_width


def center_crop_box(width: int, height: int, size: int) -> tuple[int, int]:
    """``(top, left)`` of the central ``size × size`` crop (torchvision's rounding)."""
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` in RGB: grayscale, palette, RGBA/LA (alpha dropped), CMYK and 16-bit images are converted."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float grayscale: rescale, do not clip
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low) * 255 if high > low else np.zeros_like(values)
        image = Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    return image.convert("RGB")


def to_normalized_tensor(image: Image.Image, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """An RGB ``image`` as a ``(3, height, width)`` float tensor: ``(pixel / 255 − mean) / std`` per channel."""
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1) / 255.0  # (3, H, W)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return (pixels - mean_t) / std_t


class TrainTransform:
    """Random resized crop to ``size × size``, random left-right flip, normalization (see the module docstring).

    Args:
        size: output side in pixels.
        mean, std: per-channel normalization (the image processor's ``image_mean`` / ``image_std``).
        scale: range of the crop's area fraction; default torchvision's ``(0.08, 1.0)``.
        ratio: range of the crop's aspect ratio (width / height); default ``(3/4, 4/3)``.
        flip_probability: probability of a left-right flip; default 0.5.
        seed: with ``index`` given to :meth:`__call__`, each image's draws come from a generator seeded by
            ``(seed, epoch, index)``; ``None`` (or no index): torch's global generator.

    Keyed draws depend on nothing else (not on which images were transformed before, the order in which a
    ``DataLoader`` or its workers fetch them, or how far ahead accelerate prefetches), so a run resumed from a
    checkpoint crops and flips every image exactly as the uninterrupted run did. :attr:`epoch` is set at the start of
    each epoch (:class:`hf_topo.vision.training.AugmentationEpochCallback`), so an image is cropped anew every epoch.
    """

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        flip_probability: float = 0.5,
        seed: int | None = None,
    ):
        self.size, self.mean, self.std = size, list(mean), list(std)
        self.scale, self.ratio, self.flip_probability = scale, ratio, flip_probability
        self.seed = seed
        self.epoch = 0

    def generator_for(self, index: int | None) -> torch.Generator | None:
        """The generator of image ``index`` in the current epoch (``None``: torch's global generator)."""
        if self.seed is None or index is None:
            return None
        key = ((self.seed * 1_000_003 + self.epoch) * 2_147_483_647 + index) % (1 << 63)
        return torch.Generator().manual_seed(key)

    def crop(self, image: Image.Image, generator: torch.Generator | None = None) -> Image.Image:
        """The random resized crop and flip of an RGB image, before normalization (draws from ``generator``)."""
        top, left, box_height, box_width = random_resized_crop_box(
            *image.size, self.scale, self.ratio, generator=generator
        )
        box = (left, top, left + box_width, top + box_height)
        image = image.resize((self.size, self.size), Image.BILINEAR, box=box)
        if torch.rand(1, generator=generator).item() < self.flip_probability:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        return image

    def __call__(self, image: Image.Image, index: int | None = None) -> torch.Tensor:
        return to_normalized_tensor(self.crop(to_rgb(image), self.generator_for(index)), self.mean, self.std)


class EvalTransform:
    """Shorter side resized to ``int(size / 0.875)``, central ``size × size`` crop, normalization."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float]):
        self.size, self.mean, self.std = size, list(mean), list(std)

    def crop(self, image: Image.Image) -> Image.Image:
        """The resized central crop of an RGB image, before normalization."""
        resize_to = int(self.size / EVAL_CROP_FRACTION)
        width, height = image.size
        if width <= height:
            new_size = (resize_to, int(resize_to * height / width))
        else:
            new_size = (int(resize_to * width / height), resize_to)
        image = image.resize(new_size, Image.BILINEAR)
        top, left = center_crop_box(*new_size, self.size)
        return image.crop((left, top, left + self.size, top + self.size))

    def __call__(self, image: Image.Image, index: int | None = None) -> torch.Tensor:
        return to_normalized_tensor(self.crop(to_rgb(image)), self.mean, self.std)
