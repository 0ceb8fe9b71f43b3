"""Efficiency and robustness: a model's score under L1 pruning, weight noise and topographic downsampling (§3.3, A.5,
Fig. 4A).

Every sweep evaluates the model as it is, then perturbed at increasing strength, and reports its score and the
change ``Δ = score(perturbed) − score(original)`` (and BLiMP for pruning when data are given). The score is named by
:attr:`SweepResult.metric`: **perplexity** for a causal LM evaluated on text (a
:class:`~hf_topo.evaluation.TokenBatch`; lower is better, so a harmful perturbation has Δ > 0) and **top-1
accuracy** for an image classifier evaluated on labelled images (an
:class:`~hf_topo.analysis.image_inputs.ImageBatch`; higher is better, so a harmful perturbation has Δ < 0). The
perturbations happen in place inside a context that restores the original weights bit for bit afterwards, also
when an evaluation fails, so a sweep never leaves the model corrupted. Downsampling builds a new, smaller model
(:func:`hf_topo.downsampling.downsample_model`) and leaves the original untouched; its sweep runs in one of two
variants, ``"gains"`` (per-unit gains in closed form, the default of ``downsample_model``) or ``"paper"`` (A.5's
layer without gains), recorded in :attr:`SweepResult.variant`.

**L1 unstructured pruning** (paper §2.3): "sort the weights in ascending order of their absolute magnitude and set
the smallest n% of them to zero". The paper names the method after PyTorch's ``l1_unstructured`` pruning, which
ranks each layer's weights on its own; that is the default here (``granularity="layer"``: every pruned tensor
loses exactly ``round(fraction · numel)`` weights, so "fraction of weights masked" is the same in every layer).
``granularity="global"`` ranks all selected weights together (PyTorch's ``global_unstructured``). Ties at the
threshold are broken by position, so exactly the requested number of weights is zeroed.

**Weight noise**: ``W ← W + σ · std(W) · ε``, ``ε ~ N(0, 1)`` i.i.d., with ``std(W)`` the standard deviation of each
weight tensor's entries, on the topographic layers (Truong & Hasson's weight robustness).

**Input perturbations** (Truong & Hasson's input robustness, in the language setting): *token substitution* at rate
``p`` replaces each real token of the context, independently with probability ``p``, by a token drawn uniformly from
the vocabulary, and scores the model on the *clean* next tokens (how much a corrupted context hurts predicting the
true text); *token deletion* at rate ``p`` removes each real token with probability ``p`` (at least two are kept) and
scores the model on the shortened text itself. Draws are seeded and averaged over ``repeats``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers.pytorch_utils import Conv1D

from ..downsampling import downsample_model, parameter_count
from ..evaluation import TokenBatch, as_token_batch, evaluate_perplexity
from ..targets import TopoLayer
from .image_inputs import ImageBatch, evaluate_accuracy
from .summary import SWEEP_METRICS

__all__ = [
    "SweepResult",
    "prunable_weights",
    "l1_prune_",
    "add_weight_noise_",
    "restored_weights",
    "pruning_sweep",
    "noise_sweep",
    "downsampling_sweep",
    "substitute_tokens",
    "delete_tokens",
    "input_perturbation_sweep",
    "INPUT_PERTURBATIONS",
    "PRUNING_SCOPES",
    "sweep_metric",
    "evaluate_score",
]

logger = logging.getLogger(__name__)

#: What :func:`prunable_weights` can select.
PRUNING_SCOPES = ("topographic", "all_linear")
#: Input perturbations of :func:`input_perturbation_sweep`.
INPUT_PERTURBATIONS = ("substitution", "deletion")


def sweep_metric(data) -> str:
    """``"accuracy"`` for an :class:`~hf_topo.analysis.image_inputs.ImageBatch`, ``"perplexity"`` for text."""
    return "accuracy" if isinstance(data, ImageBatch) else "perplexity"


def evaluate_score(model: nn.Module, data, batch_size: int = 8) -> float:
    """The score of a sweep on ``data``: top-1 accuracy on an ``ImageBatch``, else perplexity on the token blocks."""
    if isinstance(data, ImageBatch):
        return evaluate_accuracy(model, data, batch_size)
    return evaluate_perplexity(model, data, batch_size, progress=False)


def prunable_weights(
    model: nn.Module, scope: str = "topographic", layers: Sequence[TopoLayer] | None = None
) -> dict[str, torch.Tensor]:
    """The weight tensors a pruning or noise sweep touches: ``{parameter name: weight}``.

    ``scope="topographic"``: the weights of ``layers``. ``scope="all_linear"``: every ``nn.Linear`` and ``Conv1D``
    weight except the output embedding (in GPT-2 the LM head is the token embedding, tied), each tensor once.
    """
    if scope == "topographic":
        if not layers:
            raise ValueError("scope='topographic' needs the topographic layers (from topographic_layers(model)).")
        return {f"{layer.name}.weight": layer.module.weight for layer in layers}
    if scope != "all_linear":
        raise ValueError(f"Unknown pruning scope {scope!r}; choose one of {PRUNING_SCOPES}.")
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    excluded = {id(head.weight)} if head is not None else set()
    weights: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, Conv1D)) and id(module.weight) not in excluded:
            excluded.add(id(module.weight))
            weights[f"{name}.weight"] = module.weight
    if not weights:
        raise ValueError(f"{type(model).__name__} has no Linear/Conv1D layer besides its output embedding.")
    return weights


@contextlib.contextmanager
def restored_weights(weights: dict[str, torch.Tensor]):
    """Run the block, then copy the original values back into ``weights`` (bit-exact, also after an error)."""
    saved = {name: w.detach().clone() for name, w in weights.items()}
    try:
        yield weights
    finally:
        with torch.no_grad():
            for name, w in weights.items():
                w.copy_(saved[name])


@torch.no_grad()
def l1_prune_(weights: dict[str, torch.Tensor], fraction: float, granularity: str = "layer") -> int:
    """Zero the ``fraction`` smallest-magnitude entries of ``weights`` in place; returns how many were zeroed.

    ``granularity="layer"``: ``round(fraction · numel)`` entries of every tensor; ``"global"``:
    ``round(fraction · Σ numel)`` entries ranked over all tensors together. Ties are broken by position.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"Pruning fraction {fraction} must lie in [0, 1].")
    if granularity not in ("layer", "global"):
        raise ValueError(f"granularity={granularity!r} must be 'layer' (per tensor, the default) or 'global'.")
    tensors = list(weights.values())
    if granularity == "layer":
        pruned = 0
        for w in tensors:
            k = round(fraction * w.numel())
            smallest = torch.argsort(w.detach().abs().flatten(), stable=True)[:k]
            w.view(-1)[smallest] = 0  # weights are contiguous parameters; view(-1) writes through
            pruned += k
        return pruned
    magnitudes = torch.cat([w.detach().abs().flatten().float().cpu() for w in tensors])
    k = round(fraction * magnitudes.numel())
    smallest = torch.argsort(magnitudes, stable=True)[:k]
    offsets = torch.tensor([0] + [w.numel() for w in tensors]).cumsum(0)
    for i, w in enumerate(tensors):
        local = smallest[(smallest >= offsets[i]) & (smallest < offsets[i + 1])] - offsets[i]
        w.view(-1)[local.to(w.device)] = 0
    return k


@torch.no_grad()
def add_weight_noise_(weights: dict[str, torch.Tensor], sigma: float, generator: torch.Generator) -> None:
    """``W ← W + sigma · std(W) · ε`` in place for every tensor, ``ε ~ N(0, 1)`` drawn on the CPU from ``generator``."""
    if sigma < 0:
        raise ValueError(f"Noise level sigma={sigma} must be >= 0.")
    for w in weights.values():
        noise = torch.randn(w.shape, generator=generator, dtype=torch.float32)
        w.add_((sigma * w.float().std() * noise.to(w.device)).to(w.dtype))


@dataclass
class SweepResult:
    """A model's score at each strength ``x`` of a perturbation.

    Attributes:
        kind: ``"pruning"``, ``"noise"``, ``"downsampling"``, ``"substitution"`` or ``"deletion"``; ``x_label`` says
            what ``x`` is.
        metric: what ``score`` is: ``"perplexity"`` (a causal LM on text) or ``"accuracy"`` (top-1, an image
            classifier on labelled images); see :data:`SWEEP_METRICS`.
        score: the score at each ``x``; ``reference``: the unperturbed model's; ``delta``: ``score − reference``.
        reference_blimp, blimp, delta_blimp: BLiMP overall accuracy of the original model, at each ``x`` and its
            change, when BLiMP data were given (language models).
        parameters_kept: for downsampling, the fraction of the model's parameters the downsampled model has.
        variant: for downsampling, ``"gains"`` (per-unit gains) or ``"paper"`` (the paper's layer); else ``None``.

    ``perplexity`` / ``delta_perplexity`` / ``reference_perplexity`` (and ``accuracy`` / ``delta_accuracy`` /
    ``reference_accuracy``) read ``score`` / ``delta`` / ``reference`` under the metric's name, and :meth:`to_dict`
    writes them under those names (``"perplexity"``, ``"delta_perplexity"``, ...: the keys of reports written before
    the metric was named, which their readers keep using).
    """

    kind: str
    x_label: str
    x: list[float]
    score: list[float]
    delta: list[float]
    reference: float
    metric: str = "perplexity"
    reference_blimp: float | None = None
    blimp: list[float] | None = None
    delta_blimp: list[float] | None = None
    parameters_kept: list[float] | None = None
    settings: dict = field(default_factory=dict)
    variant: str | None = None

    def __post_init__(self):
        if self.metric not in SWEEP_METRICS:
            raise ValueError(f"Unknown sweep metric {self.metric!r}; expected one of {', '.join(SWEEP_METRICS)}.")

    def _named(self, metric: str, value):
        if self.metric != metric:
            raise AttributeError(f"This {self.kind} sweep scores {self.metric}, not {metric}: read .score / .delta.")
        return value

    perplexity = property(lambda self: self._named("perplexity", self.score))
    delta_perplexity = property(lambda self: self._named("perplexity", self.delta))
    reference_perplexity = property(lambda self: self._named("perplexity", self.reference))
    accuracy = property(lambda self: self._named("accuracy", self.score))
    delta_accuracy = property(lambda self: self._named("accuracy", self.delta))
    reference_accuracy = property(lambda self: self._named("accuracy", self.reference))

    def to_dict(self) -> dict:
        """``{kind, x_label, x, metric, <metric>, delta_<metric>, reference_<metric>, ...}`` (the score under its
        metric's name), JSON-ready."""
        data = asdict(self)
        score, delta, reference = data.pop("score"), data.pop("delta"), data.pop("reference")
        head = {key: data.pop(key) for key in ("kind", "x_label", "x", "metric")}
        named = {self.metric: score, f"delta_{self.metric}": delta, f"reference_{self.metric}": reference}
        return head | named | data


def _blimp_overall(model, tokenizer, blimp_data, batch_size) -> float:
    from ..blimp import evaluate_blimp

    return evaluate_blimp(model, tokenizer, data=blimp_data, batch_size=batch_size, progress=False).overall


def _reference(model, data, batch_size, known: float | None) -> float:
    return known if known is not None else evaluate_score(model, data, batch_size)


def _finish(kind, x_label, xs, scores, reference, metric, blimps=None, reference_blimp=None, **extra) -> SweepResult:
    return SweepResult(
        kind=kind,
        x_label=x_label,
        x=[float(x) for x in xs],
        score=scores,
        delta=[p - reference for p in scores],
        reference=reference,
        metric=metric,
        reference_blimp=reference_blimp,
        blimp=blimps,
        delta_blimp=None if blimps is None else [b - reference_blimp for b in blimps],
        **extra,
    )


def pruning_sweep(
    model: nn.Module,
    data,
    fractions: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    layers: Sequence[TopoLayer] | None = None,
    scope: str = "topographic",
    granularity: str = "layer",
    blimp_data=None,
    tokenizer=None,
    batch_size: int = 8,
    progress: bool = True,
    reference_score: float | None = None,
) -> SweepResult:
    """The score on ``data`` (perplexity on token blocks, top-1 accuracy on an
    :class:`~hf_topo.analysis.image_inputs.ImageBatch`; BLiMP too when ``blimp_data`` and ``tokenizer`` are given)
    after L1 unstructured pruning of ``fractions`` of the weights of ``scope`` (:func:`prunable_weights`; a Conv2d
    layer's whole ``(out, in, kh, kw)`` kernel tensor); the model is restored afterwards. ``reference_score``: the
    unperturbed score when already known (else measured)."""
    if blimp_data is not None and tokenizer is None:
        raise ValueError("BLiMP in the pruning sweep needs the tokenizer: pruning_sweep(..., tokenizer=tokenizer).")
    weights = prunable_weights(model, scope, layers)
    for fraction in fractions:  # checked before any evaluation
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"Pruning fraction {fraction} must lie in [0, 1].")
    reference = _reference(model, data, batch_size, reference_score)
    reference_blimp = None if blimp_data is None else _blimp_overall(model, tokenizer, blimp_data, batch_size)
    scores, blimps = [], [] if blimp_data is not None else None
    for fraction in tqdm(fractions, desc=f"L1 pruning ({scope})", disable=not progress):
        with restored_weights(weights):
            l1_prune_(weights, fraction, granularity)
            scores.append(evaluate_score(model, data, batch_size))
            if blimps is not None:
                blimps.append(_blimp_overall(model, tokenizer, blimp_data, batch_size))
    n_weights = sum(w.numel() for w in weights.values())
    return _finish(
        "pruning", "fraction of weights pruned", fractions, scores, reference, sweep_metric(data), blimps,
        reference_blimp,
        settings={"scope": scope, "granularity": granularity, "n_weights": n_weights, "tensors": list(weights)},
    )  # fmt: skip


def noise_sweep(
    model: nn.Module,
    data,
    sigmas: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0),
    layers: Sequence[TopoLayer] | None = None,
    scope: str = "topographic",
    repeats: int = 1,
    seed: int = 0,
    batch_size: int = 8,
    progress: bool = True,
    reference_score: float | None = None,
) -> SweepResult:
    """The score on ``data`` (perplexity or top-1 accuracy, as :func:`pruning_sweep`) after Gaussian weight noise of
    relative strength ``sigmas`` (:func:`add_weight_noise_`) on the weights of ``scope``, averaged over ``repeats``
    seeded draws; the model is restored afterwards."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be at least 1.")
    if any(sigma < 0 for sigma in sigmas):
        raise ValueError(f"Noise levels {list(sigmas)} must be >= 0.")
    weights = prunable_weights(model, scope, layers)
    reference = _reference(model, data, batch_size, reference_score)
    generator = torch.Generator().manual_seed(seed)
    scores = []
    for sigma in tqdm(sigmas, desc="Weight noise", disable=not progress):
        values = []
        for _ in range(repeats):
            with restored_weights(weights):
                add_weight_noise_(weights, sigma, generator)
                values.append(evaluate_score(model, data, batch_size))
        scores.append(sum(values) / repeats)
    return _finish(
        "noise", "noise σ (× each weight tensor's std)", sigmas, scores, reference, sweep_metric(data),
        settings={"scope": scope, "repeats": repeats, "seed": seed, "tensors": list(weights)},
    )  # fmt: skip


def feasible_downsampling_factors(factors: Sequence[float], layers: Sequence[TopoLayer]) -> list[float]:
    """The ``factors`` φ that every layer's sheet allows (``φ ≤`` its height and width); others are logged and dropped."""
    smallest = min(min(layer.sheet.height, layer.sheet.width) for layer in layers)
    kept = [f for f in factors if 1 <= f <= smallest]
    if len(kept) < len(factors):
        logger.warning(
            "Downsampling factors %s skipped: the smallest sheet side is %d",
            sorted(set(factors) - set(kept)),
            smallest,
        )
    return kept


def downsampling_sweep(
    model: nn.Module,
    data,
    factors: Sequence[float] = (1, 2, 3, 4),
    layers: Sequence[TopoLayer] | None = None,
    batch_size: int = 8,
    progress: bool = True,
    reference_score: float | None = None,
    gains: bool = True,
) -> SweepResult:
    """The score on ``data`` (perplexity or top-1 accuracy, as :func:`pruning_sweep`) of the model with its
    topographic layers downsampled by ``φ × φ`` on the sheet (A.5; a Conv2d's output channels, a Linear's output
    features), for each ``φ`` in ``factors`` that the sheets allow, against the fraction of the model's parameters
    kept.

    ``gains``: per-unit gains in closed form (variant ``"gains"``, the default) or the paper's layer (``False``,
    variant ``"paper"``).
    """
    if not layers:
        raise ValueError("downsampling_sweep needs the topographic layers (from topographic_layers(model)).")
    factors = feasible_downsampling_factors(factors, layers)
    if not factors:
        raise ValueError("No downsampling factor fits the sheets; use factors between 1 and the smallest sheet side.")
    reference = _reference(model, data, batch_size, reference_score)
    total = parameter_count(model)
    targets = [layer.name for layer in layers]
    scores, kept = [], []
    variant = "gains" if gains else "paper"
    for factor in tqdm(factors, desc=f"Downsampling ({variant})", disable=not progress):
        smaller = downsample_model(model, factors=(factor, factor), target_modules=targets, gains=gains)
        scores.append(evaluate_score(smaller, data, batch_size))
        kept.append(parameter_count(smaller) / total)
        del smaller
    return _finish(
        "downsampling", "downsampling factor φ (φ × φ on the sheet)", factors, scores, reference, sweep_metric(data),
        parameters_kept=kept, settings={"parameters": total, "layers": targets}, variant=variant,
    )  # fmt: skip


def substitute_tokens(tokens, rate: float, vocab_size: int, generator: torch.Generator):
    """``tokens`` with each real token replaced, with probability ``rate``, by one drawn uniformly from
    ``[0, vocab_size)``; returns the perturbed :class:`~hf_topo.evaluation.TokenBatch` (same shape and mask)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"Substitution rate {rate} must lie in [0, 1].")
    if vocab_size < 2:
        raise ValueError(f"vocab_size={vocab_size} must be at least 2.")
    batch = as_token_batch(tokens)
    hit = torch.rand(batch.input_ids.shape, generator=generator) < rate
    if batch.attention_mask is not None:
        hit &= batch.attention_mask.bool()
    random_ids = torch.randint(0, vocab_size, batch.input_ids.shape, generator=generator)
    return TokenBatch(torch.where(hit, random_ids, batch.input_ids), batch.attention_mask)


def delete_tokens(tokens, rate: float, generator: torch.Generator, pad_token_id: int = 0):
    """``tokens`` with each real token removed with probability ``rate``, the survivors shifted left and right-padded
    with ``pad_token_id`` under ``attention_mask`` 0. A sequence left with fewer than two tokens keeps its first two."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"Deletion rate {rate} must lie in [0, 1].")
    batch = as_token_batch(tokens)
    real = batch.attention_mask.bool() if batch.attention_mask is not None else torch.ones_like(batch.input_ids).bool()
    keep = real & (torch.rand(batch.input_ids.shape, generator=generator) >= rate)
    first_two = real & (real.long().cumsum(dim=1) <= 2)
    short = keep.sum(dim=1) < 2
    keep[short] = first_two[short]
    # Stable sort puts kept positions first in their original order: a left-aligned copy of the survivors.
    order = torch.argsort((~keep).long(), dim=1, stable=True)
    input_ids = torch.gather(batch.input_ids, 1, order)
    mask = torch.gather(keep.long(), 1, order)
    return TokenBatch(input_ids.masked_fill(mask == 0, pad_token_id), mask)


def input_perturbation_sweep(
    model: nn.Module,
    tokens,
    kind: str = "substitution",
    rates: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.3),
    vocab_size: int | None = None,
    repeats: int = 1,
    seed: int = 0,
    batch_size: int = 8,
    progress: bool = True,
    reference_score: float | None = None,
) -> SweepResult:
    """Perplexity (a causal LM's; token perturbations have no image counterpart here) under token ``"substitution"`` (scored on the clean next tokens) or ``"deletion"`` (scored on the
    shortened text) at each rate, averaged over ``repeats`` seeded draws. ``vocab_size`` (substitution): the range of
    the random tokens, by default the model's input-embedding size."""
    if kind not in INPUT_PERTURBATIONS:
        raise ValueError(f"Unknown input perturbation {kind!r}; choose one of {INPUT_PERTURBATIONS}.")
    if isinstance(tokens, ImageBatch):
        raise TypeError(f"The {kind} sweep perturbs tokens of text; it does not apply to images.")
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be at least 1.")
    if any(not 0.0 <= rate <= 1.0 for rate in rates):
        raise ValueError(f"Perturbation rates {list(rates)} must lie in [0, 1].")
    batch = as_token_batch(tokens)
    if vocab_size is None:
        vocab_size = model.get_input_embeddings().num_embeddings
    reference = _reference(model, batch, batch_size, reference_score)
    generator = torch.Generator().manual_seed(seed)
    perplexities = []
    for rate in tqdm(rates, desc=f"Input {kind}", disable=not progress):
        values = []
        for _ in range(repeats):
            if kind == "substitution":
                corrupted = substitute_tokens(batch, rate, vocab_size, generator)
                values.append(evaluate_perplexity(model, corrupted, batch_size, False, targets=batch.input_ids))
            else:
                values.append(evaluate_perplexity(model, delete_tokens(batch, rate, generator), batch_size, False))
        perplexities.append(sum(values) / repeats)
    x_label = "fraction of tokens replaced by random ones" if kind == "substitution" else "fraction of tokens deleted"
    return _finish(
        kind, x_label, rates, perplexities, reference, "perplexity",
        settings={"repeats": repeats, "seed": seed, "vocab_size": vocab_size if kind == "substitution" else None},
    )  # fmt: skip
