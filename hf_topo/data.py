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
a folder without tokenizer files           :func:`load_tokenizer` (transformers would build an empty tokenizer)
a tokenizer that encodes text to nothing   :func:`check_tokenizer` (called by the packing, BLiMP, the analyses)
=========================================  =======================================================================
"""

from __future__ import annotations

import logging
import math
import os
import sysconfig
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path

from datasets import Dataset, DatasetDict, IterableDatasetDict, load_dataset

__all__ = [
    "TOKENIZER_FILES",
    "check_data_file",
    "check_tokenizer",
    "dataset_builder_for",
    "is_hub_id",
    "load_text_datasets",
    "load_tokenizer",
    "train_bpe_tokenizer",
    "pack_into_blocks",
    "tokenizer_display_name",
    "write_python_corpus",
]

logger = logging.getLogger(__name__)

END_OF_TEXT = "<|endoftext|>"
#: Files of a saved tokenizer (any one of them). From a folder with none, ``AutoTokenizer`` builds an *empty*
#: tokenizer instead of failing: every text encodes to nothing.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tekken.json",
)
#: Text every usable tokenizer encodes to at least one token.
_PROBE_TEXT = "The cat sat on the mat."


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


def check_data_file(path: str, flag: str) -> None:
    """Refuse a data file that does not exist or holds only whitespace, naming it by ``flag`` (e.g. ``"--train_file"``).

    Checked before ``datasets`` sees the file: its own errors on an empty file are about missing ``features``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is empty or whitespace only.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{flag} {path!r} does not exist.")
    with open(path, encoding="utf-8", errors="replace") as f:
        while chunk := f.read(1 << 16):
            if chunk.strip():
                return
    size = os.path.getsize(path)
    raise ValueError(
        f"{flag} {path!r} is empty ({'0 bytes' if size == 0 else f'{size} bytes of whitespace only'}): "
        "give a file with text in it."
    )


def _split_off_validation(train, percentage: int, source: str, unit: str, from_start: bool) -> DatasetDict:
    """Hold out ``percentage`` % of ``train`` as the validation split, refusing a split that would be empty.

    ``from_start``: the first rows (local files; ``datasets``' ``train[:p%]`` rounding, to the closest row), else the
    last rows (``train_test_split``, rounding the held-out part up).
    """
    if not 0 < percentage < 100:
        raise ValueError(
            f"validation_split_percentage={percentage} must be between 1 and 99 (--validation_split_percentage)."
        )
    n = len(train)

    def held_out(pct: int) -> int:  # exactly as datasets rounds
        return int(round(pct * n / 100.0)) if from_start else math.ceil(pct / 100 * n)

    n_validation = held_out(percentage)
    if n_validation == 0 or n_validation == n:
        fixes = ["give a held-out file with --validation_file"]
        working = [pct for pct in range(1, 100) if 0 < held_out(pct) < n]
        if working:
            fixes.append(f"set --validation_split_percentage between {working[0]} and {working[-1]}")
        fixes.append("use a longer text")
        raise ValueError(
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
        raise ValueError(
            "Give exactly one data source: --dataset_name (a Hub dataset) or --train_file (a local file)."
        )
    for path, flag in ((train_file, "--train_file"), (validation_file, "--validation_file")):
        if path is not None:
            check_data_file(path, flag)
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
                    raise ValueError(
                        f"{dataset_name} has no 'validation' split and a stream cannot be split by percentage: pass "
                        "--validation_documents N (hold out the first N documents of the stream) or --validation_file."
                    )
                raw = _hold_out_stream(raw["train"], validation_documents)
            else:
                raw = _split_off_validation(
                    raw["train"], validation_split_percentage, dataset_name, "row", from_start=False
                )
    else:
        builder = dataset_builder_for(train_file)
        if validation_file is not None and dataset_builder_for(validation_file) != builder:
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
            raw = _split_off_validation(
                load_dataset(builder, data_files=files, split="train", cache_dir=cache_dir, **kwargs),
                validation_split_percentage,
                train_file,
                "line" if builder == "text" else "row",
                from_start=True,
            )
    columns = raw["train"].column_names
    if columns is not None and text_column not in columns:
        raise ValueError(f"The training data has no column {text_column!r} (columns: {columns}); set --text_column.")
    return raw


def _hold_out_stream(stream, n_documents: int) -> IterableDatasetDict:
    if n_documents < 1:
        raise ValueError(f"validation_documents={n_documents} must be at least 1.")
    return IterableDatasetDict(validation=stream.take(n_documents), train=stream.skip(n_documents))


def tokenizer_display_name(tokenizer) -> str:
    """How messages name ``tokenizer``: the folder or Hub id it was loaded from, else its class name."""
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


def check_tokenizer(tokenizer, source: str | os.PathLike | None = None) -> None:
    """Refuse a tokenizer that cannot encode text (e.g. the empty one ``AutoTokenizer`` builds from a model folder
    without tokenizer files), before it turns every text into nothing and every score into a tie.

    Raises:
        TypeError: ``tokenizer`` is not a tokenizer (not callable on a string).
        ValueError: it encodes a plain English sentence to no token.
    """
    name = str(source) if source is not None else tokenizer_display_name(tokenizer)
    if not callable(tokenizer):
        raise TypeError(
            f"Expected a transformers tokenizer (e.g. from AutoTokenizer.from_pretrained), got a "
            f"{type(tokenizer).__name__}."
        )
    if not tokenizer(_PROBE_TEXT, add_special_tokens=False)["input_ids"]:
        raise ValueError(
            f"The tokenizer of {name!r} ({type(tokenizer).__name__}, {len(tokenizer)} tokens) encodes "
            f"{_PROBE_TEXT!r} to no token: it has no vocabulary. transformers builds such an empty tokenizer from a "
            f"model folder without tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...). Use the model's real "
            "tokenizer: save it next to the model (tokenizer.save_pretrained(MODEL_DIR)) or pass --tokenizer_name "
            "with its Hub id or folder."
        )


def is_hub_id(name: str) -> bool:
    """Whether ``name`` reads as a Hub repo id (``owner/name`` or ``name``), not as a local path (``./x``, ``~/x``,
    an absolute path, several slashes)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return not name.startswith((".", "~"))


def load_tokenizer(name_or_path: str | os.PathLike, fallback=None, **from_pretrained_kwargs):
    """``AutoTokenizer.from_pretrained(name_or_path)``, refusing what would silently encode text to nothing.

    Args:
        name_or_path: a Hub id (``openai-community/gpt2``) or a local folder that holds a saved tokenizer (any of
            :data:`TOKENIZER_FILES`), e.g. a model folder saved with its tokenizer.
        fallback: returned when ``name_or_path`` is a folder without tokenizer files (e.g. a baseline model saved
            without one, analysed with the main model's tokenizer); without it, such a folder is an error.
        **from_pretrained_kwargs: passed to ``AutoTokenizer.from_pretrained`` (``revision``, ``cache_dir``, ...).

    Returns:
        The tokenizer (a ``PreTrainedTokenizerBase``), checked with :func:`check_tokenizer`.

    Raises:
        FileNotFoundError: ``name_or_path`` is a local path (absolute, ``./``, ``~``) that does not exist.
        ValueError: the folder has no tokenizer files, the tokenizer cannot be loaded (offline, no such Hub repo)
            or it encodes text to nothing. Every message says to pass ``--tokenizer_name``.
    """
    from transformers import AutoTokenizer

    source = os.fspath(name_or_path)
    if os.path.isdir(source):
        if not any(os.path.isfile(os.path.join(source, name)) for name in TOKENIZER_FILES):
            if fallback is not None:
                logger.info("%s has no tokenizer files: using %s", source, tokenizer_display_name(fallback))
                return fallback
            raise ValueError(
                f"{source} has no tokenizer: none of {', '.join(TOKENIZER_FILES)} is there (transformers would "
                "build an empty tokenizer from it that encodes every text to nothing). Save the model's tokenizer "
                f"into it (tokenizer.save_pretrained({source!r})), or pass --tokenizer_name with the Hub id or a "
                "local folder of the tokenizer the model was trained with."
            )
    elif os.path.isfile(source):
        raise ValueError(
            f"{source} is a file; a tokenizer is loaded from the folder that holds its files (tokenizer.json, "
            f"tokenizer_config.json, ...): pass --tokenizer_name {os.path.dirname(source) or '.'}."
        )
    elif not is_hub_id(source):
        raise FileNotFoundError(
            f"Tokenizer folder {source!r} does not exist (and it is not a Hub id of the form 'owner/name'): pass "
            "--tokenizer_name with an existing folder or a Hub id."
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **from_pretrained_kwargs)
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"Cannot load a tokenizer from {source!r}: there is no local folder of that name, and the Hub did not "
            f"provide it ({reason}). Offline or without Hub access, pass --tokenizer_name with a local folder that "
            f"holds the tokenizer files (save it once where the Hub is reachable: "
            f"AutoTokenizer.from_pretrained({source!r}).save_pretrained(DIR))."
        ) from err
    check_tokenizer(tokenizer, source)
    return tokenizer


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
        raise ValueError(f"block_size={block_size} must be at least 2 tokens.")
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
        raise ValueError(_no_block_message(split, raw[split], block_size, pack_batch_size, fn_kwargs))
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
    fixes = [f"a --block_size of at most {largest}"] if largest >= 2 else []
    if split == "validation":
        fixes.append(
            "more held-out text (a longer --validation_file, a larger --validation_split_percentage, or with "
            "--streaming a larger --validation_documents)"
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
