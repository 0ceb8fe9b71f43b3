"""The word-swap measurement: how much a unit's response to a word changes when an earlier word is swapped.

Step by step (each step's source in Skrill & Norman-Haignere's code, ``github.com/dskrill/TemporalIntegration``;
``docs/analysis.md`` has the full table):

1. Sequences of ``sequence_words`` consecutive words (40: ``demo.ipynb``, ``get_natural_sequences_of_length(40)``),
   cleaned as :mod:`~hf_topo.analysis.temporal.words` describes.
2. For every word position ``i`` of a sequence, ``n_swaps`` (1 in the reference) copies with word ``i`` replaced
   by another word (``word_swap.py``: one swapped sequence per position). The replacement has as many tokens as
   the original, so every later word keeps its token positions.
3. A word's response is the mean over its tokens of the layer's output (``activations.aggregate_tokens``).
4. The change is ``|r_swapped − r_original|`` (``activations.calculate_differences``, ``torch.abs``), averaged
   over sequences (and swaps): ``D[i, j]``, swap position ``i``, measured word ``j`` (``out / n``).
5. Aggregation (:func:`aggregate_windows`, ``analysis.fit_curves``): a measured word ``j`` takes the lags
   ``Δ = 0 … max_delta`` (``D[j − Δ, j]``, 21 lags: ``max_window_size = 21``) only if every swapped position
   ``j − Δ`` is > 1 (``all(xi > 1)``); its curve is divided by its own ``Δ = 0`` change (``D_delta /=
   D_delta[0:1]``), and the window is the **median** over the measured words (``np.median(D_delta, axis=1)``).
"""

from __future__ import annotations

import inspect
import logging
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from ...config import TOPOGRAPHY_KEY
from ...evaluation import model_device
from ...sheet import CorticalSheet, most_square_shape
from ...targets import candidate_layer_names, matches_pattern
from ..activations import topographic_layers
from ..hooks import capture_outputs
from .words import NotEnoughTextError, WordPool, WordSequence, check_tokenizer, encode_words, natural_word_runs

__all__ = ["DIFFERENCES", "IntegrationWindows", "aggregate_windows", "measure_integration_windows"]

logger = logging.getLogger(__name__)

#: How a response change is measured: ``|r_swapped − r_original|`` (the reference) or ``(r_swapped − r_original)²``.
DIFFERENCES = ("absolute", "squared")
#: The reference keeps a measured word only if every swapped position of its window is > 1 (``all(xi > 1)`` in
#: ``analysis.fit_curves``): the first two words of a sequence are never the swapped word of a window.
FIRST_SWAP_POSITION = 2


@dataclass
class IntegrationWindows:
    """Measured integration windows of each layer's units.

    Attributes:
        deltas: ``(n_deltas,)`` word distances ``0 … max_delta`` (``Δ = 0``: the measured word itself swapped).
        windows: ``{layer: (n_units, n_deltas)}`` the windows ``θ(Δ)``: per measured word the change divided by
            its ``Δ = 0`` change, then the median over measured words (:func:`aggregate_windows`); ``nan`` rows for
            units whose response never changed.
        response_change: ``{layer: (n_units, n_deltas)}`` the mean response change over measured words, before
            normalization.
        sample_counts: ``(n_deltas,)`` how many (sequence, swap, measured word) samples each ``Δ`` holds.
        sheets: ``{layer: (height, width)}`` where the units sit (unit ``u`` at ``(u // width, u % width)``).
        difference: ``"absolute"`` or ``"squared"`` response change.
        n_sequences: sequences measured; n_swaps: replacement words per swapped word.
        positions: ``(n_positions,)`` the measured word positions ``j`` in each sequence.
        position_change: ``{layer: (n_units, n_positions, n_deltas)}`` the mean change ``D[j − Δ, j]`` at each
            measured word (what :func:`aggregate_windows` reduces).
        sequence_words: words per sequence.
    """

    deltas: torch.Tensor
    windows: dict[str, torch.Tensor]
    response_change: dict[str, torch.Tensor]
    sample_counts: torch.Tensor
    sheets: dict[str, tuple[int, int]]
    difference: str
    n_sequences: int
    n_swaps: int
    positions: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    position_change: dict[str, torch.Tensor] = field(default_factory=dict)
    sequence_words: int | None = None

    @property
    def layer_names(self) -> list[str]:
        return list(self.windows)

    def to_dict(self) -> dict:
        """JSON-ready summary: settings and each layer's mean normalized window over its responding units."""
        return {
            "method": "word swap (Skrill & Norman-Haignere, NeurIPS 2023): per-word Δ=0 normalization, median",
            "difference": self.difference,
            "n_sequences": self.n_sequences,
            "n_swaps": self.n_swaps,
            "sequence_words": self.sequence_words,
            "measured_positions": self.positions.tolist(),
            "deltas": self.deltas.tolist(),
            "sample_counts": self.sample_counts.tolist(),
            "layers": {
                name: {
                    "sheet": list(self.sheets[name]),
                    "n_units": int(window.shape[0]),
                    "silent_units": int(window.isnan().any(dim=1).sum()),
                    "mean_window": nanmean_rows(window).tolist(),
                }
                for name, window in self.windows.items()
            },
        }


def nanmean_rows(window: torch.Tensor) -> torch.Tensor:
    """The mean of the rows of ``window`` without a ``nan``."""
    valid = window[~window.isnan().any(dim=1)]
    return valid.mean(dim=0) if len(valid) else torch.full(window.shape[1:], float("nan"), dtype=window.dtype)


def nanmedian(values: torch.Tensor, dim: int) -> torch.Tensor:
    """The median along ``dim`` ignoring ``nan``, the mean of the two middle values for an even count (as
    ``np.median``; ``torch.nanmedian`` returns the lower one). ``nan`` where a slice has no finite value."""
    values = values.movedim(dim, -1)
    finite = torch.isfinite(values)
    count = finite.sum(dim=-1)
    ordered = torch.where(finite, values, float("inf")).sort(dim=-1).values
    low = ((count - 1).clamp_min(0) // 2).unsqueeze(-1)
    high = (count // 2).clamp_max(values.shape[-1] - 1).unsqueeze(-1)
    median = (ordered.gather(-1, low) + ordered.gather(-1, high)).squeeze(-1) / 2
    return torch.where(count > 0, median, float("nan"))


def aggregate_windows(position_change: torch.Tensor) -> torch.Tensor:
    """Windows from the changes at each measured word: ``θ[u, Δ] = median_j D_u[j − Δ, j] / D_u[j, j]``.

    Args:
        position_change: ``(n_units, n_positions, n_deltas)`` mean response changes, column 0 at ``Δ = 0``.

    Returns:
        ``(n_units, n_deltas)`` float64 windows (``θ[:, 0] = 1``); a measured word whose ``Δ = 0`` change is 0 is
        left out of its unit's median, and a unit with no such word gets ``nan``. Follows ``analysis.fit_curves``
        of the reference (``D_delta /= D_delta[0:1]``, then ``np.median`` over measured positions); its earlier
        division by the median diagonal cancels in this ratio.
    """
    if position_change.ndim != 3 or position_change.shape[2] < 1:
        raise ValueError(
            f"Expected position_change of shape (n_units, n_positions, n_deltas), got {tuple(position_change.shape)}."
        )
    change = position_change.double()
    at_zero = change[:, :, :1]
    ratio = torch.where(at_zero > 0, change / at_zero.clamp_min(torch.finfo(torch.float64).tiny), float("nan"))
    return nanmedian(ratio, dim=1)


def max_positions(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def resolve_layers(
    model: nn.Module, layers: Sequence[str] | None
) -> list[tuple[str, nn.Module, CorticalSheet | None]]:
    """``(name, module, sheet or None)`` of the layers to measure (default: the topographic layers)."""
    if layers is None:
        return [(layer.name, layer.module, layer.sheet) for layer in topographic_layers(model)]
    if isinstance(layers, str):
        layers = [layers]
    if not layers:
        raise ValueError(
            "layers is empty: give module names (e.g. ['h.0.mlp.c_fc']) or None for the topographic layers."
        )
    stored: dict[str, CorticalSheet] = {}
    if isinstance(getattr(getattr(model, "config", None), TOPOGRAPHY_KEY, None), dict):
        try:
            stored = {layer.name: layer.sheet for layer in topographic_layers(model, include_watched=True)}
        except (ValueError, TypeError) as err:
            logger.info("Topography metadata not used for the sheets (%s)", err)
    modules = dict(model.named_modules())
    chosen: list[tuple[str, nn.Module, CorticalSheet | None]] = []
    for wanted in layers:
        matches = [name for name in modules if name and matches_pattern(name, [wanted])]
        if not matches:
            # Linear/Conv1D layers first (the usual targets), else every named leaf module.
            candidates = candidate_layer_names(model) or [
                n for n, m in modules.items() if n and not list(m.children())
            ]
            shown = ", ".join(repr(c) for c in candidates[:8]) + (" ..." if len(candidates) > 8 else "")
            raise ValueError(
                f"{type(model).__name__} has no module named {wanted!r} (full name or '.'-suffix). "
                f"Candidates: {shown}; any module whose output is (batch, seq_len, n_units) can be measured."
            )
        for name in matches:
            if name not in [c[0] for c in chosen]:
                chosen.append((name, modules[name], stored.get(name)))
    return chosen


def sheet_shape(sheet: CorticalSheet | None, n_units: int) -> tuple[int, int]:
    """The layer's own sheet when it fits ``n_units``, else the most square ``(height, width)``."""
    if sheet is not None and sheet.n_units == n_units:
        return (sheet.height, sheet.width)
    return most_square_shape(n_units)


def _skip_logits(model: nn.Module, hooked: list[nn.Module]) -> dict:
    """``{"logits_to_keep": 1}`` when the model takes it and no hooked layer is its LM head: the responses are read
    from hooks, so the logits over the vocabulary (often the costliest layer of a small model) are not needed."""
    try:
        accepts = "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return {"logits_to_keep": 1} if accepts and not any(module is head for module in hooked) else {}


def check_setting(label: str, value, minimum: int = 1) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{label}={value!r} must be an integer ≥ {minimum}.")


def resolve_max_length(model: nn.Module, max_length: int | None) -> int:
    limit = max_positions(model)
    if max_length is None:
        max_length = min(128, limit) if limit else 128
    if max_length < 2 or (limit is not None and max_length > limit):
        raise ValueError(f"max_length={max_length} must be in [2, {limit}] (the model's positions).")
    return max_length


@dataclass
class SwapChanges:
    """Mean response changes by swap position and lag: ``changes[layer][u, i, k] = D_u[i, i + k]`` (``nan`` where
    nothing was measured); ``counts[i, k]`` the samples averaged."""

    changes: dict[str, torch.Tensor]
    counts: torch.Tensor


def swap_changes(
    model: nn.Module,
    sequences: Sequence[WordSequence],
    targets: Sequence[tuple[str, nn.Module, CorticalSheet | None]],
    swap_positions: Sequence[int],
    max_lag: int,
    replacement: Callable[[tuple[int, ...], random.Random], tuple[int, ...] | None],
    n_swaps: int = 1,
    difference: str = "absolute",
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = True,
    description: str = "Word swaps",
) -> SwapChanges:
    """Run the originals and their swapped copies and average ``|Δ response|`` of each word by swap position and lag.

    Every sequence must have the same number of words. A word's response is the mean of the layer's output over its
    tokens; padding never enters (the sequences are right-padded and each word averages its own tokens only).
    """
    if difference not in DIFFERENCES:
        raise ValueError(f"difference={difference!r}; expected one of {DIFFERENCES}.")
    n_words = len(sequences[0].words)
    if any(len(sequence.words) != n_words for sequence in sequences):
        raise ValueError("Every sequence must have the same number of words.")
    device = model_device(model)
    extra_inputs = _skip_logits(model, [module for _, module, _ in targets])
    rng = random.Random(seed)
    sums: dict[str, torch.Tensor] = {}
    counts = torch.zeros((n_words, max_lag + 1), dtype=torch.long)
    originals: dict[int, dict[str, torch.Tensor]] = {}  # sequence → layer → (n_words, n_units)

    def rows() -> Iterable[tuple[int, int, list[int]]]:
        skipped = 0
        for index, sequence in enumerate(sequences):
            yield index, -1, sequence.ids
            for position in swap_positions:
                start, end = sequence.words[position]
                original = tuple(sequence.ids[start:end])
                for _ in range(n_swaps):
                    new = replacement(original, rng)
                    if new is None:
                        skipped += 1
                        continue
                    yield index, position, sequence.ids[:start] + list(new) + sequence.ids[end:]
        if skipped:
            logger.info("%d swaps skipped: no other word with as many tokens", skipped)

    lags = torch.arange(max_lag + 1)
    averages: dict[int, torch.Tensor] = {}  # sequence → (n_words, n_tokens): word ← its tokens, weights 1 / n_tokens

    def average_of(index: int) -> torch.Tensor:
        if index not in averages:
            sequence = sequences[index]
            matrix = torch.zeros((n_words, len(sequence.ids)))
            for word, (start, end) in enumerate(sequence.words):
                matrix[word, start:end] = 1.0 / (end - start)
            averages[index] = matrix
        return averages[index]

    def run(batch: list[tuple[int, int, list[int]]], captured) -> None:
        length = max(len(ids) for _, _, ids in batch)
        input_ids = torch.zeros((len(batch), length), dtype=torch.long)
        mask = torch.zeros((len(batch), length), dtype=torch.long)
        average = torch.zeros((len(batch), n_words, length))
        for row, (index, _, ids) in enumerate(batch):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
            average[row, :, : len(ids)] = average_of(index)
        captured.clear()
        model(input_ids=input_ids.to(device), attention_mask=mask.to(device), **extra_inputs)
        average = average.to(device)
        swap_rows = [row for row, (_, position, _) in enumerate(batch) if position >= 0]
        position = torch.tensor([batch[row][1] for row in swap_rows], dtype=torch.long)  # (S,)
        measured = position.unsqueeze(1) + lags  # (S, n_lags): the swapped word and the words after it
        inside = measured < n_words
        measured = measured.clamp_max(n_words - 1)
        for name, _, _ in targets:
            output = captured.output(name, input_ids).float()  # (B, T, n_units)
            responses = torch.bmm(average, output)  # (B, n_words, n_units)
            if name not in sums:
                sums[name] = torch.zeros((n_words, max_lag + 1, responses.shape[-1]), dtype=torch.float64)
            for row, (index, swapped, _) in enumerate(batch):
                if swapped < 0:
                    originals.setdefault(index, {})[name] = responses[row]
            if not swap_rows:
                continue
            reference = torch.stack([originals[batch[row][0]][name] for row in swap_rows])  # (S, n_words, n_units)
            gather = measured.to(device).unsqueeze(-1).expand(-1, -1, responses.shape[-1])
            change = responses[swap_rows].gather(1, gather) - reference.gather(1, gather)  # (S, n_lags, n_units)
            change = change.abs() if difference == "absolute" else change.square()
            change = change.double().cpu() * inside.unsqueeze(-1)
            sums[name].index_put_((position.unsqueeze(1).expand_as(measured), lags.expand_as(measured)), change,
                                  accumulate=True)  # fmt: skip
        counts.index_put_(
            (position.unsqueeze(1).expand_as(measured), lags.expand_as(measured)), inside.long(), accumulate=True
        )
        last = batch[-1][0]
        for done in [index for index in originals if index < last]:
            del originals[done]
            averages.pop(done, None)

    total = len(sequences) * (1 + n_swaps * len(swap_positions))
    bar = tqdm(total=total, desc=description, unit="pass", disable=not progress)
    try:
        with capture_outputs(model, {name: module for name, module, _ in targets}) as captured:
            pending: list[tuple[int, int, list[int]]] = []
            for row in rows():
                pending.append(row)
                if len(pending) == batch_size:
                    run(pending, captured)
                    bar.update(len(pending))
                    pending = []
            if pending:
                run(pending, captured)
                bar.update(len(pending))
    finally:
        bar.close()
    changes = {
        name: torch.where(counts > 0, total_change.permute(2, 0, 1) / counts.clamp_min(1), float("nan"))
        for name, total_change in sums.items()
    }  # (n_units, n_words, n_lags)
    return SwapChanges(changes=changes, counts=counts)


def _build_sequences(
    tokenizer, texts: Iterable[str], sequence_words: int, max_length: int, max_sequences: int | None, normalize: bool
) -> tuple[list[WordSequence], WordPool, int]:
    """The first ``max_sequences`` runs of ``sequence_words`` words that fit ``max_length`` tokens, and their pool."""
    pool = WordPool(tokenizer)
    sequences: list[WordSequence] = []
    n_runs = 0
    for words in natural_word_runs(texts, sequence_words, normalize=normalize):
        n_runs += 1
        sequence = encode_words(tokenizer, words)
        if sequence is None:
            continue
        pool.add_sequence(sequence)  # the swap words come from every run read
        if len(sequence.ids) > max_length:
            continue
        sequences.append(sequence)
        if max_sequences is not None and len(sequences) >= max_sequences:
            break
    return sequences, pool, n_runs


def measure_integration_windows(
    model: nn.Module,
    tokenizer,
    texts: Iterable[str],
    layers: Sequence[str] | None = None,
    max_delta: int = 20,
    sequence_words: int = 40,
    n_swaps: int = 1,
    max_length: int | None = None,
    max_sequences: int | None = 200,
    batch_size: int = 16,
    difference: str = "absolute",
    normalize: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> IntegrationWindows:
    """Measure each unit's temporal integration window by word swaps (Skrill & Norman-Haignere, NeurIPS 2023).

    See the module docstring (and ``docs/analysis.md``) for the procedure. Every sequence costs
    ``1 + n_swaps·(sequence_words − 2)`` forward passes.

    Args:
        model: a causal LM (run in eval mode without gradients; its training mode is restored).
        tokenizer: its fast tokenizer.
        texts: the text source (e.g. paragraphs of a corpus), read until ``max_sequences`` sequences.
        layers: module names (full or ``'.'``-suffixes) whose outputs ``(batch, seq_len, n_units)`` are measured;
            by default the model's topographic layers (its ``topography`` metadata, else the family's ``c_fc``).
        max_delta: the longest distance in words; windows cover ``Δ = 0 … max_delta`` (the reference: 20).
        sequence_words: words per sequence (the reference: 40); the measured words are those at positions
            ``max_delta + 2 … sequence_words − 1``.
        n_swaps: replacement words drawn for each swapped word (the reference: 1).
        max_length: tokens per sequence at most (default: ``min(128, model positions)``); longer ones are skipped.
        max_sequences: the budget: the first ``max_sequences`` sequences (``None``: all of the texts).
        batch_size: sequences (original or swapped) per forward pass.
        difference: ``"absolute"`` (the reference) or ``"squared"`` response change.
        normalize: clean the words as the reference does (lower case, no punctuation, alphabetic words only).
        seed: seeds the choice of replacement words.
        progress: show a tqdm bar over forward passes.

    Raises:
        ValueError: empty texts, a bad setting, a layer that does not exist (the message lists candidates), or no
            run of ``sequence_words`` words in ``max_length`` tokens.
        TypeError: a slow tokenizer (no offsets), ``texts`` a single string.
    """
    if difference not in DIFFERENCES:
        raise ValueError(f"difference={difference!r}; expected one of {DIFFERENCES}.")
    for label, value in (("max_delta", max_delta), ("n_swaps", n_swaps), ("batch_size", batch_size)):
        check_setting(label, value)
    check_setting("sequence_words", sequence_words, max_delta + FIRST_SWAP_POSITION + 1)
    if max_sequences is not None and max_sequences < 1:
        raise ValueError(f"max_sequences={max_sequences} must be a positive number of sequences (or None for all).")
    if isinstance(texts, str):
        raise TypeError("texts is a single string: pass a list of texts (e.g. [text] or the lines of a file).")
    check_tokenizer(tokenizer)
    max_length = resolve_max_length(model, max_length)
    targets = resolve_layers(model, layers)
    sequences, pool, n_runs = _build_sequences(tokenizer, texts, sequence_words, max_length, max_sequences, normalize)
    if not sequences:
        raise NotEnoughTextError(
            f"No sequence of {sequence_words} consecutive words fits {max_length} tokens ({n_runs} runs of "
            f"{sequence_words} words found{' after cleaning' if normalize else ''}). Give longer texts, raise "
            "max_length, or lower sequence_words (it must exceed max_delta + 2)"
            + ("; normalize=False keeps every whitespace-delimited word." if normalize else ".")
        )
    logger.info(
        "Integration windows: %d sequences of %d words, Δ = 0..%d words, %d layer(s)",
        len(sequences), sequence_words, max_delta, len(targets),
    )  # fmt: skip
    measured = swap_changes(
        model, sequences, targets, range(FIRST_SWAP_POSITION, sequence_words), max_delta, pool.replacement,
        n_swaps=n_swaps, difference=difference, batch_size=batch_size, seed=seed, progress=progress,
    )  # fmt: skip
    positions = torch.arange(max_delta + FIRST_SWAP_POSITION, sequence_words)
    deltas = torch.arange(max_delta + 1)
    swapped = positions.unsqueeze(1) - deltas  # (n_positions, n_deltas): D[j − Δ, j]
    counts = measured.counts[swapped, deltas]
    if int(counts.sum(dim=0).min()) == 0:
        raise NotEnoughTextError(
            "Some Δ got no swap: the texts hold no other word with as many tokens as a swapped word. "
            "Give more (varied) text."
        )
    windows, response_change, position_change, sheets = {}, {}, {}, {}
    for name, _, sheet in targets:
        change = measured.changes[name][:, swapped, deltas].float()  # (n_units, n_positions, n_deltas)
        position_change[name] = change
        response_change[name] = change.mean(dim=1)
        windows[name] = aggregate_windows(change).float()
        sheets[name] = sheet_shape(sheet, change.shape[0])
        silent = int(windows[name].isnan().any(dim=1).sum())
        if silent:
            logger.info("%s: %d of %d units never changed their response (windows set to nan)", name, silent,
                        change.shape[0])  # fmt: skip
    return IntegrationWindows(
        deltas=deltas,
        windows=windows,
        response_change=response_change,
        sample_counts=counts.sum(dim=0),
        sheets=sheets,
        difference=difference,
        n_sequences=len(sequences),
        n_swaps=n_swaps,
        positions=positions,
        position_change=position_change,
        sequence_words=sequence_words,
    )
