"""Input noise for image-robustness tests: Gaussian, pink (1/f) and salt-and-pepper, at a level in ``[0, 1]``.

Truong & Hasson test robustness with these three noise types at levels 0.01–0.2, reported as accuracy minus clean
accuracy. Their exact scaling is not restated in the paper's abstract, so the levels are defined here, each relative
to the images' pixel range ``[low, high]`` (default ``[0, 1]``) so that one level means the same on any data set:

=====================  ==========================================================================================
kind                   ``level`` means
=====================  ==========================================================================================
``"gaussian"``         i.i.d. ``N(0, σ²)`` added to every pixel, ``σ = level · (high − low)``
``"pink"``             a 1/f noise field added to each image channel: white Gaussian noise filtered in the 2-D
                       Fourier domain by ``1 / f`` (``f = √(fx² + fy²)`` in cycles per pixel, the zero frequency
                       removed), so its amplitude spectrum falls as ``1/f``; then scaled to a root-mean-square of
                       ``level · (high − low)`` per image channel, the same RMS as Gaussian noise of that level
``"salt_and_pepper"``  each pixel (all channels together) independently replaced with probability ``level``: by
                       ``low`` or ``high`` with equal probability (the expected fraction of replaced pixels is
                       ``level``; a replaced pixel may keep its value when it already was ``low`` or ``high``)
=====================  ==========================================================================================

Gaussian and pink noisy images are clipped to ``[low, high]`` (they stay valid images). Every draw comes from the
``torch.Generator`` passed in (on the CPU), so a seeded generator gives the same noisy images on every machine.
"""

from __future__ import annotations

import torch

__all__ = [
    "NOISE_KINDS",
    "add_image_noise",
    "gaussian_noise",
    "pink_noise",
    "pink_noise_field",
    "salt_and_pepper_noise",
]

#: The input noise types of Truong & Hasson's robustness tests.
NOISE_KINDS = ("gaussian", "pink", "salt_and_pepper")


def _check(images: torch.Tensor, level: float, pixel_range: tuple[float, float]) -> tuple[float, float]:
    if images.ndim < 2:
        raise ValueError(f"Expected images of shape (..., height, width), got {tuple(images.shape)}.")
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"Noise level {level!r} must lie in [0, 1] (a fraction of the pixel range or of the pixels).")
    low, high = float(pixel_range[0]), float(pixel_range[1])
    if not high > low:
        raise ValueError(f"pixel_range={pixel_range!r} must be (low, high) with high > low, e.g. (0.0, 1.0).")
    return low, high


def gaussian_noise(
    images: torch.Tensor, level: float, generator: torch.Generator, pixel_range: tuple[float, float] = (0.0, 1.0)
) -> torch.Tensor:
    """``clip(images + level · (high − low) · ε, low, high)``, ``ε ~ N(0, 1)`` i.i.d. per pixel (a new tensor)."""
    low, high = _check(images, level, pixel_range)
    noise = torch.randn(images.shape, generator=generator, dtype=torch.float32).to(images.device, images.dtype)
    return (images + level * (high - low) * noise).clamp(low, high)


def pink_noise_field(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Pink (1/f) noise of ``shape`` ``(..., height, width)``, float32 on the CPU: each ``(height, width)`` field has
    mean 0, root-mean-square 1 and an amplitude spectrum proportional to ``1/f`` (zero frequency removed)."""
    if len(shape) < 2 or min(shape[-2:]) < 2:
        raise ValueError(f"A pink noise field needs (..., height, width) with height, width >= 2, got {shape}.")
    height, width = shape[-2:]
    white = torch.randn(shape, generator=generator, dtype=torch.float64)
    fy = torch.fft.fftfreq(height, dtype=torch.float64).view(-1, 1)
    fx = torch.fft.fftfreq(width, dtype=torch.float64).view(1, -1)
    frequency = torch.sqrt(fx**2 + fy**2)  # cycles per pixel; symmetric in ±f, so the filtered field is real
    gain = torch.where(frequency > 0, 1.0 / frequency.clamp_min(1e-12), torch.zeros_like(frequency))
    field = torch.fft.ifft2(torch.fft.fft2(white) * gain).real  # (..., height, width)
    field = field - field.mean(dim=(-2, -1), keepdim=True)
    rms = field.pow(2).mean(dim=(-2, -1), keepdim=True).sqrt().clamp_min(1e-12)
    return (field / rms).float()


def pink_noise(
    images: torch.Tensor, level: float, generator: torch.Generator, pixel_range: tuple[float, float] = (0.0, 1.0)
) -> torch.Tensor:
    """``clip(images + level · (high − low) · pink, low, high)`` with a unit-RMS :func:`pink_noise_field` per image
    channel (a new tensor)."""
    low, high = _check(images, level, pixel_range)
    noise = pink_noise_field(tuple(images.shape), generator).to(images.device, images.dtype)
    return (images + level * (high - low) * noise).clamp(low, high)


def salt_and_pepper_noise(
    images: torch.Tensor, level: float, generator: torch.Generator, pixel_range: tuple[float, float] = (0.0, 1.0)
) -> torch.Tensor:
    """Each pixel replaced with probability ``level`` by ``low`` or ``high`` (even odds), all channels of a pixel
    alike: ``images`` ``(batch, channels, height, width)`` or ``(..., height, width)`` (a new tensor)."""
    low, high = _check(images, level, pixel_range)
    # (batch, 1, height, width): one draw per pixel position, shared by its channels
    mask_shape = (*images.shape[:-3], 1, *images.shape[-2:]) if images.ndim >= 4 else tuple(images.shape)
    replaced = torch.rand(mask_shape, generator=generator) < level
    salt = torch.rand(mask_shape, generator=generator) < 0.5
    value = torch.where(salt, torch.tensor(high), torch.tensor(low)).to(images.device, images.dtype)
    return torch.where(replaced.to(images.device), value, images)


_NOISES = {"gaussian": gaussian_noise, "pink": pink_noise, "salt_and_pepper": salt_and_pepper_noise}


def add_image_noise(
    images: torch.Tensor,
    kind: str,
    level: float,
    generator: torch.Generator,
    pixel_range: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """``images`` with noise of ``kind`` (one of :data:`NOISE_KINDS`) at ``level`` (see the module docstring)."""
    if kind not in _NOISES:
        raise ValueError(f"Unknown noise kind {kind!r}; choose one of {NOISE_KINDS}.")
    return _NOISES[kind](images, level, generator, pixel_range)
