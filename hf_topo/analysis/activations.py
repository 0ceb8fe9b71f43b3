"""Which layers are topographic, and what their units do: the layers' outputs, read by
:func:`~hf_topo.analysis.hooks.capture_outputs`.

A unit's activation is the layer's output before the nonlinearity (for GPT-2 the output of ``mlp.c_fc``), one
value per token: the measurement of the paper's §2.3 and A.6. Padding positions (``attention_mask == 0``) are
never collected.

Sheets whose units are not a Linear layer's outputs are read the same way (:func:`capture_units`): an activation
sheet with ``units="output"`` (TopoLM's ``"outputs"`` placement: an attention or MLP output) holds the module's
output features; one with ``units="input"`` (TopoLM's ``"residual"`` placement: the hidden states entering a
LayerNorm) and a Linear/Conv1D input sheet hold the features of the tensor entering the module.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import TOPOGRAPHY_KEY, TopoConfig
from ..evaluation import TokenBatch, as_token_batch, model_device
from ..sheet import ACTIVATION_SHEET
from ..targets import TopoLayer, matches_pattern, resolve_sheets
from ..topo_regularizer import attach_inferred_topography
from .hooks import CapturedOutputs, capture_outputs

__all__ = [
    "topographic_layers",
    "collect_activations",
    "capture_units",
    "has_own_weight",
    "is_output_weight_sheet",
    "token_positions",
]

logger = logging.getLogger(__name__)


def topographic_layers(
    model: nn.Module,
    config: TopoConfig | None = None,
    layer_names: Sequence[str] | None = None,
    include_watched: bool = False,
) -> list[TopoLayer]:
    """The topographic layers of ``model`` with their cortical sheets.

    Args:
        model: a causal LM or an image model (a Conv2d sheet's units are its output channels).
        config: the topographic setup to resolve; by default the model's own ``topography`` metadata, or for a model
            without any (a Hub GPT-2) the family's MLP expansion layer, attached with
            :func:`hf_topo.attach_inferred_topography` (``inferred: true``, ``tau: 0``). Pass another model's
            ``TopoConfig.from_pretrained(...)`` to analyse a baseline on exactly the same layers and sheets (an error
            if its layers or shapes differ).
        layer_names: keep only these layers (full module names, or suffixes such as ``"h.0.mlp.c_fc"``).
        include_watched: also return layers that were only watched (not optimized) during training.
    """
    if config is None:
        if isinstance(getattr(getattr(model, "config", None), TOPOGRAPHY_KEY, None), dict):
            config = TopoConfig.from_pretrained(model)
        else:
            config = attach_inferred_topography(model)
            logger.info(
                "%s has no topography metadata: inferred sheets over %s", type(model).__name__, config.target_modules
            )
    layers = [layer for layer in resolve_sheets(model, config) if include_watched or layer.role == "target"]
    if layer_names is not None:
        chosen = []
        for wanted in layer_names:
            matches = [layer for layer in layers if matches_pattern(layer.name, [wanted])]
            if not matches:
                raise ValueError(
                    f"No topographic layer named {wanted!r}; the topographic layers are {[lay.name for lay in layers]}."
                )
            chosen.extend(m for m in matches if m not in chosen)
        layers = chosen
    if not layers:
        raise ValueError(
            "The model has no topographic layer to analyse (only watched ones?); set include_watched=True."
        )
    return layers


def has_own_weight(layer: TopoLayer) -> bool:
    """Whether the units of ``layer``'s sheet carry weights of their own (a Linear/Conv1D sheet, of output or input
    units): the weight maps and weight smoothness apply. An activation sheet (a block's output, the residual stream)
    has none."""
    return layer.sheet.layer_type != ACTIVATION_SHEET


def is_output_weight_sheet(layer: TopoLayer) -> bool:
    """Whether ``layer``'s sheet is the output sheet of a Linear/Conv1D layer: the sheet the pruning, weight-noise and
    downsampling sweeps act on (they prune, perturb or resample the rows of that layer's weight)."""
    return has_own_weight(layer) and layer.sheet.units == "output"


@contextmanager
def capture_units(model: nn.Module, layers: Sequence[TopoLayer]) -> Iterator[CapturedOutputs]:
    """:func:`~hf_topo.analysis.hooks.capture_outputs` for the units of each layer's sheet: the module's output for
    a sheet of ``units="output"``, the tensor entering the module (its first argument) for ``units="input"``.

    The model is in eval mode without gradients inside the block; hooks are removed and the mode restored on exit.
    """
    outputs = {layer.name: layer.module for layer in layers if layer.sheet.units == "output"}
    with capture_outputs(model, outputs) as captured:

        def input_hook(name: str):
            def store(_module, args, kwargs):
                value = args[0] if args else kwargs.get("hidden_states", kwargs.get("input"))
                if value is not None:
                    captured[name] = value.detach()

            return store

        handles = [
            layer.module.register_forward_pre_hook(input_hook(layer.name), with_kwargs=True)
            for layer in layers
            if layer.sheet.units == "input"
        ]
        try:
            yield captured
        finally:
            for handle in handles:
                handle.remove()


def collect_activations(
    model: nn.Module,
    tokens,
    layers: Sequence[TopoLayer],
    batch_size: int = 8,
    max_samples: int | None = None,
    per_sequence: bool = False,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """Activations of the units of each layer: ``{layer name: (n_samples, n_units)}`` float32 tensors on the CPU.

    Args:
        model: the model (run in eval mode, without gradients; its training mode is restored).
        tokens: a :class:`TokenBatch` (or tensor / dict / ``datasets.Dataset`` with ``input_ids``).
        layers: from :func:`topographic_layers`.
        max_samples: the sample budget: the first ``max_samples`` samples (the model stops running once it is met).
        per_sequence: one sample per sequence, the mean over its real tokens (for stimuli, e.g. selectivity), instead
            of one sample per real token.

    Units are in sheet order: unit ``u`` sits at row ``u // width``, column ``u % width`` of its sheet. A sheet of
    ``units="input"`` holds the features entering the module (see :func:`capture_units`).
    """
    for layer in layers:
        if layer.sheet.layer_type == "Conv2d":
            raise TypeError(
                f"{layer.name} is a Conv2d: collect_activations reads tokens of a language model; for an image model "
                "use hf_topo.analysis.image_activations.collect_image_activations (one response per image and unit)."
            )
    batch: TokenBatch = as_token_batch(tokens)
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples={max_samples} must be a positive number of samples (or None for all).")
    device = model_device(model)
    collected: dict[str, list[torch.Tensor]] = {layer.name: [] for layer in layers}
    n_samples = 0
    total = max_samples or (len(batch) if per_sequence else batch.n_tokens)
    bar = tqdm(total=total, desc="Collecting activations", unit="sample", disable=not progress)
    try:
        with capture_units(model, layers) as captured:
            for input_ids, mask in batch.batches(batch_size):
                captured.clear()
                model(input_ids=input_ids.to(device), attention_mask=None if mask is None else mask.to(device))
                new = 0
                for name in collected:
                    if per_sequence:
                        output = captured.output(name).float().cpu()  # (B, T, n_units)
                        keep = torch.ones_like(input_ids, dtype=torch.bool) if mask is None else mask.bool()
                        weights = keep.unsqueeze(-1).float()
                        samples = (output * weights).sum(1) / weights.sum(1)  # (B, n_units)
                    else:
                        samples = captured.real_tokens(name, mask).float().cpu()  # (real tokens, n_units)
                    collected[name].append(samples)
                    new = samples.shape[0]
                n_samples += new
                bar.update(min(new, total - bar.n))
                if max_samples is not None and n_samples >= max_samples:
                    break
    finally:
        bar.close()
    return {name: torch.cat(parts)[:max_samples] for name, parts in collected.items()}


def token_positions(tokens, n_samples: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each sample of :func:`collect_activations` (one per real token, ``per_sequence=False``) comes from:
    ``(positions, blocks)``, the token's position in its sequence and the sequence's index, ``(n_samples,)`` each, in
    the order the samples are collected (the first ``n_samples``; all by default)."""
    batch: TokenBatch = as_token_batch(tokens)
    n_sequences, length = batch.input_ids.shape
    positions = torch.arange(length).expand(n_sequences, length)
    blocks = torch.arange(n_sequences)[:, None].expand(n_sequences, length)
    if batch.attention_mask is not None:
        real = batch.attention_mask.bool()
        positions, blocks = positions[real], blocks[real]
    return positions.reshape(-1)[:n_samples], blocks.reshape(-1)[:n_samples]
