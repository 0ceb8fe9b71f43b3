"""Structure yoking: is a unit's window tied to sentence boundaries or to the distance in words?

The paper's third map (TopoNets, Fig. 5B: power-law, exponential and *sentence-yoked* coefficients) is the
structure-yoking measure of Skrill & Norman-Haignere (NeurIPS 2023), re-implemented from their code
(``github.com/dskrill/TemporalIntegration``: ``demo.ipynb`` "Structure yoking", ``word_swap.py``,
``plots.yoking_plots``):

1. **Sentences.** Sentences of exactly ``sentence_words`` words (12), cleaned as the reference's
   ``process_sentence``; with ``single_token_words`` (the reference) only sentences whose every word is one token.
2. **Sequences.** ``sentences_per_sequence`` (5: the sentence and two random sentences on each side,
   ``create_sequences(n_context=2)``) sentences drawn at random, concatenated: sentence boundaries fall at word
   positions ``L, 2L, …`` (``L = sentence_words``), but nothing in the text marks them (no punctuation, no case).
3. **Swaps.** Every word position is swapped in turn (``n_swaps`` times) by a word at a controlled embedding
   distance (``DistributionWordSwap``; :class:`~hf_topo.analysis.temporal.words.EmbeddingBandPool`).
4. **Changes.** ``D[i, j]``: the mean ``|Δ response|`` of word ``j`` when word ``i`` is swapped, as for the windows.
5. **First-order differences.** For each swap position ``s``:
   ``f[s] = mean_{k=0…L−2} (D[s, s+k] − D[s−1, s−1+k]) / median_j D[j, j]`` — how much more the words that follow
   react to a swap at ``s`` than to a swap one word earlier, at the same distances (``plots.yoking_plots``).
   A unit whose window depends on distance alone has ``f ≈ 0`` everywhere; one whose window is reset at a sentence
   boundary reacts little to a swap just before the boundary and fully to one just after, so ``f > 0`` there.
6. **Yoking index.** The mean of ``f`` over the sentence boundaries ``s = L, 2L, …`` (``yoking_index =
   nanmean(fdiff_circ[0])``): ≈ 0 for a position-yoked unit, > 0 for a structure-yoked one.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..spatial import morans_i
from .measure import (
    DIFFERENCES,
    check_setting,
    nanmedian,
    resolve_layers,
    resolve_max_length,
    sheet_shape,
    swap_changes,
)
from .words import (
    EmbeddingBandPool,
    NotEnoughTextError,
    WordPool,
    WordSequence,
    check_tokenizer,
    encode_words,
    sentences_of_length,
)

__all__ = ["SWAPS", "StructureYoking", "structure_yoking_index", "measure_structure_yoking"]

logger = logging.getLogger(__name__)

#: How the swap word is drawn: at a controlled input-embedding distance (the reference) or at random.
SWAPS = ("embedding_band", "random")


def structure_yoking_index(changes: torch.Tensor, sentence_words: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The yoking index of each unit from its response changes by swap position and lag.

    Args:
        changes: ``(n_units, n_words, n_lags)``, ``changes[u, i, k] = D_u[i, i + k]`` (``n_lags ≥ L − 1``).
        sentence_words: ``L``, the words per sentence; boundaries at positions ``L, 2L, …``.

    Returns:
        ``(index, first_differences)``: ``(n_units,)`` float64 the mean first-order difference at the sentence
        boundaries, and ``(n_units, n_words)`` the first-order differences ``f[s]`` (``nan`` where undefined:
        ``s = 0`` and ``s > n_words − L``). A unit whose ``Δ = 0`` changes have median 0 gets ``nan``.
    """
    if changes.ndim != 3:
        raise ValueError(f"Expected changes of shape (n_units, n_words, n_lags), got {tuple(changes.shape)}.")
    n_units, n_words, n_lags = changes.shape
    lags = sentence_words - 1
    if sentence_words < 2 or n_lags < lags or n_words < 2 * sentence_words:
        raise ValueError(
            f"sentence_words={sentence_words} needs changes with ≥ {max(lags, 1)} lags and ≥ 2 sentences "
            f"({2 * sentence_words} words); got {n_lags} lags and {n_words} words."
        )
    changes = changes.double()
    scale = nanmedian(changes[:, :, 0], dim=1)  # (n_units,), the median Δ = 0 change
    last = n_words - sentence_words  # the last s whose lags stay inside the sequence
    later = changes[:, 1 : last + 1, :lags]  # D[s, s + k], s = 1 … last
    earlier = changes[:, 0:last, :lags]  # D[s − 1, s − 1 + k]
    first_differences = torch.full((n_units, n_words), float("nan"), dtype=torch.float64)
    valid_scale = (scale > 0).unsqueeze(1)
    step = (later - earlier).mean(dim=2) / scale.clamp_min(torch.finfo(torch.float64).tiny).unsqueeze(1)
    first_differences[:, 1 : last + 1] = torch.where(valid_scale, step, float("nan"))
    boundaries = torch.arange(sentence_words, last + 1, sentence_words)
    at_boundaries = first_differences[:, boundaries]
    finite = torch.isfinite(at_boundaries)
    count = finite.sum(dim=1)
    index = torch.where(finite, at_boundaries, 0.0).sum(dim=1) / count.clamp_min(1)
    return torch.where(count > 0, index, float("nan")), first_differences


@dataclass
class StructureYoking:
    """Per-unit structure yoking of each layer (:func:`measure_structure_yoking`).

    Attributes:
        index: ``{layer: (n_units,)}`` the yoking index (≈ 0 position-yoked, > 0 structure-yoked; ``nan`` silent).
        first_differences: ``{layer: (n_units, n_words)}`` the first-order differences ``f[s]`` of each unit.
        sheets: ``{layer: (height, width)}``; sentence_words, sentences_per_sequence, n_sequences, n_swaps, swap,
        difference: the settings.
        morans: ``{layer: Moran's I of the index map}``.
    """

    index: dict[str, torch.Tensor]
    first_differences: dict[str, torch.Tensor]
    sheets: dict[str, tuple[int, int]]
    sentence_words: int
    sentences_per_sequence: int
    n_sequences: int
    n_swaps: int = 1
    swap: str = "embedding_band"
    difference: str = "absolute"
    morans: dict[str, float] = field(default_factory=dict)

    def maps(self) -> dict[str, torch.Tensor]:
        """``{layer: (height, width)}`` maps of the yoking index."""
        return {name: index.reshape(self.sheets[name]) for name, index in self.index.items()}

    def to_dict(self, per_unit: bool = False) -> dict:
        """JSON-ready: settings, and per layer the median/mean index, the share of units above 0, Moran's I and the
        mean first-order difference at every swap position (``per_unit=True`` adds every unit's index)."""
        report = {
            "method": "structure yoking (Skrill & Norman-Haignere, NeurIPS 2023): first-order differences at "
            "sentence boundaries",
            "sentence_words": self.sentence_words,
            "sentences_per_sequence": self.sentences_per_sequence,
            "n_sequences": self.n_sequences,
            "n_swaps": self.n_swaps,
            "swap": self.swap,
            "difference": self.difference,
            "layers": {},
        }
        for name, index in self.index.items():
            finite = index[torch.isfinite(index)]
            profile = self.first_differences[name]
            entry = {
                "sheet": list(self.sheets[name]),
                "n_units": int(index.numel()),
                "median_index": float(finite.median()) if finite.numel() else None,
                "mean_index": float(finite.mean()) if finite.numel() else None,
                "fraction_positive": float((finite > 0).double().mean()) if finite.numel() else None,
                "morans_i": self.morans.get(name),
                "mean_first_differences": [
                    None if v != v else v for v in torch.nanmean(profile, dim=0).tolist()
                ],  # nan → None
            }
            if per_unit:
                entry["index"] = [None if v != v else v for v in index.tolist()]
            report["layers"][name] = entry
        return report


def _index_morans_i(index: torch.Tensor, sheet: tuple[int, int]) -> float:
    finite = torch.isfinite(index)
    if int(finite.sum()) < 2:
        return float("nan")
    filled = torch.where(finite, index, index[finite].mean())  # undetermined units add no structure
    return float(morans_i(filled.reshape(sheet)))


def _yoking_sequences(
    tokenizer,
    sentences: Sequence[list[str]],
    sentences_per_sequence: int,
    max_sequences: int,
    max_length: int,
    rng: random.Random,
) -> list[WordSequence]:
    sequences: list[WordSequence] = []
    for _ in range(max_sequences * 4):  # draws that come out too long are skipped
        words = [word for sentence in rng.choices(sentences, k=sentences_per_sequence) for word in sentence]
        sequence = encode_words(tokenizer, words)
        if sequence is not None and len(sequence.ids) <= max_length:
            sequences.append(sequence)
        if len(sequences) == max_sequences:
            break
    return sequences


def measure_structure_yoking(
    model: nn.Module,
    tokenizer,
    texts: Iterable[str],
    layers: Sequence[str] | None = None,
    sentence_words: int = 12,
    sentences_per_sequence: int = 5,
    max_sequences: int = 250,
    n_swaps: int = 1,
    swap: str = "embedding_band",
    band_size: int = 10,
    single_token_words: bool = True,
    max_length: int | None = None,
    batch_size: int = 16,
    difference: str = "absolute",
    seed: int = 0,
    progress: bool = True,
) -> StructureYoking:
    """Measure every unit's structure yoking (see the module docstring for the procedure).

    Costs ``max_sequences · (1 + n_swaps · sentence_words · sentences_per_sequence)`` forward passes.

    Args:
        model, tokenizer: a causal LM and its fast tokenizer.
        texts: running text with sentence ends (``.``, ``!``, ``?``); sentences of ``sentence_words`` words are
            taken from it.
        layers: module names (default: the topographic layers), as in
            :func:`~hf_topo.analysis.temporal.measure.measure_integration_windows`.
        sentence_words: words per sentence (the reference: 12); sentences_per_sequence: sentences per sequence (5).
        max_sequences: sequences measured (the reference: 250).
        n_swaps: swap words per position (the reference: 1).
        swap: ``"embedding_band"`` (the reference: the swap word at a fixed input-embedding distance) or
            ``"random"`` (any word of as many tokens).
        band_size: candidates of the embedding band per word.
        single_token_words: keep only sentences whose words are single tokens (the reference does, so that
            sentence-final words are not longer than others).
        max_length: tokens per sequence at most (default ``min(128, model positions)``).
        batch_size, difference, seed, progress: as for the windows.

    Raises:
        ValueError: a bad setting, a missing layer, or fewer than one usable sentence in the texts.
        TypeError: a slow tokenizer, ``texts`` a single string.
    """
    if difference not in DIFFERENCES:
        raise ValueError(f"difference={difference!r}; expected one of {DIFFERENCES}.")
    if swap not in SWAPS:
        raise ValueError(f"swap={swap!r}; expected one of {SWAPS}.")
    check_setting("sentence_words", sentence_words, 2)
    check_setting("sentences_per_sequence", sentences_per_sequence, 3)
    for label, value in (("max_sequences", max_sequences), ("n_swaps", n_swaps), ("batch_size", batch_size)):
        check_setting(label, value)
    if isinstance(texts, str):
        raise TypeError("texts is a single string: pass a list of texts (e.g. [text] or the lines of a file).")
    check_tokenizer(tokenizer)
    max_length = resolve_max_length(model, max_length)
    targets = resolve_layers(model, layers)
    if swap == "embedding_band":
        embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        if embedding is None or not hasattr(embedding, "weight"):
            raise ValueError(
                f"swap='embedding_band' needs the model's input embedding (get_input_embeddings()); "
                f"{type(model).__name__} has none. Use swap='random'."
            )
        pool: WordPool = EmbeddingBandPool(tokenizer, embedding, band_size=band_size)
    else:
        pool = WordPool(tokenizer)

    sentences: list[list[str]] = []
    n_found = 0
    for sentence in sentences_of_length(texts, sentence_words):
        n_found += 1
        encoded = encode_words(tokenizer, sentence)
        if encoded is None or (single_token_words and len(encoded.ids) != sentence_words):
            continue
        sentences.append(sentence)
        pool.add_sequence(encoded)
    if not sentences:
        raise NotEnoughTextError(
            f"The texts hold no usable sentence of {sentence_words} words ({n_found} found"
            f"{', none of single-token words' if single_token_words and n_found else ''}). Give more running text "
            "with sentence ends, lower sentence_words, or set single_token_words=False."
        )
    rng = random.Random(seed)
    sequences = _yoking_sequences(tokenizer, sentences, sentences_per_sequence, max_sequences, max_length, rng)
    if not sequences:
        raise NotEnoughTextError(
            f"No sequence of {sentences_per_sequence} sentences fits {max_length} tokens: raise max_length or lower "
            "sentences_per_sequence."
        )
    n_words = sentence_words * sentences_per_sequence
    logger.info(
        "Structure yoking: %d sequences of %d sentences of %d words (from %d sentences), %d layer(s)",
        len(sequences), sentences_per_sequence, sentence_words, len(sentences), len(targets),
    )  # fmt: skip
    measured = swap_changes(
        model, sequences, targets, range(n_words), sentence_words - 2, pool.replacement, n_swaps=n_swaps,
        difference=difference, batch_size=batch_size, seed=seed, progress=progress, description="Structure swaps",
    )  # fmt: skip
    index, first_differences, sheets, morans = {}, {}, {}, {}
    for name, _, sheet in targets:
        index[name], first_differences[name] = structure_yoking_index(measured.changes[name], sentence_words)
        sheets[name] = sheet_shape(sheet, index[name].numel())
        morans[name] = _index_morans_i(index[name], sheets[name])
        logger.info("%s: median yoking index %.3f, Moran's I %.2f", name, float(index[name].nanmedian()), morans[name])
    return StructureYoking(
        index=index,
        first_differences=first_differences,
        sheets=sheets,
        sentence_words=sentence_words,
        sentences_per_sequence=sentences_per_sequence,
        n_sequences=len(sequences),
        n_swaps=n_swaps,
        swap=swap,
        difference=difference,
        morans=morans,
    )
