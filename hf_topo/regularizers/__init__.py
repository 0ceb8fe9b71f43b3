"""The topographic regularizers: one pure function of a cortical sheet per regularizer, and the model-level bookkeeping.

==================================  ==============================================================================
module                              what it holds
==================================  ==============================================================================
``laplacian_pyramid``               TopoLoss (Deb, Deb & Murty): ``1 − mean_u cos(C_u, blur(C)_u)`` of one sheet
``similarity``                      Weight / Activation Similarity (Truong & Hasson): neighbour distances on a sheet
``bias_map``                        TopoLoss of a layer's bias on its output sheet (``topoloss``'s bias sheet)
``spatial_correlation``             TopoLM's spatial loss (Rathi et al.): activation correlations vs. inverse distance
``model``                           :class:`~hf_topo.regularizers.model.TopoRegularizer` (alias ``TopoLoss``): which
                                    layers of a model, which sheets, the per-layer values and their mean
==================================  ==============================================================================

The pure functions are re-exported here; the model-level class is imported from :mod:`hf_topo` or
:mod:`hf_topo.regularizers.model` (it needs :mod:`hf_topo.config`, which needs the constants of the math modules).
"""

from .bias_map import bias_map_loss
from .laplacian_pyramid import (
    INTERPOLATION_MODES,
    blur_matrices,
    blur_sheet,
    check_blur_arguments,
    laplacian_pyramid_loss,
    sheet_cosine_loss,
)
from .similarity import DISTANCES, neighbour_distance_loss, neighbour_offsets, neighbour_pair_count
from .spatial_correlation import (
    ACCUMULATIONS,
    neighbourhood_centres,
    sample_neighbourhoods,
    spatial_correlation_loss,
)

__all__ = [
    "ACCUMULATIONS",
    "DISTANCES",
    "INTERPOLATION_MODES",
    "bias_map_loss",
    "blur_matrices",
    "blur_sheet",
    "check_blur_arguments",
    "laplacian_pyramid_loss",
    "neighbour_distance_loss",
    "neighbour_offsets",
    "neighbour_pair_count",
    "neighbourhood_centres",
    "sample_neighbourhoods",
    "spatial_correlation_loss",
    "sheet_cosine_loss",
]
