"""Text data for pretraining: loading corpora, training a tokenizer offline, packing into fixed-length blocks.

Everything goes through 🤗 ``datasets`` so tokenization and packing are cached on disk (a second run with the
same files and tokenizer reuses them) and streaming Hub datasets are packed on the fly.
"""

from __future__ import annotations

import logging
import os
import sysconfig
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path

from datasets import DatasetDict, IterableDatasetDict, load_dataset

__all__ = [
    "load_text_datasets",
    "train_bpe_tokenizer",
    "pack_into_blocks",
    "write_python_corpus",
]

logger = logging.getLogger(__name__)

END_OF_TEXT = "<|endoftext|>"


def _builder_for(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in (".json", ".jsonl"):
        return "json"
    if suffix in (".txt", ".text", ".md", ".py", ".raw", ""):
        return "text"
    raise ValueError(
        f"Cannot tell the format of {path!r}: give a .txt (plain text) or .jsonl/.json file with a text column."
    )


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
    ``validation_split_percentage`` % of the training data is held out; a stream has no length, so there the first
    ``validation_documents`` documents of the training stream are held out instead (FineWeb-Edu has only a train
    split) and training starts after them.
    """
    if (dataset_name is None) == (train_file is None):
        raise ValueError(
            "Give exactly one data source: --dataset_name (a Hub dataset) or --train_file (a local file)."
        )
    if dataset_name is not None:
        raw = load_dataset(dataset_name, dataset_config, streaming=streaming, cache_dir=cache_dir)
        if validation_file is not None:  # a local held-out set next to a Hub corpus
            builder = _builder_for(validation_file)
            kwargs = {"keep_linebreaks": True} if builder == "text" else {}
            raw["validation"] = load_dataset(
                builder, data_files=validation_file, split="train", streaming=streaming, cache_dir=cache_dir, **kwargs
            )
        if "validation" not in raw:
            if streaming:
                if not validation_documents:
                    raise ValueError(
                        f"{dataset_name} has no 'validation' split and a stream cannot be split by percentage: pass "
                        "--validation_documents N (hold out the first N documents of the stream) or --validation_file."
                    )
                raw = _hold_out_stream(raw["train"], validation_documents)
            else:
                split = raw["train"].train_test_split(
                    test_size=validation_split_percentage / 100, seed=0, shuffle=False
                )
                raw = DatasetDict(train=split["train"], validation=split["test"])
    else:
        for path in filter(None, (train_file, validation_file)):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"Data file {path!r} does not exist.")
        builder = _builder_for(train_file)
        if validation_file is not None and _builder_for(validation_file) != builder:
            raise ValueError("--train_file and --validation_file must have the same format (both text or both jsonl).")
        kwargs = {"keep_linebreaks": True} if builder == "text" else {}
        files = {"train": train_file}
        if validation_file is not None:
            files["validation"] = validation_file
            raw = load_dataset(builder, data_files=files, streaming=streaming, cache_dir=cache_dir, **kwargs)
        elif streaming:
            if not validation_documents:
                raise ValueError(
                    "With --streaming, give --validation_file or --validation_documents N (the first N documents of "
                    "the stream are held out): a stream cannot be split by percentage."
                )
            raw = _hold_out_stream(
                load_dataset(builder, data_files=files, streaming=True, cache_dir=cache_dir, **kwargs)["train"],
                validation_documents,
            )
        else:
            pct = validation_split_percentage
            if not 0 < pct < 100:
                raise ValueError(f"validation_split_percentage={pct} must be between 1 and 99.")
            raw = DatasetDict(
                validation=load_dataset(
                    builder, data_files=files, split=f"train[:{pct}%]", cache_dir=cache_dir, **kwargs
                ),
                train=load_dataset(builder, data_files=files, split=f"train[{pct}%:]", cache_dir=cache_dir, **kwargs),
            )
    columns = raw["train"].column_names
    if columns is not None and text_column not in columns:
        raise ValueError(f"The training data has no column {text_column!r} (columns: {columns}); set --text_column.")
    return raw


def _hold_out_stream(stream, n_documents: int) -> IterableDatasetDict:
    if n_documents < 1:
        raise ValueError(f"validation_documents={n_documents} must be at least 1.")
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
    """
    if block_size < 2:
        raise ValueError(f"block_size={block_size} must be at least 2 tokens.")
    first = next(iter(raw["train"]))[text_column]
    if add_eos is None:
        add_eos = not first.endswith("\n")
    columns = raw["train"].column_names or list(next(iter(raw["train"])).keys())
    kwargs = dict(
        batched=True,
        batch_size=pack_batch_size,
        remove_columns=columns,
        fn_kwargs=dict(tokenizer=tokenizer, text_column=text_column, block_size=block_size, add_eos=add_eos),
    )
    if isinstance(raw, DatasetDict):
        kwargs.update(num_proc=num_proc, desc=f"Tokenizing and packing into blocks of {block_size}")
    return raw.map(_pack, **kwargs)


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
