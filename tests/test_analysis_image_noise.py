"""The input noises of the Truong & Hasson robustness tests against their definitions: Gaussian σ, pink noise's
1/f amplitude spectrum (slope by FFT) and RMS, salt-and-pepper's fraction of replaced pixels."""

import math

import numpy as np
import pytest
import torch

from hf_topo.analysis.image_noise import (
    NOISE_KINDS,
    add_image_noise,
    gaussian_noise,
    pink_noise,
    pink_noise_field,
    salt_and_pepper_noise,
)


def _generator(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize(("level", "pixel_range"), [(0.1, (0.0, 1.0)), (0.05, (0.0, 255.0))])
def test_gaussian_noise_has_sigma_level_times_the_pixel_range(level, pixel_range):
    low, high = pixel_range
    images = torch.full((64, 1, 32, 32), (low + high) / 2)  # mid-grey: clipping 5σ away never happens
    noise = (gaussian_noise(images, level, _generator(), pixel_range) - images).double()
    assert float(noise.std()) == pytest.approx(level * (high - low), rel=0.02)
    assert abs(float(noise.mean())) < 0.01 * level * (high - low)


def test_gaussian_noise_is_clipped_to_the_pixel_range():
    images = torch.zeros(8, 1, 8, 8)
    noisy = gaussian_noise(images, 0.2, _generator())
    assert float(noisy.min()) == 0.0 and float(noisy.max()) <= 1.0 and float(noisy.max()) > 0.3


def _radial_amplitude(fields: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    height, width = fields.shape[-2:]
    amplitude = np.abs(np.fft.fft2(fields)).mean(axis=0)
    fy, fx = np.meshgrid(np.fft.fftfreq(height), np.fft.fftfreq(width), indexing="ij")
    frequency = np.hypot(fx, fy)
    keep = frequency > 0
    return frequency[keep], amplitude[keep]


def test_pink_noise_amplitude_spectrum_falls_as_one_over_f():
    fields = pink_noise_field((200, 64, 64), _generator(1)).double().numpy()
    frequency, amplitude = _radial_amplitude(fields)
    slope, _ = np.polyfit(np.log(frequency), np.log(amplitude), 1)
    assert slope == pytest.approx(-1.0, abs=0.03)
    white = torch.randn(200, 64, 64, generator=_generator(2)).double().numpy()
    white_slope, _ = np.polyfit(*(np.log(v) for v in _radial_amplitude(white)), 1)
    assert white_slope == pytest.approx(0.0, abs=0.03)  # the check can tell pink from white


def test_pink_noise_fields_have_zero_mean_and_unit_rms_each():
    fields = pink_noise_field((10, 3, 8, 8), _generator()).double()
    np.testing.assert_allclose(fields.mean(dim=(-2, -1)).numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(fields.pow(2).mean(dim=(-2, -1)).sqrt().numpy(), 1.0, rtol=1e-5)


def test_pink_noise_has_the_rms_of_gaussian_noise_of_the_same_level():
    images = torch.full((16, 1, 8, 8), 0.5)
    noise = (pink_noise(images, 0.05, _generator()) - images).double()
    np.testing.assert_allclose(noise.pow(2).mean(dim=(-2, -1)).sqrt().numpy(), 0.05, rtol=1e-4)


@pytest.mark.parametrize("level", [0.01, 0.1, 0.2])
def test_salt_and_pepper_replaces_a_fraction_level_of_the_pixels(level):
    images = torch.full((400, 3, 16, 16), 0.5)  # never 0 or 1: every replaced pixel changes
    noisy = salt_and_pepper_noise(images, level, _generator())
    changed = noisy != 0.5
    assert bool((changed == changed[:, :1]).all())  # a pixel's channels are replaced together
    n_pixels = 400 * 16 * 16
    fraction = float(changed[:, 0].double().mean())
    assert abs(fraction - level) < 4 * math.sqrt(level * (1 - level) / n_pixels)
    values = noisy[changed]
    assert set(values.unique().tolist()) <= {0.0, 1.0}
    assert float((values == 1.0).double().mean()) == pytest.approx(0.5, abs=0.05)


def test_the_same_seed_gives_the_same_noise_and_level_zero_none():
    images = torch.rand(4, 1, 8, 8, generator=_generator(5))
    for kind in NOISE_KINDS:
        first = add_image_noise(images, kind, 0.1, _generator(3))
        assert torch.equal(first, add_image_noise(images, kind, 0.1, _generator(3)))
        assert not torch.equal(first, add_image_noise(images, kind, 0.1, _generator(4)))
        assert torch.equal(add_image_noise(images, kind, 0.0, _generator(3)), images)


def test_bad_kinds_and_levels_are_refused():
    images = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="Unknown noise kind 'speckle'"):
        add_image_noise(images, "speckle", 0.1, _generator())
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        add_image_noise(images, "gaussian", 1.5, _generator())
    with pytest.raises(ValueError, match="high > low"):
        add_image_noise(images, "pink", 0.1, _generator(), pixel_range=(1.0, 0.0))
