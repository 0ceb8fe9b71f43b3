"""Figures for the model card: the sheet maps of a TopoNet's weights."""

from __future__ import annotations

import os

from torch import nn

from ..config import TopoConfig
from ..topo_regularizer import TopoRegularizer

__all__ = ["render_sheet_maps"]


def _spread(items: list, count: int) -> list:
    """``count`` items evenly spread over ``items`` (first and last included)."""
    if len(items) <= count:
        return list(items)
    return [items[round(i * (len(items) - 1) / (count - 1))] for i in range(count)] if count > 1 else items[:1]


def render_sheet_maps(model: nn.Module, path: str | os.PathLike, max_layers: int = 3, label: str = "TopoNet") -> str:
    """Draw the first principal component of each unit's weights on its sheet, for up to ``max_layers`` target layers
    (early, middle, late), into the PNG ``path``; returns the path. The model must carry ``topography`` metadata."""
    from ..analysis.maps import weight_pc1_map
    from ..analysis.plots import plot_sheet_maps

    layers = [
        layer for layer in TopoRegularizer(TopoConfig.from_pretrained(model)).layers(model) if layer.role == "target"
    ]
    chosen = _spread(layers, max_layers)
    maps = {label: {"weight PC1": {layer.name: weight_pc1_map(layer) for layer in chosen}}}
    return plot_sheet_maps(maps, path, title="Weight PC1 on the sheet")
