"""Data loading, offline tokenizer training and packing (hf_topo.data)."""

import json

import pytest
from datasets import Dataset, DatasetDict

from hf_topo.data import load_text_datasets, pack_into_blocks, train_bpe_tokenizer, write_python_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    return write_python_corpus(str(path), max_bytes=60_000)


def test_python_corpus_is_real_source(corpus):
    text = open(corpus, encoding="utf-8").read()
    assert 10_000 < len(text) <= 60_000
    assert "# file: " in text and "def " in text and "import " in text


def test_text_file_split_keeps_line_breaks_and_holds_out_validation(corpus):
    raw = load_text_datasets(train_file=corpus, validation_split_percentage=10)
    n_train, n_val = len(raw["train"]), len(raw["validation"])
    assert n_val > 0 and n_train > 8 * n_val
    rebuilt = "".join(raw["validation"]["text"]) + "".join(raw["train"]["text"])
    assert rebuilt == open(corpus, encoding="utf-8").read()


def test_packed_blocks_reproduce_the_text(corpus):
    raw = load_text_datasets(train_file=corpus, validation_split_percentage=10)
    tokenizer = train_bpe_tokenizer((t for t in raw["train"]["text"]), vocab_size=400)
    assert tokenizer.eos_token == "<|endoftext|>" and len(tokenizer) <= 400
    blocks = pack_into_blocks(raw, tokenizer, block_size=32, pack_batch_size=100_000)
    train = blocks["train"]
    assert all(len(ids) == 32 for ids in train["input_ids"]) and train["input_ids"] == train["labels"]
    # lines of one file: no EOS inserted, and the decoded blocks are a prefix of the original text
    flat = [t for ids in train["input_ids"] for t in ids]
    assert tokenizer.eos_token_id not in flat
    text = "".join(raw["train"]["text"])
    decoded = tokenizer.decode(flat)
    assert text.startswith(decoded) and len(decoded) > 0.9 * len(text)


def test_jsonl_documents_get_eos(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps({"content": f"document number {i} is here"}) for i in range(50)))
    raw = load_text_datasets(train_file=str(path), text_column="content", validation_split_percentage=10)
    tokenizer = train_bpe_tokenizer(raw["train"]["content"], vocab_size=300, min_frequency=1)
    blocks = pack_into_blocks(raw, tokenizer, block_size=8, text_column="content")
    flat = [t for ids in blocks["train"]["input_ids"] for t in ids]
    assert flat.count(tokenizer.eos_token_id) >= 30


def test_bad_data_arguments(tmp_path, corpus):
    with pytest.raises(ValueError, match="exactly one data source"):
        load_text_datasets()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_text_datasets(train_file=str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="no column 'body'"):
        load_text_datasets(train_file=corpus, text_column="body")
    with pytest.raises(ValueError, match="too small"):
        train_bpe_tokenizer(["abc"], vocab_size=100)
    bad = tmp_path / "data.parquet"
    bad.write_bytes(b"x")
    with pytest.raises(ValueError, match="Cannot tell the format"):
        load_text_datasets(train_file=str(bad))


# ---- bad data is refused before any training step -----------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return train_bpe_tokenizer([open(corpus, encoding="utf-8").read()], vocab_size=400)


def _text_splits(lines: list[str]) -> DatasetDict:
    return DatasetDict(train=Dataset.from_dict({"text": lines}), validation=Dataset.from_dict({"text": lines}))


def _n_tokens(tokenizer, texts) -> int:
    return sum(len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"])


def test_an_empty_file_is_refused_before_anything_else(tmp_path, corpus):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"train_file='.*empty\.txt' is empty \(0 bytes\)"):
        load_text_datasets(train_file=str(empty))
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n  \n\n")
    with pytest.raises(ValueError, match=r"blank\.jsonl' is empty \(5 bytes of whitespace only\)"):
        load_text_datasets(train_file=str(blank))
    with pytest.raises(ValueError, match=r"validation_file='.*empty\.txt' is empty"):
        load_text_datasets(train_file=corpus, validation_file=str(empty))
    unknown_format = tmp_path / "empty.parquet"  # emptiness is reported before the format is even looked at
    unknown_format.write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        load_text_datasets(train_file=str(unknown_format))


def test_a_corpus_too_short_to_hold_out_validation_says_so_and_how_to_fix_it(tmp_path):
    one = tmp_path / "one.txt"
    one.write_text("a single line of text\n")
    with pytest.raises(ValueError, match=r"validation split is empty: .*one\.txt has 1 line, .*5 %") as err:
        load_text_datasets(train_file=str(one))
    assert "validation_file=" in str(err.value) and "between" not in str(err.value)  # no percentage can work
    with pytest.raises(ValueError, match="training split is empty"):
        load_text_datasets(train_file=str(one), validation_split_percentage=99)
    held_out = tmp_path / "held_out.txt"
    held_out.write_text("another line\n")
    raw = load_text_datasets(train_file=str(one), validation_file=str(held_out))
    assert raw["train"]["text"] == ["a single line of text\n"] and raw["validation"]["text"] == ["another line\n"]

    two = tmp_path / "two.txt"
    two.write_text("first line\nsecond line\n")
    with pytest.raises(ValueError, match="validation_split_percentage= between 26 and 74"):
        load_text_datasets(train_file=str(two))
    raw = load_text_datasets(train_file=str(two), validation_split_percentage=26)
    assert raw["validation"]["text"] == ["first line\n"] and raw["train"]["text"] == ["second line\n"]
    with pytest.raises(ValueError, match="between 1 and 99"):
        load_text_datasets(train_file=str(two), validation_split_percentage=0)


@pytest.mark.parametrize("n_lines", [3, 19, 20, 41])
def test_held_out_lines_are_those_of_datasets_percent_slicing(tmp_path, n_lines):
    from datasets import load_dataset

    path = tmp_path / "lines.txt"
    path.write_text("".join(f"line {i}\n" for i in range(n_lines)))
    for pct in (5, 10, 34, 50):
        try:
            raw = load_text_datasets(train_file=str(path), validation_split_percentage=pct)
        except ValueError:
            with pytest.raises(ValueError, match="corresponds to no data"):  # datasets refuses the same splits
                for split in (f"train[:{pct}%]", f"train[{pct}%:]"):
                    load_dataset("text", data_files=str(path), split=split, keep_linebreaks=True)
            continue
        for name, split in (("validation", f"train[:{pct}%]"), ("train", f"train[{pct}%:]")):
            expected = load_dataset("text", data_files=str(path), split=split, keep_linebreaks=True)["text"]
            assert raw[name]["text"] == expected


def test_a_dataset_folder_too_short_to_hold_out_validation(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "data.txt").write_text("only one line\n")
    with pytest.raises(
        ValueError, match=r"training split is empty: .*corpus has 1 row, .* 1 for validation and 0 for training"
    ):
        load_text_datasets(dataset_name=str(folder))
    (folder / "data.txt").write_text("".join(f"row {i}\n" for i in range(30)))
    raw = load_text_datasets(dataset_name=str(folder), validation_split_percentage=10)
    assert raw["validation"]["text"] == [f"row {i}" for i in range(27, 30)]  # the last rows (train_test_split)


def test_block_size_larger_than_the_corpus_gives_tokens_block_size_and_fixes(tmp_path, tokenizer):
    train = tmp_path / "train.txt"
    train.write_text("def f(x):\n    return x + 1\n" * 5)
    raw = load_text_datasets(train_file=str(train), validation_file=str(train))
    n = _n_tokens(tokenizer, raw["train"]["text"])
    assert 20 < n < 200
    with pytest.raises(
        ValueError,
        match=rf"The train split yields no block of 1024 tokens: it has {n} tokens\. Fix: block_size= of at most {n}",
    ):
        pack_into_blocks(raw, tokenizer, block_size=1024)
    blocks = pack_into_blocks(raw, tokenizer, block_size=n)  # the largest block size that fits: exactly one block
    assert len(blocks["train"]) == 1 and len(blocks["validation"]) == 1


def test_a_validation_split_without_a_full_block_is_refused_right_after_packing(tmp_path, corpus, tokenizer):
    short = tmp_path / "short.txt"
    short.write_text("x = 1\n")
    raw = load_text_datasets(train_file=corpus, validation_file=str(short))
    n = _n_tokens(tokenizer, raw["validation"]["text"])
    with pytest.raises(ValueError, match=rf"validation split yields no block of 64 tokens: it has {n} tokens") as err:
        pack_into_blocks(raw, tokenizer, block_size=64)
    assert "validation_file=" in str(err.value) and "validation_split_percentage=" in str(err.value)
    # a stream is checked by reading up to its first block: a held-out part of 2 short documents has none
    stream = load_text_datasets(train_file=corpus, streaming=True, validation_documents=2)
    with pytest.raises(ValueError, match="validation split yields no block of 64 tokens.*validation_documents="):
        pack_into_blocks(stream, tokenizer, block_size=64)
    packed = pack_into_blocks(
        load_text_datasets(train_file=corpus, streaming=True, validation_documents=200), tokenizer, 64
    )
    assert len(next(iter(packed["validation"]))["input_ids"]) == 64


def test_tail_dropped_per_batch_is_named_when_the_text_is_long_enough(tmp_path, tokenizer):
    path = tmp_path / "lines.txt"
    path.write_text("".join(f"x{i} = {i}\n" for i in range(40)))
    raw = load_text_datasets(train_file=str(path), validation_file=str(path))
    n = _n_tokens(tokenizer, raw["train"]["text"])
    with pytest.raises(ValueError, match=rf"it has {n} tokens, but at most \d+ in one batch of 4 examples"):
        pack_into_blocks(raw, tokenizer, block_size=n // 2, pack_batch_size=4)


# ---- tokenizers ---------------------------------------------------------------------------------------------------


@pytest.fixture
def model_without_tokenizer(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path / "model"
    config = GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def test_a_model_folder_without_tokenizer_files_is_refused(model_without_tokenizer, tokenizer):
    from transformers import AutoTokenizer

    from hf_topo.loading import check_tokenizer, load_tokenizer

    with pytest.raises(ValueError, match=r"has no tokenizer: none of tokenizer\.json, .*tokenizer_name="):
        load_tokenizer(model_without_tokenizer)
    assert load_tokenizer(model_without_tokenizer, fallback=tokenizer) is tokenizer
    # what transformers builds from such a folder: an "empty" tokenizer that encodes every text to nothing
    empty = AutoTokenizer.from_pretrained(model_without_tokenizer)
    assert empty("The cat sat.", add_special_tokens=False)["input_ids"] == []
    with pytest.raises(ValueError, match=r"encodes 'The cat sat on the mat\.' to no token.*tokenizer_name="):
        check_tokenizer(empty)
    with pytest.raises(ValueError, match="to no token"):
        pack_into_blocks(_text_splits(["some text\n"] * 4), empty, block_size=2)
    with pytest.raises(TypeError, match="Expected a transformers tokenizer"):
        check_tokenizer("gpt2")


def test_load_tokenizer_from_a_folder_and_clear_errors_offline(tmp_path, tokenizer):
    from hf_topo.loading import load_tokenizer

    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = load_tokenizer(tmp_path / "tok")
    text = "import os\nprint(os.getcwd())\n"
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    with pytest.raises(ValueError, match=r"Cannot load a tokenizer from 'openai-community/gpt2'.*tokenizer_name="):
        load_tokenizer("openai-community/gpt2")  # HF_HUB_OFFLINE=1 and not cached
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"is a file; .*tokenizer_name='"):
        load_tokenizer(tmp_path / "tok" / "tokenizer.json")
