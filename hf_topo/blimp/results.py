"""BLiMP results: accuracies with standard errors, as our JSON, markdown tables, and lm-evaluation-harness's JSON.

| quantity | definition |
|---|---|
| paradigm accuracy *p* | mean of the pair decisions (1 correct, 0 not) over its *n* pairs |
| paradigm standard error | ``sqrt(p (1 - p) / (n - 1))``: the harness's ``mean_stderr`` (sample standard deviation / sqrt(n)) |
| overall | unweighted mean over the *k* paradigms; its standard error ``sqrt(sum s_i^2) / k`` (independent paradigms) |
| field / linguistics term | unweighted mean over their paradigms, standard error likewise |
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["CONVENTION", "BlimpResults", "accuracy_stderr"]

CONVENTION = (
    "lm-evaluation-harness 0.4.x blimp: score = sum of log p(tokens of ' ' + sentence | one prefix token "
    "(BOS, else EOS)); a pair is correct when score(good) >= score(bad); overall = unweighted mean over paradigms"
)

#: The version of the harness's ``blimp_*`` task yamls whose convention we follow (their ``metadata.version``).
LM_EVAL_TASK_VERSION = 1.0


def accuracy_stderr(accuracy: float, n: int) -> float:
    """Standard error of a mean of ``n`` 0/1 outcomes, lm-evaluation-harness's ``mean_stderr``.

    ``sample_stddev / sqrt(n)`` with the ``n - 1`` sample variance equals ``sqrt(p (1 - p) / (n - 1))``; ``nan`` for
    a single pair, as the harness gives.
    """
    if n < 2:
        return math.nan
    return math.sqrt(accuracy * (1.0 - accuracy) / (n - 1))


def _mean_stderr(stderrs: list[float]) -> float:
    return math.sqrt(sum(s * s for s in stderrs)) / len(stderrs)


@dataclass
class BlimpResults:
    """Accuracies and their standard errors: ``overall`` (unweighted mean over paradigms), per paradigm, per field
    and per linguistics term.

    ``paradigm_stderrs`` / ``overall_stderr`` / ``field_stderrs`` / ``term_stderrs`` are defined in the module
    docstring; ``n_pairs`` counts the pairs of each paradigm; ``decisions[uid][i]`` says whether pair ``i`` (in file
    order) was decided correctly.
    """

    overall: float
    paradigms: dict[str, float]
    fields: dict[str, float]
    terms: dict[str, float]
    n_pairs: dict[str, int]
    model: str
    convention: str = CONVENTION
    extra: dict = field(default_factory=dict)
    overall_stderr: float = math.nan
    paradigm_stderrs: dict[str, float] = field(default_factory=dict)
    field_stderrs: dict[str, float] = field(default_factory=dict)
    term_stderrs: dict[str, float] = field(default_factory=dict)
    decisions: dict[str, list[bool]] = field(default_factory=dict)

    @classmethod
    def from_decisions(
        cls,
        decisions: dict[str, list[bool]],
        fields: dict[str, str],
        terms: dict[str, str],
        model: str,
        extra: dict | None = None,
    ) -> BlimpResults:
        """Aggregate the pair decisions of each paradigm (``fields``/``terms``: the paradigm's field and term)."""
        if not decisions or any(not d for d in decisions.values()):
            raise ValueError("BlimpResults needs at least one paradigm and at least one pair in each.")
        accuracies = {uid: sum(d) / len(d) for uid, d in decisions.items()}
        stderrs = {uid: accuracy_stderr(accuracies[uid], len(d)) for uid, d in decisions.items()}

        def grouped(groups: dict[str, str]) -> tuple[dict[str, float], dict[str, float]]:
            members: dict[str, list[str]] = {}
            for uid in decisions:
                members.setdefault(groups[uid], []).append(uid)
            means = {k: sum(accuracies[u] for u in v) / len(v) for k, v in sorted(members.items())}
            errors = {k: _mean_stderr([stderrs[u] for u in v]) for k, v in sorted(members.items())}
            return means, errors

        field_means, field_errors = grouped(fields)
        term_means, term_errors = grouped(terms)
        return cls(
            overall=sum(accuracies.values()) / len(accuracies),
            paradigms=accuracies,
            fields=field_means,
            terms=term_means,
            n_pairs={uid: len(d) for uid, d in decisions.items()},
            model=model,
            extra=dict(extra or {}),
            overall_stderr=_mean_stderr(list(stderrs.values())),
            paradigm_stderrs=stderrs,
            field_stderrs=field_errors,
            term_stderrs=term_errors,
            decisions={uid: [bool(c) for c in d] for uid, d in decisions.items()},
        )

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` as JSON (``NaN`` for the standard error of a one-pair paradigm)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            json.dump(self.to_dict(), f, indent=2)

    def to_lm_eval_dict(self) -> dict:
        """The results in lm-evaluation-harness 0.4.x's results-JSON shape.

        ``results["blimp_<paradigm>"]`` holds ``"acc,none"``, ``"acc_stderr,none"`` and ``"alias"``, as
        ``lm_eval --output_path`` writes them for its ``blimp_*`` tasks (the same convention), with ``versions``,
        ``n-shot``, ``higher_is_better`` and ``n-samples`` beside; ``results["blimp"]`` is the group row (our
        unweighted mean over the paradigms present). Tools that read the harness's files read this one.
        """
        names = {uid: f"blimp_{uid}" for uid in self.paradigms}
        results = {"blimp": {"acc,none": self.overall, "acc_stderr,none": self.overall_stderr, "alias": "blimp"}}
        for uid, name in names.items():
            results[name] = {
                "alias": f" - {name}",
                "acc,none": self.paradigms[uid],
                "acc_stderr,none": self.paradigm_stderrs.get(uid, math.nan),
            }
        return {
            "results": results,
            "groups": {"blimp": results["blimp"]},
            "group_subtasks": {"blimp": list(names.values())},
            "versions": {name: LM_EVAL_TASK_VERSION for name in names.values()},
            "n-shot": {name: 0 for name in names.values()},
            "higher_is_better": {name: {"acc": True} for name in names.values()},
            "n-samples": {names[uid]: {"original": n, "effective": n} for uid, n in self.n_pairs.items()},
            "config": {"model": self.model, "model_source": "hf_topo"},
            "hf_topo": {"convention": self.convention, **self.extra},
        }

    def to_lm_eval_json(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_lm_eval_dict` as JSON."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            json.dump(self.to_lm_eval_dict(), f, indent=2)

    def to_markdown(self) -> str:
        """Markdown tables: overall, per paradigm, per field and per linguistics term, each ± its standard error."""
        lines = [
            f"**BLiMP** ({self.model}): overall accuracy **{self.overall:.4f}** ± {self.overall_stderr:.4f} "
            f"over {len(self.paradigms)} paradigm(s)",
            "",
        ]
        lines += ["| paradigm | accuracy | ± stderr | pairs |", "|---|---|---|---|"]
        lines += [
            f"| {uid} | {acc:.4f} | {self.paradigm_stderrs.get(uid, math.nan):.4f} | {self.n_pairs[uid]} |"
            for uid, acc in self.paradigms.items()
        ]
        for title, means, errors in (
            ("field", self.fields, self.field_stderrs),
            ("linguistics term", self.terms, self.term_stderrs),
        ):
            lines += ["", f"| {title} | accuracy | ± stderr |", "|---|---|---|"]
            lines += [f"| {k} | {v:.4f} | {errors.get(k, math.nan):.4f} |" for k, v in means.items()]
        return "\n".join(lines) + "\n"
