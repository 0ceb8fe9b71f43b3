"""What a converted model carries about its origin: the topography record (sheets, τ) and ``config.conversion``."""

from __future__ import annotations

import logging
import math
import os
from typing import Any

from torch import nn

from ..config import TopoConfig
from ..topo_regularizer import TopoRegularizer, attach_inferred_topography
from .checkpoint import tau_from_filename

__all__ = ["CONVERSION_KEY", "attach_topography"]

logger = logging.getLogger(__name__)

#: Key of ``config.json`` that records where a converted model came from (family, source, file, settings).
CONVERSION_KEY = "conversion"


def attach_topography(
    model: nn.Module,
    target_modules: str | list[str],
    tau: float | None,
    checkpoint_path: str | os.PathLike,
    step: int | None = None,
) -> float | None:
    """Record ``model``'s sheets on ``target_modules`` and τ in its config (the ``topography`` metadata); returns τ.

    τ is ``tau`` when given (a file name that says another τ is logged as a warning), else the one in the file name
    (``tau_<τ>``); when neither says, the sheets are recorded as inferred (``inferred: true``, ``tau: 0``).
    """
    file_tau = tau_from_filename(checkpoint_path)
    if tau is not None and file_tau is not None and not math.isclose(tau, file_tau):
        logger.warning(
            "tau=%g given, but the file name %s says tau=%g: using %g.", tau, checkpoint_path, file_tau, tau
        )
    tau = tau if tau is not None else file_tau
    if tau is None:
        logger.warning(
            "τ of %s is unknown (no --tau and no tau_<τ> in the file name): its sheets are recorded as inferred "
            "(inferred: true, tau: 0). Pass tau=... if it was trained with TopoLoss.",
            checkpoint_path,
        )
        attach_inferred_topography(model, target_modules)
    else:
        TopoRegularizer(TopoConfig(target_modules=target_modules, tau=tau)).config_for(model).attach_to(
            model.config, step=step
        )
    return tau


def plain_settings(settings: Any) -> dict[str, Any] | None:
    """The JSON-scalar entries of a dict (or ``argparse.Namespace``) of training settings, else ``None``."""
    if settings is not None and not isinstance(settings, dict) and hasattr(settings, "__dict__"):
        settings = vars(settings)
    if not isinstance(settings, dict):
        return None
    plain = {}
    for key, value in settings.items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            plain[str(key)] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (str, int, float, bool)) for v in value):
            plain[str(key)] = list(value)
    return plain
