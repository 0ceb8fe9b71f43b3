"""Deprecated module path: use :mod:`hf_topo.regularizers.similarity` (its public names are re-exported here)."""

import warnings

from .regularizers.similarity import *  # noqa: F403
from .regularizers.similarity import __all__  # noqa: F401

warnings.warn(
    "hf_topo.similarity moved to hf_topo.regularizers.similarity; import from there (or from hf_topo). "
    "The old path will be removed in a future release.",
    DeprecationWarning,
    stacklevel=2,
)
