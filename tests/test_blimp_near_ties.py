"""BLiMP near ties: a pair whose shared-prefix scores are within ``tie_tolerance`` is decided by its unshared scores.

A shared-prefix forward and a sentence-by-sentence one agree to float32 rounding (~1e-5 nats), and the tiny models a
test can build have no pair that close, so the rounding cannot be produced on demand. The test forces it instead:
the shared pass's scores of two chosen pairs are replaced by a near tie pointing the wrong way (what rounding could do
to a real near tie), everything else runs as it is. Each of those pairs sits alone in its paradigm, so the
paradigm's accuracy (0 or 1) is that pair's decision, and it must be the decision of the independent float64
reference below, never the forced one.
"""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hf_topo.blimp import BlimpParadigm, SentenceScorer, evaluate_blimp
from hf_topo.data import train_bpe_tokenizer

NOUNS = ["cat", "dog", "teacher", "senator", "child", "girl", "boy", "doctor"]
PAIRS = [(f"The {a} sees the {b}.", f"The {a}s sees the {b}.") for a in NOUNS for b in NOUNS[:2]]


@pytest.fixture(scope="module")
def lm():
    tokenizer = train_bpe_tokenizer([g + " " + b for g, b in PAIRS] * 5, vocab_size=300, min_frequency=1)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=32, n_layer=2, n_head=2)
    config.bos_token_id = config.eos_token_id = tokenizer.eos_token_id
    return GPT2LMHeadModel(config).eval(), tokenizer


def _reference_score(model, tokenizer, sentence: str) -> float:
    """BOS + " " + sentence, one sentence per forward, float64 log-softmax: the convention written out on its own."""
    ids = [tokenizer.bos_token_id] + tokenizer.encode(" " + sentence, add_special_tokens=False)
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), dim=-1)
    return sum(logprobs[t - 1, ids[t]].item() for t in range(1, len(ids)))


def test_a_forced_near_tie_is_decided_by_the_unshared_scores(lm, monkeypatch):
    model, tokenizer = lm
    reference = {s: _reference_score(model, tokenizer, s) for pair in PAIRS for s in pair}
    margins = [reference[g] - reference[b] for g, b in PAIRS]
    # one pair the model gets right and one it gets wrong, both clearly (the forced tie must flip each decision)
    right = next(i for i, m in enumerate(margins) if m > 0.01)
    wrong = next(i for i, m in enumerate(margins) if m < -0.01)
    data = [BlimpParadigm(f"pair_{i}", "syntax", "agreement", [pair]) for i, pair in enumerate(PAIRS)]

    shared_score_pairs = SentenceScorer.score_pairs

    def with_forced_near_ties(self, pairs, progress=True):
        scores = shared_score_pairs(self, pairs, progress)
        if self.share_prefixes:  # the shared pass only; the rescoring scores sentence by sentence
            index = {tuple(pair): k for k, pair in enumerate(pairs)}
            scores[index[PAIRS[right]]] = (-10.0, -10.0 + 4e-4)  # bad ahead by 4e-4 nats: the wrong way
            scores[index[PAIRS[wrong]]] = (-10.0 + 4e-4, -10.0)  # good ahead by 4e-4 nats: the wrong way
        return scores

    monkeypatch.setattr(SentenceScorer, "score_pairs", with_forced_near_ties)
    results = evaluate_blimp(model, tokenizer, data=data, tie_tolerance=1e-3, progress=False)

    assert results.extra["near_ties_rescored"] == 2  # only the forced pairs came within the tolerance
    assert results.paradigms[f"pair_{right}"] == 1.0 and results.paradigms[f"pair_{wrong}"] == 0.0
    for i, (good, bad) in enumerate(PAIRS):  # every decision is the reference's
        assert results.paradigms[f"pair_{i}"] == float(reference[good] >= reference[bad]), i

    # With no tolerance the forced scores stand: the rescoring above is what decided those two pairs.
    forced = evaluate_blimp(model, tokenizer, data=data, tie_tolerance=0.0, progress=False)
    assert forced.extra["near_ties_rescored"] == 0
    assert forced.paradigms[f"pair_{right}"] == 0.0 and forced.paradigms[f"pair_{wrong}"] == 1.0
