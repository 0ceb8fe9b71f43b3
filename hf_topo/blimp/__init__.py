"""BLiMP evaluation with lm-evaluation-harness's scoring convention, fast, as an API, a script and a callback.

BLiMP (Warstadt et al., 2020) has 67 paradigms of 1000 minimal pairs (a grammatical and an ungrammatical
sentence). The convention is that of lm-evaluation-harness 0.4.x's ``blimp_*`` tasks, so numbers can be put next
to published ones:

* a sentence's score is the sum of its tokens' log-probabilities for the text ``" " + sentence`` (the harness's
  target delimiter), tokenized without special tokens and conditioned on a single prefix token: the tokenizer's
  BOS, else its EOS (``prefix_token_id`` overrides);
* a pair is correct when ``score(good) >= score(bad)`` (ties count as correct, as ``argmax`` picks the first);
* a paradigm's accuracy is the mean over its pairs, with the harness's standard error; the headline is the
  unweighted mean over paradigms; means per ``field`` and per ``linguistics_term`` are unweighted means over their
  paradigms.

| module | what |
|---|---|
| :mod:`hf_topo.blimp.data` | paradigm names, loading pairs from jsonl files or the Hub |
| :mod:`hf_topo.blimp.scoring` | sentence and pair scores, every shared token prefix computed once (a prefix tree), the LM head only where read |
| :mod:`hf_topo.blimp.results` | accuracies, standard errors, our JSON, markdown, the harness's results JSON |
| :mod:`hf_topo.blimp.evaluate` | :func:`evaluate_blimp` and the training-time :class:`BlimpCallback` |
| :mod:`hf_topo.blimp.harness` | the harness's task yamls for the same pairs, to cross-check with ``lm_eval`` |
"""

from .data import BLIMP_PARADIGMS, BlimpParadigm, load_blimp
from .evaluate import BlimpCallback, evaluate_blimp
from .harness import LM_EVAL_TASKS_DIR, write_lm_eval_tasks
from .results import CONVENTION, BlimpResults, accuracy_stderr
from .scoring import PrefixTrie, SentenceScorer, encode_sentences, split_lm_head

__all__ = [
    "BLIMP_PARADIGMS",
    "CONVENTION",
    "LM_EVAL_TASKS_DIR",
    "BlimpCallback",
    "BlimpParadigm",
    "BlimpResults",
    "PrefixTrie",
    "SentenceScorer",
    "accuracy_stderr",
    "encode_sentences",
    "evaluate_blimp",
    "load_blimp",
    "split_lm_head",
    "write_lm_eval_tasks",
]
