"""Text data for pretraining: loading corpora and tokenizers, training a tokenizer offline, packing into blocks.

Everything goes through 🤗 ``datasets`` so tokenization and packing are cached on disk (a second run with the
same files and tokenizer reuses them) and streaming Hub datasets are packed on the fly.

Bad data fails before any training step, with the fix in the message:

=========================================  =======================================================================
input                                      refused by
=========================================  =======================================================================
an empty (or whitespace-only) data file    :func:`load_text_datasets`: "FILE is empty"
a corpus too short to hold out validation  :func:`load_text_datasets`: the validation (or training) split is empty
a split without one full block             :func:`pack_into_blocks`: its number of tokens, the block size, fixes
a tokenizer that encodes text to nothing   :func:`~hf_topo.loading.check_tokenizer` (called by the packing)
=========================================  =======================================================================

Loading tokenizers and checking data files is :mod:`hf_topo.loading`'s. The errors name the parameter to change
(:mod:`hf_topo.errors`): ``train_file=`` from Python, ``--train_file`` on the command line.
"""

from __future__ import annotations

import logging
import math
import sysconfig
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path

from datasets import Dataset, DatasetDict, IterableDatasetDict, load_dataset

from .errors import InputError, parameter
from .loading import check_data_file, check_tokenizer

__all__ = [
    "dataset_builder_for",
    "load_text_datasets",
    "train_bpe_tokenizer",
    "pack_into_blocks",
    "write_python_corpus",
]

logger = logging.getLogger(__name__)

END_OF_TEXT = "<|endoftext|>"


def dataset_builder_for(path: str) -> str:
    """The ``datasets`` builder that reads the local file ``path``: ``"json"`` for .json/.jsonl, ``"text"`` for plain
    text (.txt, .text, .md, .py, .raw or no suffix).

    Raises:
        ValueError: the suffix says neither.
    """
    suffix = Path(path).suffix.lower()
    if suffix in (".json", ".jsonl"):
        return "json"
    if suffix in (".txt", ".text", ".md", ".py", ".raw", ""):
        return "text"
    raise ValueError(
        f"Cannot tell the format of {path!r}: give a .txt (plain text) or .jsonl/.json file with a text column."
    )


def _split_off_validation(train, percentage: int, source: str, unit: str, from_start: bool) -> DatasetDict:
    """Hold out ``percentage`` % of ``train`` as the validation split, refusing a split that would be empty.

    ``from_start``: the first rows (local files; ``datasets``' ``train[:p%]`` rounding, to the closest row), else the
    last rows (``train_test_split``, rounding the held-out part up).
    """
    if not 0 < percentage < 100:
        raise InputError(f"{parameter('validation_split_percentage', percentage)} must be between 1 and 99.")
    n = len(train)

    def held_out(pct: int) -> int:  # exactly as datasets rounds
        return int(round(pct * n / 100.0)) if from_start else math.ceil(pct / 100 * n)

    n_validation = held_out(percentage)
    if n_validation == 0 or n_validation == n:
        fixes = [f"give a held-out file with {parameter('validation_file')}"]
        working = [pct for pct in range(1, 100) if 0 < held_out(pct) < n]
        if working:
            fixes.append(f"set {parameter('validation_split_percentage')} between {working[0]} and {working[-1]}")
        fixes.append("use a longer text")
        raise InputError(
            f"The {'validation' if n_validation == 0 else 'training'} split is empty: {source} has {n} "
            f"{unit}{'s' if n != 1 else ''}, and holding out {percentage} % of them leaves {n_validation} for "
            f"validation and {n - n_validation} for training. Fix: {'; or '.join(fixes)}."
        )
    if from_start:
        return DatasetDict(validation=train.select(range(n_validation)), train=train.select(range(n_validation, n)))
    split = train.train_test_split(test_size=n_validation, seed=0, shuffle=False)
    return DatasetDict(train=split["train"], validation=split["test"])


def load_text_datasets(
    dataset_name: str | None = None,
    dataset_config: str | None = None,
    train_file: str | None = None,
    validation_file: str | None = None,
    text_column: str = "text",
    validation_split_percentage: int = 5,
    streaming: bool = False,
    cache_dir: str | None = None,
    validation_documents: int | None = None,
) -> DatasetDict | IterableDatasetDict:
    """A ``{"train", "validation"}`` dataset dict with a ``text_column``, from the Hub or local files.

    Local text files are read line by line with their line breaks kept, so packing reproduces the text
    exactly; ``.jsonl`` files need ``text_column``. Without a validation file (or split), the first
    ``validation_split_percentage`` % of the lines of a local file are held out (the last % of the rows of a Hub
    dataset); a stream has no length, so there the first ``validation_documents`` documents of the training stream
    are held out instead (FineWeb-Edu has only a train split) and training starts after them.

    Raises:
        FileNotFoundError: a data file does not exist.
        ValueError: a data file is empty, the data has no ``text_column``, or holding out validation data leaves
            the validation or the training split empty (the message gives the number of lines and the fixes).
    """
    if (dataset_name is None) == (train_file is None):
        raise InputError(
            f"Give exactly one data source: {parameter('dataset_name')} (a Hub dataset) or {parameter('train_file')} "
            "(a local file)."
        )
    for path, name in ((train_file, "train_file"), (validation_file, "validation_file")):
        if path is not None:
            check_data_file(path, name)
    if dataset_name is not None:
        raw = load_dataset(dataset_name, dataset_config, streaming=streaming, cache_dir=cache_dir)
        if validation_file is not None:  # a local held-out set next to a Hub corpus
            builder = dataset_builder_for(validation_file)
            kwargs = {"keep_linebreaks": True} if builder == "text" else {}
            raw["validation"] = load_dataset(
                builder, data_files=validation_file, split="train", streaming=streaming, cache_dir=cache_dir, **kwargs
            )
        if "train" not in raw:
            raise ValueError(f"{dataset_name} has no 'train' split (splits: {list(raw)}).")
        if "validation" not in raw:
            if streaming:
                if not validation_documents:
                    raise InputError(
                        f"{dataset_name} has no 'validation' split and a stream cannot be split by percentage: pass "
                        f"{parameter('validation_documents', 'N')} (hold out the first N documents of the stream) or "
                        f"{parameter('validation_file')}."
                    )
                raw = _hold_out_stream(raw["train"], validation_documents)
            else:
                raw = _split_off_validation(
                    raw["train"], validation_split_percentage, dataset_name, "row", from_start=False
                )
    else:
        builder = dataset_builder_for(train_file)
        if validation_file is not None and dataset_builder_for(validation_file) != builder:
            raise InputError(
                f"{parameter('train_file')} and {parameter('validation_file')} must have the same format (both text "
                "or both jsonl)."
            )
        kwargs = {"keep_linebreaks": True} if builder == "text" else {}
        files = {"train": train_file}
        if validation_file is not None:
            files["validation"] = validation_file
            raw = load_dataset(builder, data_files=files, streaming=streaming, cache_dir=cache_dir, **kwargs)
        elif streaming:
            if not validation_documents:
                raise InputError(
                    f"With {parameter('streaming')}, give {parameter('validation_file')} or "
                    f"{parameter('validation_documents', 'N')} (the first N documents of the stream are held out): a "
                    "stream cannot be split by percentage."
                )
            raw = _hold_out_stream(
                load_dataset(builder, data_files=files, streaming=True, cache_dir=cache_dir, **kwargs)["train"],
                validation_documents,
            )
        else:
            raw = _split_off_validation(
                load_dataset(builder, data_files=files, split="train", cache_dir=cache_dir, **kwargs),
                validation_split_percentage,
                train_file,
                "line" if builder == "text" else "row",
                from_start=True,
            )
    columns = raw["train"].column_names
    if columns is not None and text_column not in columns:
        raise InputError(
            f"The training data has no column {text_column!r} (columns: {columns}); set {parameter('text_column')}."
        )
    return raw


def _hold_out_stream(stream, n_documents: int) -> IterableDatasetDict:
    if n_documents < 1:
        raise InputError(f"{parameter('validation_documents', n_documents)} must be at least 1.")
    return IterableDatasetDict(validation=stream.take(n_documents), train=stream.skip(n_documents))


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 8192, min_frequency: int = 2):
    """Train a byte-level BPE tokenizer (GPT-2 style, ``<|endoftext|>`` as BOS/EOS/UNK/PAD) on ``texts``, offline.

    Returns a ``transformers.PreTrainedTokenizerFast`` that saves and loads like any Hub tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 257:
        raise ValueError(
            f"vocab_size={vocab_size} is too small for byte-level BPE: use at least 257 (256 bytes + EOS)."
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=True,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        unk_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
    )


def _pack(examples: dict, tokenizer, text_column: str, block_size: int, add_eos: bool) -> dict:
    ids = tokenizer(examples[text_column], add_special_tokens=False)["input_ids"]
    if add_eos and tokenizer.eos_token_id is not None:
        ids = [seq + [tokenizer.eos_token_id] for seq in ids]
    flat = list(chain.from_iterable(ids))
    usable = (len(flat) // block_size) * block_size
    blocks = [flat[i : i + block_size] for i in range(0, usable, block_size)]
    return {"input_ids": blocks, "labels": [list(b) for b in blocks]}


def pack_into_blocks(
    raw: DatasetDict | IterableDatasetDict,
    tokenizer,
    block_size: int,
    text_column: str = "text",
    add_eos: bool | None = None,
    num_proc: int | None = None,
    pack_batch_size: int = 1000,
):
    """Tokenize and concatenate the texts, then cut them into ``block_size`` blocks (``input_ids`` = ``labels``).

    ``add_eos`` appends EOS after each example (documents); by default it does so unless the examples are
    lines of one text file (recognized by their trailing line break). Cached by ``datasets`` for on-disk
    data; applied lazily for streams. The tail of each batch of ``pack_batch_size`` examples that does not
    fill a block is dropped, as in transformers' ``run_clm.py``.

    Every split must yield at least one block, checked here, before any training step: a split without one is an
    error that gives its number of tokens, the block size and the fixes (a training set without blocks would fail in
    the Trainer with unrelated advice; a validation set without blocks only at the final evaluation, after the
    whole run). A stream is checked by reading up to its first block (one batch of ``pack_batch_size`` documents
    for a corpus of ordinary documents).

    Raises:
        ValueError: ``block_size`` < 2, the tokenizer encodes text to nothing (:func:`check_tokenizer`), the training
            split is empty, or a split yields no block.
    """
    if block_size < 2:
        raise InputError(f"{parameter('block_size', block_size)} must be at least 2 tokens.")
    check_tokenizer(tokenizer)
    try:
        first = next(iter(raw["train"]))
    except StopIteration:
        raise ValueError(
            "The training split holds no text: give a training file or dataset with text in it."
        ) from None
    if add_eos is None:
        add_eos = not first[text_column].endswith("\n")
    columns = raw["train"].column_names or list(first.keys())
    fn_kwargs = dict(tokenizer=tokenizer, text_column=text_column, block_size=block_size, add_eos=add_eos)
    kwargs = dict(batched=True, batch_size=pack_batch_size, remove_columns=columns, fn_kwargs=fn_kwargs)
    if isinstance(raw, DatasetDict):
        kwargs.update(num_proc=num_proc, desc=f"Tokenizing and packing into blocks of {block_size}")
    blocks = raw.map(_pack, **kwargs)
    for split in sorted(blocks, key=lambda name: name != "train"):  # the training split's message first
        if isinstance(blocks[split], Dataset):
            if len(blocks[split]) > 0:
                logger.info("%s: %d blocks of %d tokens", split, len(blocks[split]), block_size)
                continue
        elif next(iter(blocks[split]), None) is not None:
            continue
        raise InputError(_no_block_message(split, raw[split], block_size, pack_batch_size, fn_kwargs))
    return blocks


def _no_block_message(split: str, texts, block_size: int, pack_batch_size: int, fn_kwargs: dict) -> str:
    """Why ``split`` yields no block: its tokens counted as :func:`_pack` counts them, and the fixes."""
    tokenizer, text_column, add_eos = fn_kwargs["tokenizer"], fn_kwargs["text_column"], fn_kwargs["add_eos"]
    total = largest = 0
    for batch in texts.iter(batch_size=pack_batch_size):
        ids = tokenizer(batch[text_column], add_special_tokens=False)["input_ids"]
        n = sum(len(seq) for seq in ids) + (len(ids) if add_eos and tokenizer.eos_token_id is not None else 0)
        total, largest = total + n, max(largest, n)
    message = f"The {split} split yields no block of {block_size} tokens: it has {total} tokens"
    if total >= block_size:
        message += (
            f", but at most {largest} in one batch of {pack_batch_size} examples (the tail of each batch that does not "
            "fill a block is dropped)"
        )
    fixes = [f"{parameter('block_size')} of at most {largest}"] if largest >= 2 else []
    if split == "validation":
        fixes.append(
            f"more held-out text (a longer {parameter('validation_file')}, a larger "
            f"{parameter('validation_split_percentage')}, or with {parameter('streaming')} a larger "
            f"{parameter('validation_documents')})"
        )
    else:
        fixes.append("more text")
    return f"{message}. Fix: {'; or '.join(fixes)}."


def python_source_files(root: str | None = None) -> Iterator[Path]:
    """The ``.py`` files of a directory (default: this interpreter's standard library), in a stable order."""
    root_path = Path(root or sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idlelib", "lib2to3", "turtledemo"}
    for path in sorted(root_path.rglob("*.py")):
        if not skip.intersection(path.relative_to(root_path).parts):
            yield path


def write_python_corpus(output_file: str, max_bytes: int = 2_000_000, root: str | None = None) -> str:
    """Write up to ``max_bytes`` of Python source (the standard library by default) into one text file.

    Python's standard library is on every machine that runs hf_topo, which makes it a real corpus that is
    always available offline. Files are concatenated in sorted order, each preceded by a ``# file:`` line.
    """
    written = 0
    Path(output_file).parent.mkdir(parents=True, exist_ok=True)
    with open(output_file, "w", encoding="utf-8") as out:
        for path in python_source_files(root):
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            chunk = f"# file: {path.name}\n{text}\n"
            if written + len(chunk) > max_bytes:
                continue
            out.write(chunk)
            written += len(chunk)
    if written == 0:
        raise RuntimeError(f"No Python sources found under {root or sysconfig.get_paths()['stdlib']!r}.")
    logger.info("Wrote %d bytes of Python source to %s", written, output_file)
    return output_file
