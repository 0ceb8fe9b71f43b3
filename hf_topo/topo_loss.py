"""Deprecated module path: use :mod:`hf_topo.regularizers.model` (its public names are re-exported here)."""

import warnings

from .regularizers.model import *  # noqa: F403
from .regularizers.model import __all__  # noqa: F401

warnings.warn(
    "hf_topo.topo_loss moved to hf_topo.regularizers.model; import from there (or from hf_topo). "
    "The old path will be removed in a future release.",
    DeprecationWarning,
    stacklevel=2,
)
