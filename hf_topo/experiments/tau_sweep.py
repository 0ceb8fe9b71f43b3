"""The τ sweep of the claims run and the TopoNets paper's designs on it (Fig. 2B, 3B / A.9, 4A, 4B / A.10).

``hf-topo claims --taus 0 0.5 1 5 10 50`` trains, for every seed, one TopoNet per TopoLoss strength τ on the claims'
recipe (τ = 0 is the baseline: the same seed, so the same initialization and data order) and measures each once
(:func:`hf_topo.experiments.claims.measure_model`). The designs below are functions of those per-(τ, seed) measures,
as the paper analyses its models — across τ, not at one τ:

* :func:`pareto_design` — Fig. 2B: task performance (held-out perplexity; BLiMP accuracy when measured) against
  smoothness, one point per τ (mean ± sd over seeds), the τ on the Pareto front, and each τ's perplexity cost over the
  baseline (paired log ratio with its 95 % interval).
* :func:`dimensionality_design` — Fig. 3B: Pearson correlations across all models (τ × seeds) of effective
  dimensionality with smoothness and with performance (log perplexity; BLiMP), compared by Fisher's z (the paper's
  test) and by Steiger's test (the exact one: both correlations share the dimensionality of the same models); A.9:
  the rise of dimensionality from the baseline to τ = 1 and its fall to the largest τ.
* :func:`pruning_design` — Fig. 4A: L1 unstructured pruning of the topographic layers at the fractions whose remaining
  weights match a φ × φ downsampling (:func:`matched_pruning_fraction`) and over a 10–90 % sweep, each τ against the
  baseline.
* :func:`downsampling_design` — Fig. 4B / A.10: the paper's downsampled layer at φ = 2, 3, 4 for every τ: the
  dose-response of the damage over τ and the most resilient τ.

**Ratio measures on the log scale.** The damage of a perturbation is the ratio of perplexities,
``log(perplexity(perturbed) / perplexity(model))``; a TopoNet is compared with the baseline of its seed by the paired
difference of those logs (a ratio of ratios), tested two-sided over the seeds
(:func:`hf_topo.experiments.statistics.paired_test`), and the tests of one design form one family with Holm's
correction (:func:`~hf_topo.experiments.statistics.holm_adjust`).

**Rise then fall (A.9).** The paper reports dimensionality "initially increased from the baseline to τ = 1" and then
decreased. Its peak is named in advance, so the test is the pair of contrasts that say exactly that, paired by seed:
``dim(τ = 1) − dim(0) > 0`` (the rise) and ``dim(τ = 1) − dim(τ_max) > 0`` (the fall). Both must hold, so the
verdict is an intersection–union test: each contrast at ``alpha`` without correction (the composite is rejected
only when both are). A quadratic trend in ``x = log(1 + τ)`` (the concavity, t-test of the ``x²`` coefficient) and a
bootstrap over seeds of the τ with the largest mean dimensionality are reported beside it as descriptions (with 3
seeds a bootstrap has at most 10 distinct resamples, too coarse for a verdict).

Regenerate the figures of a results JSON (e.g. for the docs) with one command::

    python -m hf_topo.experiments.tau_sweep benchmarks/results/paper_claims.json --output_dir docs/figures
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
from collections.abc import Mapping, Sequence
from typing import Any

from .statistics import (
    correlation_with_ci,
    dependent_correlations_test,
    fisher_z_test,
    holm_adjust,
    is_finite,
    paired_test,
    seed_statistics,
    verdict,
)

__all__ = [
    "DEFAULT_TAUS",
    "FIGURES",
    "dimensionality_design",
    "downsampling_design",
    "matched_pruning_fraction",
    "pareto_design",
    "plot_tau_sweep",
    "pruning_design",
    "sweep_table",
    "tau_model_name",
    "tau_sweep_designs",
]

logger = logging.getLogger(__name__)

#: The paper's τ of the GPT-Neo-125M sweep (Fig. 2B, 9), τ = 0 being the baseline.
DEFAULT_TAUS = (0.0, 0.5, 1.0, 5.0, 10.0, 50.0)
#: The figure of each design, by its key in the ``"tau_sweep"`` block of the results.
FIGURES = {
    "pareto": "tau_sweep_pareto.png",
    "dimensionality": "tau_sweep_dimensionality.png",
    "pruning": "tau_sweep_pruning.png",
    "downsampling": "tau_sweep_downsampling.png",
}

#: ``{τ: {seed: {measure: value}}}``: the measures of one model per τ and seed.
SweepTable = dict[float, dict[int, dict[str, Any]]]


def tau_model_name(tau: float, topo_tau: float) -> str:
    """The name of the sweep's model at ``tau`` among a seed's models: ``"baseline"`` at τ = 0, ``"toponet"`` at the
    claims' own ``topo_tau`` (the same model, trained once), else ``"toponet_tau<τ>"`` (e.g. ``toponet_tau0.5``)."""
    if tau == 0:
        return "baseline"
    if tau == topo_tau:
        return "toponet"
    return f"toponet_tau{tau:g}"


def matched_pruning_fraction(sheets: Sequence[tuple[int, int, int]], factor: float) -> float:
    """The fraction of weights L1 pruning removes to keep as many as a ``factor × factor`` downsampling does.

    A downsampled layer (A.5) keeps the weight rows of a ``floor(h/φ) × floor(w/φ)`` sheet, each of the layer's
    ``depth`` inputs, so over layers with sheets ``(h, w, depth)``::

        fraction = 1 − Σ floor(h/φ)·floor(w/φ)·depth / Σ h·w·depth

    (φ = 2 on a 32 × 32 sheet: 1 − 256/1024 = 0.75, the paper's "φ = 2 removes 75 %").
    """
    if not sheets:
        raise ValueError("matched_pruning_fraction needs at least one sheet (height, width, depth).")
    if not (is_finite(factor) and factor >= 1):
        raise ValueError(f"factor={factor!r} must be a downsampling factor φ >= 1 (e.g. 2 for 2 × 2).")
    total = sum(h * w * d for h, w, d in sheets)
    kept = sum(math.floor(h / factor) * math.floor(w / factor) * d for h, w, d in sheets)
    return 1.0 - kept / total


def sweep_table(per_seed: Mapping[Any, Mapping[str, dict]], taus: Sequence[float], topo_tau: float) -> SweepTable:
    """The sweep's models out of the claims' per-seed measures ``{seed: {model name: measures}}``: ``{τ: {seed:
    measures}}`` (a model not measured is left out)."""
    table: SweepTable = {}
    for tau in sorted({0.0, *map(float, taus)}):
        name = tau_model_name(tau, topo_tau)
        table[tau] = {int(seed): models[name] for seed, models in per_seed.items() if name in models}
    return table


# ---- reading the per-model measures ----------------------------------------------------------------------------


def _value(measures: dict, name: str) -> float | None:
    value = measures.get(name)
    return float(value) if is_finite(value) else None


def _log_value(measures: dict, name: str) -> float | None:
    value = _value(measures, name)
    return math.log(value) if value is not None and value > 0 else None


def _curve_log_damage(measures: dict, curve: str, x: float) -> float | None:
    """``log(perplexity at x / perplexity)`` of one model's sweep ``curve`` (``"pruning_curve"``,
    ``"downsampling_curve"``) at strength ``x``."""
    data = measures.get(curve) or {}
    for at, ratio in zip(data.get("x", []), data.get("perplexity_ratio", []), strict=False):
        if math.isclose(at, x, rel_tol=1e-9, abs_tol=1e-12) and is_finite(ratio) and ratio > 0:
            return math.log(ratio)
    return None


def _summary(values: Sequence[float | None]) -> dict[str, Any]:
    return seed_statistics([v for v in values if v is not None])


def _paired(table: SweepTable, tau_a: float, tau_b: float, read) -> tuple[list[float], list[int]]:
    """``read(a) − read(b)`` for every seed measured at both ``tau_a`` and ``tau_b`` (the seed pairs them)."""
    differences, seeds = [], []
    for seed in sorted(set(table.get(tau_a, {})) & set(table.get(tau_b, {}))):
        a, b = read(table[tau_a][seed]), read(table[tau_b][seed])
        if a is not None and b is not None:
            differences.append(a - b)
            seeds.append(seed)
    return differences, seeds


def _family(tests: list[dict], alpha: float) -> list[dict]:
    """Holm's correction across ``tests`` (each a :func:`paired_test` result with its ``"sign"``), their verdicts."""
    adjusted = holm_adjust([t["p_value"] for t in tests])
    for test, p in zip(tests, adjusted, strict=True):
        test["p_holm"] = p
        test["verdict"] = verdict(p, test["direction"], alpha)
    return tests


# ---- Fig. 2B: the Pareto of performance and smoothness ---------------------------------------------------------


def _pareto_front(points: list[dict], performance: str, higher_is_better: bool) -> list[float]:
    """The τ whose (mean smoothness, mean performance) no other τ beats in both (at least as good, better in one)."""
    usable = [p for p in points if is_finite(p["smoothness"]["mean"]) and is_finite(p[performance]["mean"])]
    sign = 1 if higher_is_better else -1

    def beats(q, p):
        s_q, s_p = q["smoothness"]["mean"], p["smoothness"]["mean"]
        f_q, f_p = sign * q[performance]["mean"], sign * p[performance]["mean"]
        return s_q >= s_p and f_q >= f_p and (s_q > s_p or f_q > f_p)

    return [p["tau"] for p in usable if not any(beats(q, p) for q in usable if q is not p)]


def pareto_design(table: SweepTable, alpha: float = 0.05) -> dict[str, Any]:
    """Fig. 2B: each τ's smoothness and performance (mean ± sd over seeds), the Pareto front, and the perplexity
    cost of each TopoNet over the baseline of its seed (``log perplexity(τ) − log perplexity(0)``, two-sided, Holm
    across the τ)."""
    points = []
    for tau, seeds in table.items():
        models = list(seeds.values())
        points.append({
            "tau": tau,
            "smoothness": _summary([_value(m, "smoothness") for m in models]),
            "perplexity": _summary([_value(m, "perplexity") for m in models]),
            "blimp": _summary([_value(m, "blimp") for m in models]),
        })  # fmt: skip
    cost = []
    for tau in table:
        if tau == 0:
            continue
        differences, seeds = _paired(table, tau, 0.0, lambda m: _log_value(m, "perplexity"))
        cost.append({"tau": tau, "seeds": seeds, **paired_test(differences, sign=-1)})
    block = {
        "design": "Fig. 2B: performance against smoothness, one point per τ (mean ± sd over seeds); the perplexity "
        "cost of each τ is the paired log ratio to the baseline of the same seed",
        "points": points,
        "pareto_front_perplexity": _pareto_front(points, "perplexity", higher_is_better=False),
        "perplexity_cost": _family(cost, alpha),
    }
    if any(p["blimp"]["n_seeds"] for p in points):
        block["pareto_front_blimp"] = _pareto_front(points, "blimp", higher_is_better=True)
    return block


# ---- Fig. 3B / A.9: effective dimensionality ---------------------------------------------------------------


def _correlations(rows: list[dict], performance: str) -> dict[str, Any]:
    """Dimensionality's correlations with smoothness and with ``performance`` on the same models, compared."""
    usable = [r for r in rows if None not in (r["dimensionality"], r["smoothness"], r[performance])]
    n = len(usable)
    if n < 4:
        return {"n": n, "note": "fewer than 4 models with every measure: not tested"}
    dims = [r["dimensionality"] for r in usable]
    smooth = [r["smoothness"] for r in usable]
    perf = [r[performance] for r in usable]
    try:
        with_smoothness = correlation_with_ci(dims, smooth)
        with_performance = correlation_with_ci(dims, perf)
        between = correlation_with_ci(smooth, perf)["r"]
    except ValueError as err:  # a constant series
        return {"n": n, "note": f"not tested: {err}"}
    r1, r2 = with_smoothness["r"], with_performance["r"]
    block: dict[str, Any] = {
        "n": n,
        "performance": performance,
        "dimensionality_vs_smoothness": with_smoothness,
        "dimensionality_vs_performance": with_performance,
        "smoothness_vs_performance": between,
    }
    if abs(r1) < 1 and abs(r2) < 1:
        # The paper compares the strengths of the two relationships: |r| against |r|, each sign flipped to +.
        block["fisher_z"] = fisher_z_test(abs(r1), n, abs(r2), n)
        s1, s2 = math.copysign(1, r1), math.copysign(1, r2)
        try:
            block["steiger"] = dependent_correlations_test(abs(r1), abs(r2), s1 * s2 * between, n)
        except ValueError as err:
            block["steiger"] = {"note": f"not tested: {err}"}
    return block


def _quadratic_trend(xs: Sequence[float], ys: Sequence[float]) -> dict[str, Any]:
    """OLS of ``y = b0 + b1 x + b2 x²``: ``b2`` with its two-sided t-test (df n − 3) and the vertex ``−b1 / 2 b2``."""
    import numpy as np

    from .statistics import student_t_sf

    n = len(xs)
    if n < 4 or len(set(xs)) < 3:
        return {"n": n, "note": "fewer than 4 models or 3 distinct τ: not fitted"}
    x = np.asarray(xs, dtype=float)
    design = np.stack([np.ones(n), x, x * x], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, np.asarray(ys, dtype=float), rcond=None)
    residuals = np.asarray(ys) - design @ coefficients
    df = n - 3
    sigma2 = float(residuals @ residuals) / df if df > 0 else math.nan
    covariance = sigma2 * np.linalg.inv(design.T @ design)
    b1, b2 = float(coefficients[1]), float(coefficients[2])
    se = math.sqrt(float(covariance[2, 2])) if df > 0 else math.nan
    t = b2 / se if se > 0 else math.copysign(math.inf, b2)
    vertex = -b1 / (2 * b2) if b2 != 0 else None
    return {
        "x": "log(1 + τ)", "n": n, "b1": b1, "b2": b2, "se_b2": se, "t_b2": t, "df": df,
        "p_value_b2": min(1.0, 2.0 * student_t_sf(abs(t), df)) if df > 0 else None,
        "vertex_tau": math.expm1(vertex) if vertex is not None and vertex < 700 else None,
    }  # fmt: skip


def _bootstrap_peak(table: SweepTable, resamples: int, seed: int) -> dict[str, Any]:
    """How often each τ has the largest mean dimensionality when the seeds are resampled with replacement (the same
    seeds at every τ: a seed pairs its models)."""
    seeds = sorted(set.intersection(*(set(s) for s in table.values()))) if table else []
    dims = {tau: {s: _value(table[tau][s], "effective_dimensionality") for s in seeds} for tau in table}
    seeds = [s for s in seeds if all(dims[tau][s] is not None for tau in table)]
    if len(seeds) < 2:
        return {"n_seeds": len(seeds), "note": "fewer than 2 seeds measured at every τ: no bootstrap"}
    rng = random.Random(seed)
    counts = dict.fromkeys(table, 0)
    for _ in range(resamples):
        draw = [rng.choice(seeds) for _ in seeds]
        means = {tau: sum(dims[tau][s] for s in draw) / len(draw) for tau in table}
        counts[max(means, key=means.get)] += 1
    means = {tau: sum(dims[tau][s] for s in seeds) / len(seeds) for tau in table}
    return {
        "n_seeds": len(seeds), "resamples": resamples, "argmax_tau": max(means, key=means.get),
        "share_argmax": [{"tau": tau, "share": count / resamples} for tau, count in counts.items()],
    }  # fmt: skip


def dimensionality_design(
    table: SweepTable, peak_tau: float = 1.0, alpha: float = 0.05, resamples: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Fig. 3B and A.9 (see the module docstring): correlations across all models of the sweep, and the rise of
    effective dimensionality from the baseline to ``peak_tau`` then its fall to the largest τ."""
    rows = [
        {
            "tau": tau, "seed": s,
            "dimensionality": _value(m, "effective_dimensionality"), "smoothness": _value(m, "smoothness"),
            "log_perplexity": _log_value(m, "perplexity"), "blimp": _value(m, "blimp"),
        }
        for tau, seeds in table.items() for s, m in seeds.items()
    ]  # fmt: skip
    block: dict[str, Any] = {
        "design": "Fig. 3B: Pearson correlations across all models (τ × seeds) of effective dimensionality with "
        "smoothness and with performance, compared by Fisher's z (the paper) and Steiger's test (shared "
        "variable); A.9: rise from τ = 0 to the paper's peak, fall to the largest τ (intersection-union of two "
        "paired two-sided t-tests); quadratic trend in log(1 + τ) and bootstrap of the peak τ as descriptions",
        "models": rows,
        "per_tau": [{"tau": tau, **_summary([r["dimensionality"] for r in rows if r["tau"] == tau])} for tau in table],
        "correlations": {"log_perplexity": _correlations(rows, "log_perplexity")},
    }
    if any(r["blimp"] is not None for r in rows):
        block["correlations"]["blimp"] = _correlations(rows, "blimp")
    top = max(table) if table else None
    dim = lambda m: _value(m, "effective_dimensionality")  # noqa: E731
    if peak_tau in table and 0.0 in table and top not in (None, peak_tau, 0.0):
        rise = paired_test(_paired(table, peak_tau, 0.0, dim)[0], sign=+1)
        fall = paired_test(_paired(table, peak_tau, top, dim)[0], sign=+1)
        for test in (rise, fall):
            test["verdict"] = verdict(test["p_value"], test["direction"], alpha)
        verdicts = {rise["verdict"], fall["verdict"]}
        overall = (
            "reproduced" if verdicts == {"reproduced"}
            else "contradicted" if "contradicted" in verdicts
            else "not measured" if "not measured" in verdicts
            else "not at this scale"
        )  # fmt: skip
        block["rise_then_fall"] = {
            "peak_tau": peak_tau, "largest_tau": top,
            "rise": {"contrast": f"dim(τ={peak_tau:g}) − dim(τ=0)", **rise},
            "fall": {"contrast": f"dim(τ={peak_tau:g}) − dim(τ={top:g})", **fall},
            "verdict": overall,
        }  # fmt: skip
    else:
        block["rise_then_fall"] = {"note": f"needs τ = 0, τ = {peak_tau:g} and a larger τ in the sweep"}
    usable = [r for r in rows if r["dimensionality"] is not None]
    block["quadratic_trend"] = _quadratic_trend(
        [math.log1p(r["tau"]) for r in usable], [r["dimensionality"] for r in usable]
    )
    block["bootstrap_peak"] = _bootstrap_peak(table, resamples, seed)
    return block


# ---- Fig. 4A and 4B / A.10: pruning and downsampling -------------------------------------------------------


def _strengths(table: SweepTable, curve: str) -> list[float]:
    xs = set()
    for seeds in table.values():
        for measures in seeds.values():
            xs.update((measures.get(curve) or {}).get("x", []))
    return sorted(xs)


def _damage_per_tau(table: SweepTable, curve: str, x: float) -> list[dict]:
    return [
        {"tau": tau, **_summary([_curve_log_damage(m, curve, x) for m in seeds.values()])}
        for tau, seeds in table.items()
    ]


def _against_baseline(table: SweepTable, curve: str, x: float, **label) -> list[dict]:
    tests = []
    for tau in table:
        if tau == 0:
            continue
        differences, seeds = _paired(table, tau, 0.0, lambda m: _curve_log_damage(m, curve, x))
        tests.append({"tau": tau, **label, "seeds": seeds, **paired_test(differences, sign=-1)})
    return tests


def _matched_fractions(table: SweepTable) -> dict[float, float]:
    """``{φ: matched pruning fraction}`` as the models recorded them (one architecture per sweep)."""
    for seeds in table.values():
        for measures in seeds.values():
            matched = measures.get("matched_pruning") or {}
            if matched.get("factor"):
                return dict(zip(map(float, matched["factor"]), map(float, matched["fraction"]), strict=True))
    return {}


def pruning_design(table: SweepTable, alpha: float = 0.05) -> dict[str, Any]:
    """Fig. 4A: the log damage ``log(perplexity pruned / perplexity)`` of L1 unstructured pruning per τ, at the
    fractions matched to φ × φ downsampling (the confirmatory family: every τ > 0 against the baseline at every
    matched φ, two-sided, Holm) and over the whole sweep (a second family), the damage of downsampling at the same
    parameter count beside the matched one."""
    matched = _matched_fractions(table)
    matched_tests = []
    for factor, fraction in matched.items():
        matched_tests += _against_baseline(table, "pruning_curve", fraction, factor=factor, fraction=fraction)
    sweep = [x for x in _strengths(table, "pruning_curve") if x > 0 and not any(
        math.isclose(x, f, rel_tol=1e-9) for f in matched.values())]  # fmt: skip
    sweep_tests = []
    for fraction in sweep:
        sweep_tests += _against_baseline(table, "pruning_curve", fraction, fraction=fraction)
    return {
        "design": "Fig. 4A: log(perplexity pruned / perplexity) of L1 unstructured pruning of the topographic layers, "
        "each τ against the baseline of its seed (paired, two-sided; Holm within the matched family and within "
        "the sweep family); matched fraction = 1 − weights kept by φ × φ downsampling / weights",
        "matched": [
            {
                "factor": factor,
                "fraction": fraction,
                "pruning_log_damage": _damage_per_tau(table, "pruning_curve", fraction),
                "downsampling_log_damage": _damage_per_tau(table, "downsampling_curve", factor),
            }
            for factor, fraction in matched.items()
        ],  # fmt: skip
        "matched_tests": _family(matched_tests, alpha),
        "sweep": [{"fraction": x, "log_damage": _damage_per_tau(table, "pruning_curve", x)} for x in sweep],
        "sweep_tests": _family(sweep_tests, alpha),
    }


def _slope(xs: Sequence[float], ys: Sequence[float]) -> dict[str, Any]:
    """OLS slope of ``y`` on ``x`` with its two-sided t-test (df n − 2)."""
    from .statistics import student_t_sf

    n = len(xs)
    if n < 3 or len(set(xs)) < 2:
        return {"n": n, "note": "fewer than 3 models or 2 distinct τ: no trend"}
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    residual = sum((y - my - slope * (x - mx)) ** 2 for x, y in zip(xs, ys, strict=True))
    se = math.sqrt(residual / (n - 2) / sxx)
    t = slope / se if se > 0 else (0.0 if slope == 0 else math.copysign(math.inf, slope))
    return {
        "n": n,
        "slope": slope,
        "se": se,
        "t": t,
        "df": n - 2,
        "p_value": min(1.0, 2 * student_t_sf(abs(t), n - 2)),
    }


def downsampling_design(table: SweepTable, alpha: float = 0.05, resamples: int = 2000, seed: int = 0) -> dict:
    """Fig. 4B / A.10: the log damage ``log(perplexity downsampled / perplexity)`` of the paper's φ × φ layer over
    φ × τ: per φ, its trend over ``log(1 + τ)`` across all models (OLS slope, two-sided), the τ with the smallest
    mean damage and how often it is the smallest when seeds are resampled, and the largest τ against every other τ
    (paired by seed, two-sided; Holm across φ × τ: is it the most resilient, as A.10 finds τ = 50)."""
    top = max(table) if table else None
    rng = random.Random(seed)
    per_factor, contrasts = [], []
    for factor in [x for x in _strengths(table, "downsampling_curve") if x > 1]:
        damage = lambda m, f=factor: _curve_log_damage(m, "downsampling_curve", f)  # noqa: E731
        rows = [(tau, damage(m)) for tau, seeds in table.items() for m in seeds.values()]
        rows = [(tau, d) for tau, d in rows if d is not None]
        per_tau = _damage_per_tau(table, "downsampling_curve", factor)
        means = {p["tau"]: p["mean"] for p in per_tau if is_finite(p["mean"])}
        seeds = sorted(set.intersection(*(set(s) for s in table.values())))
        seeds = [s for s in seeds if all(damage(table[tau][s]) is not None for tau in table)]
        shares = dict.fromkeys(table, 0)
        if len(seeds) >= 2:
            for _ in range(resamples):
                draw = [rng.choice(seeds) for _ in seeds]
                boot = {tau: sum(damage(table[tau][s]) for s in draw) for tau in table}
                shares[min(boot, key=boot.get)] += 1
        per_factor.append({
            "factor": factor,
            "parameters_kept": _summary([
                _curve_point(m, "downsampling_curve", factor, "parameters_kept") for s in table.values()
                for m in s.values()]),
            "log_damage": per_tau,
            "trend_over_log1p_tau": _slope([math.log1p(t) for t, _ in rows], [d for _, d in rows]),
            "most_resilient_tau": min(means, key=means.get) if means else None,
            "bootstrap_most_resilient": (
                [{"tau": tau, "share": n / resamples} for tau, n in shares.items()] if len(seeds) >= 2 else None),
        })  # fmt: skip
        for tau in table:
            if tau != top:
                differences, paired_seeds = _paired(table, top, tau, damage)
                contrasts.append({"factor": factor, "tau": top, "against_tau": tau, "seeds": paired_seeds,
                                  **paired_test(differences, sign=-1)})  # fmt: skip
    return {
        "design": "Fig. 4B / A.10: log(perplexity downsampled / perplexity) of the paper's layer (no gains) at φ × φ "
        "for every τ; per φ the OLS trend over log(1 + τ) and the most resilient τ; the largest τ against each "
        "other τ (paired by seed, two-sided, Holm across φ × τ)",
        "largest_tau": top,
        "per_factor": per_factor,
        "largest_tau_contrasts": _family(contrasts, alpha),
    }


def _curve_point(measures: dict, curve: str, x: float, column: str) -> float | None:
    data = measures.get(curve) or {}
    for at, value in zip(data.get("x", []), data.get(column) or [], strict=False):
        if math.isclose(at, x, rel_tol=1e-9) and is_finite(value):
            return float(value)
    return None


def tau_sweep_designs(
    per_seed: Mapping[Any, Mapping[str, dict]], taus: Sequence[float], topo_tau: float, alpha: float = 0.05,
    peak_tau: float = 1.0, seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Every design of the sweep from the claims' per-seed measures: the ``"tau_sweep"`` block of the results."""
    table = sweep_table(per_seed, taus, topo_tau)
    return {
        "taus": list(table),
        "models": {f"{tau:g}": tau_model_name(tau, topo_tau) for tau in table},
        "seeds_per_tau": {f"{tau:g}": sorted(seeds) for tau, seeds in table.items()},
        "alpha": alpha,
        "pareto": pareto_design(table, alpha),
        "dimensionality": dimensionality_design(table, peak_tau, alpha, seed=seed),
        "pruning": pruning_design(table, alpha),
        "downsampling": downsampling_design(table, alpha, seed=seed),
        "figures": dict(FIGURES),
    }


# ---- figures -------------------------------------------------------------------------------------------------


def _tau_colors(taus: Sequence[float]):
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    positive = [t for t in taus if t > 0]
    scale = max(1, len(positive) - 1)
    return {t: ("black" if t == 0 else cmap(0.85 * positive.index(t) / scale)) for t in taus}


def _legend(ax) -> None:
    """A legend when the axes have labelled artists (a design without data draws none: no empty legend, no warning)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def _plot_pareto(block: dict, path: str) -> None:
    import matplotlib.pyplot as plt

    points = block["points"]
    panels = [("perplexity", "held-out perplexity (lower is better)")]
    if any(p["blimp"]["n_seeds"] for p in points):
        panels.append(("blimp", "BLiMP accuracy"))
    colors = _tau_colors([p["tau"] for p in points])
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        for p in points:
            if not (is_finite(p["smoothness"]["mean"]) and is_finite(p[key]["mean"])):
                continue
            ax.errorbar(p["smoothness"]["mean"], p[key]["mean"], xerr=_sd(p["smoothness"]), yerr=_sd(p[key]),
                        fmt="o", color=colors[p["tau"]], capsize=3, label=f"τ = {p['tau']:g}")  # fmt: skip
        front = sorted(
            (p for p in points if p["tau"] in block.get(f"pareto_front_{key}", [])),
            key=lambda p: p["smoothness"]["mean"],
        )
        if len(front) > 1:
            ax.plot([p["smoothness"]["mean"] for p in front], [p[key]["mean"] for p in front], "k--", lw=0.8)
        ax.set_xlabel("smoothness (max − min correlation over sheet distance)")
        ax.set_ylabel(label)
    _legend(axes[0][0])
    fig.suptitle("Fig. 2B: performance against topography (mean ± sd over seeds; dashed: Pareto front)", fontsize=10)
    _save(fig, path)


def _sd(stats: dict) -> float:
    return stats["sd"] if is_finite(stats.get("sd")) else 0.0


def _plot_dimensionality(block: dict, path: str) -> None:
    import matplotlib.pyplot as plt

    rows = block["models"]
    colors = _tau_colors(sorted({r["tau"] for r in rows}))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, key, label in (
        (axes[0], "log_perplexity", "log perplexity"), (axes[1], "smoothness", "smoothness"),
    ):  # fmt: skip
        for r in rows:
            if r[key] is not None and r["dimensionality"] is not None:
                ax.scatter(r[key], r["dimensionality"], color=colors[r["tau"]], s=25)
        corr = block["correlations"]["log_perplexity"]
        stats = corr.get(
            "dimensionality_vs_performance" if key == "log_perplexity" else "dimensionality_vs_smoothness"
        )
        if stats:
            ax.set_title(f"r = {stats['r']:.2f} (p = {stats['p_value']:.2g}, n = {stats['n']})", fontsize=9)
        ax.set_xlabel(label)
        ax.set_ylabel("effective dimensionality")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=color, label=f"τ = {tau:g}") for tau, color in colors.items()]
    axes[1].legend(handles=handles, fontsize=8)
    per_tau = [p for p in block["per_tau"] if is_finite(p["mean"])]
    xs = [math.log1p(p["tau"]) for p in per_tau]
    axes[2].errorbar(xs, [p["mean"] for p in per_tau], yerr=[_sd(p) for p in per_tau], fmt="o-", color="tab:red",
                     capsize=3)  # fmt: skip
    axes[2].set_xticks(xs, [f"{p['tau']:g}" for p in per_tau])
    axes[2].set_xlabel("τ (log(1 + τ) axis)")
    axes[2].set_ylabel("effective dimensionality")
    axes[2].set_title(f"A.9 rise then fall: {block['rise_then_fall'].get('verdict', 'not measured')}", fontsize=9)
    fig.suptitle(
        "Fig. 3B / A.9: effective dimensionality across the τ sweep (colour: τ, black: baseline)", fontsize=10
    )
    _save(fig, path)


def _plot_pruning(block: dict, path: str) -> None:
    import matplotlib.pyplot as plt

    points: dict[float, list[tuple[float, dict]]] = {}
    for entry in block["sweep"]:
        for p in entry["log_damage"]:
            points.setdefault(p["tau"], []).append((entry["fraction"], p))
    for entry in block["matched"]:
        for p in entry["pruning_log_damage"]:
            points.setdefault(p["tau"], []).append((entry["fraction"], p))
    colors = _tau_colors(sorted(points))
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for tau, series in sorted(points.items()):
        series = sorted((x, p) for x, p in series if is_finite(p["mean"]))
        ax.errorbar([x for x, _ in series], [p["mean"] for _, p in series], yerr=[_sd(p) for _, p in series],
                    fmt="o-" if tau else "o--", color=colors[tau], capsize=2, ms=3, label=f"τ = {tau:g}")  # fmt: skip
    for entry in block["matched"]:
        ax.axvline(entry["fraction"], color="gray", lw=0.6, ls=":")
        ax.text(entry["fraction"], ax.get_ylim()[1], f"φ={entry['factor']:g}", fontsize=7, ha="center", va="bottom")
    ax.set_yscale("symlog", linthresh=0.01)
    ax.set_xlabel("fraction of topographic weights pruned (L1 unstructured)")
    ax.set_ylabel("log(perplexity pruned / perplexity)")
    _legend(ax)
    ax.set_title("Fig. 4A: L1 pruning (dotted: fractions matched to φ × φ downsampling)", fontsize=10)
    _save(fig, path)


def _plot_downsampling(block: dict, path: str) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for entry in block["per_factor"]:
        per_tau = [p for p in entry["log_damage"] if is_finite(p["mean"])]
        xs = [math.log1p(p["tau"]) for p in per_tau]
        ax.errorbar(xs, [p["mean"] for p in per_tau], yerr=[_sd(p) for p in per_tau], fmt="o-", capsize=3,
                    label=f"φ = {entry['factor']:g}")  # fmt: skip
        ax.set_xticks(xs, [f"{p['tau']:g}" for p in per_tau])
    ax.set_xlabel("τ (log(1 + τ) axis; 0 = baseline)")
    ax.set_ylabel("log(perplexity downsampled / perplexity)")
    _legend(ax)
    ax.set_title("Fig. 4B / A.10: downsampling damage over φ × τ (the paper's layer)", fontsize=10)
    _save(fig, path)


def _save(fig, path: str) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_tau_sweep(sweep: dict, directory: str | os.PathLike) -> list[str]:
    """Draw every design of a ``"tau_sweep"`` block (:func:`tau_sweep_designs`) into ``directory`` under the names
    of :data:`FIGURES`; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    os.makedirs(directory, exist_ok=True)
    draw = {
        "pareto": _plot_pareto, "dimensionality": _plot_dimensionality, "pruning": _plot_pruning,
        "downsampling": _plot_downsampling,
    }  # fmt: skip
    paths = []
    for key, name in FIGURES.items():
        path = os.path.join(directory, name)
        draw[key](sweep[key], path)
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> list[str]:
    """``python -m hf_topo.experiments.tau_sweep RESULTS.json --output_dir DIR``: the figures of a results JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m hf_topo.experiments.tau_sweep", description="Draw the τ-sweep figures of a claims JSON."
    )
    parser.add_argument("results", help="A paper_claims.json written by hf-topo claims with --taus.")
    parser.add_argument("--output_dir", default=None, help="Where the PNGs go (default: next to the JSON).")
    args = parser.parse_args(argv)
    with open(args.results) as f:
        result = json.load(f)
    if "tau_sweep" not in result:
        raise SystemExit(f"{args.results} has no 'tau_sweep' block: it was written without --taus.")
    paths = plot_tau_sweep(result["tau_sweep"], args.output_dir or os.path.dirname(os.path.abspath(args.results)))
    print("\n".join(paths))
    return paths


if __name__ == "__main__":
    main()
