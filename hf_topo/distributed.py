"""Whole layer weights under distributed training: what TopoLoss reads under DDP, FSDP2 and DeepSpeed ZeRO.

TopoLoss and Weight Similarity are functions of a layer's *whole* weight. Where that weight lives depends on how
the model is trained:

==========================  ===========================================  ==========================================
training                    the weight outside the module's forward      how the loss reads it
==========================  ===========================================  ==========================================
one device, DDP, ZeRO-1/2   the whole tensor                             directly
FSDP2 (``fully_shard``)     a ``DTensor`` shard of this rank             :func:`full_weight`: ``full_tensor()``
DeepSpeed ZeRO-3            an empty placeholder (``ds_shape`` records   inside the layer's forward, where ZeRO-3
                            the real shape)                              has gathered it (``evaluate_in_forward``)
FSDP1 (flat parameters)     a slice of a flattened shard                 not supported: use FSDP2
==========================  ===========================================  ==========================================

Gradients land where the training needs them, one layer gathered at a time:

* **FSDP2**: ``full_tensor()`` all-gathers with autograd. Its backward hands each rank the slice of the gradient
  that matches its shard (a replicated gradient redistributed to ``Shard(0)``: no communication, no averaging),
  which autograd adds to the sharded ``.grad`` next to FSDP2's reduce-scattered (rank-averaged) task gradient.
  Every rank computes the same regularizer, so each shard receives exactly ``τ·∇``, as on one device.
* **DeepSpeed ZeRO-3**: a forward pre-hook on the layer computes its term while ZeRO-3 holds the gathered weight
  (from a copy, since ZeRO-3 frees the gathered storage after the layer's forward). The gradient reaches the
  parameter through autograd in the same backward pass as the task gradient, and ZeRO-3 partitions and averages
  the sum, in which every rank's identical ``τ·∇`` stays ``τ·∇``.
* **DDP**: the weights are whole; DDP averages identical ``τ·∇`` across ranks to ``τ·∇``.

Reentrant activation checkpointing runs a second, separate backward pass per checkpointed block, so a weight used
both in a block and in the regularizer reports its gradient twice; DDP ("marked ready twice") and DeepSpeed reject
that. :func:`check_activation_checkpointing` stops such a run before its first step.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from .regularizers.registry import get_regularizer

__all__ = [
    "full_weight",
    "is_zero3_partitioned",
    "parameter_shape",
    "gathered_for_reading",
    "uses_reentrant_checkpointing",
    "check_activation_checkpointing",
]


def is_dtensor(tensor: torch.Tensor) -> bool:
    return callable(getattr(tensor, "full_tensor", None)) and hasattr(tensor, "placements")


def full_weight(weight: torch.Tensor) -> torch.Tensor:
    """The whole tensor: ``weight.full_tensor()`` for an FSDP2/DTensor shard (differentiable), else ``weight``.

    The all-gather is a collective: every rank must call this for the same layers in the same order (they do when
    each rank evaluates the same regularizer). The returned gradient layout is replicated, so each rank's shard
    receives its own slice of the gradient without any reduction.
    """
    return weight.full_tensor() if is_dtensor(weight) else weight


def is_zero3_partitioned(param: torch.Tensor) -> bool:
    """Whether ``param`` is a DeepSpeed ZeRO-3 parameter (its data is gathered only around its module's forward)."""
    return hasattr(param, "ds_id") and hasattr(param, "ds_shape")


def parameter_shape(param: torch.Tensor) -> torch.Size:
    """The logical shape of a parameter: ZeRO-3's recorded ``ds_shape`` for its placeholders, the global shape of a
    DTensor, else ``param.shape``."""
    return torch.Size(param.ds_shape) if is_zero3_partitioned(param) else param.shape


@contextlib.contextmanager
def gathered_for_reading(params: Iterable[nn.Parameter]) -> Iterator[None]:
    """Inside the block, DeepSpeed ZeRO-3 parameters among ``params`` hold their whole data (read-only, no autograd:
    for losses that are only logged). Other parameters are left as they are."""
    partitioned = [p for p in params if is_zero3_partitioned(p)]
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None):
        yield


def uses_reentrant_checkpointing(model: nn.Module) -> bool:
    """Whether transformers' activation checkpointing is on in ``model`` with ``use_reentrant=True``."""
    for module in model.modules():
        if getattr(module, "gradient_checkpointing", False) is not True:
            continue
        checkpoint = getattr(module, "_gradient_checkpointing_func", None)
        if isinstance(checkpoint, functools.partial) and checkpoint.keywords.get("use_reentrant", False):
            return True
    return False


def check_activation_checkpointing(model: nn.Module, loss: str, world_size: int, tau_max: float) -> None:
    """Stop before training when reentrant activation checkpointing would break or silently drop the regularizer.

    * A regularizer that reads activations (Activation Similarity, TopoLM): reentrant checkpointing runs the
      checkpointed blocks under ``no_grad``, so the recorded layer outputs carry no gradient and the regularizer would
      not train anything.
    * Weight-based regularizers with several processes: the regularizer's gradient and the recomputed block's
      gradient reach a weight in two backward passes; DDP fails with "marked ready twice", DeepSpeed reduces twice.

    ``loss`` is the name of a registered regularizer (:func:`hf_topo.regularizers.get_regularizer`).

    Raises:
        ValueError: with the setting to change (``use_reentrant=False``, the transformers default).
    """
    if tau_max <= 0 or not uses_reentrant_checkpointing(model):
        return
    from transformers import TrainingArguments

    spec = get_regularizer(loss)
    # transformers 5.23 renamed gradient_checkpointing_kwargs to activation_checkpointing_kwargs: name the one it has
    name = next(
        name
        for name in ("activation_checkpointing_kwargs", "gradient_checkpointing_kwargs")
        if name in TrainingArguments.__dataclass_fields__
    )
    fix = (
        f'Use non-reentrant checkpointing, the transformers default: TrainingArguments({name}={{"use_reentrant": False}}) '
        f"(on the command line: --{name} '{{\"use_reentrant\": false}}')."
    )
    if spec.reads_activations:
        raise ValueError(
            "Reentrant activation checkpointing runs the checkpointed layers without autograd, so "
            f"{spec.display_name} would see outputs without gradient and not train the model. " + fix
        )
    if world_size > 1:
        raise ValueError(
            f"Reentrant activation checkpointing with {world_size} processes and a weight-based regularizer ({loss}): "
            "the regularizer's gradient and the recomputed layer's gradient reach the same weight in two separate "
            "backward passes, which DDP rejects ('marked ready twice') and DeepSpeed would reduce twice. " + fix
        )
