"""Fitting the windows: ``θ(Δ) ≈ c·(Δ+1)^(−a) + (1−c)·e^(−bΔ)`` per unit, the kinds of window and their maps.

The model and its bounds are those of the reference (``analysis.fit_func`` and ``analysis.fit_curves`` of
``github.com/dskrill/TemporalIntegration``; the TopoNets paper's eq. 3): ``0 ≤ a ≤ 10``, ``0 ≤ b ≤ 10``,
``0 ≤ c ≤ 1``, least squares over ``Δ = 0 … 20``. The reference calls ``scipy.optimize.curve_fit`` (a local
trust-region search from ``p0 = (1, 1, 0.5)``); :func:`fit_window_curves` minimizes the same sum of squares over
the same box globally (a grid over ``(a, b)`` with the optimal ``c`` in closed form, then Levenberg–Marquardt
steps), so its fit is never worse and is the same where the objective has a single basin.

The *kinds* (exponential, power law, neither, delta) are hf_topo's summary of the fits; the reference reports the
parameters only. The paper's third map, the *structure-yoked* coefficient, is a separate measurement
(:mod:`hf_topo.analysis.temporal.structure`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import torch

from ..spatial import morans_i
from .measure import IntegrationWindows, nanmean_rows

__all__ = [
    "WINDOW_KINDS",
    "LayerWindowFit",
    "WindowFits",
    "window_function",
    "fit_window_curves",
    "fit_integration_windows",
    "window_morans_i",
]

logger = logging.getLogger(__name__)

#: Kinds of window, indexed by :attr:`LayerWindowFit.kind`.
WINDOW_KINDS = ("exponential", "power_law", "neither", "delta")


def window_function(deltas: torch.Tensor, a, b, c) -> torch.Tensor:
    """``θ(Δ) = c·(Δ+1)^(−a) + (1−c)·e^(−bΔ)`` (the paper's eq. 3); ``a``, ``b``, ``c`` broadcast against
    ``deltas`` (pass ``(n_units, 1)`` tensors for ``(n_units, n_deltas)`` windows)."""
    deltas = torch.as_tensor(deltas, dtype=torch.float64)
    a, b, c = (torch.as_tensor(v, dtype=torch.float64) for v in (a, b, c))
    return c * torch.exp(-a * torch.log1p(deltas)) + (1 - c) * torch.exp(-b * deltas)


def _grid_fit(y: torch.Tensor, deltas: torch.Tensor, a_grid: torch.Tensor, b_grid: torch.Tensor):
    """Best ``(a, b, c, sse)`` per unit over per-unit grids ``a_grid (U, A)`` and ``b_grid (U, B)``.

    For fixed ``(a, b)``, with ``P = (Δ+1)^(−a)`` and ``E = e^(−bΔ)``, the residual ``y − E − c(P − E)`` is
    minimized over ``c ∈ [0, 1]`` by clipping ``⟨y−E, P−E⟩ / ‖P−E‖²``; the sum of squares then follows from inner
    products, so no ``(U, A, B, n)`` tensor is ever built.
    """
    power = torch.exp(-a_grid.unsqueeze(-1) * torch.log1p(deltas))  # (U, A, n)
    expo = torch.exp(-b_grid.unsqueeze(-1) * deltas)  # (U, B, n)
    y_p = torch.einsum("un,uan->ua", y, power)
    y_e = torch.einsum("un,ubn->ub", y, expo)
    p_p = power.square().sum(-1)
    e_e = expo.square().sum(-1)
    p_e = torch.einsum("uan,ubn->uab", power, expo)  # (U, A, B)
    cross = y_p.unsqueeze(2) - y_e.unsqueeze(1) - p_e + e_e.unsqueeze(1)  # ⟨y−E, P−E⟩
    spread = p_p.unsqueeze(2) - 2 * p_e + e_e.unsqueeze(1)  # ‖P−E‖²
    mix = torch.where(spread > 1e-12, cross / spread.clamp_min(1e-12), torch.zeros_like(cross)).clamp(0, 1)
    base = (y.square().sum(-1, keepdim=True) - 2 * y_e + e_e).unsqueeze(1)  # ‖y−E‖², (U, 1, B)
    sse = (base - 2 * mix * cross + mix.square() * spread).clamp_min(0)
    best = sse.flatten(1).argmin(dim=1)
    ia, ib = best // b_grid.shape[1], best % b_grid.shape[1]
    units = torch.arange(y.shape[0])
    return a_grid[units, ia], b_grid[units, ib], mix[units, ia, ib], sse[units, ia, ib], ia, ib


def _zoomed(grid: torch.Tensor, index: torch.Tensor, points: int) -> torch.Tensor:
    """A uniform grid of ``points`` values between each unit's best value's neighbours in ``grid`` (U, G)."""
    units = torch.arange(grid.shape[0])
    low = grid[units, (index - 1).clamp_min(0)]
    high = grid[units, (index + 1).clamp_max(grid.shape[1] - 1)]
    steps = torch.linspace(0, 1, points, dtype=grid.dtype)
    return low.unsqueeze(1) + (high - low).unsqueeze(1) * steps


def _polish(
    y: torch.Tensor, deltas: torch.Tensor, start: torch.Tensor, upper: torch.Tensor, iterations: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Levenberg–Marquardt steps on ``(a, b, c)`` (``start``: ``(U, 3)``) projected onto ``[0, upper]``, all units
    at once; a unit takes a step only if it lowers its sum of squares. Returns ``(params, sse)``."""
    log_distance = torch.log1p(deltas)

    def residuals(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b, c = (params[:, i : i + 1] for i in range(3))
        power = torch.exp(-a * log_distance)  # (U, n)
        expo = torch.exp(-b * deltas)
        jacobian = torch.stack([-c * log_distance * power, -(1 - c) * deltas * expo, power - expo], dim=-1)
        return c * power + (1 - c) * expo - y, jacobian  # (U, n), (U, n, 3)

    params = start.clone()
    residual, jacobian = residuals(params)
    sse = residual.square().sum(dim=1)
    damping = torch.full_like(sse, 1e-3)
    eye = torch.eye(3, dtype=params.dtype)
    for _ in range(iterations):
        normal = jacobian.transpose(1, 2) @ jacobian  # (U, 3, 3)
        gradient = (jacobian.transpose(1, 2) @ residual.unsqueeze(-1)).squeeze(-1)
        scaled = damping[:, None, None] * (torch.diag_embed(normal.diagonal(dim1=1, dim2=2)) + 1e-9 * eye)
        step = torch.linalg.solve(normal + scaled, -gradient)
        trial = torch.minimum(torch.maximum(params + step, torch.zeros_like(upper)), upper)
        trial_residual, trial_jacobian = residuals(trial)
        trial_sse = trial_residual.square().sum(dim=1)
        better = trial_sse < sse
        params = torch.where(better[:, None], trial, params)
        residual = torch.where(better[:, None], trial_residual, residual)
        jacobian = torch.where(better[:, None, None], trial_jacobian, jacobian)
        sse = torch.where(better, trial_sse, sse)
        damping = torch.where(better, damping * 0.3, damping * 10).clamp(1e-12, 1e12)
    return params, sse


def fit_window_curves(
    windows: torch.Tensor,
    deltas: torch.Tensor | None = None,
    a_max: float = 10.0,
    b_max: float = 10.0,
    grid_size: int = 40,
    refinements: int = 1,
    polish_steps: int = 60,
    chunk_size: int = 256,
    negligible: float = 0.05,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fit ``θ(Δ) = c·(Δ+1)^(−a) + (1−c)·e^(−bΔ)`` to each row of ``windows`` by least squares.

    Args:
        windows: ``(n_units, n_deltas)`` normalized windows (rows with ``nan`` get ``nan`` fits).
        deltas: ``(n_deltas,)`` the distances (default ``0 … n_deltas−1``).
        a_max, b_max: upper bounds of ``a`` and ``b`` (lower bounds 0; ``c ∈ [0, 1]``).
        grid_size: values of ``a`` and of ``b`` in the first grid (0, then log-spaced from ``1e-3·max`` to max).
        refinements: zoomed grids (11×11 between the neighbours of the best point) after the first.
        polish_steps: Levenberg–Marquardt iterations from the best grid point (within the bounds).
        chunk_size: units fitted at once (memory ``∝ chunk_size·grid_size²``).
        negligible: a component whose weight (``c`` or ``1 − c``) is below this has an undetermined parameter
            (it shapes the window by less than ``negligible`` at any ``Δ``).

    Returns:
        ``(a, b, c, r2)``, each ``(n_units,)`` float64: ``a`` is ``nan`` where ``c < negligible`` and ``b`` where
        ``c > 1 − negligible`` (the component is absent, its parameter undetermined); ``r2 = 1 − SSE/SS_tot`` over
        all ``Δ`` (``nan`` for a flat window).
    """
    if windows.ndim != 2 or windows.shape[1] < 3:
        raise ValueError(f"Expected windows of shape (n_units, n_deltas ≥ 3), got {tuple(windows.shape)}.")
    if a_max <= 0 or b_max <= 0 or grid_size < 3:
        raise ValueError(f"a_max={a_max}, b_max={b_max} must be > 0 and grid_size={grid_size} ≥ 3.")
    y_all = windows.detach().double().cpu()
    deltas = torch.arange(y_all.shape[1], dtype=torch.float64) if deltas is None else deltas.double().cpu()
    if deltas.shape != (y_all.shape[1],):
        raise ValueError(f"deltas {tuple(deltas.shape)} must hold one distance per window column ({y_all.shape[1]}).")
    n_units = y_all.shape[0]
    a, b, c, r2, sse = (torch.full((n_units,), float("nan"), dtype=torch.float64) for _ in range(5))
    valid = torch.isfinite(y_all).all(dim=1).nonzero().squeeze(1)

    def coarse(top: float) -> torch.Tensor:
        log_spaced = torch.logspace(math.log10(top * 1e-3), math.log10(top), grid_size - 1, dtype=torch.float64)
        return torch.cat([torch.zeros(1, dtype=torch.float64), log_spaced])

    for part in valid.split(chunk_size):
        y = y_all[part]
        a_grid = coarse(a_max).expand(len(part), -1)
        b_grid = coarse(b_max).expand(len(part), -1)
        fit_a, fit_b, fit_c, fit_sse, ia, ib = _grid_fit(y, deltas, a_grid, b_grid)
        for _ in range(refinements):
            a_grid, b_grid = _zoomed(a_grid, ia, 11), _zoomed(b_grid, ib, 11)
            fit_a, fit_b, fit_c, fit_sse, ia, ib = _grid_fit(y, deltas, a_grid, b_grid)
        a[part], b[part], c[part], sse[part] = fit_a, fit_b, fit_c, fit_sse
    y = y_all[valid]
    if polish_steps > 0 and len(valid):
        upper = torch.tensor([a_max, b_max, 1.0], dtype=torch.float64)
        start = torch.stack([a[valid], b[valid], c[valid]], dim=1)
        params, sse[valid] = _polish(y, deltas, start, upper, polish_steps)
        a[valid], b[valid], c[valid] = params.unbind(dim=1)
    total = (y - y.mean(dim=1, keepdim=True)).square().sum(dim=1)
    r2[valid] = torch.where(total > 1e-12, 1 - sse[valid] / total.clamp_min(1e-12), float("nan"))
    a = torch.where(c >= negligible, a, float("nan"))
    b = torch.where(c <= 1 - negligible, b, float("nan"))
    return a, b, c, r2


@dataclass
class LayerWindowFit:
    """The window fits of one layer's units, in sheet order (unit ``u`` at ``(u // width, u % width)``).

    Attributes:
        name: the layer's module name; sheet: ``(height, width)``.
        a, b, c, r2: ``(n_units,)`` float64 fits (see :func:`fit_window_curves`).
        kind: ``(n_units,)`` index into :data:`WINDOW_KINDS` (exponential, power_law, neither, delta).
        reach: ``(n_units,)`` the mean normalized window over ``Δ ≥ 1`` (model-free; ``nan`` for silent units).
        mean_window: ``(n_deltas,)`` the mean normalized window of the layer's responding units.
    """

    name: str
    sheet: tuple[int, int]
    a: torch.Tensor
    b: torch.Tensor
    c: torch.Tensor
    r2: torch.Tensor
    kind: torch.Tensor
    reach: torch.Tensor
    mean_window: torch.Tensor

    def maps(self) -> dict[str, torch.Tensor]:
        """``{"a", "b", "c", "r2", "reach", "kind"}`` as ``(height, width)`` maps."""
        height, width = self.sheet
        values = {
            "a": self.a,
            "b": self.b,
            "c": self.c,
            "r2": self.r2,
            "reach": self.reach,
            "kind": self.kind.double(),
        }
        return {key: value.reshape(height, width) for key, value in values.items()}

    def fractions(self) -> dict[str, float]:
        """The share of the units of each kind."""
        return {kind: float((self.kind == k).double().mean()) for k, kind in enumerate(WINDOW_KINDS)}


@dataclass
class WindowFits:
    """Per-layer fits of the integration windows (:func:`fit_integration_windows`)."""

    layers: dict[str, LayerWindowFit]
    deltas: torch.Tensor
    r2_threshold: float
    c_split: float
    difference: str = "absolute"
    morans: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def kinds(self) -> tuple[str, ...]:
        """The kinds of window, in the order of :attr:`LayerWindowFit.kind` (:data:`WINDOW_KINDS`)."""
        return WINDOW_KINDS

    def morans_i(self) -> dict[str, dict[str, float]]:
        """Moran's I of each layer's maps: the stored values, else :func:`window_morans_i`."""
        return self.morans or window_morans_i(self)

    def to_dict(self, per_unit: bool = False) -> dict:
        """JSON-ready report entries: per layer the kinds' shares, medians, mean window and Moran's I of the maps.

        ``per_unit=True`` adds every unit's ``a``, ``b``, ``c``, ``r2`` and kind (large for big models).
        """
        morans = self.morans_i()
        report = {
            "model": "theta(delta) = c*(delta+1)^(-a) + (1-c)*exp(-b*delta)",
            "reference": "Skrill & Norman-Haignere, NeurIPS 2023; TopoNets (Deb, Deb & Murty, ICLR 2025) A.7",
            "difference": self.difference,
            "r2_threshold": self.r2_threshold,
            "c_split": self.c_split,
            "deltas": self.deltas.tolist(),
            "layers": {},
        }
        for name, fit in self.layers.items():
            entry = {
                "sheet": list(fit.sheet),
                "n_units": int(fit.kind.numel()),
                "fractions": fit.fractions(),
                "median_a": nanmedian_of(fit.a),
                "median_b": nanmedian_of(fit.b),
                "median_c": nanmedian_of(fit.c),
                "median_r2": nanmedian_of(fit.r2),
                "median_reach": nanmedian_of(fit.reach),
                "mean_window": fit.mean_window.tolist(),
                "morans_i": morans.get(name, {}),
            }
            if per_unit:
                entry.update({key: _json_list(getattr(fit, key)) for key in ("a", "b", "c", "r2", "reach")})
                entry["kind"] = [WINDOW_KINDS[k] for k in fit.kind.tolist()]
            report["layers"][name] = entry
        return report


def nanmedian_of(values: torch.Tensor) -> float | None:
    finite = values[torch.isfinite(values)]
    return float(finite.median()) if finite.numel() else None


def _json_list(values: torch.Tensor) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values.tolist()]


def fit_integration_windows(
    windows: IntegrationWindows,
    r2_threshold: float = 0.9,
    c_split: float = 0.5,
    delta_level: float = 0.05,
    **fit_kwargs,
) -> WindowFits:
    """Fit every unit's window (:func:`fit_window_curves`) and classify it.

    Args:
        windows: from :func:`measure_integration_windows`.
        r2_threshold: below it a unit fits neither shape (kind ``"neither"``), as do flat and silent units.
        c_split: ``c ≥ c_split`` is power-law dominated, below exponential dominated.
        delta_level: a window below it at every ``Δ ≥ 1`` is a spike at the current word (kind ``"delta"``).
        fit_kwargs: passed to :func:`fit_window_curves` (``a_max``, ``b_max``, ``grid_size``, ...).
    """
    if not 0 <= c_split <= 1:
        raise ValueError(f"c_split={c_split} must lie in [0, 1].")
    layers = {}
    for name, window in windows.windows.items():
        a, b, c, r2 = fit_window_curves(window, windows.deltas, **fit_kwargs)
        beyond = window[:, 1:].double()  # Δ ≥ 1
        kind = torch.where(c >= c_split, 1, 0)
        kind = torch.where(beyond.max(dim=1).values < delta_level, 3, kind)
        kind = torch.where(torch.isnan(r2) | (r2 < r2_threshold), 2, kind).to(torch.int8)
        layers[name] = LayerWindowFit(
            name=name,
            sheet=windows.sheets[name],
            a=a,
            b=b,
            c=c,
            r2=r2,
            kind=kind,
            reach=beyond.mean(dim=1),
            mean_window=nanmean_rows(window.double()),
        )
        shares = layers[name].fractions()
        logger.info(
            "%s: exponential %.0f%%, power-law %.0f%%, neither %.0f%%, delta %.0f%% (median c %.2f)",
            name, 100 * shares["exponential"], 100 * shares["power_law"], 100 * shares["neither"],
            100 * shares["delta"], nanmedian_of(c) or float("nan"),
        )  # fmt: skip
    fits = WindowFits(
        layers=layers, deltas=windows.deltas, r2_threshold=r2_threshold, c_split=c_split, difference=windows.difference
    )
    fits.morans = window_morans_i(fits)
    return fits


def window_morans_i(fits: WindowFits) -> dict[str, dict[str, float]]:
    """Moran's I (queen neighbours, :func:`hf_topo.analysis.spatial.morans_i`) of each layer's ``a``, ``b``, ``c``,
    ``R²`` and reach maps: ≈ 0 for units scattered at random, toward 1 when units cluster on the sheet by window.

    Undetermined values (``nan``: absent component, silent unit) are set to the layer's mean of that map first,
    so they add no structure; a map with fewer than 2 finite values gets ``nan``.
    """
    result = {}
    for name, fit in fits.layers.items():
        entry = {}
        for key, values in fit.maps().items():
            if key == "kind":
                continue
            finite = torch.isfinite(values)
            if int(finite.sum()) < 2:
                entry[key] = float("nan")
                continue
            filled = torch.where(finite, values, values[finite].mean())
            entry[key] = float(morans_i(filled))
        result[name] = entry
    return result
