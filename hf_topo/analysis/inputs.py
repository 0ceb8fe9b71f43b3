"""What the analyses feed a model besides packed blocks of text (:func:`hf_topo.evaluation.load_text_blocks`):
running passages of whole words, and padded batches of short stimuli.

Stimuli (one per line) are tokenized one by one and right-padded; their ``attention_mask`` marks the padding, which
every analysis leaves out.
"""

from __future__ import annotations

import logging
import os

import torch

from ..evaluation import TokenBatch, stream_text

__all__ = ["load_passages", "read_stimuli", "tokenize_stimuli"]

logger = logging.getLogger(__name__)


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
    for row in stream_text(text_file, dataset_name, dataset_config, split, text_column):
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
