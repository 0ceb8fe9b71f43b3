"""Deprecated module path: use :mod:`hf_topo.regularizers.laplacian_pyramid` (its public names are re-exported here)."""

import warnings

from .regularizers.laplacian_pyramid import *  # noqa: F403
from .regularizers.laplacian_pyramid import __all__  # noqa: F401

warnings.warn(
    "hf_topo.losses moved to hf_topo.regularizers.laplacian_pyramid; import from there (or from hf_topo). "
    "The old path will be removed in a future release.",
    DeprecationWarning,
    stacklevel=2,
)
