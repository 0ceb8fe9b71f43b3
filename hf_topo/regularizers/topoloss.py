"""TopoLoss as a registered regularizer (``loss="laplacian_pyramid"``): one layer's weight sheet, and its bias map.

The math is in :mod:`~hf_topo.regularizers.laplacian_pyramid` (the blur-and-cosine loss of a sheet) and
:mod:`~hf_topo.regularizers.bias_map` (the same on a layer's bias laid out on its output sheet); this module is the
registration that ties them to a layer: ``1 − mean_u cos(C_u, blur(C)_u)`` of the layer's weight sheet, and with
``include_bias`` the mean of that and its bias map's value (the reference ``topoloss``'s ``LaplacianPyramid`` and
``LaplacianPyramidOnBias`` of the layer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .bias_map import bias_map_loss
from .laplacian_pyramid import check_blur_arguments, sheet_cosine_loss
from .registry import RegularizerSpec, WeightSheet, register_regularizer

if TYPE_CHECKING:
    from torch import nn

    from ..config import TopoConfig
    from ..sheet import CorticalSheet

__all__ = ["topoloss_of_layer"]


def topoloss_of_layer(weights: WeightSheet, config: TopoConfig) -> torch.Tensor:
    """TopoLoss of one layer's weight sheet with the config's blur (and the mean with its bias map's, when given)."""
    blur = {"factor_h": config.factor_h, "factor_w": config.factor_w, "interpolation": config.interpolation}
    value = sheet_cosine_loss(weights.tensor, weights.units_first, **blur)
    if weights.bias_map is None:
        return value
    return (value + bias_map_loss(weights.bias_map, **blur)) / 2


def _check_blur_fits(sheet: CorticalSheet, _module: nn.Module, config: TopoConfig) -> None:
    check_blur_arguments(sheet.height, sheet.width, config.factor_h, config.factor_w, config.interpolation)


register_regularizer(
    RegularizerSpec(
        name="laplacian_pyramid",
        display_name="TopoLoss",
        reads="weights",
        layer_loss=topoloss_of_layer,
        settings=("factor_h", "factor_w", "interpolation"),
        bias_map=True,
        check_layer=_check_blur_fits,
        formula="1 − mean cos",
        description="TopoLoss (Deb, Deb & Murty): 1 - mean cosine of each unit's weights with their blur.",
    )
)
