"""hf_topo.vision.augmentation: torchvision's crop/flip semantics, the evaluation crop and normalization, exactly."""

import numpy as np
import pytest
import torch
from PIL import Image

from hf_topo.vision.augmentation import (
    EvalTransform,
    TrainTransform,
    center_crop_box,
    random_resized_crop_box,
    to_normalized_tensor,
    to_rgb,
)


def _random_image(width, height, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    return Image.fromarray((rng.random(shape) * 255).astype(np.uint8), mode=mode)


def test_random_resized_crop_boxes_respect_scale_and_ratio_bounds():
    torch.manual_seed(0)
    width, height = 120, 90
    areas, ratios = [], []
    for _ in range(2000):
        top, left, h, w = random_resized_crop_box(width, height)
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
        areas.append(h * w / (width * height))
        ratios.append(w / h)
    # rounding of the sides moves the area and ratio a little beyond the drawn values (at most ~1 pixel per side)
    assert min(areas) >= 0.08 * (1 - 0.2) and max(areas) <= 1.0
    assert min(ratios) >= 3 / 4 * (1 - 0.1) and max(ratios) <= 4 / 3 * (1 + 0.1)
    # the draws cover the ranges: small and near-full crops, both orientations
    assert min(areas) < 0.12 and max(areas) > 0.9
    assert min(ratios) < 0.8 and max(ratios) > 1.25
    # On a square image every draw of area <= 0.75 fits (any ratio in [3/4, 4/3]), so the areas below 0.75 are
    # uniform: half of them below 0.415; the log-ratio is uniform, so its median is ~0 (ratio 1).
    torch.manual_seed(1)
    boxes = [random_resized_crop_box(300, 300) for _ in range(3000)]
    small = np.array([h * w / 300**2 for _, _, h, w in boxes if h * w / 300**2 <= 0.75])
    assert abs(np.mean(small < (0.08 + 0.75) / 2) - 0.5) < 0.05
    assert abs(float(np.median([np.log(w / h) for _, _, h, w in boxes]))) < 0.03


def test_random_resized_crop_falls_back_to_the_central_box_within_the_ratio_bounds():
    torch.manual_seed(0)
    # a 1000 x 10 strip: no box of >= 99 % of its area has a ratio within [3/4, 4/3], so every try misses
    assert random_resized_crop_box(1000, 10, scale=(0.99, 1.0)) == (0, (1000 - 13) // 2, 10, 13)
    assert random_resized_crop_box(10, 1000, scale=(0.99, 1.0)) == ((1000 - 13) // 2, 0, 13, 10)
    # an image already within the ratio bounds: the whole image
    assert random_resized_crop_box(40, 36, scale=(2.0, 3.0)) == (0, 0, 36, 40)


def test_full_crop_and_flip_are_exactly_resize_and_mirror():
    image = _random_image(24, 18)
    full = dict(scale=(1.0, 1.0), ratio=(24 / 18, 24 / 18))  # the only box: the whole image
    resized = np.asarray(image.resize((12, 12), Image.BILINEAR))
    never = TrainTransform(12, [0, 0, 0], [1, 1, 1], flip_probability=0.0, **full)
    always = TrainTransform(12, [0, 0, 0], [1, 1, 1], flip_probability=1.0, **full)
    np.testing.assert_array_equal(np.asarray(never.crop(image)), resized)
    np.testing.assert_array_equal(np.asarray(always.crop(image)), resized[:, ::-1])
    torch.manual_seed(1)
    half = TrainTransform(12, [0, 0, 0], [1, 1, 1], **full)
    flipped = [np.array_equal(np.asarray(half.crop(image)), resized[:, ::-1]) for _ in range(400)]
    assert 0.4 < np.mean(flipped) < 0.6


def test_eval_transform_is_shorter_side_resize_then_centre_crop():
    # size 14: the shorter side goes to int(14 / 0.875) = 16; a 32 x 16 image is already there (no resampling),
    # so the output is its central 14 x 14 crop: rows 1..14, columns 9..22 (torchvision's rounding)
    image = _random_image(32, 16, seed=3)
    crop = EvalTransform(14, [0, 0, 0], [1, 1, 1]).crop(image)
    np.testing.assert_array_equal(np.asarray(crop), np.asarray(image)[1:15, 9:23])
    assert center_crop_box(32, 16, 14) == (1, 9)
    # a portrait image: the width is the shorter side
    tall = _random_image(16, 40, seed=4)
    np.testing.assert_array_equal(
        np.asarray(EvalTransform(14, [0] * 3, [1] * 3).crop(tall)), np.asarray(tall)[13:27, 1:15]
    )


def test_normalization_uses_the_given_mean_and_std():
    image = Image.fromarray(np.array([[[255, 0, 51]]], dtype=np.uint8))
    tensor = to_normalized_tensor(image, mean=[0.5, 0.25, 0.1], std=[0.5, 0.25, 0.2])
    assert tensor.shape == (3, 1, 1)
    torch.testing.assert_close(tensor.flatten(), torch.tensor([1.0, -1.0, (0.2 - 0.1) / 0.2]))


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK", "I;16", "1"])
def test_every_mode_becomes_rgb_and_a_full_size_tensor(mode):
    base = _random_image(6, 5)  # smaller than the model input: scaled up
    image = (
        base.convert(mode)
        if mode != "I;16"
        else Image.fromarray((np.arange(30).reshape(5, 6) * 2000).astype(np.uint16))
    )
    assert to_rgb(image).mode == "RGB"
    for transform in (TrainTransform(16, [0.5] * 3, [0.5] * 3), EvalTransform(16, [0.5] * 3, [0.5] * 3)):
        tensor = transform(image)
        assert tensor.shape == (3, 16, 16) and torch.isfinite(tensor).all()
    if mode == "RGBA":  # alpha dropped, colours kept
        np.testing.assert_array_equal(np.asarray(to_rgb(image)), np.asarray(base))
    if mode == "I;16":  # 16-bit rescaled to the full 8-bit range, not clipped at 255
        values = np.asarray(to_rgb(image))[..., 0]
        assert values.min() == 0 and values.max() == 255 and len(np.unique(values)) == 30


def test_keyed_draws_depend_only_on_seed_epoch_and_index():
    image = _random_image(30, 20)
    transform = TrainTransform(8, [0, 0, 0], [1, 1, 1], seed=5)
    torch.manual_seed(0)
    first = [transform(image, index) for index in range(6)]
    torch.manual_seed(99)  # neither the global generator nor the order of the calls matters
    for index in reversed(range(6)):
        torch.testing.assert_close(transform(image, index), first[index], rtol=0, atol=0)
    assert len({tuple(t.flatten().tolist()) for t in first}) == 6  # different images are cropped differently
    transform.epoch = 1  # a new epoch crops anew
    assert not any(torch.equal(transform(image, i), first[i]) for i in range(6))
    other_seed = TrainTransform(8, [0, 0, 0], [1, 1, 1], seed=6)
    assert not any(torch.equal(other_seed(image, i), first[i]) for i in range(6))
