"""The TopoLoss math: blur a cortical sheet, reward cosine similarity with its blur.

``blur(C) = up(down(C, 1/φh, 1/φw), (h, w))`` (eq. 1 of the TopoNets paper) and the layer loss is
``1 − mean_units cos(C_u, blur(C)_u)``. The reference ``topoloss`` package runs two ``F.interpolate`` calls
on a channels-first copy of the sheet and lets autograd keep every intermediate alive.

Here the blur is written as what it is, a separable linear map: along each sheet axis, down- then
up-sampling is a small matrix (at most ``w × w``) that we read off ``F.interpolate`` itself, so every
mode, factor and rounding rule is PyTorch's own. The sheet is then blurred with four small GEMMs in its
native memory layout (no transposed copy of the weight), in chunks of its depth, and a hand-written
backward recomputes the blur instead of storing it. Peak extra memory stays below two weights of the
largest layer, and forward+backward is an order of magnitude faster than the reference on CPU.
"""

from __future__ import annotations

import math
import threading

import torch
import torch.nn.functional as F

__all__ = [
    "INTERPOLATION_MODES",
    "blur_matrices",
    "blur_sheet",
    "check_blur_arguments",
    "is_cacheable",
    "laplacian_pyramid_loss",
    "sheet_cosine_loss",
]

#: Interpolation modes of ``F.interpolate`` that act on 2D sheets.
INTERPOLATION_MODES = ("bilinear", "bicubic", "nearest", "nearest-exact", "area")

# cosine similarity clamps each norm at this value, as torch.nn.functional.cosine_similarity does.
_COSINE_EPS = 1e-8
# A depth chunk holds max(_CHUNK_ELEMENTS, numel / _MAX_CHUNKS) sheet elements: the temporaries of forward and
# backward (about five chunks) stay well below one weight, and large layers are not cut into tiny GEMMs.
_CHUNK_ELEMENTS = 1 << 18
_MAX_CHUNKS = 16


def _interpolation_kwargs(mode: str) -> dict:
    return {"align_corners": False} if mode in ("bilinear", "bicubic") else {}


def _probe(height: int, width: int, along_height: bool) -> torch.Tensor:
    """(1, n, height, width) float64 CPU batch of unit vectors along one axis, constant along the other."""
    # device="cpu" explicitly: under `with torch.device("meta")` (transformers' from_pretrained) or another default
    # device, a factory function without one would build placeholders or tensors on that device.
    if along_height:
        probe = torch.eye(height, dtype=torch.float64, device="cpu")[:, :, None].expand(height, height, width)
    else:
        probe = torch.eye(width, dtype=torch.float64, device="cpu")[:, None, :].expand(width, height, width)
    return probe.unsqueeze(0).contiguous()


def _build_blur_matrices_f64(height: int, width: int, factor_h: float, factor_w: float, mode: str):
    """(down_h, up_h, down_w, up_w) in float64 on the CPU, read off F.interpolate applied to identity probes."""
    kwargs = _interpolation_kwargs(mode)
    # Probe along height: channel c holds the unit vector e_c along height, constant along width.
    # Every mode is separable and its weights sum to one, so the output is down_h[:, c] along height.
    probe_h = _probe(height, width, along_height=True)
    probe_w = _probe(height, width, along_height=False)
    down_probe_h = F.interpolate(probe_h, scale_factor=(1 / factor_h, 1 / factor_w), mode=mode, **kwargs)
    down_probe_w = F.interpolate(probe_w, scale_factor=(1 / factor_h, 1 / factor_w), mode=mode, **kwargs)
    down_h = down_probe_h[0, :, :, 0].T.contiguous()  # (h', h)
    down_w = down_probe_w[0, :, 0, :].T.contiguous()  # (w', w)
    small_h, small_w = down_h.shape[0], down_w.shape[0]
    probe_h = _probe(small_h, small_w, along_height=True)
    probe_w = _probe(small_h, small_w, along_height=False)
    up_h = F.interpolate(probe_h, size=(height, width), mode=mode, **kwargs)[0, :, :, 0].T.contiguous()  # (h, h')
    up_w = F.interpolate(probe_w, size=(height, width), mode=mode, **kwargs)[0, :, 0, :].T.contiguous()  # (w, w')
    return down_h, up_h, down_w, up_w


def is_cacheable(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` may be kept in a cache that outlives the context it was computed in.

    True for real data that any later context can use: not a meta placeholder (``from_pretrained`` builds on the meta
    device), not a tensor subclass (fake tensors of a compiler trace, DTensor, ...), not an inference-mode tensor
    (autograd refuses those).
    """
    return type(tensor) is torch.Tensor and not tensor.is_meta and not tensor.is_inference()


# (height, width, factor_h, factor_w, mode) -> (down_h, up_h, down_w, up_w), float64 on the CPU. Only real CPU
# tensors are cached, so that no entry depends on the device, mode or trace it was first computed under.
_BLUR_CACHE: dict[tuple[int, int, float, float, str], tuple[torch.Tensor, ...]] = {}
_BLUR_CACHE_SIZE = 256
_BLUR_CACHE_LOCK = threading.Lock()


def _blur_matrices_f64(height: int, width: int, factor_h: float, factor_w: float, mode: str):
    """The cached float64 CPU matrices of one geometry (never to be modified in place: callers get copies)."""
    key = (height, width, factor_h, factor_w, mode)
    with _BLUR_CACHE_LOCK:
        cached = _BLUR_CACHE.get(key)
    if cached is not None:
        return cached
    # Outside inference mode and without autograd, so that the matrices can enter any later graph.
    with torch.inference_mode(False), torch.no_grad():
        mats = _build_blur_matrices_f64(height, width, factor_h, factor_w, mode)
    if all(is_cacheable(m) and m.device.type == "cpu" for m in mats):
        with _BLUR_CACHE_LOCK:
            if len(_BLUR_CACHE) >= _BLUR_CACHE_SIZE:
                _BLUR_CACHE.pop(next(iter(_BLUR_CACHE)))  # the oldest geometry
            _BLUR_CACHE[key] = mats
    return mats


def check_blur_arguments(height: int, width: int, factor_h: float, factor_w: float, mode: str) -> None:
    """Refuse a blur that cannot be computed: an unknown ``mode``, a factor below 1, or a ``height × width`` sheet
    smaller than its factors (``F.interpolate`` would downsample an axis to nothing).

    Raises:
        ValueError: with what is wrong and how to fix it.
    """
    if mode not in INTERPOLATION_MODES:
        raise ValueError(f"interpolation={mode!r} is not supported; choose one of {INTERPOLATION_MODES}.")
    for name, factor in (("factor_h", factor_h), ("factor_w", factor_w)):
        if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor >= 1):
            raise ValueError(f"{name}={factor!r} must be a finite number >= 1 (the paper uses 3).")
    # F.interpolate sizes its output floor(size * (1 / factor)) in double precision: 49 * (1 / 49) < 1.
    if math.floor(height * (1.0 / factor_h)) < 1 or math.floor(width * (1.0 / factor_w)) < 1:
        raise ValueError(
            f"A {height}x{width} cortical sheet cannot be downsampled by factor_h={factor_h}, factor_w={factor_w}: "
            f"it needs height >= factor_h and width >= factor_w. Lower the factors, choose another sheet_shape, "
            f"or target a layer with more output units."
        )


def blur_matrices(
    height: int,
    width: int,
    factor_h: float = 3.0,
    factor_w: float = 3.0,
    interpolation: str = "bilinear",
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The separable blur of a ``height × width`` sheet as ``(down_h, up_h, down_w, up_w)`` matrices.

    ``down_h`` is ``(h', h)``, ``up_h`` is ``(h, h')`` (likewise for width) with ``h' = floor(h / factor_h)``,
    so that ``blur(C) = up_h · down_h · C · down_wᵀ · up_wᵀ`` along the two sheet axes, equal to
    ``F.interpolate(F.interpolate(C, scale_factor=(1/φh, 1/φw)), size=(h, w))``. They are fresh tensors on
    ``device`` (the CPU when ``None``, whatever default-device context is active) in ``dtype``.
    """
    check_blur_arguments(height, width, factor_h, factor_w, interpolation)
    mats = _blur_matrices_f64(int(height), int(width), float(factor_h), float(factor_w), interpolation)
    # Copies (also for float64 on the CPU): the cached matrices are never handed out to be modified in place.
    return tuple(m.to(device=device, dtype=dtype, copy=True) for m in mats)


# A working chunk is a float32 contiguous slice of the sheet's depth in the sheet's own axis order: ``(h, w, depth)``
# for Linear/Conv2d (units first) and ``(depth, h, w)`` for Conv1D, whose depth slices are already contiguous, so
# a float32 Conv1D sheet is blurred without any copy. Axes at either end are blurred with one GEMM, the middle
# axis with a GEMM batched over the first.


def _along(x: torch.Tensor, matrix: torch.Tensor, axis: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Apply ``matrix`` (m × n) along ``axis`` (of size n) of the 3D chunk ``x``; ``out`` receives an axis-2 result."""
    a, b, c = x.shape
    if axis == 0:
        return (matrix @ x.reshape(a, b * c)).view(-1, b, c)
    if axis == 2:
        if out is not None:
            return torch.mm(x.reshape(a * b, c), matrix.T, out=out.view(a * b, -1)).view(a, b, -1)
        return (x.reshape(a * b, c) @ matrix.T).view(a, b, -1)
    return torch.matmul(matrix, x)


def _blur(x: torch.Tensor, mats, axes: tuple[int, int]) -> torch.Tensor:
    """blur(C) of a working chunk whose sheet height and width sit on ``axes``."""
    down_h, up_h, down_w, up_w = mats
    axis_h, axis_w = axes
    x = _along(x, down_w, axis_w)
    x = _along(x, down_h, axis_h)
    x = _along(x, up_h, axis_h)
    return _along(x, up_w, axis_w)


def _blur_transposed(x: torch.Tensor, mats, axes: tuple[int, int], out: torch.Tensor | None = None) -> torch.Tensor:
    """blurᵀ(G), the adjoint of :func:`_blur`, used by the backward pass (written into ``out`` when possible)."""
    down_h, up_h, down_w, up_w = mats
    axis_h, axis_w = axes
    x = _along(x, up_w.T, axis_w)
    x = _along(x, up_h.T, axis_h)
    x = _along(x, down_h.T, axis_h)
    return _along(x, down_w.T, axis_w, out=out if axis_w == 2 else None)


def _depth_chunks(sheet: torch.Tensor, units_first: bool):
    """Slices of the depth axis, each holding about ``_CHUNK_ELEMENTS`` sheet elements."""
    depth = sheet.shape[2] if units_first else sheet.shape[0]
    units = sheet.numel() // max(depth, 1)
    chunk_elements = max(_CHUNK_ELEMENTS, sheet.numel() // _MAX_CHUNKS)
    step = max(1, chunk_elements // max(units, 1))
    for start in range(0, depth, step):
        yield slice(start, min(start + step, depth))


def _chunk_view(sheet: torch.Tensor, part: slice, units_first: bool) -> torch.Tensor:
    """A depth slice of the sheet (a view: strided when units first, contiguous for Conv1D)."""
    return sheet[:, :, part] if units_first else sheet[part]


def _chunk(sheet: torch.Tensor, part: slice, units_first: bool) -> torch.Tensor:
    """A float32, contiguous working copy of a depth slice."""
    return _chunk_view(sheet, part, units_first).to(torch.float32, memory_format=torch.contiguous_format)


class _SheetCosineLoss(torch.autograd.Function):
    """``1 − mean_u cos(C_u, blur(C)_u)`` with a backward that recomputes the blur chunk by chunk."""

    @staticmethod
    def forward(ctx, sheet, units_first, down_h, up_h, down_w, up_w):
        mats = (down_h, up_h, down_w, up_w)
        depth_axis, axes = (2, (0, 1)) if units_first else (0, (1, 2))
        height, width = (sheet.shape[0], sheet.shape[1]) if units_first else (sheet.shape[1], sheet.shape[2])
        dot = sheet.new_zeros((height, width, 1) if units_first else (1, height, width), dtype=torch.float32)
        norm_c = torch.zeros_like(dot)
        norm_b = torch.zeros_like(dot)
        for part in _depth_chunks(sheet, units_first):
            x = _chunk(sheet, part, units_first)
            blurred = _blur(x, mats, axes)
            # (x*x).sum(...) is much faster on CPU than linalg.vector_norm over a strided axis.
            dot += (x * blurred).sum(dim=depth_axis, keepdim=True)
            norm_c += (x * x).sum(dim=depth_axis, keepdim=True)
            norm_b += (blurred * blurred).sum(dim=depth_axis, keepdim=True)
        norm_c = norm_c.sqrt_().clamp_min_(_COSINE_EPS)
        norm_b = norm_b.sqrt_().clamp_min_(_COSINE_EPS)
        cosine = dot / (norm_c * norm_b)
        ctx.save_for_backward(sheet, down_h, up_h, down_w, up_w, dot, norm_c, norm_b)
        ctx.units_first = units_first
        return 1.0 - cosine.mean()

    @staticmethod
    def backward(ctx, grad_output):
        sheet, down_h, up_h, down_w, up_w, dot, norm_c, norm_b = ctx.saved_tensors
        units_first = ctx.units_first
        axes = (0, 1) if units_first else (1, 2)
        mats = (down_h, up_h, down_w, up_w)
        scale = -grad_output.to(torch.float32) / dot.numel()
        # d cos_u / d C_u = B_u/(n m) − s C_u/(n³ m);  d cos_u / d B_u = C_u/(n m) − s B_u/(n m³)
        inv_nm = scale / (norm_c * norm_b)
        coef_c_direct = -dot * inv_nm / norm_c.square()
        coef_b_via_blur = -dot * inv_nm / norm_b.square()
        grad = torch.empty(sheet.shape, dtype=sheet.dtype, device=sheet.device)
        for part in _depth_chunks(sheet, units_first):
            x = _chunk(sheet, part, units_first)
            blurred = _blur(x, mats, axes)
            grad_b = torch.addcmul(blurred * coef_b_via_blur, x, inv_nm)
            target = _chunk_view(grad, part, units_first)
            direct = not units_first and grad.dtype == torch.float32  # Conv1D: the last GEMM writes into grad
            g = _blur_transposed(grad_b, mats, axes, out=target if direct else None)
            del grad_b
            g.addcmul_(blurred, inv_nm).addcmul_(x, coef_c_direct)
            if not direct:
                target.copy_(g)
        return grad, None, None, None, None, None


def sheet_cosine_loss(
    sheet: torch.Tensor,
    units_first: bool = True,
    factor_h: float = 3.0,
    factor_w: float = 3.0,
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """TopoLoss of one sheet tensor, in float32 whatever the sheet's dtype.

    Args:
        sheet: ``(height, width, depth)`` if ``units_first`` else ``(depth, height, width)``; may be a view of a
            parameter (no copy of the whole weight is made).
        units_first: layout of ``sheet`` (see :func:`hf_topo.sheet.sheet_view`).
        factor_h, factor_w: downsampling factors ``φh, φw`` (≥ 1; the paper uses 3).
        interpolation: an ``F.interpolate`` mode, ``"bilinear"`` in the paper.

    Returns:
        A float32 scalar ``1 − mean_u cos(C_u, blur(C)_u)`` that backpropagates into ``sheet``.
    """
    if sheet.ndim != 3:
        raise ValueError(f"Expected a 3D sheet tensor, got shape {tuple(sheet.shape)}.")
    height, width = (sheet.shape[0], sheet.shape[1]) if units_first else (sheet.shape[1], sheet.shape[2])
    mats = blur_matrices(height, width, factor_h, factor_w, interpolation, device=sheet.device)
    # Under mixed precision (Trainer's --bf16/--fp16 autocast) the GEMMs would otherwise run in half precision.
    with torch.autocast(device_type=sheet.device.type, enabled=False):
        return _SheetCosineLoss.apply(sheet, units_first, *mats)


def blur_sheet(
    cortical_sheet: torch.Tensor, *, factor_h: float = 3.0, factor_w: float = 3.0, interpolation: str = "bilinear"
) -> torch.Tensor:
    """``blur(C)`` of a ``(height, width, depth)`` sheet (eq. 1 of the paper), computed in float32."""
    height, width = cortical_sheet.shape[:2]
    mats = blur_matrices(height, width, factor_h, factor_w, interpolation, device=cortical_sheet.device)
    working = cortical_sheet.to(torch.float32, memory_format=torch.contiguous_format)
    return _blur(working, mats, (0, 1))


def laplacian_pyramid_loss(
    cortical_sheet: torch.Tensor, *, factor_h: float = 3.0, factor_w: float = 3.0, interpolation: str = "bilinear"
) -> torch.Tensor:
    """TopoLoss of a ``(height, width, depth)`` cortical sheet: ``1 − mean_u cos(C_u, blur(C)_u)``.

    Same value as ``topoloss.losses.laplacian_pyramid.laplacian_pyramid_loss``. The factors are keyword-only because
    the reference takes them positionally as ``(factor_w, factor_h)``: ported code cannot swap them silently.
    """
    return sheet_cosine_loss(cortical_sheet, True, factor_h, factor_w, interpolation)
