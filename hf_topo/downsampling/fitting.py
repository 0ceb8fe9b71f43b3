"""Fitting a downsampled model to its original on a little text: least-squares gains and a short distillation.

Both start from :func:`~hf_topo.downsampling.downsample_model`'s closed-form layer and use the original model as
the teacher; both change only the downsampled layers.

**Least-squares gains** (per unit ``u`` of each layer, closed form): with the layer's inputs ``x`` taken from the
*original* model on the calibration text, ``y_u = W_u·x`` the original's pre-bias output and ``ŷ_u = (U·W′x)_u`` the
downsampled layer's output before its gain and bias,

    g_u = Σ y_u ŷ_u / Σ ŷ_u²          (sums over every calibration token; g_u = 1 where Σ ŷ_u² = 0)

minimizes ``Σ (g_u ŷ_u + b_u − (y_u + b_u))²``. Raw pre-bias outputs, not centred ones: the layer keeps the
original's bias ``b``, so ``g_u ŷ_u − y_u`` *is* the output error and its uncentred least squares is the optimum;
centring would fit the gain for a bias that is then not refitted. Each layer is fitted on the original model's
inputs to it (layer-wise calibration), so the fits are independent of each other and of their order.

**Distillation**: ``steps`` AdamW steps on the reduced weights and gains of the downsampled layers (everything else
frozen), minimizing the KL divergence ``KL(p_original ‖ p_downsampled)`` of next-token distributions on the
calibration text, in batches cycled in order.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..evaluation import as_token_batch
from .layer import TopoDownsampledLinear

__all__ = ["distill_downsampled_", "fit_least_squares_gains_"]

logger = logging.getLogger(__name__)


def _paired_layers(small: nn.Module, original: nn.Module) -> dict[str, tuple[TopoDownsampledLinear, nn.Module]]:
    originals = dict(original.named_modules())
    pairs = {}
    for name, module in small.named_modules():
        if isinstance(module, TopoDownsampledLinear):
            if name not in originals:
                raise ValueError(
                    f"The downsampled layer {name!r} has no counterpart in the original {type(original).__name__}: "
                    "pass the model that downsample_model was given."
                )
            pairs[name] = (module, originals[name])
    if not pairs:
        raise ValueError(f"{type(small).__name__} has no TopoDownsampledLinear layer: pass downsample_model's result.")
    return pairs


def _check_steps(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer.")


@torch.no_grad()
def fit_least_squares_gains_(
    small: nn.Module, original: nn.Module, tokens, batch_size: int = 8, progress: bool = True
) -> dict[str, float]:
    """Set every gain of ``small``'s downsampled layers to its least-squares value on ``tokens`` (module docstring).

    Args:
        small: a model from :func:`~hf_topo.downsampling.downsample_model` with gains (``gains=True``).
        original: the model it was downsampled from (its layers give the inputs and the targets).
        tokens: the calibration text: an ``(n, seq_len)`` tensor of token ids, a
            :class:`~hf_topo.evaluation.TokenBatch`, or a dict / dataset with ``input_ids``.
        batch_size: sequences per forward of ``original``.

    Returns:
        Per layer, the relative output error ``‖g ⊙ ŷ − y‖ / ‖y‖`` on the calibration text after the fit.
    """
    _check_steps(batch_size, "batch_size")
    batch = as_token_batch(tokens)
    pairs = _paired_layers(small, original)
    without_gain = [name for name, (layer, _) in pairs.items() if layer.gain is None]
    if without_gain:
        raise ValueError(
            f"Layers {without_gain[:3]} have no gains to fit (the paper's variant): downsample with gains=True."
        )
    sums = {name: [0.0, 0.0, 0.0] for name in pairs}  # Σ y·ŷ, Σ ŷ², Σ y² per unit (tensors once filled)

    def hook(name: str, layer: TopoDownsampledLinear):
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            x = inputs[0].to(torch.float64).flatten(0, -2)
            mask = current_mask[0]
            if mask is not None:
                x = x[mask.flatten().bool()]
            bias = getattr(module, "bias", None)
            target = output.to(torch.float64).flatten(0, -2)
            if mask is not None:
                target = target[mask.flatten().bool()]
            if bias is not None:
                target = target - bias.to(torch.float64)  # y = W x, pre-bias
            estimate = layer.upsample(F.linear(x, layer.weight.to(torch.float64)))  # ŷ = U W' x
            stats = sums[name]
            stats[0] = stats[0] + (target * estimate).sum(0)
            stats[1] = stats[1] + estimate.square().sum(0)
            stats[2] = stats[2] + target.square().sum(0)

        return record

    current_mask: list[torch.Tensor | None] = [None]
    handles = [teacher.register_forward_hook(hook(name, layer)) for name, (layer, teacher) in pairs.items()]
    device = next(original.parameters()).device
    was_training = original.training
    original.eval()
    try:
        for input_ids, mask in tqdm(
            batch.batches(batch_size),
            total=-(-len(batch) // batch_size),
            desc="Least-squares gains",
            disable=not progress,
        ):
            current_mask[0] = mask
            original(input_ids=input_ids.to(device), attention_mask=None if mask is None else mask.to(device))
    finally:
        for handle in handles:
            handle.remove()
        original.train(was_training)
    errors = {}
    for name, (layer, _) in pairs.items():
        cross, energy, target_energy = sums[name]
        gains = torch.where(energy > 0, cross / torch.where(energy > 0, energy, 1.0), 1.0)
        layer.gain.copy_(gains.to(layer.gain.dtype))
        # ‖g ŷ − y‖² = Σ g² ŷ² − 2 g y ŷ + y², per unit, summed.
        residual = (gains.square() * energy - 2 * gains * cross + target_energy).sum().clamp_min(0)
        errors[name] = float(residual.sqrt() / target_energy.sum().sqrt().clamp_min(1e-300))
    logger.info("Least-squares gains fitted on %d tokens for %d layers", batch.n_tokens, len(pairs))
    return errors


def distill_downsampled_(
    small: nn.Module,
    original: nn.Module,
    tokens,
    steps: int,
    learning_rate: float = 1e-3,
    batch_size: int = 8,
    progress: bool = True,
) -> list[float]:
    """Train ``small``'s downsampled layers (reduced weights and gains) for ``steps`` steps to match ``original``.

    Minimizes the mean per-token ``KL(p_original ‖ p_small)`` on ``tokens`` (batches of ``batch_size`` sequences,
    cycled in order) with AdamW (``learning_rate``, no weight decay); every other parameter of ``small`` is left as it
    is. ``small`` is returned to its train/eval mode afterwards.

    Returns:
        The KL divergence (nats per token) of each step, before its update.
    """
    _check_steps(steps, "steps")
    _check_steps(batch_size, "batch_size")
    if not (isinstance(learning_rate, (int, float)) and learning_rate > 0):
        raise ValueError(f"learning_rate={learning_rate!r} must be a positive number.")
    batch = as_token_batch(tokens)
    pairs = _paired_layers(small, original)
    trained = [p for layer, _ in pairs.values() for p in (layer.weight, layer.gain) if p is not None]
    trained_ids = {id(p) for p in trained}
    frozen = [p for p in small.parameters() if id(p) not in trained_ids and p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    optimizer = torch.optim.AdamW(trained, lr=learning_rate, weight_decay=0.0)
    device = next(small.parameters()).device
    was_training, teacher_training = small.training, original.training
    small.eval()  # no dropout: the student matches the teacher's deterministic outputs
    original.eval()
    chunks = list(batch.batches(batch_size))
    losses = []
    try:
        for step in tqdm(range(steps), desc="Distilling downsampled layers", disable=not progress):
            input_ids, mask = chunks[step % len(chunks)]
            input_ids = input_ids.to(device)
            mask = None if mask is None else mask.to(device)
            with torch.no_grad():
                teacher = F.log_softmax(original(input_ids=input_ids, attention_mask=mask).logits.float(), dim=-1)
            student = F.log_softmax(small(input_ids=input_ids, attention_mask=mask).logits.float(), dim=-1)
            kl = F.kl_div(student, teacher, log_target=True, reduction="none").sum(-1)  # (batch, seq)
            loss = kl.mean() if mask is None else (kl * mask).sum() / mask.sum().clamp_min(1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    finally:
        for p in frozen:
            p.requires_grad_(True)
        small.train(was_training)
        original.train(teacher_training)
    logger.info("Distilled %d layers for %d steps: KL %.4g -> %.4g", len(pairs), steps, losses[0], losses[-1])
    return losses
