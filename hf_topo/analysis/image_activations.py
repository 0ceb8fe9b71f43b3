"""The units of an image model's topographic layers: one response per image and unit.

The sheet of a convolution (``nn.Conv2d``, weight ``(out, in, kh, kw)``) has one unit per **output channel**; the
channel's output is a ``(height, width)`` feature map per image. A unit's response to an image is that map
**averaged over space**: the paper's vision analyses compare units by their responses across images (selectivity
for a category, eq. 2; correlation across images for smoothness, A.6; the images' covariance for effective
dimensionality, §2.3), so a unit needs one number per image, and the spatial mean is the summary that does not
depend on where in the image the feature lies (Margalit et al.'s TDANN and the TopoNets code read responses the
same way, after global pooling). The sheet of a Linear layer inside a vision transformer (``mlp.fc1``/``mlp.fc2``)
has one unit per output feature, one value per token: its response is the mean over the image's tokens (the
patches and the class token).

    from hf_topo.analysis import topographic_layers
    from hf_topo.analysis.image_activations import collect_image_activations

    layers = topographic_layers(model)          # a TopoNet-ResNet: its residual-block convolutions
    responses = collect_image_activations(model, pixel_values, layers)   # {name: (n_images, n_units)}
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..evaluation import model_device
from ..targets import TopoLayer
from .activations import capture_units

__all__ = ["collect_image_activations", "image_unit_responses"]


def image_unit_responses(output: torch.Tensor, name: str = "layer") -> torch.Tensor:
    """``(batch, n_units)``: one response per image and unit of a layer's ``output``.

    ``(batch, channels, height, width)`` (a convolution): the mean over space; ``(batch, tokens, features)`` (a
    vision transformer's Linear): the mean over tokens; ``(batch, units)``: as it is. Anything else is an error.
    """
    if output.ndim == 4:
        return output.mean(dim=(2, 3))
    if output.ndim == 3:
        return output.mean(dim=1)
    if output.ndim == 2:
        return output
    raise ValueError(
        f"Layer {name!r} output {tuple(output.shape)}; an image analysis expects (batch, channels, height, width), "
        "(batch, tokens, features) or (batch, units)."
    )


def _batches(images, batch_size: int) -> Iterable[torch.Tensor]:
    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(
                f"pixel_values must be (n_images, channels, height, width), got {tuple(images.shape)}; "
                "stack the processed images first."
            )
        for start in range(0, images.shape[0], batch_size):
            yield images[start : start + batch_size]
        return
    for batch in images:
        yield batch["pixel_values"] if isinstance(batch, dict) else batch


def collect_image_activations(
    model: nn.Module,
    images: torch.Tensor | Iterable,
    layers: Sequence[TopoLayer],
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Responses of the units of each layer to each image: ``{layer name: (n_images, n_units)}`` float32, CPU.

    Args:
        model: an image model called as ``model(pixel_values=...)`` (run in eval mode, without gradients; its
            training mode is restored).
        images: ``pixel_values`` ``(n_images, 3, H, W)`` already normalized as the model expects, or an iterable
            of such batches (or of dicts with ``pixel_values``, e.g. a DataLoader over a processed dataset).
        layers: from :func:`~hf_topo.analysis.topographic_layers`.
        batch_size: images per forward pass when ``images`` is a tensor.

    Units are in sheet order (unit ``u`` at row ``u // width``, column ``u % width``); see the module docstring for
    how a unit's output is reduced to one response per image.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be a positive number of images per forward pass.")
    device = model_device(model)
    collected: dict[str, list[torch.Tensor]] = {layer.name: [] for layer in layers}
    total = images.shape[0] if isinstance(images, torch.Tensor) else None
    bar = tqdm(total=total, desc="Collecting image responses", unit="image", disable=not progress)
    try:
        with capture_units(model, layers) as captured:
            for pixel_values in _batches(images, batch_size):
                captured.clear()
                model(pixel_values=pixel_values.to(device))
                for name in collected:
                    if name not in captured:
                        raise ValueError(f"Layer {name!r} produced no output in the forward pass (is it used?).")
                    collected[name].append(image_unit_responses(captured[name], name).float().cpu())
                bar.update(pixel_values.shape[0])
    finally:
        bar.close()
    if not any(collected.values()):
        raise ValueError("No images were given: pass pixel_values (n_images, 3, H, W) with at least one image.")
    return {name: torch.cat(parts) for name, parts in collected.items()}
