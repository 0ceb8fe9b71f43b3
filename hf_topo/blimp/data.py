"""BLiMP data: the 67 paradigm names, and loading minimal pairs from BLiMP's jsonl files or the Hub."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BLIMP_PARADIGMS", "BlimpParadigm", "load_blimp"]

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
