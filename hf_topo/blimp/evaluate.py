"""BLiMP evaluation of a causal LM: :func:`evaluate_blimp` and the training-time :class:`BlimpCallback`."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import torch
from transformers import TrainerCallback

from ..loading import check_model_source, check_tokenizer, load_tokenizer
from .data import BlimpParadigm, load_blimp
from .results import BlimpResults
from .scoring import SentenceScorer, encode_sentences

__all__ = ["evaluate_blimp", "BlimpCallback"]

logger = logging.getLogger(__name__)


def _rescore_near_ties(
    scorer: SentenceScorer, pairs: list[tuple[str, str]], scores: list[tuple[float, float]], tie_tolerance: float
) -> int:
    """Rescore, each sentence on its own, the pairs whose shared-prefix scores are within ``tie_tolerance``.

    A shared forward and a separate one agree to float32 rounding (~1e-5 nats on a sentence), not bit for bit; a pair
    this close could be decided either way by that rounding, so it is decided by the harness's own computation.
    Identical sentences are an exact tie in both and are left alone.
    """
    near = [i for i, (g, b) in enumerate(pairs) if g != b and abs(scores[i][0] - scores[i][1]) <= tie_tolerance]
    if not near:
        return 0
    plain = SentenceScorer(
        scorer.model,
        scorer.tokenizer,
        batch_size=2,
        dtype=scorer.dtype,
        prefix_token_id=scorer.prefix_token_id,
        share_prefixes=False,
    )
    for i in near:
        good, bad = plain.score(list(pairs[i]), progress=False)
        scores[i] = (good, bad)
    logger.info("BLiMP: %d near-tie pair(s) (|Δ| <= %g) rescored without prefix sharing.", len(near), tie_tolerance)
    return len(near)


def evaluate_blimp(
    model,
    tokenizer=None,
    data: list[BlimpParadigm] | None = None,
    blimp_dir: str | os.PathLike | None = None,
    dataset: str | None = None,
    paradigms: Sequence[str] | str | None = None,
    limit: int | None = None,
    batch_size: int = 32,
    dtype: str | None = None,
    prefix_token_id: int | None = None,
    progress: bool = True,
    share_prefixes: bool = True,
    tie_tolerance: float = 1e-3,
) -> BlimpResults:
    """Evaluate a causal LM on BLiMP with lm-evaluation-harness's convention (see :mod:`hf_topo.blimp`).

    Args:
        model: a model object, or a local path / Hub id (loaded with ``AutoModelForCausalLM`` in ``dtype``,
            float32 by default, with its tokenizer).
        tokenizer: the tokenizer, or its Hub id / folder (:func:`hf_topo.loading.load_tokenizer`); required with a model
            object, by default the model folder's own with a path.
        data: pre-loaded paradigms (:func:`load_blimp`); else ``blimp_dir``/``dataset``/``paradigms``/``limit`` load them.
        batch_size, dtype, prefix_token_id, share_prefixes: see :class:`SentenceScorer`.
        progress: show a tqdm bar.
        tie_tolerance: pairs whose two scores differ by at most this many nats are rescored sentence by sentence,
            the harness's way (only with ``share_prefixes``); ``extra["near_ties_rescored"]`` counts them.

    Raises:
        ValueError, FileNotFoundError: before any sentence is scored (and before a model path is loaded): a model
            path that cannot be loaded (:func:`hf_topo.loading.check_model_source`), no usable tokenizer (a model
            folder without tokenizer files, a tokenizer that encodes text to nothing), bad BLiMP data, or a sentence
            that encodes to no token.
    """
    if tie_tolerance < 0:
        raise ValueError(f"tie_tolerance={tie_tolerance} must be >= 0 (nats; 0 rescores only exact ties).")
    name = (
        str(model)
        if isinstance(model, (str, os.PathLike))
        else getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    )
    if tokenizer is None and not isinstance(model, (str, os.PathLike)):
        raise ValueError(
            "evaluate_blimp needs the tokenizer when the model is an object: evaluate_blimp(model, tokenizer, ...)."
        )
    if isinstance(model, (str, os.PathLike)):
        check_model_source(model)  # a folder without weights, an adapter, a missing path: refused before all else
    if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = load_tokenizer(tokenizer if tokenizer is not None else model)
    if data is None:
        data = load_blimp(blimp_dir=blimp_dir, dataset=dataset, paradigms=paradigms, limit=limit)
    if not data:
        raise ValueError("No BLiMP paradigms to evaluate.")
    sentences = list(dict.fromkeys(s for paradigm in data for pair in paradigm.pairs for s in pair))
    check_tokenizer(tokenizer)
    encode_sentences(tokenizer, sentences, prefix_token_id)  # every sentence checked before a model is loaded
    if isinstance(model, (str, os.PathLike)):
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            model, dtype=torch.bfloat16 if dtype == "bfloat16" else torch.float32
        )
    scorer = SentenceScorer(
        model,
        tokenizer,
        batch_size=batch_size,
        dtype=dtype,
        prefix_token_id=prefix_token_id,
        share_prefixes=share_prefixes,
    )
    pairs = [pair for p in data for pair in p.pairs]
    scores = scorer.score_pairs(pairs, progress=progress)  # from each pair's first differing token on
    stats = dict(scorer.last_stats)
    rescored = 0
    if scorer.share_prefixes:
        rescored = _rescore_near_ties(scorer, pairs, scores, tie_tolerance)

    correct = iter([good >= bad for good, bad in scores])  # ties: correct
    decisions = {p.uid: [next(correct) for _ in p.pairs] for p in data}
    return BlimpResults.from_decisions(
        decisions,
        fields={p.uid: p.field for p in data},
        terms={p.uid: p.linguistics_term for p in data},
        model=name,
        extra={
            "prefix_token_id": scorer.prefix_token_id,
            "batch_size": batch_size,
            "dtype": dtype or "model",
            "share_prefixes": scorer.share_prefixes,
            "near_ties_rescored": rescored,
            "tie_tolerance": tie_tolerance,
            **stats,
        },
    )


class BlimpCallback(TrainerCallback):
    """Run BLiMP at every evaluation of a `Trainer` and log `blimp/overall` and `blimp/<field>` (TRL-style: the
    callback gets the trainer so it can log through it).

    Example::

        trainer.add_callback(BlimpCallback(trainer, blimp_dir="blimp/", paradigms=["anaphor_gender_agreement"], limit=200))

    The data (and the trainer's tokenizer) are loaded and checked when the callback is created, not at the first
    evaluation.
    """

    def __init__(self, trainer, data: list[BlimpParadigm] | None = None, batch_size: int = 32, **load_kwargs):
        self.trainer = trainer
        if getattr(trainer, "processing_class", None) is not None:
            check_tokenizer(trainer.processing_class)
        self.data = data if data is not None else load_blimp(**load_kwargs)
        self.batch_size = batch_size
        self.last_results: BlimpResults | None = None

    def on_evaluate(self, args, state, control, metrics=None, model=None, processing_class=None, **kwargs):
        tokenizer = (
            processing_class if processing_class is not None else getattr(self.trainer, "processing_class", None)
        )
        if model is None or tokenizer is None:
            logger.warning("BlimpCallback: the trainer has no model or tokenizer (processing_class); BLiMP skipped.")
            return
        results = evaluate_blimp(
            model, tokenizer, data=self.data, batch_size=self.batch_size, progress=state.is_world_process_zero
        )
        self.last_results = results
        logs = {"blimp/overall": results.overall} | {f"blimp/{name}": value for name, value in results.fields.items()}
        if metrics is not None:
            metrics.update({"eval_blimp_overall": results.overall})
        self.trainer.log(logs)
