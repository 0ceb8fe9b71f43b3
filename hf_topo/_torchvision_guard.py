"""Keep a broken torchvision from breaking ``transformers`` (and so hf_topo): hide it when it cannot be imported.

torchvision's wheels on the package index are CUDA builds; next to a CPU-only torch, ``import torchvision`` fails
("operator torchvision::nms does not exist"). ``transformers`` treats torchvision as available whenever it is
installed, and its image utilities (which ``peft`` pulls in, and hf_topo with it) then import it and fail. hf_topo needs
no torchvision: :func:`hide_broken_torchvision`, run when ``hf_topo`` is imported (before ``transformers``), tries the import once
and, when it fails, marks torchvision as absent (``sys.modules["torchvision"] = None``, which Python's import system
and ``importlib.util.find_spec`` read as "not installed"), so ``transformers`` falls back to its PIL image processors.
A working torchvision is left alone (``transformers`` would import it anyway).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys

__all__ = ["hide_broken_torchvision"]

logger = logging.getLogger(__name__)


def hide_broken_torchvision() -> str | None:
    """Mark an installed torchvision that fails to import as absent; returns the import error's text, else ``None``.

    Does nothing when torchvision is not installed, already imported, or already hidden.
    """
    if "torchvision" in sys.modules:
        return None
    try:
        if importlib.util.find_spec("torchvision") is None:
            return None
    except (ImportError, ValueError):
        return None
    try:
        importlib.import_module("torchvision")
    except Exception as err:  # noqa: BLE001 - whatever a broken build raises (RuntimeError, OSError, ImportError)
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision"] = None  # `import torchvision` now raises ImportError; find_spec returns None
        reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        logger.warning(
            "torchvision is installed but cannot be imported (%s); hf_topo treats it as absent, so transformers uses "
            "its PIL image processors. Install the torchvision build that matches your torch, or uninstall it.",
            reason,
        )
        return reason
    return None
