"""Data loading, offline tokenizer training and packing (hf_topo.data)."""

import json

import pytest

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
