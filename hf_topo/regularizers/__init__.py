"""The topographic regularizers: one pure function of a cortical sheet per regularizer, and their registry.

==================================  ==============================================================================
module                              what it holds
==================================  ==============================================================================
``laplacian_pyramid``               TopoLoss (Deb, Deb & Murty): ``1 − mean_u cos(C_u, blur(C)_u)`` of one sheet
``similarity``                      Weight / Activation Similarity (Truong & Hasson): neighbour distances on a sheet
``bias_map``                        TopoLoss of a layer's bias on its output sheet (``topoloss``'s bias sheet)
``topoloss``                        TopoLoss registered as ``laplacian_pyramid``: a layer's weight sheet and bias map
``spatial_correlation``             TopoLM's spatial loss (Rathi et al.): activation correlations vs. inverse distance
``registry``                        :class:`~hf_topo.regularizers.registry.RegularizerSpec` of each regularizer,
                                    :func:`register_regularizer` / :func:`get_regularizer`
``grouped``                         TopoLoss of all sheets of one geometry in one autograd node
``native``                          the CPU kernels of ``grouped`` (``csrc/``), built on first use, optional
==================================  ==============================================================================

Each regularizer registers itself in its module (name, display name, weights or activations, settings, the layer
function): the four built-ins are ``laplacian_pyramid`` (TopoLoss, in ``topoloss``), ``weight_similarity``,
``activation_similarity`` and ``spatial_correlation``, registered in that order by the imports below (which is why
they are not sorted). Register another with :func:`register_regularizer`.

The pure functions are re-exported here. The bookkeeping over a model's layers (which layers, which sheets, the
per-layer values and their mean) is :class:`~hf_topo.topo_regularizer.TopoRegularizer`, outside this package: it
needs :mod:`hf_topo.config` and :mod:`hf_topo.targets`, which need the registry, so keeping it here would make the
packages import each other.
"""

# isort: off
# The registration order is the registry's order (TopoLoss, WS, AS, TopoLM): topoloss, similarity, spatial_correlation.
from .topoloss import topoloss_of_layer
from .similarity import DISTANCES, neighbour_distance_loss, neighbour_offsets, neighbour_pair_count
from .spatial_correlation import (
    ACCUMULATIONS,
    neighbourhood_centres,
    sample_neighbourhoods,
    spatial_correlation_loss,
)

# isort: on
from .bias_map import bias_map_loss
from .laplacian_pyramid import (
    INTERPOLATION_MODES,
    blur_matrices,
    blur_sheet,
    check_blur_arguments,
    laplacian_pyramid_loss,
    sheet_cosine_loss,
)
from .registry import (
    ActivationSheet,
    RegularizerSpec,
    WeightSheet,
    get_regularizer,
    register_regularizer,
    registered_regularizers,
    unregister_regularizer,
)

__all__ = [
    "ACCUMULATIONS",
    "ActivationSheet",
    "RegularizerSpec",
    "WeightSheet",
    "get_regularizer",
    "register_regularizer",
    "registered_regularizers",
    "unregister_regularizer",
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
    "topoloss_of_layer",
]
