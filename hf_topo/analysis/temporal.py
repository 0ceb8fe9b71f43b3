"""Temporal integration windows of a language model's units: the word-swap method and per-unit window fits.

How far back does a unit look? Following Skrill & Norman-Haignere ("Large language models transition from
integrating across position-yoked, exponential windows to structure-yoked, power-law windows", NeurIPS 2023),
as used by the TopoNets paper (Deb, Deb & Murty, ICLR 2025, §2.3 "Temporal window analyses", §3.4, Fig. 5B,
A.7), a unit's *integration window* is how much its response at a word changes when a word ``Δ`` words earlier
is swapped for another word, as a function of ``Δ``.

Method (what this module does, step by step):

1. **Words.** A word is a whitespace-delimited run of characters of the text (punctuation stays attached:
   ``"world."`` is one word). Each token belongs to the word holding its first non-space character (read from
   the fast tokenizer's ``offset_mapping``, so it works for byte-level BPE, where a leading ``Ġ`` marks a word
   start, and for SentencePiece alike); a token that reaches into the next word merges the two, so a swap never
   splits a token or a word. Whitespace-only tokens (``"\\n"``) belong to no word: they are never swapped and
   never counted in ``Δ``.
2. **Sequences.** Each text is cut into consecutive chunks of whole words of at most ``max_length`` tokens. The
   measured positions are the last tokens of the last ``n_targets`` words of a chunk (``n_targets=1``: the last
   token of the sequence). A chunk needs ``max_delta`` words before its first measured word.
3. **Swaps.** For every word ``i`` from ``max_delta`` words before the first measured word up to the last one,
   ``n_swaps`` copies of the sequence get word ``i``'s tokens replaced by the tokens of another word of the
   corpus with **the same number of tokens** (preferably also the same leading-space status), so every later
   position keeps its index and the measured positions stay aligned. The swapped ids are put in directly, not
   re-tokenized. ``Δ = j − i`` counts words from the swapped word ``i`` back from the measured word ``j``;
   ``Δ = 0`` swaps the measured word itself (the reference of the normalization).
4. **Responses.** A unit's response is the target layer's output at the measured position (a forward hook; for
   the topographic ``mlp.c_fc`` layers this is the pre-activation, the layers the paper analyses in A.7 instead of
   Skrill & Norman-Haignere's ``c_proj``). The change is ``(r_swapped − r_original)²`` (``difference="squared"``,
   the default: the energy of the response change) or ``|r_swapped − r_original|`` (``"absolute"``); both are
   averaged over sequences, swaps and measured words for each ``Δ``.
5. **Normalization.** Each unit's mean change is divided by its maximum over ``Δ`` (almost always at ``Δ = 0``,
   where the reference code divides), so ``θ_norm`` is 1 at its maximum. A unit whose response never changes gets
   ``nan``.
6. **Fit.** ``θ_norm(Δ) ≈ c·(Δ+1)^(−a) + (1−c)·e^(−bΔ)`` (the paper's eq. 3), ``a`` the power-law exponent,
   ``b`` the exponential rate, ``c`` their mix, bounds ``0 ≤ a ≤ a_max``, ``0 ≤ b ≤ b_max`` (10 and 10, those of
   the reference fit) and ``0 ≤ c ≤ 1``, least squares over ``Δ = 0 … max_delta``. For fixed ``(a, b)`` the best
   ``c`` is the clipped closed-form projection (exact for a one-dimensional convex quadratic), so the fit is a
   search over ``(a, b)`` only: a log-spaced grid and a zoomed grid around each unit's best point, then
   Levenberg–Marquardt steps on ``(a, b, c)`` projected onto the bounds, vectorized over all units in torch.
   ``a`` is ``nan`` where ``c < 0.05`` and ``b`` is ``nan`` where ``c > 0.95``: that component carries under 5%
   of the window, so the data do not determine its parameter.
7. **Kinds.** ``R²`` (over all ``Δ``) measures the fit. A unit is *power-law* if ``c ≥ c_split`` (0.5), else
   *exponential*; *neither* (the paper's third kind of cluster) if ``R² < r2_threshold`` (0.9), if its window is
   flat (no variance over ``Δ``) or if it never responds; and *delta* if its window never exceeds
   ``delta_level`` (0.05) beyond ``Δ = 0``: it integrates next to nothing beyond the current word, both shapes fit
   such a spike equally well, and ``c`` says nothing (Skrill & Norman-Haignere skip the fit for untrained models,
   whose windows are such spikes). The *reach* ``mean_{Δ≥1} θ_norm(Δ)`` is a model-free size of the window.

The fits are laid out on each layer's cortical sheet (unit ``u`` at row ``u // width``, column ``u % width``):
:func:`plot_window_maps` draws ``a``, ``b``, ``c``, ``R²``, the reach and the kinds; :func:`plot_window_summary` the
layer-by-layer picture (in the paper: early layers exponential, middle layers power-law); Moran's I of each
map (:func:`window_morans_i`) says whether units cluster by window on the sheet.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import TOPOGRAPHY_KEY
from ..sheet import CorticalSheet, most_square_shape
from ..targets import candidate_layer_names
from .activations import model_device, topographic_layers
from .spatial import morans_i

__all__ = [
    "DIFFERENCES",
    "WINDOW_KINDS",
    "IntegrationWindows",
    "LayerWindowFit",
    "WindowFits",
    "word_token_spans",
    "window_function",
    "measure_integration_windows",
    "fit_window_curves",
    "fit_integration_windows",
    "window_morans_i",
    "plot_window_maps",
    "plot_window_summary",
]

logger = logging.getLogger(__name__)

#: How a response change is measured: ``(r_swapped − r_original)²`` or ``|r_swapped − r_original|``.
DIFFERENCES = ("squared", "absolute")
#: Kinds of window, indexed by :attr:`LayerWindowFit.kind`.
WINDOW_KINDS = ("exponential", "power_law", "neither", "delta")
_SPACE_MARKERS = ("Ġ", "▁", " ")
_KIND_COLORS = ("tab:green", "tab:red", "tab:gray", "tab:blue")  # in the order of WINDOW_KINDS


# ---------------------------------------------------------------------------------------------------------------
# Words and sequences
# ---------------------------------------------------------------------------------------------------------------


def word_token_spans(text: str, offsets: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Token spans ``[start, end)`` of the whole words of ``text``, in order.

    Args:
        text: the text that was tokenized.
        offsets: each token's character span ``(start, end)`` in ``text`` (a fast tokenizer's ``offset_mapping``).

    A word is a whitespace-delimited run of characters; a token belongs to the word of its first non-space
    character, and a token that reaches into the next word merges the two words into one span, so no span ever
    splits a token or a word. Tokens without a non-space character (line breaks, special tokens) are in no span.
    """
    word_of_char = [-1] * len(text)
    for index, match in enumerate(re.finditer(r"\S+", text)):
        word_of_char[match.start() : match.end()] = [index] * (match.end() - match.start())
    spans: list[list[int]] = []  # [start token, end token, last word index]
    for token, (start, end) in enumerate(offsets):
        words = [word_of_char[ch] for ch in range(max(start, 0), min(end, len(text))) if word_of_char[ch] >= 0]
        if not words:
            continue
        first, last = words[0], words[-1]
        if spans and first <= spans[-1][2]:
            spans[-1][1] = token + 1
            spans[-1][2] = max(spans[-1][2], last)
        else:
            spans.append([token, token + 1, last])
    return [(start, end) for start, end, _ in spans]


@dataclass
class _Sequence:
    ids: list[int]  # token ids of the chunk (whole words, plus the whitespace tokens between them)
    words: list[tuple[int, int]]  # token spans of its words, relative to the chunk


def _check_tokenizer(tokenizer) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"{type(tokenizer).__name__} is not a fast tokenizer: the word swaps need token offsets "
            "(offset_mapping). Load the tokenizer with AutoTokenizer.from_pretrained(..., use_fast=True)."
        )


def _chunks(ids: list[int], words: list[tuple[int, int]], max_length: int) -> Iterable[_Sequence]:
    """Consecutive chunks of whole words of at most ``max_length`` tokens each."""
    start = 0
    while start < len(words):
        first_token = words[start][0]
        end = start
        while end < len(words) and words[end][1] - first_token <= max_length:
            end += 1
        if end == start:  # one word longer than max_length: skip it
            start += 1
            continue
        spans = [(s - first_token, e - first_token) for s, e in words[start:end]]
        yield _Sequence(ids=ids[first_token : words[end - 1][1]], words=spans)
        start = end


class _WordPool:
    """The corpus' words as token-id tuples, by number of tokens and leading-space status, to draw swaps from."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self._by_key: dict[tuple[int, bool], list[tuple[int, ...]]] = {}
        self._by_length: dict[int, list[tuple[int, ...]]] = {}
        self._seen: set[tuple[int, ...]] = set()
        self._space: dict[int, bool] = {}

    def _leading_space(self, token_id: int) -> bool:
        if token_id not in self._space:
            token = self._tokenizer.convert_ids_to_tokens(token_id)
            self._space[token_id] = isinstance(token, str) and token.startswith(_SPACE_MARKERS)
        return self._space[token_id]

    def add(self, word: tuple[int, ...]) -> None:
        if word in self._seen:
            return
        self._seen.add(word)
        self._by_key.setdefault((len(word), self._leading_space(word[0])), []).append(word)
        self._by_length.setdefault(len(word), []).append(word)

    def replacement(self, word: tuple[int, ...], rng: random.Random) -> tuple[int, ...] | None:
        """Another word with as many tokens as ``word`` (the same leading-space status if one exists), or None."""
        same_kind = self._by_key.get((len(word), self._leading_space(word[0])), [])
        for candidates in (same_kind, self._by_length.get(len(word), [])):
            if all(candidate == word for candidate in candidates[:2]):
                continue  # no word other than `word` itself (the entries are distinct)
            while True:
                choice = candidates[rng.randrange(len(candidates))]
                if choice != word:
                    return choice
        return None


def _sequences_and_pool(
    tokenizer, texts: Iterable[str], max_length: int, min_words: int, max_sequences: int | None
) -> tuple[list[_Sequence], _WordPool, int]:
    """The first ``max_sequences`` chunks of the texts, the pool of all words read, and the most words in a chunk."""
    pool = _WordPool(tokenizer)
    sequences: list[_Sequence] = []
    most_words = 0
    n_texts = 0
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"texts must be strings, got a {type(text).__name__}.")
        if not text.strip():
            continue
        n_texts += 1
        encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(encoding["input_ids"])
        words = word_token_spans(text, encoding["offset_mapping"])
        for start, end in words:
            pool.add(tuple(ids[start:end]))
        for chunk in _chunks(ids, words, max_length):
            most_words = max(most_words, len(chunk.words))
            if len(chunk.words) >= min_words and (max_sequences is None or len(sequences) < max_sequences):
                sequences.append(chunk)
        if max_sequences is not None and len(sequences) >= max_sequences:
            break
    if n_texts == 0:
        raise ValueError("texts holds no text: give a non-empty list of strings (e.g. the lines of a text file).")
    return sequences, pool, most_words


# ---------------------------------------------------------------------------------------------------------------
# The measurement
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class IntegrationWindows:
    """Measured integration windows of each layer's units.

    Attributes:
        deltas: ``(n_deltas,)`` word distances ``0 … max_delta`` (``Δ = 0``: the measured word itself swapped).
        windows: ``{layer: (n_units, n_deltas)}`` normalized windows ``θ_norm`` (max 1 per unit; ``nan`` rows for
            units whose response never changed).
        response_change: ``{layer: (n_units, n_deltas)}`` the mean response change before normalization.
        sample_counts: ``(n_deltas,)`` how many (sequence, swap, measured word) samples each ``Δ`` averages.
        sheets: ``{layer: (height, width)}`` where the units sit (unit ``u`` at ``(u // width, u % width)``).
        difference: ``"squared"`` or ``"absolute"`` response change.
        n_sequences: sequences measured; n_swaps: replacement words per swapped word.
    """

    deltas: torch.Tensor
    windows: dict[str, torch.Tensor]
    response_change: dict[str, torch.Tensor]
    sample_counts: torch.Tensor
    sheets: dict[str, tuple[int, int]]
    difference: str
    n_sequences: int
    n_swaps: int

    @property
    def layer_names(self) -> list[str]:
        return list(self.windows)

    def to_dict(self) -> dict:
        """JSON-ready summary: settings and each layer's mean normalized window over its responding units."""
        return {
            "method": "word swap (Skrill & Norman-Haignere, NeurIPS 2023)",
            "difference": self.difference,
            "n_sequences": self.n_sequences,
            "n_swaps": self.n_swaps,
            "deltas": self.deltas.tolist(),
            "sample_counts": self.sample_counts.tolist(),
            "layers": {
                name: {
                    "sheet": list(self.sheets[name]),
                    "n_units": int(window.shape[0]),
                    "silent_units": int(window.isnan().any(dim=1).sum()),
                    "mean_window": _nanmean_rows(window).tolist(),
                }
                for name, window in self.windows.items()
            },
        }


def _nanmean_rows(window: torch.Tensor) -> torch.Tensor:
    valid = window[~window.isnan().any(dim=1)]
    return valid.mean(dim=0) if len(valid) else torch.full(window.shape[1:], float("nan"), dtype=window.dtype)


def _max_positions(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    for key in ("n_positions", "max_position_embeddings"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _resolve_layers(
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
        matches = [name for name in modules if name and (name == wanted or name.endswith("." + wanted))]
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


def _skip_logits(model: nn.Module, hooked: list[nn.Module]) -> dict:
    """``{"logits_to_keep": 1}`` when the model takes it and no hooked layer is its LM head: the responses are read
    from hooks, so the logits over the vocabulary (often the costliest layer of a small model) are not needed."""
    try:
        accepts = "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return {"logits_to_keep": 1} if accepts and not any(module is head for module in hooked) else {}


def _rows_of(seq_index: int, sequence: _Sequence, n_targets: int, max_delta: int, n_swaps: int, pool: _WordPool, rng):
    """The original and swapped token ids of one sequence: ``(seq_index, swapped word or -1, ids)``."""
    yield seq_index, -1, sequence.ids
    first_target = len(sequence.words) - n_targets
    skipped = 0
    for word in range(first_target - max_delta, len(sequence.words)):
        start, end = sequence.words[word]
        original = tuple(sequence.ids[start:end])
        for _ in range(n_swaps):
            replacement = pool.replacement(original, rng)
            if replacement is None:
                skipped += 1
                continue
            yield seq_index, word, sequence.ids[:start] + list(replacement) + sequence.ids[end:]
    if skipped:
        logger.debug("Sequence %d: %d swaps skipped (no other word with as many tokens)", seq_index, skipped)


@torch.no_grad()
def measure_integration_windows(
    model: nn.Module,
    tokenizer,
    texts: Iterable[str],
    layers: Sequence[str] | None = None,
    max_delta: int = 20,
    n_targets: int = 1,
    n_swaps: int = 1,
    max_length: int | None = None,
    max_sequences: int | None = 200,
    batch_size: int = 16,
    difference: str = "squared",
    seed: int = 0,
    progress: bool = True,
) -> IntegrationWindows:
    """Measure each unit's temporal integration window with word swaps (Skrill & Norman-Haignere, 2023).

    See the module docstring for the method. Every sequence costs ``1 + n_swaps·(max_delta + n_targets)`` forward
    passes of at most ``max_length`` tokens.

    Args:
        model: a causal LM (run in eval mode without gradients; its training mode is restored).
        tokenizer: its fast tokenizer.
        texts: the text source (e.g. the lines or paragraphs of a corpus); read until ``max_sequences`` chunks.
        layers: module names (full or ``'.'``-suffixes) whose outputs ``(batch, seq_len, n_units)`` are measured;
            by default the model's topographic layers (its ``topography`` metadata, else the family's ``c_fc``).
        max_delta: the longest distance in words; windows cover ``Δ = 0 … max_delta``.
        n_targets: measured words per sequence, its last ``n_targets`` words (1: the last token of the sequence).
        n_swaps: replacement words drawn for each swapped word.
        max_length: tokens per sequence at most (default: ``min(128, model positions)``).
        max_sequences: the budget: the first ``max_sequences`` chunks long enough (``None``: all of the texts).
        batch_size: sequences (original or swapped) per forward pass.
        difference: ``"squared"`` (default) or ``"absolute"`` response change.
        seed: seeds the choice of replacement words.
        progress: show a tqdm bar over forward passes.

    Raises:
        ValueError: empty texts, a bad setting, a layer that does not exist (the message lists candidates), or
            ``max_delta`` (+ ``n_targets``) more words than any chunk of ``max_length`` tokens holds.
        TypeError: a slow tokenizer (no offsets).
    """
    if difference not in DIFFERENCES:
        raise ValueError(f"difference={difference!r}; expected one of {DIFFERENCES}.")
    for label, value in (
        ("max_delta", max_delta),
        ("n_targets", n_targets),
        ("n_swaps", n_swaps),
        ("batch_size", batch_size),
    ):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{label}={value!r} must be a positive integer.")
    if max_sequences is not None and max_sequences < 1:
        raise ValueError(f"max_sequences={max_sequences} must be a positive number of sequences (or None for all).")
    if isinstance(texts, str):
        raise TypeError("texts is a single string: pass a list of texts (e.g. [text] or the lines of a file).")
    _check_tokenizer(tokenizer)
    limit = _max_positions(model)
    if max_length is None:
        max_length = min(128, limit) if limit else 128
    if max_length < 2 or (limit is not None and max_length > limit):
        raise ValueError(f"max_length={max_length} must be in [2, {limit}] (the model's positions).")
    targets = _resolve_layers(model, layers)
    extra_inputs = _skip_logits(model, [module for _, module, _ in targets])

    min_words = max_delta + n_targets
    sequences, pool, most_words = _sequences_and_pool(tokenizer, texts, max_length, min_words, max_sequences)
    if not sequences:
        raise ValueError(
            f"max_delta={max_delta} with n_targets={n_targets} needs sequences of at least {min_words} words, but the "
            f"longest chunk of at most {max_length} tokens has {most_words} words (whole words, excluding the "
            f"measured ones: {max(most_words - n_targets, 0)} before the first measured word). Lower max_delta, raise "
            "max_length or give longer texts."
        )
    logger.info(
        "Integration windows: %d sequences of up to %d tokens, Δ = 0..%d words, %d layer(s)",
        len(sequences), max_length, max_delta, len(targets),
    )  # fmt: skip

    n_deltas = max_delta + 1
    device = model_device(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    rng = random.Random(seed)
    sums: dict[str, torch.Tensor] = {}
    counts = torch.zeros(n_deltas, dtype=torch.long)
    originals: dict[int, dict[str, torch.Tensor]] = {}  # seq index → layer → (n_targets, n_units)
    captured: dict[str, torch.Tensor] = {}

    def hook_for(name: str):
        def hook(module, inputs, output):
            captured[name] = output[0] if isinstance(output, tuple) else output

        return hook

    def target_words(seq_index: int) -> list[int]:
        n_words = len(sequences[seq_index].words)
        return list(range(n_words - n_targets, n_words))

    def run(rows: list[tuple[int, int, list[int]]]) -> None:
        length = max(len(ids) for _, _, ids in rows)
        input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        positions = torch.empty((len(rows), n_targets), dtype=torch.long)
        for row, (seq_index, _, ids) in enumerate(rows):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
            words = sequences[seq_index].words
            positions[row] = torch.tensor([words[j][1] - 1 for j in target_words(seq_index)])
        captured.clear()
        model(input_ids=input_ids.to(device), attention_mask=mask.to(device), **extra_inputs)
        gather = positions.to(device)
        for name, _, _ in targets:
            output = captured.get(name)
            if output is None or output.ndim != 3 or output.shape[:2] != input_ids.shape:
                raise ValueError(
                    f"Layer {name!r} must output (batch, seq_len, n_units) for every forward pass; got "
                    f"{None if output is None else tuple(output.shape)} for input {tuple(input_ids.shape)}."
                )
            rows_index = torch.arange(len(rows), device=device).unsqueeze(1)
            responses = output[rows_index, gather].float()  # (B, n_targets, n_units)
            if name not in sums:
                sums[name] = torch.zeros((n_deltas, responses.shape[-1]), dtype=torch.float64)
            for row, (seq_index, swapped, _) in enumerate(rows):
                if swapped < 0:
                    originals.setdefault(seq_index, {})[name] = responses[row]
            swap_rows = [row for row, (_, swapped, _) in enumerate(rows) if swapped >= 0]
            if not swap_rows:
                continue
            reference = torch.stack([originals[rows[row][0]][name] for row in swap_rows])
            change = responses[swap_rows] - reference
            change = change.square() if difference == "squared" else change.abs()  # (S, n_targets, n_units)
            deltas = torch.tensor(
                [[j - rows[row][1] for j in target_words(rows[row][0])] for row in swap_rows]
            )  # (S, n_targets)
            valid = (deltas >= 0) & (deltas <= max_delta)
            sums[name].index_add_(0, deltas[valid], change[valid.to(device)].double().cpu())
            if name == targets[0][0]:
                counts.index_add_(0, deltas[valid], torch.ones(int(valid.sum()), dtype=torch.long))

    handles = [module.register_forward_hook(hook_for(name)) for name, module, _ in targets]
    was_training = model.training
    model.eval()
    rows_per_sequence = 1 + n_swaps * (max_delta + n_targets)
    bar = tqdm(total=len(sequences) * rows_per_sequence, desc="Word swaps", unit="pass", disable=not progress)
    try:
        pending: list[tuple[int, int, list[int]]] = []
        for seq_index, sequence in enumerate(sequences):
            for row in _rows_of(seq_index, sequence, n_targets, max_delta, n_swaps, pool, rng):
                pending.append(row)
                if len(pending) == batch_size:
                    run(pending)
                    bar.update(len(pending))
                    pending = []
            # Keep only the originals that rows still waiting in `pending` need.
            for done in [s for s in originals if s < seq_index and all(r[0] != s for r in pending)]:
                del originals[done]
        if pending:
            run(pending)
            bar.update(len(pending))
    finally:
        bar.close()
        for handle in handles:
            handle.remove()
        model.train(was_training)

    if int(counts.min()) == 0:
        missing = [d for d in range(n_deltas) if counts[d] == 0]
        raise ValueError(
            f"No swap could be made at Δ = {missing}: the corpus has no other word with as many tokens as the "
            "swapped words. Give more (varied) text."
        )
    response_change, windows, sheets = {}, {}, {}
    for name, _, sheet in targets:
        mean = (sums[name] / counts.unsqueeze(1)).T.float()  # (n_units, n_deltas)
        peak = mean.max(dim=1, keepdim=True).values
        window = torch.where(peak > 0, mean / peak.clamp_min(torch.finfo(mean.dtype).tiny), float("nan"))
        response_change[name], windows[name] = mean, window
        n_units = mean.shape[0]
        if sheet is not None and sheet.n_units == n_units:
            sheets[name] = (sheet.height, sheet.width)
        else:
            sheets[name] = most_square_shape(n_units)
        silent = int(window.isnan().any(dim=1).sum())
        if silent:
            logger.info("%s: %d of %d units never changed their response (windows set to nan)", name, silent, n_units)
    return IntegrationWindows(
        deltas=torch.arange(n_deltas),
        windows=windows,
        response_change=response_change,
        sample_counts=counts,
        sheets=sheets,
        difference=difference,
        n_sequences=len(sequences),
        n_swaps=n_swaps,
    )


# ---------------------------------------------------------------------------------------------------------------
# The fit
# ---------------------------------------------------------------------------------------------------------------


def window_function(deltas: torch.Tensor, a, b, c) -> torch.Tensor:
    """``θ(Δ) = c·(Δ+1)^(−a) + (1−c)·e^(−bΔ)`` (the paper's eq. 3); ``a``, ``b``, ``c`` broadcast against
    ``deltas`` (pass ``(n_units, 1)`` tensors for ``(n_units, n_deltas)`` windows)."""
    deltas = torch.as_tensor(deltas, dtype=torch.float64)
    a, b, c = (torch.as_tensor(v, dtype=torch.float64) for v in (a, b, c))
    return c * torch.exp(-a * torch.log1p(deltas)) + (1 - c) * torch.exp(-b * deltas)


def _grid_fit(y: torch.Tensor, deltas: torch.Tensor, a_grid: torch.Tensor, b_grid: torch.Tensor):
    """Best ``(a, b, c, sse)`` per unit over per-unit grids ``a_grid (U, A)`` and ``b_grid (U, B)``.

    For fixed ``(a, b)``, with ``P = (Δ+1)^(−a)`` and ``E = e^(−bΔ)``, the residual ``y − E − c(P − E)`` is
    minimized over ``c ∈ [0, 1]`` by clipping ``⟨y−E, P−E⟩ / ‖P−E‖²``; the sum of squares then follows from inner
    products, so no ``(U, A, B, n)`` tensor is ever built.
    """
    power = torch.exp(-a_grid.unsqueeze(-1) * torch.log1p(deltas))  # (U, A, n)
    expo = torch.exp(-b_grid.unsqueeze(-1) * deltas)  # (U, B, n)
    y_p = torch.einsum("un,uan->ua", y, power)
    y_e = torch.einsum("un,ubn->ub", y, expo)
    p_p = power.square().sum(-1)
    e_e = expo.square().sum(-1)
    p_e = torch.einsum("uan,ubn->uab", power, expo)  # (U, A, B)
    cross = y_p.unsqueeze(2) - y_e.unsqueeze(1) - p_e + e_e.unsqueeze(1)  # ⟨y−E, P−E⟩
    spread = p_p.unsqueeze(2) - 2 * p_e + e_e.unsqueeze(1)  # ‖P−E‖²
    mix = torch.where(spread > 1e-12, cross / spread.clamp_min(1e-12), torch.zeros_like(cross)).clamp(0, 1)
    base = (y.square().sum(-1, keepdim=True) - 2 * y_e + e_e).unsqueeze(1)  # ‖y−E‖², (U, 1, B)
    sse = (base - 2 * mix * cross + mix.square() * spread).clamp_min(0)
    best = sse.flatten(1).argmin(dim=1)
    ia, ib = best // b_grid.shape[1], best % b_grid.shape[1]
    units = torch.arange(y.shape[0])
    return a_grid[units, ia], b_grid[units, ib], mix[units, ia, ib], sse[units, ia, ib], ia, ib


def _zoomed(grid: torch.Tensor, index: torch.Tensor, points: int) -> torch.Tensor:
    """A uniform grid of ``points`` values between each unit's best value's neighbours in ``grid`` (U, G)."""
    units = torch.arange(grid.shape[0])
    low = grid[units, (index - 1).clamp_min(0)]
    high = grid[units, (index + 1).clamp_max(grid.shape[1] - 1)]
    steps = torch.linspace(0, 1, points, dtype=grid.dtype)
    return low.unsqueeze(1) + (high - low).unsqueeze(1) * steps


def _polish(
    y: torch.Tensor, deltas: torch.Tensor, start: torch.Tensor, upper: torch.Tensor, iterations: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Levenberg–Marquardt steps on ``(a, b, c)`` (``start``: ``(U, 3)``) projected onto ``[0, upper]``, all units
    at once; a unit takes a step only if it lowers its sum of squares. Returns ``(params, sse)``."""
    log_distance = torch.log1p(deltas)

    def residuals(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b, c = (params[:, i : i + 1] for i in range(3))
        power = torch.exp(-a * log_distance)  # (U, n)
        expo = torch.exp(-b * deltas)
        jacobian = torch.stack([-c * log_distance * power, -(1 - c) * deltas * expo, power - expo], dim=-1)
        return c * power + (1 - c) * expo - y, jacobian  # (U, n), (U, n, 3)

    params = start.clone()
    residual, jacobian = residuals(params)
    sse = residual.square().sum(dim=1)
    damping = torch.full_like(sse, 1e-3)
    eye = torch.eye(3, dtype=params.dtype)
    for _ in range(iterations):
        normal = jacobian.transpose(1, 2) @ jacobian  # (U, 3, 3)
        gradient = (jacobian.transpose(1, 2) @ residual.unsqueeze(-1)).squeeze(-1)
        scaled = damping[:, None, None] * (torch.diag_embed(normal.diagonal(dim1=1, dim2=2)) + 1e-9 * eye)
        step = torch.linalg.solve(normal + scaled, -gradient)
        trial = torch.minimum(torch.maximum(params + step, torch.zeros_like(upper)), upper)
        trial_residual, trial_jacobian = residuals(trial)
        trial_sse = trial_residual.square().sum(dim=1)
        better = trial_sse < sse
        params = torch.where(better[:, None], trial, params)
        residual = torch.where(better[:, None], trial_residual, residual)
        jacobian = torch.where(better[:, None, None], trial_jacobian, jacobian)
        sse = torch.where(better, trial_sse, sse)
        damping = torch.where(better, damping * 0.3, damping * 10).clamp(1e-12, 1e12)
    return params, sse


def fit_window_curves(
    windows: torch.Tensor,
    deltas: torch.Tensor | None = None,
    a_max: float = 10.0,
    b_max: float = 10.0,
    grid_size: int = 40,
    refinements: int = 1,
    polish_steps: int = 60,
    chunk_size: int = 256,
    negligible: float = 0.05,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fit ``θ(Δ) = c·(Δ+1)^(−a) + (1−c)·e^(−bΔ)`` to each row of ``windows`` by least squares.

    Args:
        windows: ``(n_units, n_deltas)`` normalized windows (rows with ``nan`` get ``nan`` fits).
        deltas: ``(n_deltas,)`` the distances (default ``0 … n_deltas−1``).
        a_max, b_max: upper bounds of ``a`` and ``b`` (lower bounds 0; ``c ∈ [0, 1]``).
        grid_size: values of ``a`` and of ``b`` in the first grid (0, then log-spaced from ``1e-3·max`` to max).
        refinements: zoomed grids (11×11 between the neighbours of the best point) after the first.
        polish_steps: Levenberg–Marquardt iterations from the best grid point (within the bounds).
        chunk_size: units fitted at once (memory ``∝ chunk_size·grid_size²``).
        negligible: a component whose weight (``c`` or ``1 − c``) is below this has an undetermined parameter
            (it shapes the window by less than ``negligible`` at any ``Δ``).

    Returns:
        ``(a, b, c, r2)``, each ``(n_units,)`` float64: ``a`` is ``nan`` where ``c < negligible`` and ``b`` where
        ``c > 1 − negligible`` (the component is absent, its parameter undetermined); ``r2 = 1 − SSE/SS_tot`` over
        all ``Δ`` (``nan`` for a flat window).
    """
    if windows.ndim != 2 or windows.shape[1] < 3:
        raise ValueError(f"Expected windows of shape (n_units, n_deltas ≥ 3), got {tuple(windows.shape)}.")
    if a_max <= 0 or b_max <= 0 or grid_size < 3:
        raise ValueError(f"a_max={a_max}, b_max={b_max} must be > 0 and grid_size={grid_size} ≥ 3.")
    y_all = windows.detach().double().cpu()
    deltas = torch.arange(y_all.shape[1], dtype=torch.float64) if deltas is None else deltas.double().cpu()
    if deltas.shape != (y_all.shape[1],):
        raise ValueError(f"deltas {tuple(deltas.shape)} must hold one distance per window column ({y_all.shape[1]}).")
    n_units = y_all.shape[0]
    a, b, c, r2, sse = (torch.full((n_units,), float("nan"), dtype=torch.float64) for _ in range(5))
    valid = torch.isfinite(y_all).all(dim=1).nonzero().squeeze(1)

    def coarse(top: float) -> torch.Tensor:
        log_spaced = torch.logspace(math.log10(top * 1e-3), math.log10(top), grid_size - 1, dtype=torch.float64)
        return torch.cat([torch.zeros(1, dtype=torch.float64), log_spaced])

    for part in valid.split(chunk_size):
        y = y_all[part]
        a_grid = coarse(a_max).expand(len(part), -1)
        b_grid = coarse(b_max).expand(len(part), -1)
        fit_a, fit_b, fit_c, fit_sse, ia, ib = _grid_fit(y, deltas, a_grid, b_grid)
        for _ in range(refinements):
            a_grid, b_grid = _zoomed(a_grid, ia, 11), _zoomed(b_grid, ib, 11)
            fit_a, fit_b, fit_c, fit_sse, ia, ib = _grid_fit(y, deltas, a_grid, b_grid)
        a[part], b[part], c[part], sse[part] = fit_a, fit_b, fit_c, fit_sse
    y = y_all[valid]
    if polish_steps > 0 and len(valid):
        upper = torch.tensor([a_max, b_max, 1.0], dtype=torch.float64)
        start = torch.stack([a[valid], b[valid], c[valid]], dim=1)
        params, sse[valid] = _polish(y, deltas, start, upper, polish_steps)
        a[valid], b[valid], c[valid] = params.unbind(dim=1)
    total = (y - y.mean(dim=1, keepdim=True)).square().sum(dim=1)
    r2[valid] = torch.where(total > 1e-12, 1 - sse[valid] / total.clamp_min(1e-12), float("nan"))
    a = torch.where(c >= negligible, a, float("nan"))
    b = torch.where(c <= 1 - negligible, b, float("nan"))
    return a, b, c, r2


@dataclass
class LayerWindowFit:
    """The window fits of one layer's units, in sheet order (unit ``u`` at ``(u // width, u % width)``).

    Attributes:
        name: the layer's module name; sheet: ``(height, width)``.
        a, b, c, r2: ``(n_units,)`` float64 fits (see :func:`fit_window_curves`).
        kind: ``(n_units,)`` index into :data:`WINDOW_KINDS` (exponential, power_law, neither, delta).
        reach: ``(n_units,)`` the mean normalized window over ``Δ ≥ 1`` (model-free; ``nan`` for silent units).
        mean_window: ``(n_deltas,)`` the mean normalized window of the layer's responding units.
    """

    name: str
    sheet: tuple[int, int]
    a: torch.Tensor
    b: torch.Tensor
    c: torch.Tensor
    r2: torch.Tensor
    kind: torch.Tensor
    reach: torch.Tensor
    mean_window: torch.Tensor

    def maps(self) -> dict[str, torch.Tensor]:
        """``{"a", "b", "c", "r2", "reach", "kind"}`` as ``(height, width)`` maps."""
        height, width = self.sheet
        values = {
            "a": self.a,
            "b": self.b,
            "c": self.c,
            "r2": self.r2,
            "reach": self.reach,
            "kind": self.kind.double(),
        }
        return {key: value.reshape(height, width) for key, value in values.items()}

    def fractions(self) -> dict[str, float]:
        """The share of the units of each kind."""
        return {kind: float((self.kind == k).double().mean()) for k, kind in enumerate(WINDOW_KINDS)}


@dataclass
class WindowFits:
    """Per-layer fits of the integration windows (:func:`fit_integration_windows`)."""

    layers: dict[str, LayerWindowFit]
    deltas: torch.Tensor
    r2_threshold: float
    c_split: float
    difference: str = "squared"
    morans: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self, per_unit: bool = False) -> dict:
        """JSON-ready report entries: per layer the kinds' shares, medians, mean window and Moran's I of the maps.

        ``per_unit=True`` adds every unit's ``a``, ``b``, ``c``, ``r2`` and kind (large for big models).
        """
        morans = self.morans or window_morans_i(self)
        report = {
            "model": "theta(delta) = c*(delta+1)^(-a) + (1-c)*exp(-b*delta)",
            "reference": "Skrill & Norman-Haignere, NeurIPS 2023; TopoNets (Deb, Deb & Murty, ICLR 2025) A.7",
            "difference": self.difference,
            "r2_threshold": self.r2_threshold,
            "c_split": self.c_split,
            "deltas": self.deltas.tolist(),
            "layers": {},
        }
        for name, fit in self.layers.items():
            entry = {
                "sheet": list(fit.sheet),
                "n_units": int(fit.kind.numel()),
                "fractions": fit.fractions(),
                "median_a": _nanmedian(fit.a),
                "median_b": _nanmedian(fit.b),
                "median_c": _nanmedian(fit.c),
                "median_r2": _nanmedian(fit.r2),
                "median_reach": _nanmedian(fit.reach),
                "mean_window": fit.mean_window.tolist(),
                "morans_i": morans.get(name, {}),
            }
            if per_unit:
                entry.update({key: _json_list(getattr(fit, key)) for key in ("a", "b", "c", "r2", "reach")})
                entry["kind"] = [WINDOW_KINDS[k] for k in fit.kind.tolist()]
            report["layers"][name] = entry
        return report


def _nanmedian(values: torch.Tensor) -> float | None:
    finite = values[torch.isfinite(values)]
    return float(finite.median()) if finite.numel() else None


def _json_list(values: torch.Tensor) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values.tolist()]


def fit_integration_windows(
    windows: IntegrationWindows,
    r2_threshold: float = 0.9,
    c_split: float = 0.5,
    delta_level: float = 0.05,
    **fit_kwargs,
) -> WindowFits:
    """Fit every unit's window (:func:`fit_window_curves`) and classify it.

    Args:
        windows: from :func:`measure_integration_windows`.
        r2_threshold: below it a unit fits neither shape (kind ``"neither"``), as do flat and silent units.
        c_split: ``c ≥ c_split`` is power-law dominated, below exponential dominated.
        delta_level: a window below it at every ``Δ ≥ 1`` is a spike at the current word (kind ``"delta"``).
        fit_kwargs: passed to :func:`fit_window_curves` (``a_max``, ``b_max``, ``grid_size``, ...).
    """
    if not 0 <= c_split <= 1:
        raise ValueError(f"c_split={c_split} must lie in [0, 1].")
    layers = {}
    for name, window in windows.windows.items():
        a, b, c, r2 = fit_window_curves(window, windows.deltas, **fit_kwargs)
        beyond = window[:, 1:].double()  # Δ ≥ 1
        kind = torch.where(c >= c_split, 1, 0)
        kind = torch.where(beyond.max(dim=1).values < delta_level, 3, kind)
        kind = torch.where(torch.isnan(r2) | (r2 < r2_threshold), 2, kind).to(torch.int8)
        layers[name] = LayerWindowFit(
            name=name,
            sheet=windows.sheets[name],
            a=a,
            b=b,
            c=c,
            r2=r2,
            kind=kind,
            reach=beyond.mean(dim=1),
            mean_window=_nanmean_rows(window.double()),
        )
        shares = layers[name].fractions()
        logger.info(
            "%s: exponential %.0f%%, power-law %.0f%%, neither %.0f%%, delta %.0f%% (median c %.2f)",
            name, 100 * shares["exponential"], 100 * shares["power_law"], 100 * shares["neither"],
            100 * shares["delta"], _nanmedian(c) or float("nan"),
        )  # fmt: skip
    fits = WindowFits(
        layers=layers, deltas=windows.deltas, r2_threshold=r2_threshold, c_split=c_split, difference=windows.difference
    )
    fits.morans = window_morans_i(fits)
    return fits


# ---------------------------------------------------------------------------------------------------------------
# Maps
# ---------------------------------------------------------------------------------------------------------------


def window_morans_i(fits: WindowFits) -> dict[str, dict[str, float]]:
    """Moran's I (queen neighbours, :func:`hf_topo.analysis.spatial.morans_i`) of each layer's ``a``, ``b``, ``c``,
    ``R²`` and reach maps: ≈ 0 for units scattered at random, toward 1 when units cluster on the sheet by window.

    Undetermined values (``nan``: absent component, silent unit) are set to the layer's mean of that map first,
    so they add no structure; a map with fewer than 2 finite values gets ``nan``.
    """
    result = {}
    for name, fit in fits.layers.items():
        entry = {}
        for key, values in fit.maps().items():
            if key == "kind":
                continue
            finite = torch.isfinite(values)
            if int(finite.sum()) < 2:
                entry[key] = float("nan")
                continue
            filled = torch.where(finite, values, values[finite].mean())
            entry[key] = float(morans_i(filled))
        result[name] = entry
    return result


def _file_name(name: str) -> str:
    return re.sub(r"[^\w.-]", "_", name)


def plot_window_maps(fits: WindowFits, output_dir: str | os.PathLike, prefix: str = "temporal_windows") -> list[str]:
    """One PNG per layer with its ``a``, ``b``, ``c``, ``R²``, reach and kind maps on the sheet; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    os.makedirs(output_dir, exist_ok=True)
    panels = (
        ("a", "power-law exponent a", "viridis"),
        ("b", "exponential rate b", "viridis"),
        ("c", "power-law share c", "coolwarm"),
        ("r2", "fit R²", "magma"),
        ("reach", "reach: mean θ(Δ≥1)", "viridis"),
    )
    kind_colors = ListedColormap(list(_KIND_COLORS))
    paths = []
    morans = fits.morans or window_morans_i(fits)
    for name, fit in fits.layers.items():
        maps = fit.maps()
        height, width = fit.sheet
        fig, axes = plt.subplots(1, 6, figsize=(19, 3.2 * height / max(width, 1) + 1.2))
        for ax, (key, title, cmap) in zip(axes[:5], panels, strict=True):
            values = maps[key]
            finite = values[torch.isfinite(values)]
            # 2nd–98th percentiles, so that a map's structure shows even when its values span a narrow range
            low, high = (float(finite.quantile(q)) for q in (0.02, 0.98)) if finite.numel() else (None, None)
            image = ax.imshow(values.numpy(), cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
            moran = morans.get(name, {}).get(key, float("nan"))
            ax.set_title(f"{title}\nMoran's I {moran:.2f}", fontsize=8)
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
        ax = axes[-1]
        n_kinds = len(WINDOW_KINDS)
        ax.imshow(maps["kind"].numpy(), cmap=kind_colors, vmin=-0.5, vmax=n_kinds - 0.5, interpolation="nearest")
        shares = fit.fractions()
        ax.set_title(
            "kinds: exp {:.0%} / power {:.0%}\nneither {:.0%} / delta {:.0%}".format(
                shares["exponential"], shares["power_law"], shares["neither"], shares["delta"]
            ),
            fontsize=8,
        )
        for axis in axes:
            axis.set_xticks([])
            axis.set_yticks([])
        fig.suptitle(f"{name}: integration windows on the {height}x{width} sheet", fontsize=9)
        fig.tight_layout()
        path = os.path.join(output_dir, f"{prefix}_{_file_name(name)}.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_window_summary(fits: WindowFits, path: str | os.PathLike) -> str:
    """The layer-by-layer picture: each layer's mean window, shares of the kinds and median ``a``, ``b``, ``c``, reach."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(fits.layers)
    short = [_short_name(name) for name in names]
    deltas = fits.deltas.numpy()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    colors = plt.cm.viridis(torch.linspace(0, 1, max(len(names), 2)).numpy())
    for color, label, fit in zip(colors, short, fits.layers.values(), strict=False):
        axes[0].plot(deltas, fit.mean_window.numpy(), color=color, label=label, marker=".")
    axes[0].set_xscale("symlog", linthresh=1)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("Δ (words)")
    axes[0].set_ylabel("mean normalized window θ(Δ)")
    axes[0].legend(fontsize=7)
    positions = range(len(names))
    bottom = [0.0] * len(names)
    for kind, color in zip(WINDOW_KINDS, _KIND_COLORS, strict=True):
        shares = [fit.fractions()[kind] for fit in fits.layers.values()]
        axes[1].bar(positions, shares, bottom=bottom, color=color, label=kind)
        bottom = [b + s for b, s in zip(bottom, shares, strict=True)]
    axes[1].set_ylabel("share of units")
    axes[1].legend(fontsize=7)
    for key, marker in (("a", "o"), ("b", "s"), ("c", "^"), ("reach", "d")):
        medians = [_nanmedian(getattr(fit, key)) for fit in fits.layers.values()]
        axes[2].plot(
            positions, [float("nan") if m is None else m for m in medians], marker=marker, label=f"median {key}"
        )
    axes[2].set_yscale("symlog", linthresh=0.1)
    axes[2].legend(fontsize=7)
    for ax in axes[1:]:
        ax.set_xticks(list(positions))
        ax.set_xticklabels(short, rotation=45, ha="right", fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _short_name(name: str) -> str:
    """``transformer.h.3.mlp.c_fc`` → ``h.3.mlp.c_fc`` (the block and the layer)."""
    parts = name.split(".")
    digits = [i for i, part in enumerate(parts) if part.isdigit()]
    return ".".join(parts[digits[0] - 1 :]) if digits and digits[0] > 0 else name
