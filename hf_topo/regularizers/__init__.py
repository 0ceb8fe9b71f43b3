"""The topographic regularizers: one pure function of a cortical sheet per regularizer, and the model-level bookkeeping.

==================================  ==============================================================================
module                              what it holds
==================================  ==============================================================================
``laplacian_pyramid``               TopoLoss (Deb, Deb & Murty): ``1 − mean_u cos(C_u, blur(C)_u)`` of one sheet
``similarity``                      Weight / Activation Similarity (Truong & Hasson): neighbour distances on a sheet
``model``                           :class:`~hf_topo.regularizers.model.TopoRegularizer` (alias ``TopoLoss``): which
                                    layers of a model, which sheets, the per-layer values and their mean
==================================  ==============================================================================

The pure functions are re-exported here; the model-level class is imported from :mod:`hf_topo` or
:mod:`hf_topo.regularizers.model` (it needs :mod:`hf_topo.config`, which needs the constants of the math modules).
"""

from .laplacian_pyramid import (
    INTERPOLATION_MODES,
    blur_matrices,
    blur_sheet,
    check_blur_arguments,
    laplacian_pyramid_loss,
    sheet_cosine_loss,
)
from .similarity import DISTANCES, neighbour_distance_loss, neighbour_offsets, neighbour_pair_count

__all__ = [
    "DISTANCES",
    "INTERPOLATION_MODES",
    "blur_matrices",
    "blur_sheet",
    "check_blur_arguments",
    "laplacian_pyramid_loss",
    "neighbour_distance_loss",
    "neighbour_offsets",
    "neighbour_pair_count",
    "sheet_cosine_loss",
]
