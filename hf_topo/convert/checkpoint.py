"""Reading a PyTorch checkpoint file safely: ``torch.load(weights_only=True)``, and clear errors for bad files.

``weights_only=True`` restores tensors and plain containers (dict, list, tuple, str, numbers, None) and nothing else,
so unpickling cannot run code. One more type is allowed: ``argparse.Namespace``, the ``"args"`` entry of the
checkpoints that torchvision's ImageNet reference script writes (the authors' ViT-B/32 file is one). A Namespace is
an attribute bag: restoring it creates an empty ``Namespace`` and fills its ``__dict__`` with values that pass the
same weights-only filter, and no method of the class runs on the way. A file that needs any other global (a custom
class, numpy arrays, ...) is refused with how to re-save it as plain data.

Before ``torch.load``, a file that cannot be a complete ``torch.save`` output is named as such: empty, a Git LFS
pointer, a zip archive cut short (an interrupted download), or neither a zip archive nor a pickle (an HTML page).
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, parameter

__all__ = ["load_checkpoint", "tau_from_filename", "check_tau", "strip_wrapper_prefixes", "SAFE_EXTRA_GLOBALS"]

#: The globals allowed beyond ``weights_only=True``'s own (see the module docstring).
SAFE_EXTRA_GLOBALS = (argparse.Namespace,)
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile, DistributedDataParallel
_TAU_IN_NAME = re.compile(r"tau[_-]?(\d+(?:\.\d+)?)", re.IGNORECASE)
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = b"\x80"  # pickle's PROTO opcode, first byte of a legacy (non-zip) torch.save file
_LFS_POINTER = b"version https://git-lfs"
# torch.load(weights_only=True) names the global it would have to import (a custom class, numpy, ...)
_NEEDS_ARBITRARY_UNPICKLING = re.compile(r"safe_globals|allowed global|Unsupported global", re.IGNORECASE)
_GLOBAL_NAME = re.compile(r"GLOBAL ([\w.]+)")


def _not_a_checkpoint(path: Path, detail: str) -> ValueError:
    return ValueError(
        f"{path} is truncated or not a PyTorch checkpoint ({detail}; {path.stat().st_size} bytes). An interrupted "
        "download or copy leaves a partial file: fetch it again (from the Hub: hf_hub_download(..., "
        "force_download=True)). Otherwise check the path: a TopoNet checkpoint is a file written by torch.save "
        "(nanoGPT's ckpt.pt, the authors' all_topo_tau_<τ>.pt / tau_<τ>.pt)."
    )


def _check_checkpoint_file(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        raise ValueError(f"{path} is empty (0 bytes): not a PyTorch checkpoint. Fetch the file again.")
    if head.startswith(_LFS_POINTER):
        raise ValueError(
            f"{path} is a Git LFS pointer, not the checkpoint itself: fetch the file (git lfs pull in its repository, "
            "or hf_hub_download / `hf download` from the Hub)."
        )
    if head.startswith(_ZIP_MAGIC):  # torch.save's format since PyTorch 1.6
        if not zipfile.is_zipfile(path):
            raise _not_a_checkpoint(path, "its zip archive has no central directory: the end of the file is missing")
    elif not head.startswith(_PICKLE_PROTO):  # the legacy format is a pickle stream
        raise _not_a_checkpoint(path, f"it starts with {head[:16]!r}, neither a zip archive nor a pickle")


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:200]


def load_checkpoint(path: str | os.PathLike) -> Any:
    """The object saved in ``path``, read with ``torch.load(weights_only=True)`` on the CPU (plus
    :data:`SAFE_EXTRA_GLOBALS`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is empty, a Git LFS pointer, truncated or not a PyTorch checkpoint, or holds objects
            that only arbitrary unpickling can restore (the message names the object's type and how to re-save
            the file as plain data).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint file at {path}.")
    _check_checkpoint_file(path)
    try:
        with torch.serialization.safe_globals(list(SAFE_EXTRA_GLOBALS)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not _NEEDS_ARBITRARY_UNPICKLING.search(str(err)):  # a pickle stream cut short or not a pickle at all
            raise _not_a_checkpoint(path, f"torch.load: {_first_line(err)}") from None
        found = _GLOBAL_NAME.search(str(err))
        what = f"a {found.group(1)} object" if found else "objects other than tensors and plain containers"
        raise ValueError(
            f"Refusing to load {path}: it holds {what}, which torch.load(weights_only=True) cannot restore; "
            "unpickling it could run arbitrary code. Only if you trust its origin, load it yourself with "
            "torch.load(path, weights_only=False) and re-save the weights as plain data, e.g. "
            "torch.save({'model': ckpt['model'], 'model_args': dict(ckpt['model_args'])}, 'clean.pt') for nanoGPT, "
            "torch.save(ckpt['model'], 'clean.pt') for a vision checkpoint (or the state dict itself); then convert "
            "clean.pt."
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError) as err:  # PytorchStreamReader, "unexpected EOF", ...
        raise _not_a_checkpoint(path, f"torch.load: {_first_line(err)}") from None
    except OSError as err:
        if isinstance(err, (FileNotFoundError, PermissionError)):
            raise
        raise _not_a_checkpoint(path, f"torch.load: {_first_line(err)}") from None


def strip_wrapper_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` without the key prefixes of ``torch.compile`` (``_orig_mod.``) and DDP (``module.``)."""
    stripped = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        stripped[key] = value
    return stripped


def tau_from_filename(path: str | os.PathLike) -> float | None:
    """τ written in a checkpoint's file name (``tau_0.5.pt`` → 0.5, ``all_topo_tau_10.0.pt`` → 10,
    ``toponet-tau50.pt`` → 50), else ``None``."""
    match = _TAU_IN_NAME.search(Path(path).stem)
    return float(match.group(1)) if match else None


def check_tau(tau: float | None) -> None:
    """Refuse a τ that is not a TopoLoss strength (negative, NaN, infinite)."""
    if tau is not None and not (math.isfinite(tau) and tau >= 0):
        raise InputError(
            f"{parameter('tau', tau)} is not a TopoLoss strength: give a finite τ >= 0, e.g. {parameter('tau', 50)}."
        )
