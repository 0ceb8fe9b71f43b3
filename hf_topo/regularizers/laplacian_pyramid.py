"""The TopoLoss math: blur a cortical sheet, reward cosine similarity with its blur.

``blur(C) = up(down(C, 1/φh, 1/φw), (h, w))`` (eq. 1 of the TopoNets paper) and the layer loss is
``1 − mean_units cos(C_u, blur(C)_u)``. The reference ``topoloss`` package runs two ``F.interpolate`` calls
on a channels-first copy of the sheet and lets autograd keep every intermediate alive.

Here the blur is written as what it is, a linear map: along each sheet axis, down- then up-sampling is a small
matrix (at most ``w × w``) that we read off ``F.interpolate`` itself, so every mode, factor and rounding rule is
PyTorch's own. On the whole sheet the blur is their Kronecker product ``B``, an ``n × n`` matrix on the units with a
handful of entries per row (4 for the paper's bilinear φ = 3), so ``blur(C) = B C`` is, for each unit, a weighted sum
of a few other units' weight rows: one ``F.embedding_bag`` call, a memory-bound pass instead of dense GEMMs. A
hand-written backward recomputes the blur chunk by chunk (depth chunks, the sheet read once per pass) and folds the
gradient's per-unit coefficients into the entries of ``Bᵀ``, so it costs two more such calls and no elementwise pass.
Blurs with wide rows (e.g. ``area`` at large factors) run four separable GEMMs per blur instead. On the CPU, peak
extra memory stays below about two weights of the largest layer and forward+backward is 6-9× faster than the
reference; on a GPU, where the time goes to launching operators rather than moving bytes, a layer is one working
chunk (about five weights extra, eight times less than the reference) and the GPU work is a quarter of the
reference's, but the wall time is about the reference's: both are bound by per-operator host overheads
(``docs/benchmarks.md``, with the profile).
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
COSINE_EPS = 1e-8
# A depth chunk holds max(_CHUNK_ELEMENTS, numel / _MAX_CHUNKS) sheet elements: the temporaries of forward and
# backward (about five chunks) stay well below one weight, and large layers are not cut into tiny GEMMs.
_CHUNK_ELEMENTS = 1 << 18
_MAX_CHUNKS = 16
# The sparse path's ``(units, depth chunk)`` float32 working chunks: about four of them are alive at once (the loaded
# chunk, its blur, the gradient and one product), 2 MiB each, which keeps the peak below one weight of a GPT-2 c_fc
# layer while the per-call overheads of embedding_bag stay small.
_SPARSE_CHUNK_ELEMENTS = 1 << 19
# On a GPU the time goes to launching kernels, not to moving bytes (an H100 reads a GPT-2 c_fc weight in ~3 µs; each
# operator costs several µs of host time): there a layer of up to 16 Mi elements is one working chunk.
_SPARSE_CHUNK_ELEMENTS_GPU = 1 << 24


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


def blur_matrices_f64(height: int, width: int, factor_h: float, factor_w: float, mode: str):
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
    mats = blur_matrices_f64(int(height), int(width), float(factor_h), float(factor_w), interpolation)
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
    # .to(float32, memory_format=contiguous_format) would return a strided float32 view itself, uncopied.
    return _chunk_view(sheet, part, units_first).to(torch.float32).contiguous()


# The sparse kernel. For every mode the blur of a sheet is one sparse n × n matrix on its units, B = M_h ⊗ M_w with
# M = up · down along each axis: bilinear at φ = 3 keeps at most 4 entries in a row of B (bicubic 16, area 21), so
# ``blur(C) = B C`` is a weighted sum of a few rows of ``C`` per unit: ``F.embedding_bag`` in "sum" mode with
# per-sample weights, one memory-bound pass instead of four dense GEMMs (about 20 times fewer operations for the
# GPT-2 c_fc sheet). The backward folds the per-unit coefficients of the gradient into the entries of Bᵀ:
#   dL/dC = Bᵀ(a⊙C + b⊙BC) + c⊙BC + d⊙C = (Bᵀ·diag(a) + diag(d)) C + (Bᵀ·diag(b) + diag(c)) BC,
# two more embedding_bag calls on the same working chunk, with no elementwise pass over the chunk for a⊙C, b⊙BC.
# Working chunks are ``(units, depth chunk)`` float32 and contiguous (rows are the bags' embeddings).

# Above this many entries in a row of B the dense separable GEMMs are cheaper than the sparse sums: one CPU thread,
# 48 × 64 × 768 sheet, forward+backward: 16 entries (bicubic φ = 3) 19 ms sparse vs 32 ms dense, 21 (area φ = 3) 24 vs
# 37 ms, 100 (bicubic φ = 2) 76 vs 61 ms, 120 (area φ = 7) 77 vs 33 ms.
_SPARSE_MAX_ROW_ENTRIES = 40


def kron_csr(
    along_h: torch.Tensor, along_w: torch.Tensor, with_diagonal: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """CSR ``(row offsets, column indices, values, diagonal mask)`` of ``kron(along_h, along_w)``, built from the
    nonzeros of the two small factors (the ``n × n`` product is never formed). ``with_diagonal`` adds every missing
    diagonal entry with value 0; the mask marks the diagonal entries."""
    width = along_w.shape[0]
    units = along_h.shape[0] * width
    h_rows, h_cols = along_h.nonzero(as_tuple=True)
    w_rows, w_cols = along_w.nonzero(as_tuple=True)
    rows = (h_rows[:, None] * width + w_rows[None, :]).flatten()
    cols = (h_cols[:, None] * width + w_cols[None, :]).flatten()
    values = (along_h[h_rows, h_cols][:, None] * along_w[w_rows, w_cols][None, :]).flatten()
    if with_diagonal:
        diagonal = torch.arange(units)
        rows, cols = torch.cat([rows, diagonal]), torch.cat([cols, diagonal])
        values = torch.cat([values, values.new_zeros(units)])
    keys, inverse = torch.unique(rows * units + cols, sorted=True, return_inverse=True)  # row-major order
    values = values.new_zeros(keys.numel()).index_add_(0, inverse, values)
    rows, cols = keys // units, keys % units
    offsets = torch.zeros(units, dtype=torch.long)
    offsets[1:] = torch.bincount(rows, minlength=units).cumsum(0)[:-1]
    return offsets, cols, values, rows == cols


class _SparseBlur:
    """The CSR structure of ``B`` (forward) and of ``Bᵀ + I`` (backward) of one geometry, on one device."""

    def __init__(self, down_h, up_h, down_w, up_w):
        # The float64 CPU factors; B = kron(up_h · down_h, up_w · down_w).
        blur_h, blur_w = up_h @ down_h, up_w @ down_w
        self.offsets, self.indices, values, _ = kron_csr(blur_h, blur_w)
        self.values = values.to(torch.float32)
        # Bᵀ with every diagonal entry present (zero where Bᵀ has none), so diag(d) folds into the same bags.
        self.t_offsets, self.t_indices, t_values, diagonal = kron_csr(blur_h.T, blur_w.T, with_diagonal=True)
        self.t_values = t_values.to(torch.float32)
        self.t_diagonal = diagonal.to(torch.float32)
        self.row_entries = int(torch.diff(self.offsets, append=self.offsets.new_tensor([self.indices.numel()])).max())
        # Copies of this structure on other devices (see ``to``).
        self.on_device: dict[torch.device, _SparseBlur] = {}

    def to(self, device: torch.device) -> _SparseBlur:
        """This structure on ``device``, copied there once and kept: a host-to-device copy on every call would
        synchronize the GPU once per tensor and layer (measured on an H100: 12 GPT-2 layers 2.6× slower)."""
        if device.type == "cpu":
            return self
        moved = self.on_device.get(device)
        if moved is None:
            moved = object.__new__(_SparseBlur)
            for name, value in vars(self).items():
                if name != "on_device":
                    setattr(moved, name, value.to(device) if isinstance(value, torch.Tensor) else value)
            if all(is_cacheable(t) for t in vars(moved).values() if isinstance(t, torch.Tensor)):
                self.on_device[device] = moved
        return moved

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``B x`` of a ``(units, k)`` float32 chunk."""
        return F.embedding_bag(self.indices, x, self.offsets, mode="sum", per_sample_weights=self.values)

    def apply_transposed(self, x: torch.Tensor, scale: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:
        """``(Bᵀ·diag(scale) + diag(diagonal)) x`` of a ``(units, k)`` chunk; ``scale``, ``diagonal`` are ``(units,)``."""
        weights = torch.addcmul(self.t_values * scale[self.t_indices], self.t_diagonal, diagonal[self.t_indices])
        return F.embedding_bag(self.t_indices, x, self.t_offsets, mode="sum", per_sample_weights=weights)


# (height, width, factor_h, factor_w, mode) -> _SparseBlur on the CPU.
_SPARSE_CACHE: dict[tuple[int, int, float, float, str], _SparseBlur] = {}
_SPARSE_CACHE_LOCK = threading.Lock()


def _sparse_blur(height: int, width: int, factor_h: float, factor_w: float, mode: str) -> _SparseBlur | None:
    """The sparse blur of one geometry (cached on the CPU), or None where its rows are too wide to beat the GEMMs."""
    key = (height, width, factor_h, factor_w, mode)
    with _SPARSE_CACHE_LOCK:
        sparse = _SPARSE_CACHE.get(key)
    if sparse is None:
        with torch.inference_mode(False), torch.no_grad():
            sparse = _SparseBlur(*blur_matrices_f64(height, width, factor_h, factor_w, mode))
        if all(is_cacheable(t) for t in vars(sparse).values() if isinstance(t, torch.Tensor)):
            with _SPARSE_CACHE_LOCK:
                if len(_SPARSE_CACHE) >= _BLUR_CACHE_SIZE:
                    _SPARSE_CACHE.pop(next(iter(_SPARSE_CACHE)))  # the oldest geometry
                _SPARSE_CACHE[key] = sparse
    return sparse if sparse.row_entries <= _SPARSE_MAX_ROW_ENTRIES else None


def _depth_slices(depth: int, units: int, device: torch.device):
    """Slices of the depth axis for ``(units, depth chunk)`` working chunks of ``_SPARSE_CHUNK_ELEMENTS`` elements
    (``_SPARSE_CHUNK_ELEMENTS_GPU`` off the CPU)."""
    budget = _SPARSE_CHUNK_ELEMENTS if device.type == "cpu" else _SPARSE_CHUNK_ELEMENTS_GPU
    step = max(1, budget // max(units, 1))
    for start in range(0, depth, step):
        yield slice(start, min(start + step, depth))


def _units_rows(sheet: torch.Tensor, units_first: bool) -> torch.Tensor:
    """The sheet as a ``(units, depth)`` view (units first) or its ``(depth, units)`` view (Conv1D), never a copy."""
    if units_first:
        return sheet.flatten(0, 1)
    return sheet.flatten(1, 2)


def _working_chunks(rows: torch.Tensor, units_first: bool):
    """``(depth slice, float32 (units, chunk) copy of it)`` over the sheet's depth, in one reused buffer (cast on the
    fly from bf16/fp16; a Conv1D chunk is transposed into it)."""
    units, depth = (rows.shape[0], rows.shape[1]) if units_first else (rows.shape[1], rows.shape[0])
    buffer = None
    for part in _depth_slices(depth, units, rows.device):
        if buffer is None:
            buffer = rows.new_empty((units, part.stop - part.start), dtype=torch.float32)
        view = rows[:, part] if units_first else rows[part].T
        yield part, buffer[:, : part.stop - part.start].copy_(view)


class _SparseSheetCosineLoss(torch.autograd.Function):
    """``1 − mean_u cos(C_u, (BC)_u)`` with the sparse blur; the backward recomputes ``BC`` chunk by chunk."""

    @staticmethod
    def forward(ctx, sheet, units_first, blur):
        rows = _units_rows(sheet, units_first)
        dot = rows.new_zeros(rows.shape[0] if units_first else rows.shape[1], dtype=torch.float32)
        norm_c = torch.zeros_like(dot)
        norm_b = torch.zeros_like(dot)
        for _part, x in _working_chunks(rows, units_first):
            blurred = blur.apply(x)
            dot += torch.linalg.vecdot(x, blurred)
            norm_c += torch.linalg.vecdot(x, x)
            norm_b += torch.linalg.vecdot(blurred, blurred)
        norm_c = norm_c.sqrt_().clamp_min_(COSINE_EPS)
        norm_b = norm_b.sqrt_().clamp_min_(COSINE_EPS)
        cosine = dot / (norm_c * norm_b)
        ctx.save_for_backward(sheet, dot, norm_c, norm_b)
        ctx.units_first = units_first
        ctx.blur = blur
        return 1.0 - cosine.mean()

    @staticmethod
    def backward(ctx, grad_output):
        sheet, dot, norm_c, norm_b = ctx.saved_tensors
        units_first, blur = ctx.units_first, ctx.blur
        scale = -grad_output.to(torch.float32) / dot.numel()
        # d cos_u / d C_u = B_u/(n m) − s C_u/(n³ m);  d cos_u / d B_u = C_u/(n m) − s B_u/(n m³)
        inv_nm = scale / (norm_c * norm_b)
        coef_c_direct = -dot * inv_nm / norm_c.square()
        coef_b_via_blur = -dot * inv_nm / norm_b.square()
        rows = _units_rows(sheet, units_first)
        grad = torch.empty(sheet.shape, dtype=sheet.dtype, device=sheet.device)
        grad_rows = _units_rows(grad, units_first)
        for part, x in _working_chunks(rows, units_first):
            blurred = blur.apply(x)
            # dL/dC = (Bᵀ·diag(inv_nm) + diag(coef_c)) C + (Bᵀ·diag(coef_b) + diag(inv_nm)) BC
            g = blur.apply_transposed(x, inv_nm, coef_c_direct)
            g += blur.apply_transposed(blurred, coef_b_via_blur, inv_nm)
            (grad_rows[:, part] if units_first else grad_rows[part].T).copy_(g)
        return grad, None, None


class _SheetCosineLoss(torch.autograd.Function):
    """The dense path: ``1 − mean_u cos(C_u, blur(C)_u)`` with four separable GEMMs per blur (wide-support modes)."""

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
        norm_c = norm_c.sqrt_().clamp_min_(COSINE_EPS)
        norm_b = norm_b.sqrt_().clamp_min_(COSINE_EPS)
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
    check_blur_arguments(height, width, factor_h, factor_w, interpolation)
    sparse = _sparse_blur(int(height), int(width), float(factor_h), float(factor_w), interpolation)
    # Under mixed precision (Trainer's --bf16/--fp16 autocast) the GEMMs would otherwise run in half precision.
    with torch.autocast(device_type=sheet.device.type, enabled=False):
        if sparse is not None:
            return _SparseSheetCosineLoss.apply(sheet, units_first, sparse.to(sheet.device))
        mats = blur_matrices(height, width, factor_h, factor_w, interpolation, device=sheet.device)
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
