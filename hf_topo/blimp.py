"""BLiMP evaluation with lm-evaluation-harness's scoring convention, fast, as an API, a script and a callback.

BLiMP (Warstadt et al., 2020) has 67 paradigms of 1000 minimal pairs (a grammatical and an ungrammatical
sentence). The convention is that of lm-evaluation-harness 0.4.x's ``blimp_*`` tasks, so numbers can be put next
to published ones:

* a sentence's score is the sum of its tokens' log-probabilities for the text ``" " + sentence`` (the harness's
  target delimiter), tokenized without special tokens and conditioned on a single prefix token: the tokenizer's
  BOS, else its EOS (``prefix_token_id`` overrides);
* a pair is correct when ``score(good) >= score(bad)`` (ties count as correct, as ``argmax`` picks the first);
* a paradigm's accuracy is the mean over its pairs; the headline is the unweighted mean over paradigms; means per
  ``field`` and per ``linguistics_term`` are unweighted means over their paradigms.

Speed: every distinct sentence is scored once, in batches sorted by length (little padding, right-padded so that
causal attention never lets padding reach a scored position), with the log-probabilities gathered from the logits
without materializing a log-softmax over the vocabulary.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import TrainerCallback

from .data import check_tokenizer, load_tokenizer, tokenizer_display_name
from .models import check_model_source

__all__ = [
    "BLIMP_PARADIGMS",
    "CONVENTION",
    "BlimpParadigm",
    "BlimpResults",
    "BlimpCallback",
    "SentenceScorer",
    "load_blimp",
    "evaluate_blimp",
]

logger = logging.getLogger(__name__)

CONVENTION = (
    "lm-evaluation-harness 0.4.x blimp: score = sum of log p(tokens of ' ' + sentence | one prefix token "
    "(BOS, else EOS)); a pair is correct when score(good) >= score(bad); overall = unweighted mean over paradigms"
)

#: The 67 BLiMP paradigms (the configs of the Hub dataset ``nyu-mll/blimp``).
BLIMP_PARADIGMS: tuple[str, ...] = (
    "adjunct_island", "anaphor_gender_agreement", "anaphor_number_agreement", "animate_subject_passive",
    "animate_subject_trans", "causative", "complex_NP_island", "coordinate_structure_constraint_complex_left_branch",
    "coordinate_structure_constraint_object_extraction", "determiner_noun_agreement_1", "determiner_noun_agreement_2",
    "determiner_noun_agreement_irregular_1", "determiner_noun_agreement_irregular_2",
    "determiner_noun_agreement_with_adj_2", "determiner_noun_agreement_with_adj_irregular_1",
    "determiner_noun_agreement_with_adj_irregular_2", "determiner_noun_agreement_with_adjective_1",
    "distractor_agreement_relational_noun", "distractor_agreement_relative_clause", "drop_argument",
    "ellipsis_n_bar_1", "ellipsis_n_bar_2", "existential_there_object_raising", "existential_there_quantifiers_1",
    "existential_there_quantifiers_2", "existential_there_subject_raising", "expletive_it_object_raising",
    "inchoative", "intransitive", "irregular_past_participle_adjectives", "irregular_past_participle_verbs",
    "irregular_plural_subject_verb_agreement_1", "irregular_plural_subject_verb_agreement_2",
    "left_branch_island_echo_question", "left_branch_island_simple_question", "matrix_question_npi_licensor_present",
    "npi_present_1", "npi_present_2", "only_npi_licensor_present", "only_npi_scope", "passive_1", "passive_2",
    "principle_A_c_command", "principle_A_case_1", "principle_A_case_2", "principle_A_domain_1",
    "principle_A_domain_2", "principle_A_domain_3", "principle_A_reconstruction",
    "regular_plural_subject_verb_agreement_1", "regular_plural_subject_verb_agreement_2",
    "sentential_negation_npi_licensor_present", "sentential_negation_npi_scope", "sentential_subject_island",
    "superlative_quantifiers_1", "superlative_quantifiers_2", "tough_vs_raising_1", "tough_vs_raising_2",
    "transitive", "wh_island", "wh_questions_object_gap", "wh_questions_subject_gap",
    "wh_questions_subject_gap_long_distance", "wh_vs_that_no_gap", "wh_vs_that_no_gap_long_distance",
    "wh_vs_that_with_gap", "wh_vs_that_with_gap_long_distance",
)  # fmt: skip


@dataclass
class BlimpParadigm:
    """One paradigm: its UID, BLiMP ``field`` and ``linguistics_term``, and its (good, bad) sentence pairs."""

    uid: str
    field: str
    linguistics_term: str
    pairs: list[tuple[str, str]]


# ---- data ----------------------------------------------------------------------------------------------------------


def _select(available: Sequence[str], paradigms: Sequence[str] | None, where: str) -> list[str]:
    if paradigms is None:
        return list(available)
    selected = [p.strip() for p in paradigms if p.strip()]
    unknown = [p for p in selected if p not in available]
    if unknown:
        raise ValueError(f"Unknown BLiMP paradigm(s) {unknown} in {where}. Available: {', '.join(sorted(available))}.")
    if not selected:
        raise ValueError("The paradigm selection is empty: name at least one paradigm, or leave it unset for all.")
    return selected


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise ValueError(
            f"limit={limit} selects no pairs; use a positive number of pairs per paradigm, or None for all."
        )


def _check_sentences(row: dict, where: str) -> None:
    for key in ("sentence_good", "sentence_bad"):
        if not row[key].strip():
            raise ValueError(
                f"{where}: {key} is empty. An empty sentence has no score (its pair would be decided by the other "
                "sentence alone); remove the pair or fix the file."
            )


def _paradigm_from_rows(uid: str, rows: list[dict], where: str) -> BlimpParadigm:
    if not rows:
        raise ValueError(f"{where} holds no minimal pairs.")
    for index, row in enumerate(rows):
        _check_sentences(row, f"{where}, pair {index}")
    first = rows[0]
    return BlimpParadigm(
        uid=uid,
        field=str(first.get("field", "unknown")),
        linguistics_term=str(first.get("linguistics_term", "unknown")),
        pairs=[(row["sentence_good"], row["sentence_bad"]) for row in rows],
    )


def _read_jsonl(path: Path, limit: int | None) -> list[dict]:
    rows: list[dict] = []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {line_number}: not valid JSON ({err.msg}).") from None
            if (
                not isinstance(row, dict)
                or not isinstance(row.get("sentence_good"), str)
                or not isinstance(row.get("sentence_bad"), str)
            ):
                raise ValueError(
                    f"{path}, line {line_number}: expected an object with string 'sentence_good' and 'sentence_bad'."
                )
            _check_sentences(row, f"{path}, line {line_number}")
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    return rows


def load_blimp(
    blimp_dir: str | os.PathLike | None = None,
    dataset: str | None = None,
    paradigms: Sequence[str] | str | None = None,
    limit: int | None = None,
    **load_dataset_kwargs,
) -> list[BlimpParadigm]:
    """Load BLiMP paradigms from a local directory of the original jsonl files, or from the Hub.

    Args:
        blimp_dir: directory of ``<paradigm>.jsonl`` files (BLiMP's release format; each file read on its own, since
            their extra fields differ).
        dataset: Hub dataset id with one config per paradigm, ``"nyu-mll/blimp"``; read through ``datasets``.
        paradigms: a subset of paradigm UIDs (a list or a comma-separated string); all by default.
        limit: at most this many pairs per paradigm (the first ones).
    """
    if (blimp_dir is None) == (dataset is None):
        raise ValueError(
            "Give exactly one BLiMP source: blimp_dir (local jsonl files) or dataset (e.g. 'nyu-mll/blimp')."
        )
    if isinstance(paradigms, str):
        paradigms = paradigms.split(",")
    _check_limit(limit)
    if blimp_dir is not None:
        directory = Path(blimp_dir)
        if not directory.is_dir():
            raise FileNotFoundError(
                f"BLiMP directory {str(directory)!r} does not exist. Point blimp_dir at a folder of BLiMP's <paradigm>.jsonl "
                "files, or use dataset='nyu-mll/blimp' with Hub access."
            )
        files = {p.stem: p for p in sorted(directory.glob("*.jsonl"))}
        if not files:
            raise ValueError(f"No .jsonl files in {str(directory)!r}: expected BLiMP's <paradigm>.jsonl files.")
        return [
            _paradigm_from_rows(uid, _read_jsonl(files[uid], limit), str(files[uid]))
            for uid in _select(list(files), paradigms, str(directory))
        ]
    from datasets import load_dataset

    result = []
    for uid in _select(BLIMP_PARADIGMS, paradigms, dataset):
        split = load_dataset(dataset, uid, split="train", **load_dataset_kwargs)
        if limit is not None:
            split = split.select(range(min(limit, len(split))))
        result.append(_paradigm_from_rows(uid, list(split), f"{dataset}/{uid}"))
    return result


# ---- scoring -------------------------------------------------------------------------------------------------------


def _prefix_token_id(tokenizer, prefix_token_id: int | None) -> int:
    if prefix_token_id is not None:
        return int(prefix_token_id)
    for name in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    raise ValueError(
        f"{type(tokenizer).__name__} has neither a BOS nor an EOS token, so there is no prefix token to condition on. "
        "Pass prefix_token_id=<id> (lm-evaluation-harness: --model_args prefix_token_id=...)."
    )


class SentenceScorer:
    """Sum of log-probabilities of ``" " + sentence`` given one prefix token, batched and length-sorted.

    Args:
        model: a causal LM (``model(input_ids, attention_mask).logits``).
        tokenizer: its tokenizer.
        batch_size: sentences per forward pass.
        dtype: ``None`` (the model as it is), ``"float32"`` or ``"bfloat16"`` (forward under autocast);
            log-probabilities are always reduced in float32.
        prefix_token_id: the conditioning token; default BOS, else EOS.
    """

    def __init__(
        self, model, tokenizer, batch_size: int = 32, dtype: str | None = None, prefix_token_id: int | None = None
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1.")
        if dtype not in (None, "float32", "bfloat16"):
            raise ValueError(f"dtype={dtype!r} is not supported; use 'float32' or 'bfloat16'.")
        check_tokenizer(tokenizer)
        self.model, self.tokenizer, self.batch_size, self.dtype = model, tokenizer, batch_size, dtype
        self.prefix_token_id = _prefix_token_id(tokenizer, prefix_token_id)
        self.max_length = getattr(getattr(model, "config", None), "max_position_embeddings", None) or getattr(
            getattr(model, "config", None), "n_positions", None
        )

    def _autocast(self, device: torch.device):
        if self.dtype == "bfloat16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.no_grad()
    def score(self, sentences: Sequence[str], progress: bool = True) -> list[float]:
        """Scores of ``sentences`` (each distinct sentence computed once).

        Raises:
            ValueError: a sentence encodes to no token (it would score 0 and tie with its pair), checked for every
                sentence before the model runs.
        """
        unique = list(dict.fromkeys(sentences))
        encoded = self.tokenizer([" " + s for s in unique], add_special_tokens=False)["input_ids"]
        empty = [s for s, ids in zip(unique, encoded, strict=True) if not ids]
        if empty:
            raise ValueError(
                f"{len(empty)} sentence(s) encode to no token with the tokenizer {tokenizer_display_name(self.tokenizer)!r} "
                f"({type(self.tokenizer).__name__}, {len(self.tokenizer)} tokens), e.g. {empty[0]!r}. A sentence "
                "without tokens has no score: its pair would tie and count as correct. Use the model's own tokenizer "
                "(--tokenizer_name) and BLiMP sentences with text."
            )
        sequences = [[self.prefix_token_id, *ids] for ids in encoded]
        longest = max((len(s) for s in sequences), default=0)
        if self.max_length is not None and longest > self.max_length:
            raise ValueError(f"A sentence needs {longest} tokens but the model takes at most {self.max_length}.")
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
        device = next(self.model.parameters()).device
        scores = [0.0] * len(sequences)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        was_training = self.model.training
        self.model.eval()
        try:
            for batch in tqdm(batches, desc="BLiMP", unit="batch", disable=not progress):
                width = len(sequences[batch[0]])
                input_ids = torch.zeros((len(batch), width), dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, index in enumerate(batch):
                    seq = sequences[index]
                    input_ids[row, : len(seq)] = torch.tensor(seq)
                    mask[row, : len(seq)] = 1
                input_ids, mask = input_ids.to(device), mask.to(device)
                with self._autocast(device):
                    logits = self.model(input_ids=input_ids, attention_mask=mask).logits
                logits = logits[:, :-1].float()  # (B, T-1, V): position t predicts token t+1
                targets = input_ids[:, 1:]
                token_logprobs = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
                totals = (token_logprobs * mask[:, 1:]).sum(-1).tolist()
                for index, total in zip(batch, totals, strict=True):
                    scores[index] = total
        finally:
            self.model.train(was_training)
        by_sentence = dict(zip(unique, scores, strict=True))
        return [by_sentence[s] for s in sentences]


# ---- results -------------------------------------------------------------------------------------------------------


@dataclass
class BlimpResults:
    """Accuracies: ``overall`` (unweighted mean over paradigms), per paradigm, per field and per linguistics term."""

    overall: float
    paradigms: dict[str, float]
    fields: dict[str, float]
    terms: dict[str, float]
    n_pairs: dict[str, int]
    model: str
    convention: str = CONVENTION
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, path: str | os.PathLike) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)

    def to_markdown(self) -> str:
        lines = [
            f"**BLiMP** ({self.model}): overall accuracy **{self.overall:.4f}** over {len(self.paradigms)} paradigm(s)",
            "",
        ]
        lines += ["| paradigm | accuracy | pairs |", "|---|---|---|"]
        lines += [f"| {uid} | {acc:.4f} | {self.n_pairs[uid]} |" for uid, acc in self.paradigms.items()]
        lines += ["", "| field | accuracy |", "|---|---|"] + [f"| {k} | {v:.4f} |" for k, v in self.fields.items()]
        lines += ["", "| linguistics term | accuracy |", "|---|---|"] + [
            f"| {k} | {v:.4f} |" for k, v in self.terms.items()
        ]
        return "\n".join(lines) + "\n"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


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
) -> BlimpResults:
    """Evaluate a causal LM on BLiMP.

    Args:
        model: a model object, or a local path / Hub id (loaded with ``AutoModelForCausalLM`` in ``dtype``,
            float32 by default, with its tokenizer).
        tokenizer: the tokenizer, or its Hub id / folder (:func:`hf_topo.data.load_tokenizer`); required with a model
            object, by default the model folder's own with a path.
        data: pre-loaded paradigms (:func:`load_blimp`); else ``blimp_dir``/``dataset``/``paradigms``/``limit`` load them.
        batch_size, dtype, prefix_token_id: see :class:`SentenceScorer`.

    Raises:
        ValueError, FileNotFoundError: before any sentence is scored (and before a model path is loaded): a model
            path that cannot be loaded (:func:`hf_topo.models.check_model_source`), no usable tokenizer (a model
            folder without tokenizer files, a tokenizer that encodes text to nothing), bad BLiMP data, or a sentence
            that encodes to no token.
    """
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
    if isinstance(model, (str, os.PathLike)):
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(
            model, dtype=torch.bfloat16 if dtype == "bfloat16" else torch.float32
        )
    scorer = SentenceScorer(model, tokenizer, batch_size=batch_size, dtype=dtype, prefix_token_id=prefix_token_id)
    sentences = [s for paradigm in data for pair in paradigm.pairs for s in pair]
    scores = iter(scorer.score(sentences, progress=progress))

    accuracies: dict[str, float] = {}
    n_pairs: dict[str, int] = {}
    by_field: dict[str, list[float]] = {}
    by_term: dict[str, list[float]] = {}
    for paradigm in data:
        correct = [next(scores) >= next(scores) for _ in paradigm.pairs]  # (good, bad) in order
        accuracies[paradigm.uid] = _mean([float(c) for c in correct])
        n_pairs[paradigm.uid] = len(correct)
        by_field.setdefault(paradigm.field, []).append(accuracies[paradigm.uid])
        by_term.setdefault(paradigm.linguistics_term, []).append(accuracies[paradigm.uid])
    return BlimpResults(
        overall=_mean(list(accuracies.values())),
        paradigms=accuracies,
        fields={k: _mean(v) for k, v in sorted(by_field.items())},
        terms={k: _mean(v) for k, v in sorted(by_term.items())},
        n_pairs=n_pairs,
        model=name,
        extra={"prefix_token_id": scorer.prefix_token_id, "batch_size": batch_size, "dtype": dtype or "model"},
    )


# ---- training-time callback ----------------------------------------------------------------------------------------


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
