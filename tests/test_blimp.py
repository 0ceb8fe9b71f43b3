"""BLiMP evaluation (hf_topo.blimp): convention, batching, loaders, callback, script and bad input."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from hf_topo import TopoTrainer, TopoTrainingArguments
from hf_topo.blimp import BLIMP_PARADIGMS, BlimpCallback, SentenceScorer, evaluate_blimp, load_blimp
from hf_topo.data import train_bpe_tokenizer

ROOT = Path(__file__).resolve().parents[1]
NOUNS = ["cat", "dog", "teacher", "senator", "child", "girl", "boy", "doctor"]
VERBS = ["sees", "likes", "helps", "visits"]


def _pairs(kind: str, n: int):
    pairs = []
    for i in range(n):
        a, b, v = NOUNS[i % 8], NOUNS[(i * 3 + 1) % 8], VERBS[i % 4]
        if kind == "agreement":
            pairs.append((f"The {a} {v} the {b}.", f"The {a}s {v} the {b}."))
        else:
            pairs.append((f"Every {a} {v} a {b} today.", f"Every {a} {v} a {b} yesterday tomorrow."))
    return pairs


@pytest.fixture(scope="module")
def blimp_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("blimp")
    specs = {
        "determiner_noun_agreement_1": (
            "morphology",
            "determiner_noun_agreement",
            "agreement",
            {"one_prefix_method": True},
        ),
        "principle_A_c_command": ("syntax_semantics", "binding", "other", {"two_prefix_word": "x"}),
        "npi_present_1": ("semantics", "npi_licensing", "agreement", {}),
    }
    for uid, (field, term, kind, extra) in specs.items():
        rows = [
            {
                "sentence_good": g,
                "sentence_bad": b,
                "field": field,
                "linguistics_term": term,
                "UID": uid,
                "pairID": str(i),
            }
            | extra
            for i, (g, b) in enumerate(_pairs(kind, 12))
        ]
        if uid == "npi_present_1":
            rows[0]["sentence_bad"] = rows[0]["sentence_good"]  # a tie: counts as correct
        (root / f"{uid}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


@pytest.fixture(scope="module")
def lm():
    text = [g + " " + b for kind in ("agreement", "other") for g, b in _pairs(kind, 40)]
    tokenizer = train_bpe_tokenizer(text * 5, vocab_size=300, min_frequency=1)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2)
    config.bos_token_id = config.eos_token_id = tokenizer.eos_token_id
    return GPT2LMHeadModel(config).eval(), tokenizer


def _reference_score(model, tokenizer, sentence: str) -> float:
    """One sentence at a time, float64 log-softmax, no padding: the convention written out independently."""
    ids = [tokenizer.bos_token_id] + tokenizer.encode(" " + sentence, add_special_tokens=False)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(logprobs[t, ids[t + 1]].item() for t in range(len(ids) - 1))


def test_scores_and_decisions_match_an_independent_scorer(lm, blimp_dir):
    model, tokenizer = lm
    data = load_blimp(blimp_dir=blimp_dir)
    results = evaluate_blimp(model, tokenizer, data=data, batch_size=7, progress=False)
    for paradigm in data:
        decisions = [
            _reference_score(model, tokenizer, g) >= _reference_score(model, tokenizer, b) for g, b in paradigm.pairs
        ]
        assert results.paradigms[paradigm.uid] == pytest.approx(sum(decisions) / len(decisions))
    assert results.overall == pytest.approx(sum(results.paradigms.values()) / 3)
    assert results.fields == {
        k: results.paradigms[u]
        for k, u in [
            ("morphology", "determiner_noun_agreement_1"),
            ("semantics", "npi_present_1"),
            ("syntax_semantics", "principle_A_c_command"),
        ]
    }
    assert results.n_pairs == {p.uid: 12 for p in data}

    sentences = [s for p in data for pair in p.pairs for s in pair]
    batched = SentenceScorer(model, tokenizer, batch_size=64).score(sentences, progress=False)
    single = SentenceScorer(model, tokenizer, batch_size=1).score(sentences, progress=False)
    reference = [_reference_score(model, tokenizer, s) for s in sentences]
    assert max(abs(a - b) for a, b in zip(batched, single, strict=True)) <= 1e-5
    assert max(abs(a - b) for a, b in zip(batched, reference, strict=True)) <= 1e-4


def test_ties_count_as_correct(lm, blimp_dir):
    model, tokenizer = lm
    data = load_blimp(blimp_dir=blimp_dir, paradigms=["npi_present_1"], limit=1)
    assert data[0].pairs[0][0] == data[0].pairs[0][1]
    assert evaluate_blimp(model, tokenizer, data=data, progress=False).overall == 1.0


def test_results_json_and_markdown(lm, blimp_dir, tmp_path):
    model, tokenizer = lm
    results = evaluate_blimp(
        model, tokenizer, blimp_dir=blimp_dir, paradigms="principle_A_c_command,npi_present_1", limit=5, progress=False
    )
    results.to_json(tmp_path / "r.json")
    saved = json.loads((tmp_path / "r.json").read_text())
    assert {"overall", "paradigms", "fields", "terms", "n_pairs", "model", "convention"} <= set(saved)
    assert (
        saved["n_pairs"] == {"principle_A_c_command": 5, "npi_present_1": 5}
        and "lm-evaluation-harness" in saved["convention"]
    )
    assert "| principle_A_c_command |" in results.to_markdown()


def test_hub_loader_reads_one_config_per_paradigm(blimp_dir, tmp_path):
    # The Hub path is `load_dataset(dataset, paradigm, split="train")`; a local dataset repository with one config per
    # paradigm (declared in its README, like nyu-mll/blimp) runs that exact call offline.
    repo = tmp_path / "blimp_repo"
    repo.mkdir()
    uids = ["determiner_noun_agreement_1", "principle_A_c_command"]
    configs = "".join(f"- config_name: {u}\n  data_files:\n  - split: train\n    path: {u}.jsonl\n" for u in uids)
    (repo / "README.md").write_text(f"---\nconfigs:\n{configs}---\n")
    for u in uids:
        (repo / f"{u}.jsonl").write_text((blimp_dir / f"{u}.jsonl").read_text())
    hub = load_blimp(dataset=str(repo), paradigms=uids, limit=4)
    local = load_blimp(blimp_dir=blimp_dir, paradigms=uids, limit=4)
    assert [(p.uid, p.field, p.pairs) for p in hub] == [(p.uid, p.field, p.pairs) for p in local]
    assert len(BLIMP_PARADIGMS) == 67


def test_bad_input(lm, blimp_dir, tmp_path):
    model, tokenizer = lm
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_blimp(blimp_dir=tmp_path / "nowhere")
    with pytest.raises(
        ValueError,
        match=r"Unknown BLiMP paradigm\(s\) \['island'\].*Available: determiner_noun_agreement_1, npi_present_1",
    ):
        load_blimp(blimp_dir=blimp_dir, paradigms=["island"])
    with pytest.raises(ValueError, match="Unknown BLiMP paradigm.*adjunct_island"):
        load_blimp(dataset="nyu-mll/blimp", paradigms=["island"])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "passive_1.jsonl").write_text('{"sentence_good": "A.", "sentence_bad": "B."}\n{"sentence_good": "A.", \n')
    with pytest.raises(ValueError, match=r"passive_1.jsonl, line 2: not valid JSON"):
        load_blimp(blimp_dir=bad)
    (bad / "passive_1.jsonl").write_text('{"sentence_good": "A."}\n')
    with pytest.raises(ValueError, match=r"line 1: expected an object with string 'sentence_good' and 'sentence_bad'"):
        load_blimp(blimp_dir=bad)
    with pytest.raises(ValueError, match="selection is empty"):
        load_blimp(blimp_dir=blimp_dir, paradigms=[" "])
    with pytest.raises(ValueError, match="selects no pairs"):
        load_blimp(blimp_dir=blimp_dir, limit=0)
    with pytest.raises(ValueError, match="No .jsonl files"):
        load_blimp(blimp_dir=tmp_path)
    with pytest.raises(ValueError, match="exactly one BLiMP source"):
        load_blimp()
    bare = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer)
    with pytest.raises(ValueError, match="neither a BOS nor an EOS.*prefix_token_id"):
        SentenceScorer(model, bare)
    assert SentenceScorer(model, bare, prefix_token_id=5).prefix_token_id == 5


def test_eval_blimp_command_refuses_bad_input_before_scoring(lm, blimp_dir, tmp_path):
    """`hf-topo eval-blimp` with a --blimp_dir without .jsonl files, a paradigm that does not exist (the error lists
    the available ones), a model folder without weights or missing, or a folder as --output: an error before any
    sentence is scored, and no results file."""
    from hf_topo.cli import eval_blimp

    model, tokenizer = lm
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    weightless = tmp_path / "weightless"
    weightless.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (weightless / name).write_bytes((tmp_path / "model" / name).read_bytes())
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.md").write_text("BLiMP goes here\n")
    out = tmp_path / "results.json"
    available = "determiner_noun_agreement_1, npi_present_1, principle_A_c_command"
    cases = [
        (["--blimp_dir", str(tmp_path / "notes")], ValueError, "No .jsonl files in .*notes"),
        (["--paradigms", "principle_A"], ValueError, rf"Unknown BLiMP paradigm\(s\) \['principle_A'\].*{available}"),
        (["--model", str(weightless)], ValueError, "has a config.json but no weights"),
        (["--model", str(tmp_path / "missing")], FileNotFoundError, "missing' does not exist"),
        (["--output", str(tmp_path / "notes")], ValueError, "is a folder; give a file"),
    ]
    for change, error, message in cases:
        argv = {"--model": str(tmp_path / "model"), "--blimp_dir": str(blimp_dir), "--output": str(out)}
        argv.update(dict(zip(change[::2], change[1::2], strict=True)))
        with pytest.raises(error, match=message):
            eval_blimp.main([item for pair in argv.items() for item in pair])
        assert not out.exists(), change


def test_callback_logs_blimp_during_training(lm, blimp_dir, tmp_path):
    model, tokenizer = lm
    ids = torch.randint(0, len(tokenizer), (16, 16), generator=torch.Generator().manual_seed(0)).tolist()
    data = Dataset.from_dict({"input_ids": ids, "labels": ids})
    args = TopoTrainingArguments(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, eval_strategy="steps", eval_steps=2,
        report_to=[], use_cpu=True, save_strategy="no", tau=1.0, disable_tqdm=True,
    )  # fmt: skip
    trainer = TopoTrainer(model=model, args=args, train_dataset=data, eval_dataset=data, processing_class=tokenizer)
    callback = BlimpCallback(
        trainer, blimp_dir=blimp_dir, paradigms=["determiner_noun_agreement_1", "npi_present_1"], limit=6
    )
    trainer.add_callback(callback)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "blimp/overall" in h]
    assert len(logged) == 1 and logged[0]["step"] == 2
    assert logged[0]["blimp/overall"] == pytest.approx(callback.last_results.overall)
    assert {"blimp/morphology", "blimp/semantics"} <= set(logged[0])
    assert not math.isnan(logged[0]["blimp/overall"])


@pytest.mark.slow
def test_eval_blimp_script(lm, blimp_dir, tmp_path):
    model, tokenizer = lm
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    out = tmp_path / "results.json"
    cmd = [
        sys.executable,
        "-m",
        "hf_topo.cli",
        "eval-blimp",
        "--model",
        str(tmp_path / "model"),
        "--blimp_dir",
        str(blimp_dir),
    ]
    cmd += ["--paradigms", "principle_A_c_command", "--limit", "8", "--batch_size", "3", "--output", str(out)]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    saved = json.loads(out.read_text())
    expected = evaluate_blimp(
        model, tokenizer, blimp_dir=blimp_dir, paradigms=["principle_A_c_command"], limit=8, progress=False
    )
    assert saved["paradigms"] == expected.paradigms and saved["n_pairs"] == {"principle_A_c_command": 8}
    assert out.with_suffix(".md").exists() and "overall accuracy" in result.stdout


def test_bfloat16_on_request(lm, blimp_dir):
    model, tokenizer = lm
    sentences = [s for p in load_blimp(blimp_dir=blimp_dir, limit=4) for pair in p.pairs for s in pair]
    full = SentenceScorer(model, tokenizer).score(sentences, progress=False)
    half = SentenceScorer(model, tokenizer, dtype="bfloat16").score(sentences, progress=False)
    assert full != half  # the forward really ran in bfloat16 ...
    assert max(abs(a - b) / abs(a) for a, b in zip(full, half, strict=True)) < 0.05  # ... and stays close
    assert next(model.parameters()).dtype == torch.float32  # the model itself is untouched
    with pytest.raises(ValueError, match="dtype='float16' is not supported"):
        SentenceScorer(model, tokenizer, dtype="float16")


# ---- a tokenizer that cannot encode is an error, never a tie -------------------------------------------------------


def _forward_counter(model):
    calls = []
    handle = model.register_forward_hook(lambda *args: calls.append(1))
    return calls, handle


def test_model_folder_without_tokenizer_is_refused_before_scoring(lm, blimp_dir, tmp_path):
    model, tokenizer = lm
    model.save_pretrained(tmp_path / "model")  # no tokenizer files: AutoTokenizer would build an empty tokenizer
    with pytest.raises(ValueError, match=r"model has no tokenizer: none of tokenizer\.json.*--tokenizer_name"):
        evaluate_blimp(str(tmp_path / "model"), blimp_dir=blimp_dir, progress=False)
    # with the tokenizer named (a folder, as --tokenizer_name gives it), the numbers are those of the objects
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    by_path = evaluate_blimp(
        str(tmp_path / "model"), str(tmp_path / "tokenizer"), blimp_dir=blimp_dir, limit=6, progress=False
    )
    by_object = evaluate_blimp(model, tokenizer, blimp_dir=blimp_dir, limit=6, progress=False)
    assert by_path.paradigms == by_object.paradigms

    from transformers import AutoTokenizer

    empty = AutoTokenizer.from_pretrained(tmp_path / "model")  # what the old code scored with: accuracy 1.0
    calls, handle = _forward_counter(model)
    try:
        with pytest.raises(ValueError, match=r"encodes 'The cat sat on the mat\.' to no token"):
            evaluate_blimp(model, empty, blimp_dir=blimp_dir, progress=False)
    finally:
        handle.remove()
    assert calls == []


def test_a_sentence_that_encodes_to_no_token_is_an_error_naming_it(lm, tmp_path):
    from tokenizers import Regex, normalizers

    model, tokenizer = lm
    # A real tokenizer that drops digits: a sentence of digits encodes to nothing.
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer.backend_tokenizer.__class__.from_str(tokenizer.backend_tokenizer.to_str()),
        bos_token=tokenizer.bos_token,
        eos_token=tokenizer.eos_token,
    )
    tokenizer.backend_tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Replace(Regex(r"\d"), ""), normalizers.Strip()]
    )
    assert tokenizer(" 2024 1999", add_special_tokens=False)["input_ids"] == []
    folder = tmp_path / "blimp"
    folder.mkdir()
    rows = [
        {"sentence_good": "The cat sees the dog.", "sentence_bad": s} for s in ("The cats sees the dog.", "2024 1999")
    ]
    (folder / "passive_1.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    calls, handle = _forward_counter(model)
    try:
        with pytest.raises(ValueError, match=r"1 sentence\(s\) encode to no token .* e\.g\. '2024 1999'.*tie"):
            evaluate_blimp(model, tokenizer, blimp_dir=folder, progress=False)
    finally:
        handle.remove()
    assert calls == []  # refused before the model ran


def test_an_empty_sentence_is_refused_when_loading(tmp_path):
    folder = tmp_path / "blimp"
    folder.mkdir()
    (folder / "passive_1.jsonl").write_text(
        json.dumps({"sentence_good": "A cat sleeps.", "sentence_bad": "A cat sleep."})
        + "\n"
        + json.dumps({"sentence_good": "A dog runs.", "sentence_bad": "  "})
        + "\n"
    )
    with pytest.raises(ValueError, match=r"passive_1\.jsonl, line 2: sentence_bad is empty"):
        load_blimp(blimp_dir=folder)
