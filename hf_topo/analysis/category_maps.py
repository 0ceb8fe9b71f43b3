"""Category-selectivity maps on an image model's sheets (TopoNets §3.4, Fig. 5A): t-maps, patches, relations.

For every topographic layer and every category of a stimulus set (fLoc's faces, bodies, places, characters,
objects; or any categories), the units' responses to the category's images are compared with their responses to
the other categories' images by eq. 2's Welch t (:func:`~hf_topo.analysis.selectivity.selectivity_t`); the t-values
laid out on the sheet are the category's **t-map**. A unit is an output channel of a Conv2d sheet and its response
to an image is the channel's feature map averaged over space
(:mod:`~hf_topo.analysis.image_activations`): selectivity asks *whether* a channel responds to a category, not where
in the image, and the paper reads its units after pooling the same way.

=================  ==============================================================================================
measure            definition
=================  ==============================================================================================
t-map              category ``c``: ``t(images of c, images of the other categories)`` per unit; a **contrast**
                   ``a`` vs ``b`` (``big`` vs ``small``, ``animate`` vs ``inanimate``): ``t(images of a, images of
                   b)``, the two groups named by folders (:func:`group_mask`)
Moran's I          of each t-map, queen neighbours (:func:`~hf_topo.analysis.spatial.morans_i`)
patches            connected components of the units with ``t > patch_threshold`` (default 2, Margalit et al.'s
                   threshold), **queen** (8-neighbour) connectivity — the neighbourhood Moran's I uses — keeping
                   components of at least ``min_patch_units`` units (default 2: one unit is not a patch). With
                   ``patch_top_fraction`` the threshold is instead the ``1 − fraction`` quantile of the map (the top
                   x % of units, still only ``t > 0``). Reported: the count and the sizes (units), largest first
SSIM               the paper's "structural similarity" between two t-maps: Wang et al.'s (2004) SSIM with
                   scikit-image's defaults — a uniform ``7 × 7`` window (the largest odd window that fits when a
                   sheet side is shorter than 7), ``K1 = 0.01``, ``K2 = 0.03``, sample (``N − 1``) covariances,
                   ``L`` = the joint data range of the two maps (max − min over both, so ``SSIM(x, y) = SSIM(y,
                   x)``), averaged over the windows that fit inside the sheet (no padding)
Pearson r          between the two t-maps' values over units
=================  ==============================================================================================

Usage::

    from hf_topo.analysis import topographic_layers
    from hf_topo.analysis.category_maps import category_selectivity

    layers = topographic_layers(model)
    result = category_selectivity(model, pixel_values, ["faces", "faces", "places", ...], layers,
                                  contrasts=[("big", "small")])
    result.t_maps["resnet.encoder.stages.3.layers.1.layer.1.convolution"]["faces"]  # (height, width)
    result.morans_i[layer]["faces"], result.patches[layer]["faces"].count, result.relation(layer, "faces", "places")
    result.to_json()

The paper reports face–scene −0.41, face–body 0.79 and real-world size vs animacy 0.46 as "structural similarity";
its code is not public, so the window, constants and data range above are the choices documented here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..sheet import CorticalSheet
from ..targets import TopoLayer
from .maps import as_sheet_map
from .selectivity import selectivity_t
from .spatial import morans_i

__all__ = [
    "PatchSummary",
    "MapRelation",
    "LayerSelectivity",
    "CategorySelectivity",
    "group_mask",
    "find_patches",
    "structural_similarity",
    "pearson_r",
    "selectivity_from_responses",
    "category_selectivity",
    "contrast_name",
    "parse_contrasts",
]

logger = logging.getLogger(__name__)

#: SSIM's constants (Wang et al. 2004; scikit-image's defaults).
SSIM_K1, SSIM_K2, SSIM_WINDOW = 0.01, 0.03, 7


def contrast_name(a: str, b: str) -> str:
    """The name of the contrast map ``a`` vs ``b``: ``"big-vs-small"``."""
    return f"{a}-vs-{b}"


def parse_contrasts(spec: str | Sequence[str] | Sequence[tuple[str, str]] | None) -> list[tuple[str, str]]:
    """Contrasts from ``"big:small,animate:inanimate"``, ``["big:small", ...]`` or ``[("big", "small"), ...]``."""
    if spec is None:
        return []
    items = [s for s in spec.split(",") if s.strip()] if isinstance(spec, str) else list(spec)
    contrasts = []
    for item in items:
        pair = tuple(p.strip() for p in item.split(":")) if isinstance(item, str) else tuple(item)
        if len(pair) != 2 or not all(pair) or pair[0] == pair[1]:
            raise ValueError(
                f"Contrast {item!r}: expected two different groups as 'a:b' (e.g. 'big:small' or "
                "'animate:inanimate'), the t-map of group a's images against group b's."
            )
        contrasts.append(pair)
    return contrasts


def group_mask(groups: Sequence[str], name: str) -> torch.Tensor:
    """Which images belong to the group ``name``: ``(n_images,)`` bool.

    ``groups`` are the images' folder paths (``"faces/adult"``; a flat label such as ``"c0"`` is a path of one
    folder). ``name`` (``"animate"``, ``"faces"``, ``"big/animate"``) matches an image when its ``/``-separated
    folders appear as consecutive folders of the image's path, at any depth: ``animate`` matches ``big/animate``
    and ``small/animate``; ``faces`` matches ``faces/adult``.
    """
    wanted = tuple(name.strip("/").split("/"))
    n = len(wanted)

    def matches(group: str) -> bool:
        parts = tuple(group.strip("/").split("/"))
        return any(parts[i : i + n] == wanted for i in range(len(parts) - n + 1))

    return torch.tensor([matches(g) for g in groups], dtype=torch.bool)


# --------------------------------------------------------------------------------------------------------------
# Patches


@dataclass(frozen=True)
class PatchSummary:
    """The patches of one t-map: connected units above a threshold (see the module docstring's rule).

    Attributes:
        threshold: the t-value a unit must exceed.
        sizes: the patches' sizes in units, largest first (components smaller than ``min_units`` left out).
        min_units: the smallest component counted.
        selective_units: units above the threshold (in patches or not).
    """

    threshold: float
    sizes: tuple[int, ...]
    min_units: int
    selective_units: int

    @property
    def count(self) -> int:
        return len(self.sizes)

    def to_dict(self) -> dict:
        return {
            "count": self.count,
            "sizes": list(self.sizes),
            "threshold": self.threshold,
            "min_units": self.min_units,
            "selective_units": self.selective_units,
        }


def _components(mask: torch.Tensor) -> list[int]:
    """Sizes of the 8-connected components of the ``True`` cells of a ``(height, width)`` mask (flood fill)."""
    height, width = mask.shape
    cells = mask.tolist()
    seen = [[False] * width for _ in range(height)]
    sizes = []
    for row in range(height):
        for col in range(width):
            if not cells[row][col] or seen[row][col]:
                continue
            seen[row][col] = True
            stack, size = [(row, col)], 0
            while stack:
                r, c = stack.pop()
                size += 1
                for dr in (-1, 0, 1):
                    for dc in (-1, 0, 1):
                        rr, cc = r + dr, c + dc
                        if 0 <= rr < height and 0 <= cc < width and cells[rr][cc] and not seen[rr][cc]:
                            seen[rr][cc] = True
                            stack.append((rr, cc))
            sizes.append(size)
    return sizes


def find_patches(
    t_map: torch.Tensor, threshold: float = 2.0, min_units: int = 2, top_fraction: float | None = None
) -> PatchSummary:
    """The patches of a ``(height, width)`` t-map: 8-connected components of units with ``t > threshold``.

    Args:
        threshold: the t-value a unit must exceed (default 2).
        min_units: components smaller than this are not patches (default 2).
        top_fraction: instead of ``threshold``, keep the top ``top_fraction`` of units (the threshold becomes the
            map's ``1 − top_fraction`` quantile, and never below 0: a patch is always of positive selectivity).
    """
    if t_map.ndim != 2:
        raise ValueError(f"Expected a (height, width) t-map, got {tuple(t_map.shape)}.")
    if min_units < 1:
        raise ValueError(f"min_units={min_units} must be at least 1 unit.")
    values = t_map.detach().double().cpu()
    if top_fraction is not None:
        if not 0 < top_fraction < 1:
            raise ValueError(f"top_fraction={top_fraction} must be in (0, 1), e.g. 0.1 for the top 10 % of units.")
        finite = values[values.isfinite()]
        quantile = float(torch.quantile(finite, 1 - top_fraction)) if finite.numel() else math.inf
        threshold = max(quantile, 0.0)
        above = values >= threshold if quantile > 0 else values > threshold
    else:
        above = values > threshold
    sizes = sorted((s for s in _components(above) if s >= min_units), reverse=True)
    return PatchSummary(
        threshold=float(threshold), sizes=tuple(sizes), min_units=min_units, selective_units=int(above.sum())
    )


# --------------------------------------------------------------------------------------------------------------
# Map relations


def structural_similarity(x: torch.Tensor, y: torch.Tensor, window: int = SSIM_WINDOW) -> float:
    """SSIM of two ``(height, width)`` maps (Wang et al. 2004, scikit-image's defaults; the module docstring).

    The window is ``window`` (odd), shrunk to the largest odd size that fits the sheet. Returns ``nan`` when both
    maps are one constant (no data range), or a map is not finite.
    """
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"Expected two (height, width) maps of one shape, got {tuple(x.shape)} and {tuple(y.shape)}.")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window={window} must be an odd number of units (e.g. 7).")
    x, y = x.detach().double().cpu(), y.detach().double().cpu()
    if not (x.isfinite().all() and y.isfinite().all()):
        return math.nan
    side = min(window, *(s if s % 2 else s - 1 for s in x.shape))
    data_range = float(torch.maximum(x.max(), y.max()) - torch.minimum(x.min(), y.min()))
    if data_range == 0:
        return math.nan
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    n = side * side
    covariance_norm = n / (n - 1) if n > 1 else 1.0

    def local_mean(values: torch.Tensor) -> torch.Tensor:  # (H − side + 1, W − side + 1): windows inside the sheet
        return F.avg_pool2d(values[None, None], side, stride=1)[0, 0]

    mean_x, mean_y = local_mean(x), local_mean(y)
    var_x = covariance_norm * (local_mean(x * x) - mean_x**2)
    var_y = covariance_norm * (local_mean(y * y) - mean_y**2)
    cov_xy = covariance_norm * (local_mean(x * y) - mean_x * mean_y)
    ssim = ((2 * mean_x * mean_y + c1) * (2 * cov_xy + c2)) / ((mean_x**2 + mean_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim.mean())


def pearson_r(x: torch.Tensor, y: torch.Tensor) -> float:
    """Pearson's r of two maps' values (``nan`` when either is constant or not finite)."""
    a, b = x.detach().double().flatten().cpu(), y.detach().double().flatten().cpu()
    if not (a.isfinite().all() and b.isfinite().all()):
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    norm = float(a.norm() * b.norm())
    return float((a * b).sum()) / norm if norm > 0 else math.nan


@dataclass(frozen=True)
class MapRelation:
    """How two t-maps of one layer relate: SSIM (the paper's "structural similarity") and Pearson's r."""

    a: str
    b: str
    ssim: float
    pearson: float

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "ssim": _number(self.ssim), "pearson": _number(self.pearson)}


# --------------------------------------------------------------------------------------------------------------
# Results


def _number(value: float) -> float | None:
    """A JSON number, or ``None`` for nan/inf (JSON has neither)."""
    return float(value) if value is not None and math.isfinite(value) else None


@dataclass
class LayerSelectivity:
    """The selectivity maps of one layer.

    Attributes:
        layer: the layer's name.
        t_maps: ``{map name: (height, width) float64 t-map}``: the categories, then the contrasts
            (:func:`contrast_name`).
        morans_i: ``{map name: Moran's I of the t-map}`` (``nan`` for a constant map).
        patches: ``{map name: PatchSummary}``.
        relations: every pair of maps, in map order.
    """

    layer: str
    t_maps: dict[str, torch.Tensor]
    morans_i: dict[str, float]
    patches: dict[str, PatchSummary]
    relations: list[MapRelation]

    def relation(self, a: str, b: str) -> MapRelation:
        """The relation of maps ``a`` and ``b`` (in either order; SSIM and r are symmetric)."""
        for relation in self.relations:
            if {relation.a, relation.b} == {a, b}:
                return relation
        raise KeyError(f"No relation between {a!r} and {b!r}; the maps are {list(self.t_maps)}.")

    def to_dict(self, include_maps: bool = True) -> dict:
        out = {
            "sheet": list(next(iter(self.t_maps.values())).shape),
            "morans_i": {name: _number(value) for name, value in self.morans_i.items()},
            "patches": {name: summary.to_dict() for name, summary in self.patches.items()},
            "relations": [relation.to_dict() for relation in self.relations],
        }
        if include_maps:
            out["t_maps"] = {
                name: [[_number(v) for v in row] for row in m.tolist()] for name, m in self.t_maps.items()
            }
        return out


@dataclass
class CategorySelectivity:
    """Category-selectivity maps of every analysed layer (:func:`category_selectivity`).

    Attributes:
        layers: ``{layer name: LayerSelectivity}``.
        categories: the categories' t-maps (one vs the other categories), in order.
        contrasts: the two-way contrasts ``(a, b)``.
        n_images: images per category and per contrast group.
        settings: the patch rule and SSIM window used.
    """

    layers: dict[str, LayerSelectivity]
    categories: list[str]
    contrasts: list[tuple[str, str]]
    n_images: dict[str, int]
    settings: dict = field(default_factory=dict)

    @property
    def map_names(self) -> list[str]:
        return list(self.categories) + [contrast_name(a, b) for a, b in self.contrasts]

    @property
    def t_maps(self) -> dict[str, dict[str, torch.Tensor]]:
        """``{layer: {map name: (height, width) t-map}}``."""
        return {name: layer.t_maps for name, layer in self.layers.items()}

    @property
    def morans_i(self) -> dict[str, dict[str, float]]:
        """``{layer: {map name: Moran's I}}``."""
        return {name: layer.morans_i for name, layer in self.layers.items()}

    @property
    def patches(self) -> dict[str, dict[str, PatchSummary]]:
        """``{layer: {map name: PatchSummary}}``."""
        return {name: layer.patches for name, layer in self.layers.items()}

    @property
    def relations(self) -> dict[str, list[MapRelation]]:
        """``{layer: [MapRelation, ...]}``, every pair of maps."""
        return {name: layer.relations for name, layer in self.layers.items()}

    def relation(self, layer: str, a: str, b: str) -> MapRelation:
        return self.layers[layer].relation(a, b)

    def mean_morans_i(self, map_name: str | None = None) -> float:
        """Moran's I of the t-maps averaged over layers (and over maps unless ``map_name`` is given); nan skipped."""
        values = [
            value
            for layer in self.layers.values()
            for name, value in layer.morans_i.items()
            if (map_name is None or name == map_name) and math.isfinite(value)
        ]
        return sum(values) / len(values) if values else math.nan

    def to_json(self, include_maps: bool = True) -> dict:
        """A JSON-ready dict (nan/inf → ``null``); ``include_maps=False`` leaves the t-map values out."""
        return {
            "categories": list(self.categories),
            "contrasts": [list(pair) for pair in self.contrasts],
            "maps": self.map_names,
            "n_images": dict(self.n_images),
            "settings": dict(self.settings),
            "mean_morans_i": _number(self.mean_morans_i()),
            "layers": {name: layer.to_dict(include_maps) for name, layer in self.layers.items()},
        }


# --------------------------------------------------------------------------------------------------------------
# The analysis


def _normalize_groups(image_groups: Sequence) -> list[str]:
    if isinstance(image_groups, torch.Tensor):
        image_groups = image_groups.tolist()
    groups = [str(g).strip("/") for g in image_groups]
    if any(not g for g in groups):
        raise ValueError("Every image needs a category label (a folder path such as 'faces/adult', or a name).")
    return groups


def _map_masks(
    groups: list[str], categories: Sequence[str] | None, contrasts: list[tuple[str, str]]
) -> tuple[list[str], dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, int]]:
    """``(categories, {map name: (mask of set a, mask of set b)}, {group: n_images})``, checked."""
    first = [g.split("/")[0] for g in groups]
    present = sorted(set(first))
    if categories is None:
        categories = present
    categories = list(categories)
    unknown = [c for c in categories if c not in present]
    if unknown:
        raise ValueError(f"Categories {unknown} have no images; the images' categories are {present}.")
    if len(categories) == 1:
        raise ValueError(
            f"One category ({categories[0]!r}) cannot be compared with the others: give two categories or more."
        )
    in_category = {c: torch.tensor([f == c for f in first]) for c in categories}
    pool = torch.stack(list(in_category.values())).any(dim=0)  # the images of the listed categories
    masks: dict[str, tuple[torch.Tensor, torch.Tensor]] = {c: (m, pool & ~m) for c, m in in_category.items()}
    counts = {c: int(m.sum()) for c, m in in_category.items()}
    for a, b in contrasts:
        mask_a, mask_b = group_mask(groups, a), group_mask(groups, b)
        for name, mask in ((a, mask_a), (b, mask_b)):
            if int(mask.sum()) < 2:
                raise ValueError(
                    f"Contrast {a!r} vs {b!r}: group {name!r} matches {int(mask.sum())} image(s); a t-value needs 2 "
                    "or more on each side. A group is a folder name at any depth (e.g. 'animate' matches "
                    f"'big/animate'); the images' folders are {sorted(set(groups))[:12]}."
                )
        both = mask_a & mask_b
        if bool(both.any()):
            raise ValueError(
                f"Contrast {a!r} vs {b!r}: {int(both.sum())} images belong to both groups; the two sides of a "
                "contrast must be different images."
            )
        masks[contrast_name(a, b)] = (mask_a, mask_b)
        counts[a], counts[b] = int(mask_a.sum()), int(mask_b.sum())
    for name, (mask_a, mask_b) in masks.items():
        if int(mask_a.sum()) < 2 or int(mask_b.sum()) < 2:
            raise ValueError(
                f"The t-map {name!r} compares {int(mask_a.sum())} with {int(mask_b.sum())} images: each side needs "
                "2 images or more for a variance."
            )
    return categories, masks, counts


def selectivity_from_responses(
    responses: dict[str, torch.Tensor],
    sheets: dict[str, CorticalSheet | tuple[int, int]],
    image_groups: Sequence[str],
    categories: Sequence[str] | None = None,
    contrasts: Sequence[tuple[str, str]] | str | None = None,
    patch_threshold: float = 2.0,
    min_patch_units: int = 2,
    patch_top_fraction: float | None = None,
    ssim_window: int = SSIM_WINDOW,
) -> CategorySelectivity:
    """Category-selectivity maps from units' responses already collected.

    Args:
        responses: ``{layer name: (n_images, n_units)}`` (e.g. from
            :func:`~hf_topo.analysis.image_activations.collect_image_activations`).
        sheets: each layer's sheet (or ``(height, width)``), units in sheet order.
        image_groups: each image's category, or its folder path (``"faces/adult"``: category ``"faces"``).
        categories: the categories that get a one-vs-the-others t-map, "the others" being the images of the
            other categories listed (default: every category present, sorted). Images of categories not listed
            take part only in contrasts.
        contrasts: two-way contrasts ``[(a, b), ...]`` or ``"a:b,c:d"``; each group is matched by
            :func:`group_mask`.
        patch_threshold, min_patch_units, patch_top_fraction: the patch rule (:func:`find_patches`).
        ssim_window: SSIM's window side (:func:`structural_similarity`).
    """
    groups = _normalize_groups(image_groups)
    contrasts = parse_contrasts(contrasts)
    categories, masks, counts = _map_masks(groups, categories, contrasts)
    layers: dict[str, LayerSelectivity] = {}
    for name, values in responses.items():
        if values.ndim != 2 or values.shape[0] != len(groups):
            raise ValueError(
                f"Layer {name!r}: responses {tuple(values.shape)} for {len(groups)} images; expected "
                "(n_images, n_units), one row per image in the order of image_groups."
            )
        t_maps = {
            map_name: as_sheet_map(selectivity_t(values[mask_a], values[mask_b]), sheets[name])
            for map_name, (mask_a, mask_b) in masks.items()
        }
        names = list(t_maps)
        stacked = torch.stack([torch.nan_to_num(m, nan=0.0) for m in t_maps.values()])
        finite = torch.stack([m.isfinite().all() for m in t_maps.values()])
        moran = [
            float(v) if ok else math.nan for v, ok in zip(morans_i(stacked).tolist(), finite.tolist(), strict=True)
        ]
        relations = [
            MapRelation(
                a, b, structural_similarity(t_maps[a], t_maps[b], ssim_window), pearson_r(t_maps[a], t_maps[b])
            )
            for i, a in enumerate(names)
            for b in names[i + 1 :]
        ]
        layers[name] = LayerSelectivity(
            layer=name,
            t_maps=t_maps,
            morans_i=dict(zip(names, moran, strict=True)),
            patches={
                n: find_patches(m, patch_threshold, min_patch_units, patch_top_fraction) for n, m in t_maps.items()
            },
            relations=relations,
        )
    settings = {
        "unit_response": "channel output averaged over space (Conv2d); token mean (ViT Linear)",
        "t": "Welch's t (eq. 2) per unit: category vs the other categories; contrast a vs b",
        "patch_rule": (
            f"8-connected components of units with t > {patch_threshold}, at least {min_patch_units} units"
            if patch_top_fraction is None
            else f"8-connected components of the top {patch_top_fraction:.0%} of units (t > 0), "
            f"at least {min_patch_units} units"
        ),
        "patch_threshold": patch_threshold,
        "patch_top_fraction": patch_top_fraction,
        "min_patch_units": min_patch_units,
        "ssim": f"uniform {ssim_window}x{ssim_window} window (shrunk to fit), K1={SSIM_K1}, K2={SSIM_K2}, "
        "sample covariance, L = joint range of the two maps",
        "ssim_window": ssim_window,
    }
    return CategorySelectivity(
        layers=layers, categories=categories, contrasts=contrasts, n_images=counts, settings=settings
    )


def category_selectivity(
    model: nn.Module,
    pixel_values: torch.Tensor,
    image_groups: Sequence[str],
    layers: Sequence[TopoLayer],
    categories: Sequence[str] | None = None,
    contrasts: Sequence[tuple[str, str]] | str | None = None,
    patch_threshold: float = 2.0,
    min_patch_units: int = 2,
    patch_top_fraction: float | None = None,
    ssim_window: int = SSIM_WINDOW,
    batch_size: int = 64,
    progress: bool = True,
) -> CategorySelectivity:
    """Category-selectivity maps of ``model``'s ``layers`` for the images ``pixel_values``.

    Args:
        model: an image model called as ``model(pixel_values=...)``.
        pixel_values: ``(n_images, 3, H, W)``, normalized as the model expects (e.g.
            :func:`hf_topo.vision.stimuli.load_stimulus_images`), or an iterable of such batches.
        image_groups: each image's category or folder path (``"faces/adult"``), in the order of the images.
        layers: from :func:`~hf_topo.analysis.topographic_layers`.
        categories, contrasts, patch_threshold, min_patch_units, patch_top_fraction, ssim_window: see
            :func:`selectivity_from_responses`.
        batch_size: images per forward pass.

    Returns:
        :class:`CategorySelectivity`: ``.t_maps``, ``.morans_i``, ``.patches``, ``.relations``, ``.to_json()``.
    """
    from .image_activations import collect_image_activations

    groups = _normalize_groups(image_groups)
    _map_masks(groups, categories, parse_contrasts(contrasts))  # refuse bad labels before the model runs
    responses = collect_image_activations(model, pixel_values, layers, batch_size, progress)
    return selectivity_from_responses(
        responses,
        {layer.name: layer.sheet for layer in layers},
        groups,
        categories,
        contrasts,
        patch_threshold,
        min_patch_units,
        patch_top_fraction,
        ssim_window,
    )
