"""hf_topo's CPU kernels for TopoLoss: built on first use with PyTorch's C++-extension machinery, optional.

``csrc/sheet_cosine_cpu.cpp`` holds four operators, registered as ``torch.ops.hf_topo.*``. On one sheet (the
building blocks):

* ``sheet_cosine_sums(weight, units_first, offsets, indices, values)``: a ``(3, units)`` float32 tensor with, per
  unit ``u`` of the sheet ``C`` and its blur ``B C``, ``⟨C_u, (BC)_u⟩``, ``|C_u|²`` and ``|(BC)_u|²`` (``B`` in the
  bag layout of ``F.embedding_bag``);
* ``sheet_sparse_apply(weight, units_first, offsets, indices, values)``: ``S C`` for a sparse unit operator ``S``
  (TopoLoss's gradient operator ``G``), as a tensor of the weight's shape, layout and dtype.

On a group of same-geometry sheets (what :mod:`hf_topo.regularizers.grouped` calls, one per geometry and direction):

* ``sheet_cosine_forward(weights, units_first, offsets, indices, values, eps, down_h=None, up_h=None,
  blur_w=None)``: ``(losses, stats)``, the per-sheet ``1 − mean_u cos(C_u, (BC)_u)`` and the ``(sheets, 3, units)``
  per-unit ``⟨C_u, (BC)_u⟩``, ``max(|C_u|, eps)``, ``max(|(BC)_u|, eps)`` the backward needs; given the blur's
  separable factors (``B = kron(up_h · down_h, blur_w)``), depth-first float32 sheets whose width is a multiple of 8
  are read one depth row — one whole sheet image — at a time and blurred through the factors;
* ``sheet_cosine_backward(weights, units_first, stats, grad_output, offsets, indices, values, g_offsets, g_indices,
  g_entry_offsets, g_source, g_coef, down_h=None, up_h=None, blur_w=None)``: every sheet's gradient ``G C``,
  ``G``'s values filled from the per-unit coefficients through the geometry's triplets
  (:class:`~hf_topo.regularizers.grouped.GroupedBlur`); for units-first float32 sheets whose blur ``B``
  (``offsets, indices, values``) reads few units (the coarse grid's points, as at the paper's factor 3) the same
  gradient as ``c⊙BC + d⊙C + Bᵀ(a⊙C + b⊙BC)``, the ``Bᵀ`` part added into per-point accumulators while the units
  are walked (no ``G``; its rows at the coarse points read every unit within the blur's reach); given the blur's
  separable factors, depth-first float32 sheets whose width is a multiple of 8 get that gradient one sheet image
  at a time, ``Bᵀ = down_hᵀ · up_hᵀ ⊗ blur_wᵀ`` applied through the factors (no ``G`` either).

The group operators take each weight as stored: a 2-D ``(units, depth)`` / ``(depth, units)`` matrix, or a tensor of
any other shape whose elements, in row-major order, are that matrix (a ``Conv2d`` weight ``(out, in, k, k)``, a 3-D
sheet view), with ``units`` the operator's (``offsets``' length); each gradient has its weight's shape, so a caller
reshapes nothing per layer. All read the weight in its own layout, units first (``nn.Linear``, ``Conv2d``) or depth
first (transformers' ``Conv1D``, ``(in, out)``): the weight is read once per pass and the gradient written once, with no transposed or
float32 copy of the weight (the PyTorch-only path needs three transposed copies of a ``Conv1D`` weight per
forward+backward). They check the operator's structure (every index a unit, rising offsets) and refuse inconsistent
inputs with the reason. :mod:`hf_topo.regularizers.grouped` uses them for sheets on the CPU when they are available.

The kernels are compiled once per machine (about 15 s; ``torch.utils.cpp_extension.load``, which needs a C++
compiler and ``ninja``; the result is cached under ``$TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``), with AVX2/FMA code where PyTorch reports AVX2 or AVX-512 (the capability is part of
the extension's name, as is torch's version, so machines that share a home directory, or virtualenvs with other
torch releases, do not share a build they cannot run). Where the
build fails (no compiler, Windows, a read-only cache) or ``HF_TOPO_NATIVE_KERNELS=0`` is set, TopoLoss runs on
PyTorch operators alone, with the same values; the reason is logged once.
"""

from __future__ import annotations

import logging
import os
import platform
import threading
from pathlib import Path

import torch

__all__ = ["NATIVE_KERNELS_ENV", "native_kernels_available", "native_kernels_status"]

logger = logging.getLogger(__name__)

#: Set to ``0`` to run TopoLoss on PyTorch operators only (no build, no native kernels).
NATIVE_KERNELS_ENV = "HF_TOPO_NATIVE_KERNELS"

_SOURCE = Path(__file__).with_name("csrc") / "sheet_cosine_cpu.cpp"
_LOCK = threading.Lock()
_STATE: dict[str, object] = {}


def _disabled_by_env() -> bool:
    return os.environ.get(NATIVE_KERNELS_ENV, "1").strip().lower() in ("0", "false", "no", "off")


def _build_flags() -> tuple[str, list[str], list[str]]:
    """(extension name, compiler flags, linker flags) for this machine."""
    capability = torch.backends.cpu.get_cpu_capability()  # "DEFAULT", "AVX2", "AVX512", "ZVECTOR", ...
    vectorized = platform.machine().lower() in ("x86_64", "amd64") and capability in ("AVX2", "AVX512")
    cflags = ["-O3"] + (["-mavx2", "-mfma"] if vectorized else [])
    ldflags: list[str] = []
    if platform.system() == "Linux":  # ATen's parallel_for is OpenMP-inlined; Apple's clang has no -fopenmp
        cflags.append("-fopenmp")
        ldflags.append("-fopenmp")
    # The torch version is part of the name too: a build against other torch headers must not be loaded.
    torch_version = "".join(c if c.isalnum() else "_" for c in torch.__version__)
    name = f"hf_topo_sheet_cosine_{'avx2' if vectorized else 'generic'}_torch{torch_version}"
    return name, cflags, ldflags


def _register_fakes() -> None:
    """Shape functions for ``torch.compile`` (FakeTensor tracing), so the operators trace without graph breaks."""

    @torch.library.register_fake("hf_topo::sheet_cosine_sums")
    def _sums_fake(weight, units_first, offsets, indices, values):
        units = weight.shape[0] if units_first else weight.shape[1]
        return weight.new_empty((3, units), dtype=torch.float32)

    @torch.library.register_fake("hf_topo::sheet_sparse_apply")
    def _apply_fake(weight, units_first, offsets, indices, values):
        return torch.empty_like(weight, memory_format=torch.contiguous_format)

    @torch.library.register_fake("hf_topo::sheet_cosine_forward")
    def _forward_fake(weights, units_first, offsets, indices, values, eps, down_h=None, up_h=None, blur_w=None):
        units = offsets.shape[0]  # weights of any shape are read as their (units, depth) / (depth, units) matrix
        stats = weights[0].new_empty((len(weights), 3, units), dtype=torch.float32)
        return weights[0].new_empty((len(weights),), dtype=torch.float32), stats

    @torch.library.register_fake("hf_topo::sheet_cosine_backward")
    def _backward_fake(
        weights,
        units_first,
        stats,
        grad_output,
        offsets,
        indices,
        values,
        g_offsets,
        g_indices,
        g_entry_offsets,
        g_source,
        g_coef,
        down_h=None,
        up_h=None,
        blur_w=None,
    ):
        return [torch.empty_like(weight, memory_format=torch.contiguous_format) for weight in weights]


def _load() -> str | None:
    """Builds (or finds the cached build of) the kernels and loads them; the reason they are unavailable, or None."""
    if platform.system() == "Windows":
        return "not built on Windows (the build flags are GCC/Clang's)"
    try:
        from torch.utils import cpp_extension

        cpp_extension.verify_ninja_availability()
    except (ImportError, RuntimeError) as error:
        return f"ninja is not available ({error}); `pip install ninja` enables them"
    name, cflags, ldflags = _build_flags()
    logger.info("Loading hf_topo's CPU TopoLoss kernels (%s; built once per machine, about 15 s).", name)
    try:
        cpp_extension.load(
            name=name,
            sources=[str(_SOURCE)],
            extra_cflags=cflags,
            extra_ldflags=ldflags,
            is_python_module=False,
            verbose=False,
        )
    except Exception as error:  # a missing compiler, a compile error, an unwritable cache: run without them
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"the build failed ({first_line})"
    _register_fakes()
    return None


def native_kernels_status() -> str:
    """``"loaded"``, or why hf_topo's CPU kernels are not used (built and loaded on the first call)."""
    if _disabled_by_env() and "status" not in _STATE:
        return f"disabled by {NATIVE_KERNELS_ENV}=0"
    with _LOCK:
        if "status" not in _STATE:
            reason = _load()
            _STATE["status"] = "loaded" if reason is None else reason
            if reason is not None:
                logger.warning(
                    "hf_topo's CPU TopoLoss kernels are not used: %s. TopoLoss runs on PyTorch operators (same values, "
                    "slower for Conv1D weights); set %s=0 to skip the attempt.",
                    reason,
                    NATIVE_KERNELS_ENV,
                )
        return str(_STATE["status"])


def native_kernels_available() -> bool:
    """Whether the ``torch.ops.hf_topo`` operators (module docstring) can be used (loads them once).

    ``HF_TOPO_NATIVE_KERNELS=0`` in the environment is read at every call, so it can switch them off in a running
    process (the tests compare both paths that way). Under ``torch.compile`` nothing is read or built (no graph
    break): the kernels are used there when an eager call loaded them before."""
    if torch.compiler.is_compiling():
        return _STATE.get("status") == "loaded" and not _disabled_by_env()
    if _disabled_by_env():
        return False
    return native_kernels_status() == "loaded"
