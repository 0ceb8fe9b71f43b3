"""Window kinds per layer and on the sheet: the content of the TopoNets paper's Fig. 5B and Fig. 8.

The paper (Deb, Deb & Murty, ICLR 2025, §3.4) states three things about the fitted integration windows
(:mod:`hf_topo.analysis.temporal.fit`) of a language TopoNet:

1. *"early layers were dominated by exponential integration dynamics, while mid-layers exhibited power-law
   dynamics"* — :func:`layer_trend` compares the first layer with the middle layers: the exponential share should
   fall and the power-law share rise.
2. *"we identified three types of clusters"*: exponential, power-law, and *"an intriguing cluster not explained by
   either"* — :func:`kind_shares` gives each layer's shares of the paper's three kinds, and :func:`kind_clustering`
   how clustered each kind is on the sheet: Moran's I of each kind's indicator map, and the size of the same-kind
   patches (4-connected components) against the same map shuffled.
3. the maps of the power-law, exponential and sentence-yoked coefficients cluster (Fig. 5B, Fig. 8 for every model)
   — Moran's I of the ``c`` map is :func:`~hf_topo.analysis.temporal.fit.window_morans_i`'s, that of the yoking index
   :class:`~hf_topo.analysis.temporal.structure.StructureYoking`'s.

**The three kinds.** :func:`~hf_topo.analysis.temporal.fit.fit_integration_windows` sorts a unit into four kinds
(exponential, power law, neither, delta). A *delta* window (below ``delta_level`` at every ``Δ ≥ 1``: only the
current word matters) is the shortest exponential window there is (``e^(−bΔ)`` with a large ``b`` fits it exactly),
so the paper's three kinds count it as exponential (*"neurons dominated by short, exponential windows"*);
:data:`PAPER_KINDS` and :func:`paper_kind_index` do that fold, and every result keeps the four-kind shares beside it.

**The arranged control.** An arrangement (:func:`hf_topo.arrange_units`) permutes a model's MLP units without
changing its function, so the arranged model's windows are the baseline's, moved: :func:`permute_window_fits`
moves the fits (and :func:`permute_yoking` the yoking indices) instead of measuring again (tested against a
measurement of the arranged model). The arranged baseline's shares per layer therefore equal the baseline's; only
its maps, and so their clustering, differ.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import torch

from ..spatial import morans_i
from .fit import WINDOW_KINDS, LayerWindowFit, WindowFits, window_morans_i
from .structure import StructureYoking

__all__ = [
    "PAPER_KINDS",
    "kind_clustering",
    "kind_shares",
    "layer_trend",
    "middle_layers",
    "paper_kind_index",
    "permute_window_fits",
    "permute_yoking",
    "same_kind_patches",
    "window_kind_summary",
]

#: The paper's three kinds of window (Fig. 5B): exponential (with the delta windows), power law, neither.
PAPER_KINDS = ("exponential", "power_law", "neither")


def paper_kind_index(kind: torch.Tensor) -> torch.Tensor:
    """Indices into :data:`PAPER_KINDS` of four-kind indices (into :data:`~hf_topo.analysis.temporal.WINDOW_KINDS`):
    exponential and delta → 0, power law → 1, neither → 2."""
    kind = torch.as_tensor(kind).long()
    fold = torch.tensor([PAPER_KINDS.index(k if k != "delta" else "exponential") for k in WINDOW_KINDS])
    return fold[kind]


def kind_shares(fit: LayerWindowFit) -> dict[str, dict[str, float]]:
    """``{"paper": {kind: share} over PAPER_KINDS, "four": {kind: share} over WINDOW_KINDS}`` of one layer's units."""
    paper = paper_kind_index(fit.kind)
    return {
        "paper": {name: float((paper == k).double().mean()) for k, name in enumerate(PAPER_KINDS)},
        "four": fit.fractions(),
    }


def middle_layers(n_layers: int) -> list[int]:
    """The middle layers of a stack of ``n_layers``: indices ``(n−1)//2`` and ``n//2`` (one layer when ``n`` is odd;
    for 6 layers 2 and 3, for 12 layers 5 and 6)."""
    if n_layers < 1:
        raise ValueError(f"n_layers={n_layers} must be at least 1.")
    return sorted({(n_layers - 1) // 2, n_layers // 2})


def layer_trend(shares: Sequence[Mapping[str, float]]) -> dict:
    """The paper's layer trend, from the paper-kind shares of each layer in depth order.

    Returns the first layer's and the middle layers' (mean) exponential and power-law shares, their changes
    (middle − first) and whether *"early layers exponential, middle layers power law"* holds in this model: the
    exponential share falls (``exponential_falls``) and the power-law share rises (``power_law_rises``); ``holds``
    when both do. With fewer than 3 layers there is no middle distinct from the first, and the booleans are ``None``.
    """
    n = len(shares)
    if n == 0:
        raise ValueError("layer_trend needs the shares of at least one layer.")
    middle = middle_layers(n)
    result = {"first_layer": 0, "middle_layers": middle}
    for kind in ("exponential", "power_law", "neither"):
        first = float(shares[0][kind])
        mid = float(sum(shares[i][kind] for i in middle) / len(middle))
        result[f"{kind}_first"], result[f"{kind}_middle"], result[f"{kind}_change"] = first, mid, mid - first
    if n < 3:
        result.update(exponential_falls=None, power_law_rises=None, holds=None)
    else:
        result["exponential_falls"] = result["exponential_change"] < 0
        result["power_law_rises"] = result["power_law_change"] > 0
        result["holds"] = result["exponential_falls"] and result["power_law_rises"]
    return result


def _components(labels: torch.Tensor) -> torch.Tensor:
    """4-connected components of equal labels on a ``(height, width)`` map: a component id per cell."""
    height, width = labels.shape
    flat = labels.reshape(-1).tolist()
    parent = list(range(height * width))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(height * width):
        r, c = divmod(i, width)
        for j in ((i + 1) if c + 1 < width else None, (i + width) if r + 1 < height else None):
            if j is not None and flat[i] == flat[j]:
                a, b = root(i), root(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return torch.tensor([root(i) for i in range(height * width)]).reshape(height, width)


def _patch_sizes(labels: torch.Tensor) -> dict[int, list[int]]:
    """``{label: sizes of its patches}``."""
    components = _components(labels).reshape(-1)
    flat = labels.reshape(-1)
    sizes: dict[int, list[int]] = {}
    for component in components.unique().tolist():
        members = components == component
        sizes.setdefault(int(flat[members][0]), []).append(int(members.sum()))
    return sizes


def _unit_weighted_patch_size(sizes: list[int]) -> float:
    """The mean size of the patch a unit sits in (``Σ s² / Σ s``): robust to many single-unit patches."""
    total = sum(sizes)
    return sum(s * s for s in sizes) / total if total else float("nan")


def same_kind_patches(
    kind_map: torch.Tensor, names: Sequence[str] = PAPER_KINDS, n_shuffles: int = 20, seed: int = 0
) -> dict[str, dict[str, float | int | None]]:
    """The size of the same-kind patches of a kind map, against the same map shuffled.

    A patch is a 4-connected component of units of one kind. Per kind: its number of units, the number of patches,
    the largest patch, and the mean size of the patch a unit of that kind sits in (unit-weighted, ``Σ s² / Σ s``);
    ``shuffled_unit_patch_size`` is the same mean over ``n_shuffles`` seeded random permutations of the map (the
    kinds' shares kept, their places random), and ``patch_size_ratio`` the observed over the shuffled one (> 1:
    units of this kind sit together more than chance would put them). ``None`` for a kind no unit has.
    """
    if kind_map.ndim != 2:
        raise ValueError(f"Expected a (height, width) kind map, got shape {tuple(kind_map.shape)}.")
    labels = kind_map.long()
    observed = _patch_sizes(labels)
    generator = torch.Generator().manual_seed(seed)
    shuffled: dict[int, list[float]] = {}
    for _ in range(n_shuffles):
        order = torch.randperm(labels.numel(), generator=generator)
        for label, sizes in _patch_sizes(labels.reshape(-1)[order].reshape(labels.shape)).items():
            shuffled.setdefault(label, []).append(_unit_weighted_patch_size(sizes))
    result = {}
    for k, name in enumerate(names):
        sizes = observed.get(k)
        if not sizes:
            result[name] = {"units": 0, "patches": 0, "largest_patch": None, "unit_patch_size": None,
                            "shuffled_unit_patch_size": None, "patch_size_ratio": None}  # fmt: skip
            continue
        mean_observed = _unit_weighted_patch_size(sizes)
        chance = sum(shuffled[k]) / len(shuffled[k]) if shuffled.get(k) else None
        result[name] = {
            "units": sum(sizes),
            "patches": len(sizes),
            "largest_patch": max(sizes),
            "unit_patch_size": mean_observed,
            "shuffled_unit_patch_size": chance,
            "patch_size_ratio": mean_observed / chance if chance else None,
        }
    return result


def _nan_to_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def kind_clustering(fit: LayerWindowFit, n_shuffles: int = 20, seed: int = 0) -> dict:
    """How the paper's kinds cluster on one layer's sheet: Moran's I of each kind's indicator map (``None`` for a
    kind that no unit, or every unit, has) and :func:`same_kind_patches`."""
    height, width = fit.sheet
    paper = paper_kind_index(fit.kind).reshape(height, width)
    indicator_i = {}
    for k, name in enumerate(PAPER_KINDS):
        indicator = (paper == k).double()
        varies = 0 < float(indicator.sum()) < indicator.numel()
        indicator_i[name] = _nan_to_none(float(morans_i(indicator))) if varies else None
    return {"morans_i": indicator_i, "patches": same_kind_patches(paper, n_shuffles=n_shuffles, seed=seed)}


def window_kind_summary(
    fits: WindowFits, yoking: StructureYoking | None = None, n_shuffles: int = 20, seed: int = 0
) -> dict:
    """Everything Fig. 5B / Fig. 8 show for one model, JSON-ready.

    Returns ``{"layers": {layer: {...}}, "trend": layer_trend(...)}``; per layer (in the order of ``fits.layers``,
    which is depth order): ``shares`` (:func:`kind_shares`), ``clustering`` (:func:`kind_clustering`), Moran's I of the
    ``a``, ``b``, ``c``, R² and reach maps (``coefficient_morans_i``), the median ``c``, and with ``yoking`` the
    sentence-yoked map's median index, share of units above 0 and Moran's I.
    """
    layers, paper_shares = {}, []
    morans = fits.morans_i()
    for name, fit in fits.layers.items():
        shares = kind_shares(fit)
        paper_shares.append(shares["paper"])
        finite_c = fit.c[torch.isfinite(fit.c)]
        entry = {
            "sheet": list(fit.sheet),
            "n_units": int(fit.kind.numel()),
            "shares": shares,
            "clustering": kind_clustering(fit, n_shuffles=n_shuffles, seed=seed),
            "coefficient_morans_i": {key: _nan_to_none(value) for key, value in morans.get(name, {}).items()},
            "median_c": float(finite_c.median()) if finite_c.numel() else None,
        }
        if yoking is not None and name in yoking.index:
            index = yoking.index[name]
            finite = index[torch.isfinite(index)]
            entry["yoking"] = {
                "median_index": float(finite.median()) if finite.numel() else None,
                "fraction_positive": float((finite > 0).double().mean()) if finite.numel() else None,
                "morans_i": _nan_to_none(yoking.morans.get(name, float("nan"))),
            }
        layers[name] = entry
    return {
        "kinds": list(PAPER_KINDS),
        "r2_threshold": fits.r2_threshold,
        "c_split": fits.c_split,
        "layers": layers,
        "trend": layer_trend(paper_shares),
    }


def _map_morans_i(values: torch.Tensor, sheet: tuple[int, int]) -> float:
    """Moran's I of a per-unit map, undetermined (``nan``) units set to the mean (as the yoking maps are scored)."""
    finite = torch.isfinite(values)
    if int(finite.sum()) < 2:
        return float("nan")
    return float(morans_i(torch.where(finite, values, values[finite].mean()).reshape(sheet)))


def _check_permutation(name: str, permutation: torch.Tensor, n_units: int) -> torch.Tensor:
    permutation = torch.as_tensor(permutation, dtype=torch.long)
    if permutation.shape != (n_units,) or not torch.equal(permutation.sort().values, torch.arange(n_units)):
        raise ValueError(f"The permutation of {name!r} is not a permutation of its {n_units} units.")
    return permutation


def permute_window_fits(fits: WindowFits, permutations: Mapping[str, Sequence[int] | torch.Tensor]) -> WindowFits:
    """The fits of the same model with its units permuted: position ``p`` of a layer gets the fit of unit
    ``permutations[layer][p]`` (the convention of :func:`hf_topo.arrange_units`' report); Moran's I recomputed on
    the moved maps. Layers without a permutation are kept as they are."""
    layers = {}
    for name, fit in fits.layers.items():
        if name not in permutations:
            layers[name] = fit
            continue
        perm = _check_permutation(name, permutations[name], fit.kind.numel())
        layers[name] = dataclasses.replace(
            fit, **{key: getattr(fit, key)[perm] for key in ("a", "b", "c", "r2", "kind", "reach")}
        )
    moved = dataclasses.replace(fits, layers=layers, morans={})
    moved.morans = window_morans_i(moved)
    return moved


def permute_yoking(
    yoking: StructureYoking, permutations: Mapping[str, Sequence[int] | torch.Tensor]
) -> StructureYoking:
    """The structure yoking of the same model with its units permuted (as :func:`permute_window_fits`)."""
    index, first_differences, morans = dict(yoking.index), dict(yoking.first_differences), dict(yoking.morans)
    for name in list(index):
        if name not in permutations:
            continue
        perm = _check_permutation(name, permutations[name], index[name].numel())
        index[name], first_differences[name] = index[name][perm], first_differences[name][perm]
        morans[name] = _map_morans_i(index[name], yoking.sheets[name])
    return dataclasses.replace(yoking, index=index, first_differences=first_differences, morans=morans)
