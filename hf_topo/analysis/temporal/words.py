"""Words, sequences and swap words of the temporal-window analyses.

A *word* is a whitespace-delimited run of characters. With ``normalize=True`` (the default, the preprocessing of
Skrill & Norman-Haignere's ``preprocessing.py``: ``extract_natural_sequences`` and ``process_sentence``) a word
is lower-cased, its hyphens and punctuation removed, and only alphabetic words are kept: a number (or any word that
is not alphabetic once cleaned) ends a run of words, a word of punctuation only (``","``, ``"@-@"``) is dropped.
A sequence is rebuilt as ``" " + " ".join(words)``: every word, the first too, is tokenized after a space, as the
reference's tokenizer does with ``add_prefix_space=True``.
"""

from __future__ import annotations

import logging
import random
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

__all__ = ["NotEnoughTextError", "word_token_spans", "normalize_word", "natural_word_runs", "sentences_of_length"]

logger = logging.getLogger(__name__)

_SPACE_MARKERS = ("Ġ", "▁", " ")


class NotEnoughTextError(ValueError):
    """The texts hold too few usable sequences or sentences for a measurement (the message says what to change)."""


_PUNCTUATION = str.maketrans("", "", string.punctuation)
_SENTENCE_END = (".", "!", "?")


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


def normalize_word(word: str, hyphen: str = "") -> str | None:
    """The reference's cleaning of one word: hyphens replaced by ``hyphen``, ``''`` removed, lower case,
    punctuation removed. Returns ``""`` for a word of punctuation only and ``None`` for one that is not alphabetic
    (a number, a symbol)."""
    cleaned = word.replace("-", hyphen).replace("''", "").lower().translate(_PUNCTUATION)
    if not cleaned.strip():
        return ""
    return cleaned if "".join(cleaned.split()).isalpha() else None


def _nonempty_texts(texts: Iterable[str]) -> Iterable[str]:
    """The texts that hold more than whitespace; a ``ValueError`` at the end if there was none."""
    if isinstance(texts, str):
        raise TypeError("texts is a single string: pass a list of texts (e.g. [text] or the lines of a file).")
    n_texts = 0
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"texts must be strings, got a {type(text).__name__}.")
        if text.strip():
            n_texts += 1
            yield text
    if n_texts == 0:
        raise ValueError("texts holds no text: give a non-empty list of strings (e.g. the lines of a text file).")


def natural_word_runs(texts: Iterable[str], n_words: int, normalize: bool = True) -> Iterable[list[str]]:
    """Consecutive, non-overlapping runs of ``n_words`` words of each text (the reference's
    ``extract_natural_sequences``, which takes 40-word runs of the Brown corpus).

    With ``normalize`` the words are cleaned by :func:`normalize_word`; a word that is not alphabetic ends the
    current run (the reference resets its counter there). A run never crosses from one text into the next.
    """
    for text in _nonempty_texts(texts):
        run: list[str] = []
        for raw in text.split():
            word = normalize_word(raw) if normalize else raw
            if word == "":
                continue
            if word is None:
                run = []
                continue
            run.append(word)
            if len(run) == n_words:
                yield run
                run = []


def sentences_of_length(texts: Iterable[str], n_words: int) -> Iterable[list[str]]:
    """The sentences of exactly ``n_words`` words of the texts, cleaned as the reference's ``process_sentence``
    (hyphens split words, punctuation removed, lower case; a sentence with a word that is not alphabetic is
    dropped). A sentence ends at a word ending in ``.``, ``!`` or ``?``."""
    for text in _nonempty_texts(texts):
        sentence: list[str] | None = []
        for raw in text.split():
            word = normalize_word(raw, hyphen=" ")
            if sentence is not None:
                if word is None:
                    sentence = None  # not alphabetic: the sentence is dropped
                elif word:
                    sentence.extend(word.split())
            if raw.endswith(_SENTENCE_END):
                if sentence is not None and len(sentence) == n_words:
                    yield sentence
                sentence = []


def check_tokenizer(tokenizer) -> None:
    """A fast tokenizer is needed: the words are found from its ``offset_mapping``."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"{type(tokenizer).__name__} is not a fast tokenizer: the word swaps need token offsets "
            "(offset_mapping). Load the tokenizer with AutoTokenizer.from_pretrained(..., use_fast=True)."
        )


@dataclass
class WordSequence:
    """A tokenized sequence of words: ``ids`` its token ids, ``words`` each word's token span ``[start, end)``."""

    ids: list[int]
    words: list[tuple[int, int]]


def encode_words(tokenizer, words: Sequence[str]) -> WordSequence | None:
    """Tokenize ``" " + " ".join(words)``; ``None`` if a token crossed a word boundary (the spans would merge)."""
    text = " " + " ".join(words)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    spans = word_token_spans(text, encoding["offset_mapping"])
    if len(spans) != len(words):
        return None
    return WordSequence(ids=list(encoding["input_ids"]), words=spans)


class WordPool:
    """The words of the measured sequences as token-id tuples, to draw swap words from.

    :meth:`replacement` draws, uniformly, another word with **the same number of tokens** (so every later position
    keeps its index), preferably with the same leading-space status.
    """

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self._by_key: dict[tuple[int, bool], list[tuple[int, ...]]] = {}
        self._by_length: dict[int, list[tuple[int, ...]]] = {}
        self._seen: set[tuple[int, ...]] = set()
        self._space: dict[int, bool] = {}

    @property
    def words(self) -> list[tuple[int, ...]]:
        return [word for words in self._by_length.values() for word in words]

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

    def add_sequence(self, sequence: WordSequence) -> None:
        for start, end in sequence.words:
            self.add(tuple(sequence.ids[start:end]))

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


class EmbeddingBandPool(WordPool):
    """Swap words at a controlled distance in the input embedding (the reference's ``DistributionWordSwap``).

    The reference draws the replacement among words whose mean absolute embedding difference to the original lies
    in a narrow band (``0.125 ± 0.003`` for GPT-2), so that every swap, at any position in a sentence, changes the
    input by about as much. The band's centre is model-specific; here it is the median distance between random
    pairs of pool words, and a word's candidates are the ``band_size`` words of as many tokens whose distance to it
    is nearest that centre.

    Args:
        tokenizer: the fast tokenizer.
        embedding: the model's input embedding (``model.get_input_embeddings()``); a word's embedding is the mean
            over its tokens (the reference embeds single-token words).
        band_size: candidates per word.
    """

    def __init__(self, tokenizer, embedding: torch.nn.Module, band_size: int = 10):
        super().__init__(tokenizer)
        if band_size < 1:
            raise ValueError(f"band_size={band_size} must be at least 1.")
        self._embedding = embedding
        self._band_size = band_size
        self._center: float | None = None
        self._vectors: dict[int, torch.Tensor] = {}
        self._candidates: dict[tuple[int, ...], list[tuple[int, ...]]] = {}

    def _embed(self, length: int) -> torch.Tensor:
        if length not in self._vectors:
            words = self._by_length[length]
            weight = self._embedding.weight
            ids = torch.tensor(words, device=weight.device)  # (n_words, length)
            with torch.no_grad():
                self._vectors[length] = self._embedding(ids).float().mean(dim=1).cpu()  # (n_words, dim)
        return self._vectors[length]

    def _band_center(self, rng: random.Random) -> float:
        if self._center is None:
            distances = []
            for length, words in self._by_length.items():
                if len(words) < 2:
                    continue
                vectors = self._embed(length)
                pairs = [rng.sample(range(len(words)), 2) for _ in range(min(2000, len(words) ** 2))]
                first, second = torch.tensor(pairs).unbind(dim=1)
                distances.append((vectors[first] - vectors[second]).abs().mean(dim=1))
            if not distances:
                return float("nan")
            self._center = float(torch.cat(distances).median())
        return self._center

    def replacement(self, word: tuple[int, ...], rng: random.Random) -> tuple[int, ...] | None:
        center = self._band_center(rng)
        if word not in self._candidates:
            words = self._by_length.get(len(word), [])
            if len(words) < 2 or word not in self._seen:
                return super().replacement(word, rng)
            vectors = self._embed(len(word))
            own = vectors[words.index(word)]
            gap = ((vectors - own).abs().mean(dim=1) - center).abs()
            gap[words.index(word)] = float("inf")
            nearest = gap.argsort()[: min(self._band_size, len(words) - 1)]
            self._candidates[word] = [words[i] for i in nearest.tolist()]
        candidates = self._candidates[word]
        return candidates[rng.randrange(len(candidates))]
