"""Maps on the cortical sheet: a value per unit laid out as a ``(height, width)`` image.

Unit ``u`` of a layer sits at row ``u // width``, column ``u % width`` (the layout of :func:`hf_topo.sheet.sheet_view`,
so the maps are the sheets TopoLoss smooths).
"""

from __future__ import annotations

import torch

from ..sheet import CorticalSheet, effective_weight, sheet_view
from ..targets import TopoLayer

__all__ = ["as_sheet_map", "unit_weights", "weight_pc1_map", "mean_activation_map"]


def as_sheet_map(values: torch.Tensor, sheet: CorticalSheet | tuple[int, int]) -> torch.Tensor:
    """``values`` (``(..., n_units)``) laid out on the sheet: ``(..., height, width)``."""
    height, width = (sheet.height, sheet.width) if isinstance(sheet, CorticalSheet) else sheet
    if values.shape[-1] != height * width:
        raise ValueError(
            f"{values.shape[-1]} values per map cannot fill a {height}x{width} sheet ({height * width} units): pass the "
            "activations of the layer the sheet belongs to."
        )
    return values.reshape(*values.shape[:-1], height, width)


@torch.no_grad()
def unit_weights(layer: TopoLayer) -> torch.Tensor:
    """Each unit's incoming weights as float32 rows: ``(n_units, depth)``, in sheet order (LoRA/DoRA applied)."""
    sheet, units_first = sheet_view(effective_weight(layer.module).detach().float(), layer.sheet)
    # (h, w, d) when units_first else (d, h, w)
    return sheet.reshape(-1, sheet.shape[-1]) if units_first else sheet.reshape(sheet.shape[0], -1).T


@torch.no_grad()
def weight_pc1_map(layer: TopoLayer) -> torch.Tensor:
    """The first principal component of the units' weight vectors, as a ``(height, width)`` map.

    Each unit's weights (``depth`` values) are centred over units and projected on the top right singular vector of
    that ``(n_units, depth)`` matrix; the sign of a principal component is arbitrary.
    """
    units = unit_weights(layer).cpu()
    centered = units - units.mean(dim=0)
    _, _, vh = torch.linalg.svd(centered, full_matrices=False)
    return as_sheet_map(centered @ vh[0], layer.sheet)


def mean_activation_map(activations: torch.Tensor, sheet: CorticalSheet | tuple[int, int]) -> torch.Tensor:
    """Each unit's mean activation over the samples (``(n_samples, n_units)`` → ``(height, width)``)."""
    return as_sheet_map(activations.float().mean(dim=0), sheet)
