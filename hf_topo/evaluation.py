"""Measuring a causal LM on text: the token batches every measurement feeds a model, and the perplexity on them.

:func:`load_text_blocks` reads a local text/jsonl file or a dataset (``datasets.load_dataset``) as a stream, so that
only the text the token budget needs is read, tokenizes it with the model's tokenizer and packs it with
:func:`hf_topo.data.pack_into_blocks` (the packing of pretraining) into a :class:`TokenBatch`;
:func:`evaluate_perplexity` scores a model on one. The analyses (:mod:`hf_topo.analysis`), downsampling
(:mod:`hf_topo.downsampling`, its calibration and its held-out perplexity) and the experiments share them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from itertools import islice

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

__all__ = [
    "TokenBatch",
    "as_token_batch",
    "evaluate_perplexity",
    "load_text_blocks",
    "model_device",
    "stream_text",
]

logger = logging.getLogger(__name__)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter."""
    return next(model.parameters()).device


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


def stream_text(
    text_file: str | None, dataset_name: str | None, dataset_config: str | None, split: str, text_column: str
):
    """The examples of a local text/jsonl file (lines kept with their line breaks) or of a dataset, as a stream."""
    from datasets import load_dataset

    if (text_file is None) == (dataset_name is None):
        raise ValueError("Give exactly one text source: text_file (a local .txt/.jsonl file) or dataset_name.")
    if text_file is not None:
        from .data import dataset_builder_for
        from .loading import check_data_file

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

    from .data import pack_into_blocks
    from .loading import check_tokenizer

    check_tokenizer(tokenizer)
    if max_blocks is not None and max_blocks < 1:
        raise ValueError(f"max_blocks={max_blocks} selects no text; use a positive number or None for all.")
    stream = stream_text(text_file, dataset_name, dataset_config, split, text_column)
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
    logger.info("Text: %d blocks of %d tokens from %s", len(blocks), block_size, text_file or dataset_name)
    return TokenBatch(torch.tensor(blocks))


@torch.no_grad()
def evaluate_perplexity(
    model: nn.Module, tokens, batch_size: int = 8, progress: bool = True, targets: torch.Tensor | None = None
) -> float:
    """``exp`` of the mean next-token cross-entropy over every predicted real token of ``tokens``.

    ``tokens``: a :class:`TokenBatch` (or tensor / dict / dataset with ``input_ids``);
    a token is predicted when it and its predecessor are real (``attention_mask`` 1). Logits are scored in float32.
    ``targets``: the token ids to predict, of the shape of ``input_ids`` (default: ``input_ids`` themselves; a
    corrupted input scored against its clean text passes the clean ids here).
    """
    batch = as_token_batch(tokens)
    if batch.input_ids.shape[1] < 2:
        raise ValueError("Perplexity needs sequences of at least 2 tokens.")
    if targets is not None and tuple(targets.shape) != tuple(batch.input_ids.shape):
        raise ValueError(
            f"targets {tuple(targets.shape)} must have the shape of the input ids {tuple(batch.input_ids.shape)}."
        )
    all_targets = batch.input_ids if targets is None else targets.long()
    device = model_device(model)
    was_training = model.training
    model.eval()
    total_nll, total_tokens = 0.0, 0
    try:
        for start, (input_ids, mask) in tqdm(
            zip(range(0, len(batch), batch_size), batch.batches(batch_size), strict=True),
            total=math.ceil(len(batch) / batch_size),
            desc="Perplexity",
            disable=not progress,
        ):
            input_ids = input_ids.to(device)
            mask = None if mask is None else mask.to(device)
            logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1].float()  # (B, T-1, vocab)
            targets = all_targets[start : start + len(input_ids), 1:].to(device)
            if mask is not None:
                targets = targets.masked_fill((mask[:, 1:] == 0) | (mask[:, :-1] == 0), -100)
            total_nll += F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="sum").item()
            total_tokens += int((targets != -100).sum())
    finally:
        model.train(was_training)
    if total_tokens == 0:
        raise ValueError("No token to score: every sequence is padding.")
    return math.exp(total_nll / total_tokens)
