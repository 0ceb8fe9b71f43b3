"""TopoLoss of a layer's bias laid out on its output sheet (the reference ``topoloss``'s ``LaplacianPyramidOnBias``).

The bias ``b`` of a layer with ``h·w`` output units is a map ``B ∈ R^{h×w}`` on the same sheet as the units (unit
``u`` at ``(u // w, u % w)``). Its loss is ``1 − cos(B, blur(B))``, one cosine over the whole map (flattened), with
the blur of :func:`hf_topo.regularizers.laplacian_pyramid.blur_sheet`. A smooth bias map scores near 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .laplacian_pyramid import blur_sheet

__all__ = ["bias_map_loss"]


def bias_map_loss(
    bias_map: torch.Tensor, *, factor_h: float = 3.0, factor_w: float = 3.0, interpolation: str = "bilinear"
) -> torch.Tensor:
    """``1 − cos(B, blur(B))`` of a ``(height, width)`` bias map, in float32.

    Same value as ``topoloss.losses.laplacian_pyramid.laplacian_pyramid_loss_on_bias`` (whose factors are
    positional and ordered ``(factor_w, factor_h)``; here they are keyword-only).
    """
    if bias_map.ndim != 2:
        raise ValueError(f"Expected a (height, width) bias map, got a tensor of shape {tuple(bias_map.shape)}.")
    with torch.autocast(bias_map.device.type, enabled=False):
        blurred = blur_sheet(bias_map[..., None], factor_h=factor_h, factor_w=factor_w, interpolation=interpolation)
        return 1.0 - F.cosine_similarity(blurred.flatten(), bias_map.float().flatten(), dim=0)
