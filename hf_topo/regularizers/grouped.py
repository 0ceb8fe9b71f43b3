"""TopoLoss of many layers of one sheet geometry in one pass: one autograd node, one gradient operator per geometry.

A model's topographic layers usually share a few sheet geometries (GPT-2-124M's 12 ``c_fc`` layers are all
``48 × 64 × 768``; a ResNet stage's convolutions share theirs). :func:`grouped_sheet_cosine_losses` computes the
TopoLoss of every sheet of one geometry together and returns their per-layer values; its backward writes each
weight's gradient straight from that weight. :func:`grouped_weight_losses` does the same on the weights as stored
(what :class:`~hf_topo.TopoRegularizer` calls): no sheet view is made on the way in and no gradient reshaped on the
way out, so a group costs the same number of operators for 1 layer or 100.

The math (see :mod:`hf_topo.regularizers.laplacian_pyramid`): with the blur a sparse ``n × n`` matrix ``B`` on the
units, a sheet ``C`` (``(units, depth)``) has loss ``1 − mean_u cos(C_u, (BC)_u)`` and gradient

    ``dL/dC = Bᵀ(a⊙C + b⊙BC) + c⊙BC + d⊙C = G C,  G = Bᵀ·diag(a) + Bᵀ·diag(b)·B + diag(c)·B + diag(d)``

with per-unit coefficients ``a, b, c, d`` from the forward's three per-unit sums. ``G`` is one sparse matrix whose
pattern depends only on the geometry (7.7 entries per row on average for the paper's bilinear φ = 3 blur on GPT-2's
48 × 64 sheet): it is
precomputed with a list of *triplets* that say which coefficient of which unit, times which constant, adds into which
entry of ``G``. A backward is then, for all layers at once, a handful of operators on ``(layers, entries)`` to fill
``G``'s values, and per layer **one** operator that writes its gradient ``G C``. The forward is, per layer, one
operator for the three per-unit sums ``⟨C_u, (BC)_u⟩``, ``|C_u|²``, ``|(BC)_u|²``.

Three paths compute it, with the same values (float32 rounding apart):

* **CPU, hf_topo's kernels** (:mod:`hf_topo.regularizers.native`): the whole group is two operators, one forward for
  every sheet's sums and loss, one backward for the coefficients, ``G``'s values and every ``G C``; they read every
  weight in its own layout (an ``nn.Linear`` or ``Conv2d`` weight's rows are its units, a transformers ``Conv1D``
  weight ``(in, out)`` has them as columns) and any floating dtype, once per pass.
* **GPUs and other accelerators** (any device but the CPU): there each operator costs a launch and host time, so the
  sheets of one depth are stacked into one float32 tensor (at most ``_DENSE_CHUNK_BYTES`` at a time) and blurred by
  the separable factors, ``B = kron(B_h, B_w)``: two batched matrix products per pass, in the sheets' own layout (no
  transposed copy for ``Conv1D``). The gradient is ``Bᵀ(a⊙C + b⊙BC) + a⊙BC + d⊙C`` with ``Bᵀ = kron(B_hᵀ, B_wᵀ)``:
  ``BC`` recomputed, two more products and a few element-wise operators, for all the stacked sheets at once. The
  products are float32 matrix multiplications, so they follow ``torch.backends.cuda.matmul`` (PyTorch's default,
  full float32, gives the reference's values; TF32, e.g. ``TrainingArguments(tf32=True)``, rounds the blur to TF32's
  10-bit mantissa like the model's own products). Groups that would need many stacks for few sheets (several
  depths: a ResNet's later stages; see ``_blur_path``) and sheets wider than ``_DENSE_MAX_SIDES`` (height + width)
  take the sparse path below instead: there it launches fewer operators, or the dense factors would cost more
  arithmetic than the gathers.
* **Sparse: the CPU without the kernels** (no C++ compiler, or ``HF_TOPO_NATIVE_KERNELS=0``), and the GPU groups
  above: ``F.embedding_bag`` calls and reductions on a float32 ``(units, depth)`` table per layer: the weight itself
  for a contiguous float32 units-first sheet, otherwise a copy (cast, or transposed for ``Conv1D``).

Every path traces under ``torch.compile(fullgraph=True)`` without graph breaks: the kernels are registered operators
with shape functions (``tests/test_grouped_topoloss.py``). Memory: the node returns the gradients of all its sheets at once; where ``.grad`` already holds a tensor they coexist until autograd
adds them in (about one weight per layer of the group), where ``.grad`` is ``None`` they become ``.grad``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .laplacian_pyramid import COSINE_EPS, blur_matrices_f64, check_blur_arguments, is_cacheable, kron_csr
from .native import native_kernels_available

__all__ = ["GroupedBlur", "grouped_blur", "grouped_sheet_cosine_losses", "grouped_weight_losses", "sheet_table"]

# Above this many entries in a row of the blur B, the sparse operators lose to the dense separable GEMMs; such
# geometries are computed per layer by ``sheet_cosine_loss`` (its dense path). Same threshold as the per-layer kernel.
_MAX_ROW_ENTRIES = 40
#: Largest height + width of a sheet blurred by dense separable products off the CPU (``(h + w)`` multiply-adds per
#: weight entry and product pair, against the ~8–16 gathered rows of the sparse path).
_DENSE_MAX_SIDES = 256
#: Most bytes of float32 weights stacked at once off the CPU (GPT-2-124M's 12 ``c_fc``: 108 MiB, one stack); the
#: backward holds about four such stacks at a time.
_DENSE_CHUNK_BYTES = 128 * 2**20


def _csr_from_keys(rows: torch.Tensor, cols: torch.Tensor, units: int):
    """``(offsets, column indices, inverse)`` of the pattern of the given ``(row, col)`` pairs, sorted row-major;
    ``inverse[i]`` is the entry that pair ``i`` falls into."""
    keys, inverse = torch.unique(rows * units + cols, sorted=True, return_inverse=True)
    offsets = torch.zeros(units, dtype=torch.long)
    offsets[1:] = torch.bincount(keys // units, minlength=units).cumsum(0)[:-1]
    return offsets, keys % units, inverse


class GroupedBlur:
    """The sparse operators of one sheet geometry, on one device.

    ``offsets, indices, values``: ``B`` in the bag layout of ``F.embedding_bag`` (row ``u`` of ``B C`` is the
    weighted sum of the rows ``indices[offsets[u]:offsets[u+1]]`` of ``C``). ``g_offsets, g_indices``: the pattern
    of the gradient operator ``G`` (module docstring); ``g_entry, g_source, g_coef``: its triplets — entry
    ``g_entry[t]`` of ``G`` receives ``g_coef[t] · coefficients[g_source[t]]``, where ``coefficients`` is
    ``cat([a, b, c, d])`` of a layer (``4 · units`` values); the triplets are sorted by entry, those of entry ``k``
    being ``g_entry_offsets[k]:g_entry_offsets[k + 1]``. ``down_h`` ``(h', h)``, ``up_h`` ``(h, h')``, ``blur_w``
    ``(w, w)``: ``B``'s separable factors in float32, ``B = kron(up_h · down_h, blur_w)``; ``blur_h``
    ``(h, h)``: ``up_h · down_h``.
    """

    def __init__(self, height: int, width: int, factor_h: float, factor_w: float, mode: str):
        down_h, up_h, down_w, up_w = blur_matrices_f64(height, width, factor_h, factor_w, mode)
        # B = kron(blur_h, blur_w) in CSR, built from the two small factors (the n × n product is never formed).
        self.offsets, self.indices, vals, _ = kron_csr(up_h @ down_h, up_w @ down_w)
        units = self.offsets.numel()
        self.units = units
        counts = torch.diff(self.offsets, append=self.offsets.new_tensor([self.indices.numel()]))
        rows, cols = torch.repeat_interleave(torch.arange(units), counts), self.indices
        self.values = vals
        self.row_entries = int(counts.max())
        # Triplets of G = Bᵀ·diag(a) + Bᵀ·diag(b)·B + diag(c)·B + diag(d), each (row, col, source, coefficient).
        a, b, c, d = (k * units for k in range(4))
        unit = torch.arange(units)
        parts = [
            (cols, rows, a + rows, vals),  # Bᵀ diag(a): entry (m, u) += B[u, m] · a[u]
            (rows, cols, c + rows, vals),  # diag(c) B: entry (u, m) += c[u] · B[u, m]
            (unit, unit, d + unit, torch.ones(units, dtype=torch.float64)),  # diag(d)
        ]
        # Bᵀ diag(b) B: entry (m1, m2) += B[u, m1] · b[u] · B[u, m2] for every pair of entries of a row u of B.
        order = torch.argsort(rows, stable=True)
        rows_s, cols_s, vals_s = rows[order], cols[order], vals[order]
        counts = torch.bincount(rows_s, minlength=units)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(rows_s.numel()) - starts[rows_s]
        ell_cols = torch.zeros(units, self.row_entries, dtype=torch.long)
        ell_vals = torch.zeros(units, self.row_entries, dtype=torch.float64)
        ell_cols[rows_s, slot], ell_vals[rows_s, slot] = cols_s, vals_s
        pair_vals = (ell_vals[:, :, None] * ell_vals[:, None, :]).flatten(1)
        keep = pair_vals != 0
        pair_rows = ell_cols[:, :, None].expand(-1, -1, self.row_entries).flatten(1)[keep]
        pair_cols = ell_cols[:, None, :].expand(-1, self.row_entries, -1).flatten(1)[keep]
        pair_units = unit[:, None].expand_as(keep)[keep]
        parts.append((pair_rows, pair_cols, b + pair_units, pair_vals[keep]))
        t_rows, t_cols, t_source, t_coef = (torch.cat(column) for column in zip(*parts, strict=True))
        self.g_offsets, self.g_indices, g_entry = _csr_from_keys(t_rows, t_cols, units)
        # Triplets sorted by the entry they fall into (stable): entry k's are [g_entry_offsets[k], g_entry_offsets[k+1]).
        order = torch.argsort(g_entry, stable=True)
        self.g_entry, self.g_source, self.g_coef = g_entry[order], t_source[order], t_coef[order].to(torch.float32)
        self.g_entry_offsets = torch.zeros(self.g_indices.numel() + 1, dtype=torch.long)
        self.g_entry_offsets[1:] = torch.bincount(self.g_entry, minlength=self.g_indices.numel()).cumsum(0)
        self.values = self.values.to(torch.float32)
        # The separable factors, float32, for the CPU forward of depth-first sheets (read one sheet image at a time).
        self.down_h, self.up_h = down_h.to(torch.float32), up_h.to(torch.float32)
        self.blur_w = (up_w @ down_w).to(torch.float32)
        # B's factors along the height, for the dense path (GPUs): B = kron(blur_h, blur_w).
        self.height, self.width = height, width
        self.blur_h = (up_h @ down_h).to(torch.float32)
        self.on_device: dict[torch.device, GroupedBlur] = {}

    @property
    def g_entries(self) -> int:
        """Number of stored entries of the gradient operator ``G``."""
        return self.g_indices.numel()

    def to(self, device: torch.device) -> GroupedBlur:
        """This structure on ``device`` (copied there once and kept, see ``_SparseBlur.to``)."""
        if device.type == "cpu":
            return self
        moved = self.on_device.get(device)
        if moved is None:
            moved = object.__new__(GroupedBlur)
            for name, value in vars(self).items():
                if name != "on_device":
                    setattr(moved, name, value.to(device) if isinstance(value, torch.Tensor) else value)
            moved.on_device = {}
            if all(is_cacheable(t) for t in vars(moved).values() if isinstance(t, torch.Tensor)):
                self.on_device[device] = moved
        return moved


_CACHE: dict[tuple[int, int, float, float, str], GroupedBlur] = {}
_CACHE_SIZE = 64
_CACHE_LOCK = threading.Lock()


def grouped_blur(
    height: int, width: int, factor_h: float = 3.0, factor_w: float = 3.0, interpolation: str = "bilinear"
) -> GroupedBlur | None:
    """The :class:`GroupedBlur` of a ``height × width`` sheet (cached on the CPU), or ``None`` where the blur's rows
    are too wide for the sparse operators (e.g. ``area`` at large factors: use ``sheet_cosine_loss`` per layer).

    Raises:
        ValueError: for arguments :func:`~hf_topo.regularizers.laplacian_pyramid.check_blur_arguments` refuses.
    """
    check_blur_arguments(height, width, factor_h, factor_w, interpolation)
    key = (int(height), int(width), float(factor_h), float(factor_w), interpolation)
    with _CACHE_LOCK:
        blur = _CACHE.get(key)
    if blur is None:
        with torch.inference_mode(False), torch.no_grad():
            blur = GroupedBlur(*key)
        if all(is_cacheable(t) for t in vars(blur).values() if isinstance(t, torch.Tensor)):
            with _CACHE_LOCK:
                if len(_CACHE) >= _CACHE_SIZE:
                    _CACHE.pop(next(iter(_CACHE)))
                _CACHE[key] = blur
    return blur if blur.row_entries <= _MAX_ROW_ENTRIES else None


def sheet_table(sheet: torch.Tensor, units_first: bool) -> torch.Tensor:
    """The sheet as a float32 ``(units, depth)`` table: a view of a contiguous float32 units-first sheet (no copy),
    otherwise a copy (cast, or transposed for a depth-first sheet such as a ``Conv1D`` weight)."""
    units = sheet.shape[0] * sheet.shape[1] if units_first else sheet.shape[1] * sheet.shape[2]
    return _table(sheet, units_first, units)


def _matrix(weight: torch.Tensor, units_first: bool, units: int) -> torch.Tensor:
    """A weight as its sheet's matrix, ``(units, depth)`` or ``(depth, units)`` (a view where the weight is
    contiguous; the weight itself when it is that matrix already)."""
    if weight.ndim == 2 and weight.shape[0 if units_first else 1] == units:
        return weight
    return weight.reshape(units, -1) if units_first else weight.reshape(-1, units)


def _table(weight: torch.Tensor, units_first: bool, units: int) -> torch.Tensor:
    """``sheet_table`` of a weight as stored (see :func:`grouped_weight_losses`)."""
    table = _matrix(weight, units_first, units)
    table = table if units_first else table.T
    # Not .to(float32, memory_format=contiguous_format): for a float32 tensor it returns the strided view itself.
    # The checks skip operators that would do nothing (each one is host time, and counted by bench_topoloss).
    if table.dtype != torch.float32:
        table = table.to(torch.float32)
    return table if table.is_contiguous() else table.contiguous()


def _depth(weight: torch.Tensor, units: int) -> int:
    """The sheet depth of a weight of ``units`` units (inputs per unit)."""
    return weight.numel() // units


def use_native_kernels(sheets: Sequence[torch.Tensor]) -> bool:
    """Whether the grouped loss of these sheets runs on hf_topo's CPU kernels (:mod:`hf_topo.regularizers.native`):
    CPU sheets of a floating dtype, with the kernels available."""
    return (
        sheets[0].device.type == "cpu"
        and sheets[0].dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16)
        and native_kernels_available()
    )


def _dense_blur_wanted(device: torch.device) -> bool:
    """Whether sheets on ``device`` are blurred by stacked dense products (off the CPU; tests switch it on there)."""
    return device.type != "cpu"


def _blur_path(sheets: Sequence[torch.Tensor], blur: GroupedBlur, units_first: bool) -> str:
    """``"native"``, ``"dense"`` or ``"sparse"``: the path that computes these sheets (module docstring).

    Off the CPU the dense path is taken where it launches fewer operators: its cost is per stack of same-depth
    sheets (about 30 operators), the sparse path's per sheet (about 15). So GPT-2's 12 ``c_fc`` (one stack) and a
    ResNet's first stage (four 3×3 convolutions of one depth) are dense, while a later ResNet stage (five sheets of
    three depths: 3×3 convolutions of two depths and the 1×1 shortcut) stays sparse."""
    if use_native_kernels(sheets):
        return "native"
    if _dense_blur_wanted(sheets[0].device) and blur.height + blur.width <= _DENSE_MAX_SIDES:
        order = _depth_order(sheets, blur.units)
        stacks = len(_dense_chunks([sheets[index] for index in order], blur.units))
        if stacks == 1 or 2 * stacks <= len(sheets):
            return "dense"
    return "sparse"


def _depth_order(sheets: Sequence[torch.Tensor], units: int) -> list[int]:
    """Sheet indices grouped by depth (depths in order of first appearance, sheets in their order within a depth),
    so that each depth's sheets are a contiguous run. (No ``sorted(key=...)``: ``torch.compile`` cannot trace it.)"""
    depths = [_depth(sheet, units) for sheet in sheets]
    return [index for depth in dict.fromkeys(depths) for index, other in enumerate(depths) if other == depth]


def _dense_chunks(sheets: Sequence[torch.Tensor], units: int) -> list[tuple[int, int]]:
    """``(start, stop)`` runs of same-depth sheets (``sheets`` grouped by depth), each under ``_DENSE_CHUNK_BYTES``
    of float32 (a run holds at least one sheet)."""
    chunks, start, size = [], 0, 0
    for index, sheet in enumerate(sheets):
        depth, nbytes = _depth(sheet, units), sheet.numel() * 4
        if index > start and (depth != _depth(sheets[start], units) or size + nbytes > _DENSE_CHUNK_BYTES):
            chunks.append((start, index))
            start, size = index, 0
        size += nbytes
    chunks.append((start, len(sheets)))
    return chunks


def _same_shapes(sheets: Sequence[torch.Tensor]) -> bool:
    return all(sheet.shape == sheets[0].shape for sheet in sheets)


def _stacked(sheets: Sequence[torch.Tensor], blur: GroupedBlur, units_first: bool) -> torch.Tensor:
    """Same-depth weights as one contiguous float32 tensor, ``(L, h, w, depth)`` units-first or ``(L, depth, h, w)``
    (weights of one shape stacked as they are and viewed so once; others as their matrices)."""
    if not _same_shapes(sheets):
        sheets = [_matrix(sheet, units_first, blur.units) for sheet in sheets]
    stack = sheets[0].unsqueeze(0) if len(sheets) == 1 else torch.stack(list(sheets))
    if stack.dtype != torch.float32:
        stack = stack.to(torch.float32)
    stack = stack if stack.is_contiguous() else stack.contiguous()
    depth = stack[0].numel() // blur.units
    shape = (blur.height, blur.width, depth) if units_first else (depth, blur.height, blur.width)
    return stack if stack.shape[1:] == shape else stack.view(len(sheets), *shape)


def _blur_first_axis(stack: torch.Tensor, units_first: bool, blur_h: torch.Tensor, blur_w: torch.Tensor):
    """The first of the two products of the separable blur: along the height for a units-first stack
    ``(L, h, w, d)``, along the width (the contiguous axis) for a depth-first one ``(L, d, h, w)``."""
    if units_first:
        layers, height, width, depth = stack.shape
        along_h = torch.bmm(blur_h.expand(layers, height, height), stack.view(layers, height, width * depth))
        return along_h.view(stack.shape)
    return torch.mm(stack.view(-1, stack.shape[-1]), blur_w.T).view(stack.shape)


def _blur_second_axis(partial: torch.Tensor, units_first: bool, blur_h: torch.Tensor, blur_w: torch.Tensor):
    """The second product: along the width (units-first) or the height (depth-first)."""
    if units_first:
        layers, height, width, depth = partial.shape
        rows = layers * height
        return torch.bmm(blur_w.expand(rows, width, width), partial.view(rows, width, depth)).view(partial.shape)
    layers, depth, height, width = partial.shape
    images = layers * depth
    return torch.bmm(blur_h.expand(images, height, height), partial.view(images, height, width)).view(partial.shape)


def _separable_blur(stack: torch.Tensor, units_first: bool, blur_h: torch.Tensor, blur_w: torch.Tensor):
    """``kron(blur_h, blur_w)`` applied to every stacked sheet: ``(L, h, w, d)`` units-first or ``(L, d, h, w)``."""
    partial = _blur_first_axis(stack, units_first, blur_h, blur_w)
    return _blur_second_axis(partial, units_first, blur_h, blur_w)


def _dense_forward(blur: GroupedBlur, units_first: bool, sheets: Sequence[torch.Tensor]):
    """Per-unit ``⟨C_u, (BC)_u⟩``, ``|C_u|``, ``|(BC)_u|`` of every sheet, each ``(len(sheets), units)``."""
    dots, norms_c, norms_b = [], [], []
    reduce_dim = -1 if units_first else 1
    for start, stop in _dense_chunks(sheets, blur.units):
        stack = _stacked(sheets[start:stop], blur, units_first)
        blurred = _separable_blur(stack, units_first, blur.blur_h, blur.blur_w)
        flat = (stop - start, blur.units, -1) if units_first else (stop - start, -1, blur.units)
        stack, blurred = stack.view(flat), blurred.view(flat)
        dots.append(torch.linalg.vecdot(stack, blurred, dim=reduce_dim))
        norms_c.append(torch.linalg.vector_norm(stack, dim=reduce_dim))
        norms_b.append(torch.linalg.vector_norm(blurred, dim=reduce_dim))
        del stack, blurred
    if len(dots) == 1:
        return dots[0], norms_c[0], norms_b[0]
    return torch.cat(dots), torch.cat(norms_c), torch.cat(norms_b)


def _dense_backward(
    blur: GroupedBlur, units_first: bool, sheets: Sequence[torch.Tensor], inv_nm, coef_b, coef_c
) -> list[torch.Tensor]:
    """Every sheet's gradient ``Bᵀ(a⊙C + b⊙BC) + a⊙BC + d⊙C`` (``a = inv_nm``, ``b = coef_b``, ``d = coef_c``, each
    ``(len(sheets), units)``), computed per stacked chunk; each gradient is a view of its chunk's result, in its
    sheet's shape and dtype. At most three chunk-sized float32 tensors live at a time (the stack and ``BC``, then
    ``a⊙C + b⊙BC`` and the rest, then the products of ``Bᵀ``)."""
    grads = []
    for start, stop in _dense_chunks(sheets, blur.units):
        chunk = sheets[start:stop]
        stack = _stacked(chunk, blur, units_first)
        blurred = _separable_blur(stack, units_first, blur.blur_h, blur.blur_w)
        shape = (
            (stop - start, blur.height, blur.width, 1) if units_first else (stop - start, 1, blur.height, blur.width)
        )
        a, b, d = (coef[start:stop].view(shape) for coef in (inv_nm, coef_b, coef_c))
        inner = (stack * a).addcmul_(blurred, b)  # a⊙C + b⊙BC (the stack may be the weight itself: never written)
        rest = blurred.mul_(a).addcmul_(stack, d)  # a⊙BC + d⊙C, in BC's memory
        del stack, blurred
        partial = _blur_first_axis(inner, units_first, blur.blur_h.T, blur.blur_w.T)
        del inner
        grad = _blur_second_axis(partial, units_first, blur.blur_h.T, blur.blur_w.T).add_(rest)
        del partial, rest
        if grad.dtype != chunk[0].dtype and all(sheet.dtype == chunk[0].dtype for sheet in chunk):
            grad = grad.to(chunk[0].dtype)  # one cast for the chunk
        if _same_shapes(chunk):  # one view for the chunk, then each gradient a view in its weight's shape
            layer_grads = grad.view(len(chunk), *chunk[0].shape).unbind(0)
        else:
            layer_grads = [
                layer_grad.view(sheet.shape) for layer_grad, sheet in zip(grad.unbind(0), chunk, strict=True)
            ]
        for sheet, layer_grad in zip(chunk, layer_grads, strict=True):
            grads.append(layer_grad if layer_grad.dtype == sheet.dtype else layer_grad.to(sheet.dtype))
    return grads


class _GroupedSheetCosineLoss(torch.autograd.Function):
    """Per-layer ``1 − mean_u cos(C_u, (BC)_u)`` of same-geometry sheets; backward: one ``G C`` per sheet."""

    @staticmethod
    def forward(ctx, blur: GroupedBlur, units_first: bool, path: str, *sheets: torch.Tensor) -> torch.Tensor:
        ctx.blur, ctx.units_first, ctx.path = blur, units_first, path
        if path == "dense":
            # Same-depth sheets stacked (grouped by depth; the losses come back in the sheets' order).
            order = _depth_order(sheets, blur.units)
            ctx.order = None if order == list(range(len(sheets))) else order
            ordered = sheets if ctx.order is None else [sheets[index] for index in order]
            dot, norm_c, norm_b = _dense_forward(blur, units_first, ordered)
            norm_c, norm_b = norm_c.clamp_min_(COSINE_EPS), norm_b.clamp_min_(COSINE_EPS)
            ctx.save_for_backward(dot, norm_c, norm_b, *sheets)
            losses = 1.0 - (dot / (norm_c * norm_b)).mean(dim=1)
            if ctx.order is None:
                return losses
            by_position = losses.unbind(0)
            position = {index: rank for rank, index in enumerate(order)}
            return torch.stack([by_position[position[index]] for index in range(len(sheets))])
        if path == "native":
            # One operator for the group (csrc/sheet_cosine_cpu.cpp): each weight read in its own layout; stats holds
            # per unit ⟨C_u, (BC)_u⟩ and the clamped norms |C_u|, |(BC)_u|.
            # Depth-first sheets (Conv1D) are read one depth row, a whole sheet image, at a time and blurred through
            # B's separable factors; B itself serves units-first sheets.
            factors = () if units_first else (blur.down_h, blur.up_h, blur.blur_w)
            losses, stats = torch.ops.hf_topo.sheet_cosine_forward(
                [_contiguous(sheet) for sheet in sheets],
                units_first,
                blur.offsets,
                blur.indices,
                blur.values,
                COSINE_EPS,
                *factors,
            )
            ctx.save_for_backward(stats, *sheets)
            return losses
        dots, norms_c, norms_b = [], [], []
        for sheet in sheets:
            table = _table(sheet, units_first, blur.units)
            blurred = F.embedding_bag(blur.indices, table, blur.offsets, mode="sum", per_sample_weights=blur.values)
            dots.append(torch.linalg.vecdot(table, blurred))
            norms_c.append(torch.linalg.vector_norm(table, dim=1))
            norms_b.append(torch.linalg.vector_norm(blurred, dim=1))
            del table, blurred
        dot = torch.stack(dots)  # (layers, units)
        norm_c = torch.stack(norms_c).clamp_min_(COSINE_EPS)
        norm_b = torch.stack(norms_b).clamp_min_(COSINE_EPS)
        ctx.save_for_backward(dot, norm_c, norm_b, *sheets)
        return 1.0 - (dot / (norm_c * norm_b)).mean(dim=1)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        blur, units_first = ctx.blur, ctx.units_first
        if ctx.path == "native":
            return (None, None, None, *_native_backward(ctx, grad_output))
        dot, norm_c, norm_b, *sheets = ctx.saved_tensors
        grad_output = grad_output.to(torch.float32)
        if ctx.path == "dense" and ctx.order is not None:  # the statistics are in depth order
            by_layer = grad_output.unbind(0)
            grad_output = torch.stack([by_layer[index] for index in ctx.order])
        # d cos_u / d C_u = B_u/(n m) − s C_u/(n³ m);  d cos_u / d B_u = C_u/(n m) − s B_u/(n m³)
        scale = -grad_output[:, None] / dot.shape[1]
        inv_nm = scale / (norm_c * norm_b)
        coef_c = -dot * inv_nm / norm_c.square()
        coef_b = -dot * inv_nm / norm_b.square()
        if ctx.path == "dense":
            order = ctx.order or range(len(sheets))
            computed = _dense_backward(blur, units_first, [sheets[index] for index in order], inv_nm, coef_b, coef_c)
            grads = [None] * len(sheets)
            for index, grad in zip(order, computed, strict=True):
                if ctx.needs_input_grad[index + 3]:
                    grads[index] = grad
            return None, None, None, *grads
        # dL/dC = Bᵀ(a⊙C + b⊙BC) + c⊙BC + d⊙C with a = c = inv_nm, b = coef_b, d = coef_c.
        coefficients = torch.cat([inv_nm, coef_b, inv_nm, coef_c], dim=1)  # (layers, 4 · units)
        contributions = coefficients[:, blur.g_source] * blur.g_coef
        values = contributions.new_zeros((len(sheets), blur.g_entries)).index_add_(1, blur.g_entry, contributions)
        del contributions
        grads = []
        for index, (sheet, layer_values) in enumerate(zip(sheets, values.unbind(0), strict=True)):
            if not ctx.needs_input_grad[index + 3]:
                grads.append(None)
                continue
            table = _table(sheet, units_first, blur.units)
            grad_table = F.embedding_bag(
                blur.g_indices, table, blur.g_offsets, mode="sum", per_sample_weights=layer_values
            )
            del table
            if units_first:
                grad = grad_table.view(sheet.shape)
                grads.append(grad if grad.dtype == sheet.dtype else grad.to(sheet.dtype))
            else:
                grad = torch.empty(sheet.shape, dtype=sheet.dtype, device=sheet.device)
                grad.view(-1, blur.units).copy_(grad_table.T)
                grads.append(grad)
            del grad_table
        return None, None, None, *grads


def _native_backward(ctx, grad_output: torch.Tensor) -> list[torch.Tensor | None]:
    """The sheets' gradients from hf_topo's CPU kernels: one operator for the group (G's values and every G C)."""
    stats, *sheets = ctx.saved_tensors
    blur, units_first = ctx.blur, ctx.units_first
    wanted = [index for index in range(len(sheets)) if ctx.needs_input_grad[index + 3]]
    if not wanted:
        return [None] * len(sheets)
    grad_output = grad_output.to(torch.float32)
    if len(wanted) < len(sheets):
        stats, grad_output = stats[wanted], grad_output[wanted]
    # Depth-first sheets (Conv1D) are walked one sheet image per depth row, through B's separable factors, as in
    # the forward; units-first sheets through B (the scatter walk) or G.
    factors = () if units_first else (blur.down_h, blur.up_h, blur.blur_w)
    computed = torch.ops.hf_topo.sheet_cosine_backward(
        [_contiguous(sheets[index]) for index in wanted],
        units_first,
        stats,
        grad_output,
        blur.offsets,
        blur.indices,
        blur.values,
        blur.g_offsets,
        blur.g_indices,
        blur.g_entry_offsets,
        blur.g_source,
        blur.g_coef,
        *factors,
    )
    grads: list[torch.Tensor | None] = [None] * len(sheets)
    for index, grad in zip(wanted, computed, strict=True):
        grads[index] = grad  # of the weight's shape (the kernels read and write weights as stored)
    return grads


def _contiguous(weight: torch.Tensor) -> torch.Tensor:
    return weight if weight.is_contiguous() else weight.contiguous()


def grouped_sheet_cosine_losses(sheets: Sequence[torch.Tensor], units_first: bool, blur: GroupedBlur) -> torch.Tensor:
    """TopoLoss of every sheet of one geometry, computed together.

    Args:
        sheets: ``(height, width, depth)`` tensors if ``units_first`` else ``(depth, height, width)`` (a ``Conv1D``
            weight's own layout, see :func:`hf_topo.sheet.sheet_view`), all of one ``height × width`` (depths may
            differ, e.g. a ResNet stage's 3×3 and 1×1 convolutions); views of parameters are read in place. Any floating dtype; the loss is computed in float32.
        units_first: the layout of every sheet.
        blur: the geometry's operators, from :func:`grouped_blur` (not ``None``).

    Returns:
        A float32 ``(len(sheets),)`` tensor of per-layer losses ``1 − mean_u cos(C_u, blur(C)_u)``, differentiable
        with respect to every sheet that requires a gradient.

    Raises:
        ValueError: when the sheets are not 3D, differ in height × width, or do not match ``blur``'s units.
    """
    if not sheets:
        raise ValueError("grouped_sheet_cosine_losses needs at least one sheet.")
    sheet_shapes = [tuple(sheet.shape[:2] if units_first else sheet.shape[1:]) for sheet in sheets]
    if any(sheet.ndim != 3 for sheet in sheets) or len(set(sheet_shapes)) != 1:
        raise ValueError(
            f"All sheets of a group must be 3D with one height × width; got {[tuple(s.shape) for s in sheets]}. "
            "Group sheets by geometry first (their depths may differ)."
        )
    if sheet_shapes[0] != (blur.height, blur.width):
        raise ValueError(
            f"The sheets are {sheet_shapes[0][0]} × {sheet_shapes[0][1]} but the blur was built for a "
            f"{blur.height} × {blur.width} sheet; build it with grouped_blur({sheet_shapes[0][0]}, {sheet_shapes[0][1]})."
        )
    return _grouped_losses(sheets, units_first, blur)


def grouped_weight_losses(weights: Sequence[torch.Tensor], units_first: bool, blur: GroupedBlur) -> torch.Tensor:
    """TopoLoss of every weight of one sheet geometry, computed together, each weight as it is stored.

    What :class:`~hf_topo.TopoRegularizer` calls: the same losses as :func:`grouped_sheet_cosine_losses` on the
    weights' :func:`~hf_topo.sheet.sheet_view` sheets, without a reshape per layer on the way in or the gradient's
    on the way out (each one an operator launch, which is what costs on a GPU).

    Args:
        weights: tensors whose elements, in row-major order, are the sheet's ``(units, depth)`` matrix if
            ``units_first`` (an ``nn.Linear`` weight ``(out, in)``, a ``Conv2d`` weight ``(out, in, k, k)``) or its
            ``(depth, units)`` matrix (a ``Conv1D`` weight ``(in, out)``), ``units = blur.units``; depths may differ.
            Any floating dtype; the loss is computed in float32 and each gradient has its weight's shape and dtype.
        units_first: the layout of every weight.
        blur: the geometry's operators, from :func:`grouped_blur` (not ``None``).

    Returns:
        A float32 ``(len(weights),)`` tensor of per-layer losses.

    Raises:
        ValueError: when a weight does not hold a whole number of ``blur.units``-unit rows or columns.
    """
    if not weights:
        raise ValueError("grouped_weight_losses needs at least one weight.")
    for weight in weights:
        if weight.numel() == 0 or weight.numel() % blur.units:
            raise ValueError(
                f"A weight of shape {tuple(weight.shape)} is not a sheet of {blur.units} units "
                f"({blur.height} × {blur.width}): its size must be a multiple of {blur.units}."
            )
    return _grouped_losses(weights, units_first, blur)


def _grouped_losses(sheets: Sequence[torch.Tensor], units_first: bool, blur: GroupedBlur) -> torch.Tensor:
    with torch.autocast(device_type=sheets[0].device.type, enabled=False):
        path = _blur_path(sheets, blur, units_first)
        return _GroupedSheetCosineLoss.apply(blur.to(sheets[0].device), units_first, path, *sheets)
