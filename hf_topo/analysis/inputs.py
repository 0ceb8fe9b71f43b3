"""What the analyses feed a model: packed blocks of text, and padded batches of short stimuli.

Blocks come from a local text/jsonl file or a dataset (``datasets.load_dataset``), read as a stream so that only
the text the token budget needs is read, tokenized with the model's tokenizer and packed with
:func:`hf_topo.data.pack_into_blocks` (the packing of pretraining). Stimuli (one per line) are tokenized one by one
and right-padded; their ``attention_mask`` marks the padding, which every analysis leaves out.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from itertools import islice

import torch

__all__ = ["TokenBatch", "as_token_batch", "load_text_blocks", "load_passages", "read_stimuli", "tokenize_stimuli"]

logger = logging.getLogger(__name__)


@dataclass
class TokenBatch:
    """Token ids ``(n_sequences, seq_len)`` and an optional ``attention_mask`` of the same shape (1 = real token)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None = None

    def __post_init__(self):
        if self.input_ids.ndim != 2 or self.input_ids.shape[0] == 0 or self.input_ids.shape[1] == 0:
            raise ValueError(
                f"Expected token ids of shape (n_sequences, seq_len) with at least one token, got {tuple(self.input_ids.shape)}."
            )
        self.input_ids = self.input_ids.long()
        if self.attention_mask is not None:
            if self.attention_mask.shape != self.input_ids.shape:
                raise ValueError(
                    f"attention_mask {tuple(self.attention_mask.shape)} must have the shape of input_ids "
                    f"{tuple(self.input_ids.shape)}."
                )
            self.attention_mask = self.attention_mask.long()

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def n_tokens(self) -> int:
        """Real (non-padding) tokens."""
        return int(self.attention_mask.sum()) if self.attention_mask is not None else self.input_ids.numel()

    def batches(self, batch_size: int):
        """``(input_ids, attention_mask or None)`` slices of ``batch_size`` sequences."""
        for start in range(0, len(self), batch_size):
            mask = None if self.attention_mask is None else self.attention_mask[start : start + batch_size]
            yield self.input_ids[start : start + batch_size], mask


def as_token_batch(data) -> TokenBatch:
    """A :class:`TokenBatch` from a ``TokenBatch``, an ``(n, seq_len)`` tensor, a dict or a ``datasets.Dataset``
    with ``input_ids`` (and optionally ``attention_mask``) of equal-length sequences."""
    if isinstance(data, TokenBatch):
        return data
    if isinstance(data, torch.Tensor):
        return TokenBatch(data)
    try:
        input_ids = data["input_ids"]
    except (KeyError, TypeError, IndexError):
        raise TypeError(
            f"Cannot read token ids from a {type(data).__name__}: pass an (n, seq_len) tensor, a TokenBatch, or a "
            "dict / datasets.Dataset with an 'input_ids' column (e.g. from load_text_blocks)."
        ) from None
    columns = getattr(data, "column_names", None) or (list(data) if isinstance(data, dict) else [])
    mask = data["attention_mask"] if "attention_mask" in columns else None
    as_tensor = lambda v: v if isinstance(v, torch.Tensor) else torch.tensor(list(v))  # noqa: E731
    return TokenBatch(as_tensor(input_ids), None if mask is None else as_tensor(mask))


def _text_stream(
    text_file: str | None, dataset_name: str | None, dataset_config: str | None, split: str, text_column: str
):
    from datasets import load_dataset

    if (text_file is None) == (dataset_name is None):
        raise ValueError("Give exactly one text source: text_file (a local .txt/.jsonl file) or dataset_name.")
    if text_file is not None:
        from ..data import dataset_builder_for
        from ..loading import check_data_file

        check_data_file(text_file, "text_file")
        builder = dataset_builder_for(text_file)
        kwargs = {"keep_linebreaks": True} if builder == "text" else {}
        return load_dataset(builder, data_files={"train": text_file}, split="train", streaming=True, **kwargs)
    return load_dataset(dataset_name, dataset_config, split=split, streaming=True)


def load_text_blocks(
    tokenizer,
    block_size: int,
    text_file: str | None = None,
    dataset_name: str | None = None,
    dataset_config: str | None = None,
    split: str = "train",
    text_column: str = "text",
    max_blocks: int | None = None,
) -> TokenBatch:
    """The first ``max_blocks`` blocks of ``block_size`` tokens of a text, packed as in pretraining.

    Args:
        tokenizer: the model's tokenizer.
        text_file: a local ``.txt`` (lines kept with their line breaks) or ``.jsonl`` file with ``text_column``.
        dataset_name, dataset_config, split: or a dataset for ``datasets.load_dataset`` (a Hub id or a local
            directory of text/json files); it is streamed, so only what ``max_blocks`` needs is read.
        max_blocks: at most this many blocks (all of the text when ``None``).

    Raises:
        ValueError: the tokenizer encodes text to nothing (e.g. the empty tokenizer of a model folder without
            tokenizer files), the text is empty or shorter than one block, or has no ``text_column``.
    """
    from datasets import IterableDatasetDict

    from ..data import pack_into_blocks
    from ..loading import check_tokenizer

    check_tokenizer(tokenizer)
    if max_blocks is not None and max_blocks < 1:
        raise ValueError(f"max_blocks={max_blocks} selects no text; use a positive number or None for all.")
    stream = _text_stream(text_file, dataset_name, dataset_config, split, text_column)
    try:
        first = next(iter(stream))
    except StopIteration:
        raise ValueError(f"{text_file or dataset_name} holds no text.") from None
    if text_column not in first:
        raise ValueError(
            f"{text_file or dataset_name} has no column {text_column!r} (columns: {sorted(first)}); set text_column."
        )
    stream = stream.select_columns([text_column])
    packed = pack_into_blocks(IterableDatasetDict(train=stream), tokenizer, block_size, text_column)["train"]
    blocks = [example["input_ids"] for example in islice(packed, max_blocks)]
    if not blocks:
        raise ValueError(
            f"{text_file or dataset_name} yields no block of {block_size} tokens: give more text or a smaller block_size."
        )
    logger.info("Analysis text: %d blocks of %d tokens from %s", len(blocks), block_size, text_file or dataset_name)
    return TokenBatch(torch.tensor(blocks))


def load_passages(
    text_file: str | None = None,
    dataset_name: str | None = None,
    dataset_config: str | None = None,
    split: str = "train",
    text_column: str = "text",
    min_words: int = 64,
    max_passages: int | None = 200,
) -> list[str]:
    """Passages of running text of at least ``min_words`` whitespace-delimited words each: consecutive rows of the
    source (lines of a ``.txt`` file, rows of a ``.jsonl`` file or dataset) joined in order, so that analyses that
    need context (temporal integration windows) get whole stretches of text rather than short lines.

    Raises:
        ValueError: the source has no column ``text_column`` or not a single passage of ``min_words`` words.
    """
    if min_words < 1:
        raise ValueError(f"min_words={min_words} must be at least 1.")
    if max_passages is not None and max_passages < 1:
        raise ValueError(f"max_passages={max_passages} selects no text; use a positive number or None for all.")
    passages: list[str] = []
    current: list[str] = []
    words = 0
    for row in _text_stream(text_file, dataset_name, dataset_config, split, text_column):
        if text_column not in row:
            raise ValueError(
                f"{text_file or dataset_name} has no column {text_column!r} (columns: {sorted(row)}); set text_column."
            )
        text = row[text_column]
        if not text or not text.strip():
            continue
        current.append(text if text.endswith("\n") else text + "\n")
        words += len(text.split())
        if words >= min_words:
            passages.append("".join(current).strip())
            current, words = [], 0
            if max_passages is not None and len(passages) >= max_passages:
                break
    if not passages:
        raise ValueError(f"{text_file or dataset_name} holds no passage of {min_words} words: give more text.")
    return passages


def read_stimuli(path: str | os.PathLike) -> list[str]:
    """The stimuli of a text file, one per non-empty line (surrounding whitespace stripped)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Stimulus file {str(path)!r} does not exist: give a text file with one stimulus per line."
        )
    with open(path, encoding="utf-8") as f:
        stimuli = [line.strip() for line in f if line.strip()]
    if len(stimuli) < 2:
        raise ValueError(
            f"{str(path)!r} has {len(stimuli)} stimulus line(s); selectivity needs at least 2 per set (one per line)."
        )
    return stimuli


def tokenize_stimuli(tokenizer, stimuli: list[str], max_length: int | None = None) -> TokenBatch:
    """Right-padded token ids and ``attention_mask`` of ``stimuli`` (no special tokens; truncated to ``max_length``)."""
    from ..loading import check_tokenizer

    if not stimuli:
        raise ValueError("No stimuli to tokenize.")
    check_tokenizer(tokenizer)
    encoded = [tokenizer(text, add_special_tokens=False)["input_ids"][:max_length] for text in stimuli]
    empty = [text for text, ids in zip(stimuli, encoded, strict=True) if not ids]
    if empty:
        raise ValueError(f"Stimuli {empty[:3]} tokenize to no tokens.")
    length = max(len(ids) for ids in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    input_ids = torch.full((len(encoded), length), pad, dtype=torch.long)
    mask = torch.zeros((len(encoded), length), dtype=torch.long)
    for row, ids in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        mask[row, : len(ids)] = 1
    return TokenBatch(input_ids, mask)
