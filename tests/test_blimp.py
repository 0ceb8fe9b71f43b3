"""BLiMP evaluation (hf_topo.blimp): convention, batching, loaders, callback, script and bad input."""

import copy
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import build_causal_lm
from datasets import Dataset
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from hf_topo import TopoTrainer, TopoTrainingArguments
from hf_topo.blimp import (
    BLIMP_PARADIGMS,
    LM_EVAL_TASKS_DIR,
    BlimpCallback,
    PrefixTrie,
    SentenceScorer,
    accuracy_stderr,
    evaluate_blimp,
    load_blimp,
    write_lm_eval_tasks,
)
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


def _reference_score(model, tokenizer, sentence: str, start: int = 1) -> float:
    """One sentence at a time, float64 log-softmax, no padding: the convention written out independently (the sum
    over the tokens at positions >= ``start`` of BOS + the sentence's tokens)."""
    ids = [tokenizer.bos_token_id] + tokenizer.encode(" " + sentence, add_special_tokens=False)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(logprobs[t - 1, ids[t]].item() for t in range(max(start, 1), len(ids)))


@pytest.fixture(scope="module")
def reference(lm, blimp_dir):
    """The independent float64 score of every sentence of the test paradigms."""
    model, tokenizer = lm
    sentences = dict.fromkeys(s for p in load_blimp(blimp_dir=blimp_dir) for pair in p.pairs for s in pair)
    return {s: _reference_score(model, tokenizer, s) for s in sentences}


def test_scores_and_decisions_match_an_independent_scorer(lm, blimp_dir, reference):
    model, tokenizer = lm
    data = load_blimp(blimp_dir=blimp_dir)
    results = evaluate_blimp(model, tokenizer, data=data, batch_size=7, progress=False)
    for paradigm in data:
        decisions = [reference[g] >= reference[b] for g, b in paradigm.pairs]
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
    assert max(abs(a - b) for a, b in zip(batched, single, strict=True)) <= 1e-5
    assert max(abs(a - reference[s]) for a, s in zip(batched, sentences, strict=True)) <= 1e-4


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
    model = copy.deepcopy(model)  # training changes the weights; the module's model (and its reference scores) stay
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
    cmd += ["--lm_eval_tasks", str(tmp_path / "tasks")]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    saved = json.loads(out.read_text())
    expected = evaluate_blimp(
        model, tokenizer, blimp_dir=blimp_dir, paradigms=["principle_A_c_command"], limit=8, progress=False
    )
    assert saved["paradigms"] == expected.paradigms and saved["n_pairs"] == {"principle_A_c_command": 8}
    assert out.with_suffix(".md").exists() and "overall accuracy" in result.stdout
    harness_shaped = json.loads((tmp_path / "results.lm_eval.json").read_text())["results"]
    assert harness_shaped["blimp_principle_A_c_command"] == {
        "alias": " - blimp_principle_A_c_command",
        "acc,none": expected.paradigms["principle_A_c_command"],
        "acc_stderr,none": expected.paradigm_stderrs["principle_A_c_command"],
    }
    assert saved["decisions"] == expected.decisions
    task = (tmp_path / "tasks" / "hftopo_blimp_principle_A_c_command.yaml").read_text()
    assert str((blimp_dir / "principle_A_c_command.jsonl").resolve().as_posix()) in task


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
    with pytest.raises(ValueError, match=r"model has no tokenizer: none of tokenizer\.json.*tokenizer_name="):
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


# ---- prefix sharing: the same numbers as scoring every sentence alone --------------------------------------------


def test_prefix_trie_numbers_each_distinct_prefix_once_in_pre_order():
    sequences = [[0, 5, 6, 7], [0, 5, 6, 8, 9], [0, 4], [0, 5, 6, 7], [0, 5]]
    trie = PrefixTrie.build(sequences)
    distinct = {tuple(s[:i]) for s in sequences for i in range(1, len(s) + 1)}
    assert len(trie) == len(distinct) == 7
    for index, seq in enumerate(sequences):  # the path of a sequence's end node spells the sequence
        path = [*trie.ancestors(int(trie.ends[index])), int(trie.ends[index])]
        assert trie.tokens[path].tolist() == seq and trie.depths[path].tolist() == list(range(len(seq)))
    assert all(trie.parents[n] < n for n in range(1, len(trie)))  # pre-order: a parent before its children
    assert trie.ends[0] == trie.ends[3]  # a duplicate shares every node
    values = torch.arange(len(trie), dtype=torch.float64).numpy()
    sums = trie.path_sums(values)
    assert sums[trie.ends[1]] == sum(values[[*trie.ancestors(int(trie.ends[1])), int(trie.ends[1])]])


@pytest.mark.parametrize("batch_size,row_tokens,limit", [(64, 128, None), (5, 8, 4), (1, 2, 2)])
def test_shared_prefix_scores_equal_unshared_and_float64_reference(
    lm, blimp_dir, reference, batch_size, row_tokens, limit
):
    """Rows of 8 tokens cut the tree mid-sentence (their ancestors repeated); batch 1 is one sentence per forward."""
    model, tokenizer = lm
    sentences = [s for p in load_blimp(blimp_dir=blimp_dir, limit=limit) for pair in p.pairs for s in pair]
    shared = SentenceScorer(model, tokenizer, batch_size=batch_size, row_tokens=row_tokens)
    scores = shared.score(sentences, progress=False)
    assert shared.share_prefixes  # the self-check accepted GPT-2's tree forward
    unshared = SentenceScorer(model, tokenizer, batch_size=batch_size, share_prefixes=False).score(
        sentences, progress=False
    )
    assert max(abs(a - b) for a, b in zip(scores, unshared, strict=True)) <= 5e-5  # float32 sums of ~60 nats
    assert max(abs(a - reference[s]) for a, s in zip(scores, sentences, strict=True)) <= 1e-4
    stats = shared.last_stats
    if row_tokens == 128:  # less work than one sentence per row (8-token rows repeat more than they share)
        assert stats["tokens_run"] < stats["tokens_unshared"]


@pytest.mark.parametrize("family", ["llama", "gpt_neox", "gpt_neo"])
def test_shared_prefix_scores_of_other_families(family, blimp_dir, lm):
    """Rotary models take their positions from position_ids, GPT-Neo has local-attention layers: whether the tree
    forward is used (Llama, NeoX) or refused by the self-check, the scores are those of the unshared forward."""
    _, tokenizer = lm
    sentences = [s for p in load_blimp(blimp_dir=blimp_dir, limit=5) for pair in p.pairs for s in pair]
    model = build_causal_lm(family, vocab_size=len(tokenizer)).eval()
    shared = SentenceScorer(model, tokenizer, batch_size=6, row_tokens=16)
    scores = shared.score(sentences, progress=False)
    assert shared.share_prefixes == (family != "gpt_neo")
    unshared = SentenceScorer(model, tokenizer, share_prefixes=False).score(sentences, progress=False)
    assert max(abs(a - b) for a, b in zip(scores, unshared, strict=True)) <= 1e-4
    if family != "gpt_neo":  # the head ran only where a distribution is read (base model + get_output_embeddings)
        assert shared.last_stats["head_positions_run"] == shared.last_stats["head_positions_read"]
        assert shared.last_stats["head_positions_read"] < shared.last_stats["tokens_run"]


def _head_rows(model) -> list[int]:
    """A forward hook on the output layer that records how many positions each call computes."""
    calls: list[int] = []
    model.get_output_embeddings().register_forward_hook(lambda m, args, out: calls.append(args[0].shape[:-1].numel()))
    return calls


def test_lm_head_runs_only_where_a_next_token_is_scored(lm, blimp_dir, reference):
    """One row holds the whole tree: the head runs once per node that has a child (the distinct proper prefixes of
    the sequences), not at the leaves or padding; the scores stay those of the float64 reference."""
    _, tokenizer = lm
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=512, n_embd=32, n_layer=2, n_head=2)
    model = GPT2LMHeadModel(config).eval()
    sentences = [s for p in load_blimp(blimp_dir=blimp_dir, limit=3) for pair in p.pairs for s in pair]
    scorer = SentenceScorer(model, tokenizer, batch_size=64, row_tokens=512)
    scorer.score(sentences[:2], progress=False)  # the self-checks (they call the model on their own)
    calls = _head_rows(model)
    gathered = scorer.score(sentences, progress=False)
    sequences = scorer.encode(list(dict.fromkeys(sentences)))
    with_a_child = {tuple(seq[:i]) for seq in sequences for i in range(1, len(seq))}
    stats = scorer.last_stats
    assert stats["forwards"] == 1 and stats["tokens_run"] == len(
        {tuple(q[:i]) for q in sequences for i in range(1, len(q) + 1)}
    )
    assert sum(calls) == stats["head_positions_run"] == stats["head_positions_read"] == len(with_a_child)
    calls.clear()
    full_scorer = SentenceScorer(model, tokenizer, batch_size=64, row_tokens=512, gather_head=False)
    full = full_scorer.score(sentences, progress=False)
    assert sum(calls) >= full_scorer.last_stats["head_positions_run"] >= stats["tokens_run"] > len(with_a_child)
    assert max(abs(a - b) for a, b in zip(gathered, full, strict=True)) <= 2e-5
    unshared = SentenceScorer(model, tokenizer, share_prefixes=False).score(sentences, progress=False)
    assert max(abs(a - b) for a, b in zip(gathered, unshared, strict=True)) <= 5e-5


def test_pair_scores_skip_the_shared_prefix_and_keep_every_difference(lm, blimp_dir, reference):
    """score_pairs counts each pair from its first differing token: the values are the float64 reference's sums over
    those tokens (so good - bad is the whole sentences'), and the head reads fewer positions than for whole sentences."""
    model, tokenizer = lm
    pairs = [pair for p in load_blimp(blimp_dir=blimp_dir) for pair in p.pairs]
    pairs.append((pairs[0][0], pairs[0][0] + " Yes."))  # one sentence a prefix of the other
    scorer = SentenceScorer(model, tokenizer, batch_size=16, row_tokens=32)
    scorer.score([s for pair in pairs for s in pair], progress=False)
    whole_read = scorer.last_stats["head_positions_read"]
    pair_scores = scorer.score_pairs(pairs, progress=False)
    assert scorer.last_stats["head_positions_read"] < whole_read
    reference[pairs[-1][1]] = _reference_score(model, tokenizer, pairs[-1][1])
    for (good, bad), (g, b) in zip(pairs, pair_scores, strict=True):
        assert abs((g - b) - (reference[good] - reference[bad])) <= 1e-4
        ids_g, ids_b = scorer.encode([good, bad])
        d = next((k for k in range(min(len(ids_g), len(ids_b))) if ids_g[k] != ids_b[k]), min(len(ids_g), len(ids_b)))
        assert abs(g - _reference_score(model, tokenizer, good, start=d)) <= 1e-4
        assert abs(b - _reference_score(model, tokenizer, bad, start=d)) <= 1e-4
    assert any(good == bad for good, bad in pairs) and all(
        g == b == 0.0 for (x, y), (g, b) in zip(pairs, pair_scores, strict=True) if x == y
    )
    assert pair_scores[-1][0] == 0.0 and pair_scores[-1][1] < 0  # the shorter sentence has no token left
    unshared = SentenceScorer(model, tokenizer, share_prefixes=False)
    expected = [tuple(unshared.score(list(p), progress=False)) for p in pairs[:3]]
    assert unshared.score_pairs(pairs[:3], progress=False) == expected  # without sharing: whole sentences


class _ScaledLogitsLM(GPT2LMHeadModel):
    """GPT-2 whose logits are twice its output layer's (like a soft-capped or logit-scaled head)."""

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.logits = out.logits * 2
        return out


def test_a_head_that_is_not_the_whole_logit_computation_gets_full_logits(lm, blimp_dir, caplog):
    _, tokenizer = lm
    torch.manual_seed(0)
    model = _ScaledLogitsLM(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2))
    sentences = [s for p in load_blimp(blimp_dir=blimp_dir, limit=3) for pair in p.pairs for s in pair]
    scorer = SentenceScorer(model.eval(), tokenizer, batch_size=8, row_tokens=32)
    with caplog.at_level("INFO", logger="hf_topo.blimp.scoring"):
        scores = scorer.score(sentences, progress=False)
    assert "computing the full logits at every position" in caplog.text
    assert scorer.share_prefixes and scorer.last_stats["head_positions_run"] > scorer.last_stats["head_positions_read"]
    unshared = SentenceScorer(model, tokenizer, share_prefixes=False).score(sentences, progress=False)
    assert max(abs(a - b) for a, b in zip(scores, unshared, strict=True)) <= 5e-5


class _NoTreeLM(torch.nn.Module):
    """A causal LM that ignores attention masks and positions (a user's own model): it cannot score a prefix tree."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.config = inner, inner.config

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        return self.inner(input_ids=input_ids)


def test_a_model_that_cannot_score_a_tree_falls_back_to_unshared(lm, blimp_dir, caplog):
    model, tokenizer = lm
    data = load_blimp(blimp_dir=blimp_dir, limit=6)
    with caplog.at_level("WARNING", logger="hf_topo.blimp.scoring"):
        results = evaluate_blimp(_NoTreeLM(model), tokenizer, data=data, progress=False)
    assert "does not score a prefix tree like separate sentences" in caplog.text
    assert results.extra["share_prefixes"] is False
    assert results.paradigms == evaluate_blimp(model, tokenizer, data=data, progress=False).paradigms


def test_near_ties_are_rescored_sentence_by_sentence(lm, blimp_dir):
    model, tokenizer = lm
    data = load_blimp(blimp_dir=blimp_dir)
    every = evaluate_blimp(model, tokenizer, data=data, tie_tolerance=1e9, progress=False)  # every pair rescored
    distinct_pairs = sum(g != b for p in data for g, b in p.pairs)
    assert every.extra["near_ties_rescored"] == distinct_pairs
    unshared = evaluate_blimp(model, tokenizer, data=data, share_prefixes=False, progress=False)
    assert every.paradigms == unshared.paradigms and unshared.extra["near_ties_rescored"] == 0
    default = evaluate_blimp(model, tokenizer, data=data, progress=False)
    assert default.paradigms == unshared.paradigms and default.extra["tokens_run"] < default.extra["tokens_unshared"]
    with pytest.raises(ValueError, match="tie_tolerance=-1 must be >= 0"):
        evaluate_blimp(model, tokenizer, data=data, tie_tolerance=-1, progress=False)
    with pytest.raises(ValueError, match="row_tokens=1 must be >= 2"):
        SentenceScorer(model, tokenizer, row_tokens=1)


# ---- standard errors and lm-evaluation-harness interoperability ---------------------------------------------------


def test_standard_errors_and_lm_eval_results_shape(lm, blimp_dir, reference, tmp_path):
    model, tokenizer = lm
    data = load_blimp(blimp_dir=blimp_dir)
    results = evaluate_blimp(model, tokenizer, data=data, progress=False)
    for paradigm in data:  # the harness's mean_stderr: sample standard deviation (n - 1) / sqrt(n)
        outcomes = [float(reference[g] >= reference[b]) for g, b in paradigm.pairs]
        expected = statistics.stdev(outcomes) / math.sqrt(len(outcomes))
        assert results.paradigm_stderrs[paradigm.uid] == pytest.approx(expected, abs=1e-12)
    k = len(data)
    assert results.overall_stderr == pytest.approx(math.sqrt(sum(s**2 for s in results.paradigm_stderrs.values())) / k)
    assert results.field_stderrs["morphology"] == pytest.approx(
        results.paradigm_stderrs["determiner_noun_agreement_1"]
    )
    assert accuracy_stderr(1.0, 12) == 0.0 and math.isnan(accuracy_stderr(1.0, 1))

    results.to_lm_eval_json(tmp_path / "r.lm_eval.json")
    saved = json.loads((tmp_path / "r.lm_eval.json").read_text())
    for uid, accuracy in results.paradigms.items():
        row = saved["results"][f"blimp_{uid}"]
        assert row["acc,none"] == accuracy and row["acc_stderr,none"] == results.paradigm_stderrs[uid]
        assert saved["n-samples"][f"blimp_{uid}"] == {"original": 12, "effective": 12}
        assert saved["versions"][f"blimp_{uid}"] == 1.0 and saved["n-shot"][f"blimp_{uid}"] == 0
    assert saved["results"]["blimp"]["acc,none"] == results.overall
    assert "± stderr" in results.to_markdown()


def test_shipped_lm_eval_task_yamls(tmp_path, blimp_dir):
    """The shipped yamls are the harness's blimp template (copied here from lm-eval 0.4.13's ``_template_yaml``)
    with our task names, and exactly what write_lm_eval_tasks writes (so they cannot drift)."""
    import yaml

    harness_template = {
        "output_type": "multiple_choice",
        "validation_split": "train",
        "doc_to_text": "",
        "doc_to_target": 0,
        "doc_to_choice": "{{[sentence_good, sentence_bad]}}",
        "num_fewshot": 0,
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }
    shipped = sorted(LM_EVAL_TASKS_DIR.glob("*.yaml"))
    assert len(shipped) == 68  # 67 paradigms and the group
    for uid in BLIMP_PARADIGMS:
        task = yaml.safe_load((LM_EVAL_TASKS_DIR / f"hftopo_blimp_{uid}.yaml").read_text())
        assert (
            task
            == {"task": f"hftopo_blimp_{uid}", "dataset_path": "nyu-mll/blimp", "dataset_name": uid} | harness_template
        )
    group = yaml.safe_load((LM_EVAL_TASKS_DIR / "_hftopo_blimp.yaml").read_text())
    assert group["group"] == "hftopo_blimp" and group["task"] == [f"hftopo_blimp_{u}" for u in BLIMP_PARADIGMS]
    assert group["aggregate_metric_list"] == [{"metric": "acc", "aggregation": "mean", "weight_by_size": False}]
    write_lm_eval_tasks(tmp_path / "hub")
    assert {p.name: p.read_text() for p in (tmp_path / "hub").iterdir()} == {p.name: p.read_text() for p in shipped}

    names = write_lm_eval_tasks(tmp_path / "local", blimp_dir=blimp_dir)
    assert names == [
        f"hftopo_blimp_{u}" for u in ("determiner_noun_agreement_1", "npi_present_1", "principle_A_c_command")
    ]
    local = yaml.safe_load((tmp_path / "local" / "hftopo_blimp_npi_present_1.yaml").read_text())
    assert local["dataset_path"] == "json" and Path(local["dataset_kwargs"]["data_files"]["train"]).is_absolute()
    assert (
        Path(local["dataset_kwargs"]["data_files"]["train"]).read_text()
        == (blimp_dir / "npi_present_1.jsonl").read_text()
    )
    with pytest.raises(ValueError, match=r"Unknown BLiMP paradigm\(s\) \['passive_9'\]"):
        write_lm_eval_tasks(tmp_path / "x", blimp_dir=blimp_dir, paradigms=["passive_9"])
