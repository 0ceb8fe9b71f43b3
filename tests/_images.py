"""Synthetic image folders for the vision tests, written with PIL: one subfolder per class."""

from pathlib import Path

import numpy as np
from PIL import Image


def write_image_folder(
    root: Path, classes: int = 3, per_class: int = 6, size: tuple[int, int] = (20, 16), seed: int = 0
) -> Path:
    """``root/c<k>/<i>.png`` RGB images whose colour says the class (class k: a bright channel k % 3 and a stripe
    at row k), so that a tiny model can learn them. ``size`` is (width, height)."""
    rng = np.random.default_rng(seed)
    width, height = size
    for k in range(classes):
        folder = root / f"c{k}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = (rng.random((height, width, 3)) * 60).astype(np.uint8)
            pixels[..., k % 3] += 150
            pixels[(2 * k) % height, :, :] = 255
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root
