"""The typed summary of an analysis: scalar measures and, per perturbation sweep, its points.

:class:`AnalysisSummary` is what tables and model cards iterate over (``report.json`` carries it under
``"analysis_summary"`` / ``"baseline_analysis_summary"``). The flat ``"summary"`` of ``report.json``
(``pruned_50pct_delta_perplexity``, ``noise_sigma_0.5_delta_perplexity``, ``downsampled_2x2_delta_perplexity``, ...)
is *derived* from it by :meth:`AnalysisSummary.flat` and kept so that saved reports and benchmark results stay
readable; nothing reads those keys back apart from tests and old files.

=================  ==========================  ==============================  =================
sweep kind         strength ``x``              flat key stem                   unperturbed ``x``
=================  ==========================  ==============================  =================
``pruning``        fraction of weights zeroed  ``pruned_{100x}pct``            0
``noise``          σ × each weight's std       ``noise_sigma_{x}``             0
``downsampling``   φ of a φ × φ downsampling   ``downsampled_{x}x{x}``         1
                   (variant ``"paper"``)       ``downsampled_paper_{x}x{x}``
``substitution``   share of tokens replaced    ``substitution_{100x}pct``      0
``deletion``       share of tokens deleted     ``deletion_{100x}pct``          0
=================  ==========================  ==============================  =================

A sweep's points are scored by its :attr:`SweepSummary.metric`: ``"perplexity"`` (a causal LM on text) or
``"accuracy"`` (top-1, an image classifier on labelled images); a point holds the ``score`` and its change ``delta``
from the unperturbed model, and the flat keys name the metric (``pruned_50pct_delta_perplexity``,
``pruned_50pct_delta_accuracy``). Reports written before the metric was named hold perplexity points
(``"perplexity"``, ``"delta_perplexity"``), read as such.

A downsampling sweep carries its variant (:attr:`SweepSummary.variant`): ``"gains"`` (per-unit gains, the default
of :func:`~hf_topo.downsampling.downsample_model`, under the report key ``"downsampling"``) or ``"paper"`` (the
paper's layer, key ``"downsampling_paper"``). Reports written before gains existed hold one downsampling sweep
without a variant (``None``; it was the paper's layer), under ``"downsampling"`` and its flat keys.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["SweepPoint", "SweepSummary", "AnalysisSummary", "SWEEP_KINDS", "SWEEP_METRICS", "DOWNSAMPLING_VARIANTS"]

#: Sweep kinds in the order tables show them, with the strength at which the model is unperturbed (Δ = 0 there).
SWEEP_KINDS = {"pruning": 0.0, "noise": 0.0, "downsampling": 1.0, "substitution": 0.0, "deletion": 0.0}
#: Variants of a downsampling sweep: per-unit gains, or the paper's layer.
DOWNSAMPLING_VARIANTS = ("gains", "paper")
#: What a sweep's points score: perplexity (a causal LM on text), top-1 accuracy (an image classifier on images).
SWEEP_METRICS = ("perplexity", "accuracy")


@dataclass(frozen=True)
class SweepPoint:
    """One strength ``x`` of a sweep: the score there (its sweep's metric: perplexity or accuracy) and its change
    ``delta`` from the unperturbed model."""

    x: float
    score: float
    delta: float
    delta_blimp: float | None = None
    parameters_kept: float | None = None  # downsampling: fraction of the model's parameters left

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepPoint:
        """From :meth:`to_dict`, or a point written before the metric was named (``perplexity``,
        ``delta_perplexity``)."""
        data = dict(data)
        if "score" not in data and "perplexity" in data:
            data["score"], data["delta"] = data.pop("perplexity"), data.pop("delta_perplexity")
        return cls(**data)


@dataclass
class SweepSummary:
    """The points of one perturbation sweep (``kind``, one of :data:`SWEEP_KINDS`; ``x_label`` says what ``x`` is).

    ``variant``: for downsampling, ``"gains"`` or ``"paper"`` (``None`` in reports written before the variants
    existed, whose downsampling was the paper's layer); always ``None`` for every other kind. ``metric``: what the
    points' ``score`` is, one of :data:`SWEEP_METRICS`.
    """

    kind: str
    x_label: str
    points: list[SweepPoint]
    variant: str | None = None
    metric: str = "perplexity"

    def __post_init__(self):
        if self.kind not in SWEEP_KINDS:
            raise ValueError(f"Unknown sweep kind {self.kind!r}; expected one of {', '.join(SWEEP_KINDS)}.")
        if self.metric not in SWEEP_METRICS:
            raise ValueError(f"Unknown sweep metric {self.metric!r}; expected one of {', '.join(SWEEP_METRICS)}.")
        if self.kind == "downsampling":
            if self.variant is not None and self.variant not in DOWNSAMPLING_VARIANTS:
                raise ValueError(
                    f"Unknown downsampling variant {self.variant!r}; expected one of {', '.join(DOWNSAMPLING_VARIANTS)}."
                )
        elif self.variant is not None:
            raise ValueError(f"A {self.kind} sweep has no variant, got variant={self.variant!r}.")

    @property
    def unperturbed_x(self) -> float:
        return SWEEP_KINDS[self.kind]

    def perturbed_points(self) -> list[SweepPoint]:
        """The points other than the unperturbed one (where Δ = 0 by definition), by increasing strength."""
        return sorted((p for p in self.points if p.x != self.unperturbed_x), key=lambda p: p.x)

    def at(self, x: float) -> SweepPoint | None:
        """The point at strength ``x``, if the sweep measured it."""
        return next((p for p in self.points if math.isclose(p.x, x, rel_tol=1e-9, abs_tol=1e-12)), None)

    def strength(self, x: float) -> str:
        """``x`` as a reader writes it: ``50 %`` (pruning, input perturbations), ``σ 0.5`` (noise), ``φ 2``."""
        if self.kind == "noise":
            return f"σ {x:g}"
        if self.kind == "downsampling":
            return f"φ {x:g}"
        return f"{round(100 * x)} %"

    def flat_key(self, x: float) -> str:
        """The stem of the derived flat keys of the point at ``x`` (see the module docstring)."""
        if self.kind == "pruning":
            return f"pruned_{round(100 * x)}pct"
        if self.kind == "noise":
            return f"noise_sigma_{x:g}"
        if self.kind == "downsampling":
            return f"downsampled_{'paper_' if self.variant == 'paper' else ''}{x:g}x{x:g}"
        return f"{self.kind}_{round(100 * x)}pct"

    @classmethod
    def from_sweep(cls, sweep: Any) -> SweepSummary:
        """From a :class:`~hf_topo.analysis.perturbation.SweepResult` or its ``to_dict()`` (whose scores are under
        the metric's name; a record without ``metric`` is a perplexity sweep)."""
        if isinstance(sweep, dict):
            metric = sweep.get("metric") or "perplexity"
            get = sweep.get
            scores, deltas = get(metric), get(f"delta_{metric}")
        else:
            metric, get = sweep.metric, lambda name: getattr(sweep, name)
            scores, deltas = sweep.score, sweep.delta
        xs = get("x")
        column = lambda name: get(name) if get(name) is not None else [None] * len(xs)  # noqa: E731
        points = [
            SweepPoint(x=float(x), score=p, delta=d, delta_blimp=b, parameters_kept=k)
            for x, p, d, b, k in zip(
                xs, scores, deltas, column("delta_blimp"), column("parameters_kept"), strict=True,
            )
        ]  # fmt: skip
        variant = sweep.get("variant") if isinstance(sweep, dict) else getattr(sweep, "variant", None)
        return cls(kind=get("kind"), x_label=get("x_label"), points=points, variant=variant, metric=metric)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SweepSummary:
        points = [SweepPoint.from_dict(p) for p in data["points"]]
        return cls(
            kind=data["kind"], x_label=data["x_label"], points=points, variant=data.get("variant"),
            metric=data.get("metric") or "perplexity",
        )  # fmt: skip


@dataclass
class AnalysisSummary:
    """What an analysis found, as typed data: the layer means of each measure (``None`` when not measured) and the
    perturbation sweeps by name (their kind, or ``"downsampling_paper"`` for the paper's downsampling variant), in
    :data:`SWEEP_KINDS` order.

    A language model's analysis has ``perplexity`` (on the analysis text) and sweeps scored by perplexity; an image
    classifier's has ``accuracy`` (top-1 on the analysis images) and sweeps scored by accuracy, and
    ``n_activation_samples`` counts images (one response per image and unit) rather than tokens."""

    perplexity: float | None = None
    smoothness: float | None = None
    weight_smoothness: float | None = None
    effective_dimensionality: float | None = None
    morans_i: float | None = None
    robust_smoothness: float | None = None  # near minus far (hf_topo.analysis.smoothness), layer mean
    smoothness_shuffle: float | None = None  # the shuffle control's smoothness (units permuted on the sheet)
    robust_smoothness_shuffle: float | None = None
    effective_dimensionality_zscored: float | None = None  # of the z-scored units (hf_topo.analysis.dimensionality)
    effective_dimensionality_late_positions: float | None = None  # first positions of each block left out
    weight_robust_smoothness: float | None = None
    morans_i_p_value: float | None = None  # the largest permutation p-value over the layers
    n_topographic_layers: int | None = None
    n_activation_samples: int | None = None
    blimp: float | None = None
    selectivity_morans_i: float | None = None
    selectivity_fraction_abs_t_above_2: float | None = None
    temporal_fractions: dict[str, float] | None = None  # window kind -> share of units
    temporal_reach_morans_i: float | None = None
    temporal_c_morans_i: float | None = None
    temporal_yoking_index: float | None = None  # the layers' median structure-yoking index, averaged
    temporal_yoking_morans_i: float | None = None
    accuracy: float | None = None  # image classifiers: top-1 accuracy on the analysis images
    sweeps: dict[str, SweepSummary] = field(default_factory=dict)

    # The order of the derived flat summary (that of report.json since it was written).
    _FLAT_ORDER = (
        "smoothness", "weight_smoothness", "effective_dimensionality", "morans_i", "perplexity",
        "n_topographic_layers", "n_activation_samples", "blimp", "selectivity_morans_i",
        "selectivity_fraction_abs_t_above_2", "robust_smoothness", "weight_robust_smoothness", "morans_i_p_value",
        "accuracy",
    )  # fmt: skip

    def measure(self, name: str) -> float | None:
        """A scalar measure by its field name (``"smoothness"``, ``"temporal_reach_morans_i"``, ...)."""
        if name not in self.measure_names():
            raise ValueError(f"Unknown measure {name!r}; expected one of {', '.join(self.measure_names())}.")
        return getattr(self, name)

    def delta(self, kind: str, x: float) -> float | None:
        """Δ score (perplexity or accuracy: the sweep's ``metric``) of the sweep named ``kind``
        (``"downsampling_paper"`` for the paper's downsampling variant) at strength ``x``; ``None`` when that point
        was not measured."""
        sweep = self.sweeps.get(kind)
        point = sweep.at(x) if sweep is not None else None
        return None if point is None else point.delta

    def delta_perplexity(self, kind: str, x: float) -> float | None:
        """Δ perplexity of the sweep named ``kind`` at strength ``x`` (:meth:`delta`); ``None`` when that point was
        not measured or the sweep scores accuracy (an image classifier's)."""
        sweep = self.sweeps.get(kind)
        return self.delta(kind, x) if sweep is not None and sweep.metric == "perplexity" else None

    def delta_accuracy(self, kind: str, x: float) -> float | None:
        """Δ top-1 accuracy of the sweep named ``kind`` at strength ``x`` (:meth:`delta`); ``None`` when that point
        was not measured or the sweep scores perplexity (a language model's)."""
        sweep = self.sweeps.get(kind)
        return self.delta(kind, x) if sweep is not None and sweep.metric == "accuracy" else None

    @classmethod
    def measure_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name not in ("sweeps", "temporal_fractions"))

    def flat(self) -> dict[str, float | int]:
        """The flat keys of ``report.json``'s ``"summary"``, derived from this summary (see the module docstring)."""
        flat: dict[str, Any] = {
            name: getattr(self, name) for name in self._FLAT_ORDER if getattr(self, name) is not None
        }
        for kind, share in (self.temporal_fractions or {}).items():
            flat[f"temporal_fraction_{kind}"] = share
        for name in (
            "temporal_reach_morans_i", "temporal_c_morans_i", "temporal_yoking_index", "temporal_yoking_morans_i",
        ):  # fmt: skip
            if getattr(self, name) is not None:
                flat[name] = getattr(self, name)
        for sweep in self.sweeps.values():
            for point in sweep.points:
                key = sweep.flat_key(point.x)
                if point.parameters_kept is not None:
                    flat[f"{key}_parameters_kept"] = point.parameters_kept
                flat[f"{key}_{sweep.metric}"] = point.score
                flat[f"{key}_delta_{sweep.metric}"] = point.delta
                if point.delta_blimp is not None:
                    flat[f"{key}_delta_blimp"] = point.delta_blimp
        return flat

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> AnalysisSummary:
        """Inverse of :meth:`to_dict`; a record that does not fit is a ``ValueError`` naming ``source``."""
        try:
            values = {name: data.get(name) for name in cls.measure_names()}
            sweeps = {kind: SweepSummary.from_dict(sweep) for kind, sweep in (data.get("sweeps") or {}).items()}
            return cls(**values, temporal_fractions=data.get("temporal_fractions"), sweeps=sweeps)
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            where = f" in {source}" if source else ""
            raise ValueError(
                f"The analysis summary{where} is malformed ({type(err).__name__}: {err}); re-run hf-topo analyze."
            ) from None

    @classmethod
    def from_report(cls, report: dict[str, Any], which: str = "model", source: str | None = None):
        """The summary of ``which`` (``"model"`` or ``"baseline"``) in a ``report.json``; ``None`` if it has none.

        Reports written before the typed section existed are read from their scalar measures (by name) and their
        ``"sweeps"`` (the :class:`~hf_topo.analysis.perturbation.SweepResult` records), never from flat key names.
        """
        if which not in ("model", "baseline"):
            raise ValueError(f"which={which!r} must be 'model' or 'baseline'.")
        if not isinstance(report, dict):
            raise ValueError(
                f"The report{f' {source}' if source else ''} is not a JSON object; re-run hf-topo analyze."
            )
        prefix = "" if which == "model" else "baseline_"
        typed = report.get(f"{prefix}analysis_summary")
        if typed is not None:
            return cls.from_dict(typed, source)
        flat, detail = report.get(f"{prefix}summary"), report.get(which)
        if not isinstance(flat, dict):
            return None
        values = {name: flat[name] for name in cls.measure_names() if _number(flat.get(name))}
        sweeps = detail.get("sweeps") if isinstance(detail, dict) else None
        try:
            typed_sweeps = {kind: SweepSummary.from_sweep(s) for kind, s in (sweeps or {}).items()}
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"The sweeps{f' in {source}' if source else ''} are malformed ({err}); re-run hf-topo analyze."
            ) from None
        return cls(**values, sweeps=typed_sweeps)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
