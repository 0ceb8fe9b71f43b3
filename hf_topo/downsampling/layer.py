"""The downsampled layers: :class:`TopoDownsampledLinear`, ``y = g ⊙ up(x · C'ᵀ) + b`` (A.5, with per-unit gains),
and :class:`TopoDownsampledConv2d`, the same on a convolution's output channels.

============================  ====================================================================================
symbol                        meaning
============================  ====================================================================================
``C (h, w, d)``               the original layer's cortical sheet (:mod:`hf_topo.sheet`), unit ``u = i·w + j``
``C' = D·C (h', w', d)``      the reduced sheet, ``down`` = ``F.interpolate`` at scale ``1/φ`` (stored, the weight)
``U``                         ``up`` = ``F.interpolate`` back to ``(h, w)`` of the ``(h', w')`` output grid
``B = U·D·C (h·w, d)``        the row each output unit effectively applies: the blurred weight
``g (h·w,)``                  per-unit gain, ``g_u = ‖C_u‖ / ‖B_u‖`` (closed form) or fitted; ``1`` without gains
``y``                         ``g ⊙ (U · (C' x)) + b = (g ⊙ B) x + b``
============================  ====================================================================================

Why gains: TopoLoss rewards the *direction* of each unit's weight vector (a cosine against its blurred copy) and
says nothing about its norm, so a TopoNet's neighbouring units point alike while their norms still differ; the
blurred rows ``B_u`` have the right directions but the wrong norms. One scalar per unit (``h·w`` parameters, e.g.
0.4 % of a ``512 → 128``-deep layer's weight) puts the norms back. ``g = 1`` is the paper's layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from ..regularizers.laplacian_pyramid import blur_matrices, is_cacheable
from ..sheet import CorticalSheet, as_cortical_sheet, sheet_for_module

__all__ = ["TopoDownsampledConv2d", "TopoDownsampledLinear", "as_factors", "closed_form_gains"]


def as_factors(factors: object) -> tuple[float, float]:
    """``(φh, φw)`` from one number ``φ >= 1`` or a pair of them; anything else is a ``ValueError`` that says so."""
    pair = (factors, factors) if not isinstance(factors, (tuple, list)) else tuple(factors)
    valid = len(pair) == 2 and all(
        isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f) and f >= 1 for f in pair
    )
    if not valid:
        raise ValueError(
            f"factors={factors!r} is not a valid downsampling factor: expected one number φ >= 1 or a pair "
            "(φh, φw) of numbers >= 1 (1 keeps a sheet axis whole, 2 halves it), e.g. factors=2 or factors=(2, 3)."
        )
    return float(pair[0]), float(pair[1])


def closed_form_gains(original_rows: torch.Tensor, blurred_rows: torch.Tensor) -> torch.Tensor:
    """``g_u = ‖original_u‖ / ‖blurred_u‖`` per row ``u`` of two ``(units, depth)`` tensors.

    A unit whose blurred row is zero cannot be rescaled back to its norm: its gain is 1 (what the paper's layer
    applies), so zero rows never turn into ``inf``/``nan``.
    """
    original_norm = torch.linalg.vector_norm(original_rows, dim=-1)
    blurred_norm = torch.linalg.vector_norm(blurred_rows, dim=-1)
    ones = torch.ones_like(blurred_norm)
    return torch.where(blurred_norm > 0, original_norm / torch.where(blurred_norm > 0, blurred_norm, ones), ones)


class _SheetUpsampling(nn.Module):
    """What both downsampled layers share: the ``(h, h')`` and ``(w, w')`` upsampling matrices of their sheet, built
    once per device and dtype from the geometry (``height``, ``width``, factors, ``interpolation``)."""

    def _upsampling_matrices(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (device, dtype)
        cached = self._upsampling_cache.get(key)
        if cached is not None:
            return cached
        # Built outside inference mode and kept only when real (not meta, fake or inference tensors), so that a
        # forward under from_pretrained's meta device, a compiler trace or torch.inference_mode leaves nothing behind
        # that a later forward (or backward) could not use.
        with torch.inference_mode(False), torch.no_grad():
            _, up_h, _, up_w = blur_matrices(
                self.height, self.width, self.factor_h, self.factor_w, self.interpolation, device=device, dtype=dtype
            )
        if is_cacheable(up_h) and is_cacheable(up_w):
            self._upsampling_cache[key] = (up_h, up_w)
        return up_h, up_w  # (h, h'), (w, w')

    @torch.no_grad()
    def fill_from_(self, layer: nn.Module, sheet: CorticalSheet) -> None:
        """Set this layer's parameters from the full ``layer`` on ``sheet``: the reduced weight ``down(C)`` (float64,
        stored in this layer's dtype), the bias copied, and with gains ``g_u = ‖C_u‖ / ‖B_u‖``, ``B`` the rows this
        layer applies without gains (computed from the stored reduced weight)."""
        down_h, _, down_w, _ = blur_matrices(
            self.height, self.width, self.factor_h, self.factor_w, self.interpolation,
            device=self.weight.device, dtype=torch.float64,
        )  # fmt: skip
        full_sheet = as_cortical_sheet(layer, (sheet.height, sheet.width)).detach().to(torch.float64)  # (h, w, d)
        reduced = torch.einsum("ah,hwd,bw->abd", down_h, full_sheet, down_w)  # (h', w', d)
        self.weight.copy_(reduced.reshape(self.weight.shape))
        if layer.bias is not None:
            self.bias.copy_(layer.bias)
        if self.gain is not None:
            blurred = self.applied_weight(gains=False, dtype=torch.float64).flatten(1)  # (h·w, d)
            self.gain.copy_(closed_form_gains(full_sheet.reshape(sheet.n_units, sheet.depth), blurred))


class TopoDownsampledLinear(_SheetUpsampling):
    """A topographic linear layer downsampled on its cortical sheet (TopoNets appendix A.5), with optional gains.

    Holds the reduced weight ``(h'·w', in_features)`` (``nn.Linear`` orientation), the full bias ``(h·w,)`` and,
    with ``gain=True``, one gain per output unit ``(h·w,)``. ``forward`` computes ``x · Wᵀ`` (``(..., h'·w')``),
    views it as the reduced sheet ``(..., h', w')``, upsamples it to ``(..., h, w)`` with ``F.interpolate``'s
    ``interpolation`` map, multiplies each unit by its gain and adds the bias: the output has the original
    ``out_features = h·w`` in the original unit order. With ``φ = (1, 1)`` and no gain it is the original layer.

    Build one from an existing layer with :meth:`from_layer`; the constructor makes an initialized layer of the
    given geometry (what ``from_pretrained`` fills with saved weights; gains start at 1).

    Args:
        in_features: input size ``d`` (the sheet's depth).
        height, width: the full sheet ``(h, w)``; ``out_features = h·w``.
        factor_h, factor_w: downsampling factors ``φh, φw ≥ 1``; ``h' = floor(h / φh)``, ``w' = floor(w / φw)``.
        bias: whether the layer adds a (full-size) bias.
        interpolation: ``F.interpolate`` mode of both the weight's downsampling and the output's upsampling
            (``"bilinear"`` with ``align_corners=False``, as TopoLoss's blur).
        layer_type: the type of the layer this one replaces, ``"Linear"`` or ``"Conv1D"`` (recorded only: the
            weight is stored ``(h'·w', in)`` either way).
        gain: whether the layer has per-unit gains (``False``: the paper's layer).
    """

    def __init__(
        self,
        in_features: int,
        height: int,
        width: int,
        factor_h: float = 2.0,
        factor_w: float = 2.0,
        bias: bool = True,
        interpolation: str = "bilinear",
        layer_type: str = "Linear",
        gain: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        # Validates the factors, the mode and that the sheet is large enough (the same rules as the blur).
        down_h, _, down_w, _ = blur_matrices(height, width, factor_h, factor_w, interpolation, dtype=torch.float64)
        if layer_type not in ("Linear", "Conv1D"):
            raise ValueError(f"layer_type={layer_type!r}: a downsampled linear layer replaces 'Linear' or 'Conv1D'.")
        self.in_features = int(in_features)
        self.height, self.width = int(height), int(width)
        self.reduced_height, self.reduced_width = down_h.shape[0], down_w.shape[0]
        self.factor_h, self.factor_w = float(factor_h), float(factor_w)
        self.interpolation = interpolation
        self.layer_type = layer_type
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(self.reduced_height * self.reduced_width, self.in_features, **factory))
        self.bias = nn.Parameter(torch.empty(self.out_features, **factory)) if bias else None
        self.gain = nn.Parameter(torch.empty(self.out_features, **factory)) if gain else None
        # Upsampling matrices per (device, dtype), derived from the geometry: not parameters, not saved.
        self._upsampling_cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        self.reset_parameters()

    @property
    def out_features(self) -> int:
        return self.height * self.width

    @property
    def reduced_units(self) -> int:
        return self.reduced_height * self.reduced_width

    def reset_parameters(self) -> None:
        """``nn.Linear``'s initialization for the reduced weight (fan-in ``in_features``) and the bias; gains 1."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
            nn.init.uniform_(self.bias, -bound, bound)
        if self.gain is not None:
            nn.init.ones_(self.gain)

    @classmethod
    def from_layer(
        cls,
        layer: nn.Module,
        factors: float | tuple[float, float] = 2.0,
        sheet: CorticalSheet | None = None,
        interpolation: str = "bilinear",
        gain: bool = True,
    ) -> TopoDownsampledLinear:
        """Downsample ``layer`` (``nn.Linear`` or transformers ``Conv1D``) on its cortical sheet.

        The reduced weight is ``down(C)`` of the layer's sheet ``C (h, w, d)``, computed in float64 with the
        ``F.interpolate`` map ``interpolation`` (``scale_factor = 1/φ``) and stored in the layer's dtype; the bias is
        copied. With ``gain`` (the default) each unit gets ``g_u = ‖C_u‖ / ‖B_u‖``, ``B`` the rows this layer
        effectively applies (:meth:`applied_weight` without gains, in float64 from the stored reduced weight), so
        every unit's applied row has the norm of the original's. ``sheet`` fixes the sheet (e.g. the one recorded
        in ``config.json``); by default it is the most-square one. ``layer`` is not modified.
        """
        if not isinstance(layer, (nn.Linear, Conv1D)):
            raise TypeError(
                f"TopoDownsampledLinear cannot downsample a {type(layer).__name__}: it takes torch.nn.Linear and "
                "transformers' Conv1D layers (a torch.nn.Conv2d goes to TopoDownsampledConv2d.from_layer). Merge PEFT "
                "adapters first (model.merge_and_unload())."
            )
        factor_h, factor_w = as_factors(factors)
        shape = None if sheet is None else (sheet.height, sheet.width)
        sheet = sheet_for_module(sheet.module_name if sheet else type(layer).__name__, layer, shape)
        weight = layer.weight
        small = cls(
            sheet.depth,
            sheet.height,
            sheet.width,
            factor_h,
            factor_w,
            bias=layer.bias is not None,
            interpolation=interpolation,
            layer_type=sheet.layer_type,
            gain=gain,
            device=weight.device,
            dtype=weight.dtype,
        )
        small.fill_from_(layer, sheet)
        return small

    def upsample(self, reduced_output: torch.Tensor) -> torch.Tensor:
        """``U``: ``(..., h'·w')`` reduced-sheet outputs → ``(..., h·w)`` full-sheet outputs (no gain, no bias)."""
        upsample_h = self.reduced_height != self.height
        upsample_w = self.reduced_width != self.width
        if not (upsample_h or upsample_w):
            return reduced_output
        up_h, up_w = self._upsampling_matrices(reduced_output.device, reduced_output.dtype)
        grid = reduced_output.unflatten(-1, (self.reduced_height, self.reduced_width))  # (..., h', w')
        if upsample_w:
            grid = torch.matmul(grid, up_w.T)  # (..., h', w)
        if upsample_h:
            grid = torch.matmul(up_h, grid)  # (..., h, w)
        return grid.flatten(-2)  # (..., h·w), unit u = i·w + j

    def applied_weight(self, gains: bool = True, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The full ``(h·w, in_features)`` weight this layer applies: ``g ⊙ (U · W')`` (``gains=False``: ``U · W'``).

        ``y = x · applied_weight()ᵀ + b``. Computed in ``dtype`` (default: the weight's); for inspection and
        fitting, never used by :meth:`forward`, which keeps the reduced weight.
        """
        dtype = dtype or self.weight.dtype
        reduced = self.weight.to(dtype).T  # (d, h'·w'): upsample every depth slice of the reduced sheet
        full = self.upsample(reduced).T  # (h·w, d)
        if gains and self.gain is not None:
            full = full * self.gain.to(dtype)[:, None]
        return full

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reduced_units == self.out_features and self.gain is None:  # φ = (1, 1): exactly nn.Linear
            return F.linear(x, self.weight, self.bias)
        out = self.upsample(F.linear(x, self.weight))  # (..., h·w), a fresh tensor that autograd does not keep
        if self.gain is None:
            return out.add_(self.bias) if self.bias is not None else out
        if out.requires_grad or (self.gain.requires_grad and torch.is_grad_enabled()):
            # Autograd keeps `out` for the gains' gradient: one fused pass into a new tensor, b + g ⊙ out.
            return torch.addcmul(self.bias, out, self.gain) if self.bias is not None else out * self.gain
        # Inference: the same fused pass in place, so the gains cost what the paper's bias addition costs.
        return torch.addcmul(self.bias, out, self.gain, out=out) if self.bias is not None else out.mul_(self.gain)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, sheet=({self.height}, {self.width}), "
            f"reduced_sheet=({self.reduced_height}, {self.reduced_width}), factors=({self.factor_h:g}, "
            f"{self.factor_w:g}), interpolation={self.interpolation!r}, bias={self.bias is not None}, "
            f"gain={self.gain is not None}"
        )


class TopoDownsampledConv2d(_SheetUpsampling):
    """A topographic convolution downsampled on its cortical sheet (A.5 for ``nn.Conv2d``), with optional gains.

    The sheet of a Conv2d layer has one unit per output channel, each holding its ``in·kh·kw`` kernel weights
    (:mod:`hf_topo.sheet`). The reduced layer holds ``down(C)`` reshaped as a convolution weight
    ``(h'·w', in, kh, kw)``, convolves the input with it (``(batch, h'·w', H, W)``), upsamples the channel axis on the
    sheet from ``(h', w')`` to ``(h, w)`` with the same interpolation matrices as :class:`TopoDownsampledLinear`,
    multiplies each channel by its gain and adds the full bias: the output has the original ``out_channels = h·w``
    in the original order, so the batch norm after it (a ResNet's) is unchanged. Convolution is linear in its weight,
    so the layer computes ``conv2d(x, g ⊙ U·W')`` exactly (:meth:`applied_weight`); with ``φ = (1, 1)`` and no gain it
    is the original convolution.

    Args:
        in_channels, kernel_size, stride, padding, dilation, groups: the original convolution's (``groups`` must be
            1: a grouped or depthwise convolution's units do not share one input space).
        height, width: the full sheet ``(h, w)``; ``out_channels = h·w``.
        factor_h, factor_w: downsampling factors ``φh, φw ≥ 1``.
        bias: whether the layer adds a (full-size) bias.
        interpolation: ``F.interpolate`` mode of the weight's downsampling and the output's upsampling.
        gain: whether the layer has per-channel gains (``False``: the paper's layer).
    """

    layer_type = "Conv2d"

    def __init__(
        self,
        in_channels: int,
        height: int,
        width: int,
        kernel_size: tuple[int, int] | int,
        stride: tuple[int, int] | int = 1,
        padding: tuple[int, int] | int | str = 0,
        dilation: tuple[int, int] | int = 1,
        factor_h: float = 2.0,
        factor_w: float = 2.0,
        bias: bool = True,
        interpolation: str = "bilinear",
        gain: bool = False,
        groups: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if groups != 1:
            raise ValueError(
                f"groups={groups}: only ungrouped convolutions can be downsampled on their sheet (a grouped or "
                "depthwise convolution's output channels read different inputs). Leave such layers out of "
                "target_modules."
            )
        down_h, _, down_w, _ = blur_matrices(height, width, factor_h, factor_w, interpolation, dtype=torch.float64)
        pair = nn.modules.utils._pair
        self.in_channels = int(in_channels)
        self.kernel_size, self.stride, self.dilation = pair(kernel_size), pair(stride), pair(dilation)
        self.padding = padding if isinstance(padding, str) else pair(padding)
        self.height, self.width = int(height), int(width)
        self.reduced_height, self.reduced_width = down_h.shape[0], down_w.shape[0]
        self.factor_h, self.factor_w = float(factor_h), float(factor_w)
        self.interpolation = interpolation
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(self.reduced_units, self.in_channels, *self.kernel_size, **factory))
        self.bias = nn.Parameter(torch.empty(self.out_channels, **factory)) if bias else None
        self.gain = nn.Parameter(torch.empty(self.out_channels, **factory)) if gain else None
        self._upsampling_cache: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        self.reset_parameters()

    @property
    def out_channels(self) -> int:
        return self.height * self.width

    @property
    def reduced_units(self) -> int:
        return self.reduced_height * self.reduced_width

    @property
    def depth(self) -> int:
        """The sheet's depth ``in·kh·kw``: the inputs of one output channel."""
        return self.in_channels * self.kernel_size[0] * self.kernel_size[1]

    def reset_parameters(self) -> None:
        """``nn.Conv2d``'s initialization for the reduced weight and the bias; gains 1."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.depth)
            nn.init.uniform_(self.bias, -bound, bound)
        if self.gain is not None:
            nn.init.ones_(self.gain)

    @classmethod
    def from_layer(
        cls,
        layer: nn.Conv2d,
        factors: float | tuple[float, float] = 2.0,
        sheet: CorticalSheet | None = None,
        interpolation: str = "bilinear",
        gain: bool = True,
    ) -> TopoDownsampledConv2d:
        """Downsample the convolution ``layer`` on its cortical sheet (``layer`` is not modified).

        As :meth:`TopoDownsampledLinear.from_layer`: the reduced weight is ``down(C)`` of the layer's sheet
        ``C (h, w, in·kh·kw)`` in float64, stored in the layer's dtype; with ``gain`` each output channel gets
        ``g_u = ‖C_u‖ / ‖B_u‖``. ``sheet`` fixes the sheet (e.g. the recorded one); by default the most-square one.
        """
        if not isinstance(layer, nn.Conv2d):
            raise TypeError(f"TopoDownsampledConv2d.from_layer takes a torch.nn.Conv2d, got {type(layer).__name__}.")
        if layer.padding_mode != "zeros":
            raise ValueError(
                f"padding_mode={layer.padding_mode!r}: only zero-padded convolutions can be downsampled (the layer "
                "convolves with F.conv2d's zero padding)."
            )
        factor_h, factor_w = as_factors(factors)
        shape = None if sheet is None else (sheet.height, sheet.width)
        sheet = sheet_for_module(sheet.module_name if sheet else type(layer).__name__, layer, shape)
        weight = layer.weight
        small = cls(
            layer.in_channels,
            sheet.height,
            sheet.width,
            layer.kernel_size,
            layer.stride,
            layer.padding,
            layer.dilation,
            factor_h,
            factor_w,
            bias=layer.bias is not None,
            interpolation=interpolation,
            gain=gain,
            groups=layer.groups,
            device=weight.device,
            dtype=weight.dtype,
        )
        small.fill_from_(layer, sheet)
        return small

    def upsample_channels(self, reduced: torch.Tensor) -> torch.Tensor:
        """``U`` on dimension 1: ``(batch, h'·w', ...)`` reduced-sheet channels → ``(batch, h·w, ...)``."""
        if (self.reduced_height, self.reduced_width) == (self.height, self.width):
            return reduced
        up_h, up_w = self._upsampling_matrices(reduced.device, reduced.dtype)  # (h, h'), (w, w')
        grid = reduced.unflatten(1, (self.reduced_height, self.reduced_width))  # (batch, h', w', ...)
        full = torch.einsum("ah,bhw...,cw->bac...", up_h, grid, up_w)  # (batch, h, w, ...)
        return full.flatten(1, 2)

    def applied_weight(self, gains: bool = True, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The full ``(h·w, in, kh, kw)`` weight this layer applies: ``g ⊙ (U · W')`` (``gains=False``: ``U · W'``).

        ``forward(x) == F.conv2d(x, applied_weight(), bias, ...)``; for inspection, never used by :meth:`forward`.
        """
        dtype = dtype or self.weight.dtype
        full = self.upsample_channels(self.weight.to(dtype)[None])[0]  # (h·w, in, kh, kw)
        if gains and self.gain is not None:
            full = full * self.gain.to(dtype)[:, None, None, None]
        return full

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x, self.weight, None, self.stride, self.padding, self.dilation)  # (batch, h'·w', H, W)
        out = self.upsample_channels(out)  # (batch, h·w, H, W)
        if self.gain is not None:
            out = out * self.gain[:, None, None]
        return out + self.bias[:, None, None] if self.bias is not None else out

    def extra_repr(self) -> str:
        return (
            f"in_channels={self.in_channels}, out_channels={self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, sheet=({self.height}, {self.width}), "
            f"reduced_sheet=({self.reduced_height}, {self.reduced_width}), factors=({self.factor_h:g}, "
            f"{self.factor_w:g}), interpolation={self.interpolation!r}, bias={self.bias is not None}, "
            f"gain={self.gain is not None}"
        )
