"""Selectivity of each unit for one stimulus set over another: Welch's t (TopoNets eq. 2, after Margalit et al.).

    t = (μ_a − μ_b) / sqrt(σ_a² / N_a + σ_b² / N_b)

with ``μ, σ, N`` the mean, standard deviation (``N − 1`` normalization) and number of the unit's responses to the
stimuli of set ``a`` (the target category) and set ``b`` (the others). A language stimulus is a short text; its
response is the unit's activation averaged over the text's tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..targets import TopoLayer
from .activations import collect_activations
from .inputs import tokenize_stimuli

__all__ = ["selectivity_t", "selectivity_maps"]


def selectivity_t(responses_a: torch.Tensor, responses_b: torch.Tensor) -> torch.Tensor:
    """Welch's t of every unit: ``responses_a`` ``(N_a, n_units)`` against ``responses_b`` ``(N_b, n_units)``.

    Returns ``(n_units,)`` float64; a unit with zero variance in both sets gets ``t = 0`` when its means are equal
    and ``±inf`` otherwise.
    """
    if responses_a.ndim != 2 or responses_b.ndim != 2 or responses_a.shape[1] != responses_b.shape[1]:
        raise ValueError(
            f"Expected responses (N_a, n_units) and (N_b, n_units), got {tuple(responses_a.shape)} and "
            f"{tuple(responses_b.shape)}."
        )
    if min(responses_a.shape[0], responses_b.shape[0]) < 2:
        raise ValueError(
            f"Each stimulus set needs at least 2 stimuli for a variance, got {responses_a.shape[0]} and "
            f"{responses_b.shape[0]}."
        )
    a, b = responses_a.double(), responses_b.double()
    difference = a.mean(dim=0) - b.mean(dim=0)
    standard_error = (a.var(dim=0) / a.shape[0] + b.var(dim=0) / b.shape[0]).sqrt()
    t = difference / standard_error
    return torch.where((standard_error == 0) & (difference == 0), torch.zeros_like(t), t)


def selectivity_maps(
    model: nn.Module,
    tokenizer,
    stimuli_a: Sequence[str],
    stimuli_b: Sequence[str],
    layers: Sequence[TopoLayer],
    batch_size: int = 16,
    max_length: int | None = None,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """``{layer name: (height, width) t-map}``: selectivity of every unit for ``stimuli_a`` over ``stimuli_b``.

    Each stimulus is tokenized on its own (no special tokens, truncated to ``max_length``), right-padded, and its
    response is the mean activation over its real tokens.
    """
    from .maps import as_sheet_map

    responses = [
        collect_activations(
            model, tokenize_stimuli(tokenizer, list(stimuli), max_length), layers, batch_size,
            per_sequence=True, progress=progress,
        )
        for stimuli in (stimuli_a, stimuli_b)
    ]  # fmt: skip
    return {
        layer.name: as_sheet_map(selectivity_t(responses[0][layer.name], responses[1][layer.name]), layer.sheet)
        for layer in layers
    }
