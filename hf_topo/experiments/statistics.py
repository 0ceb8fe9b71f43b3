"""The verdict rule of the experiments, and the distributions it needs without SciPy.

A claim compares model ``a`` with model ``b`` over seeds ``s`` (the seed pairs them: same initialization and data
order). On the claim's scale (raw, or log for ratio-type measures) each seed gives a paired difference
``d_s = f(a_s) − f(b_s)`` (or ``f(a_s) − threshold`` for a claim about one model against a fixed value). The claim
says ``sign · d > −margin``: ``sign`` +1 when ``a`` should be larger, −1 smaller; ``margin`` 0 for a strict direction,
> 0 for a non-inferiority claim ("no large cost": ``a`` may be worse than ``b`` by less than the margin). The null
value of the test is the boundary of the claim, ``δ₀ = −sign · margin``.

* **Test** (:func:`paired_test`): the two-sided paired t-test of ``mean d = δ₀`` over the ``n`` seeds (``n − 1``
  degrees of freedom). For a non-inferiority claim this is the two-sided test against the margin, i.e. each
  one-sided test at α/2, the convention of ICH E9 / CONSORT: "reproduced" before correction ⇔ the 95 % interval of
  the mean difference lies entirely on the claim's side of the margin.
* **Effect size**: the mean paired difference on the claim's scale with its 95 % t interval, and Cohen's
  ``d_z = mean d / sd d`` (for a margin claim, ``(mean d − δ₀) / sd d``).
* **Family and correction** (:func:`holm_adjust`): every measured claim of one table is one family; Holm's (1979)
  step-down correction of the two-sided p-values across it controls the family-wise error rate at α.
* **Verdict** (:func:`verdict`): **reproduced** when the Holm-corrected p < α and the mean lies on the claim's side
  of δ₀; **contradicted** when the Holm-corrected p < α on the other side; **not at this scale** otherwise;
  **not measured** with fewer than 2 seeds.

Correlations across models (the designs of TopoNets Fig. 3B): :func:`correlation_with_ci` (Pearson's r, its t-test
and Fisher-z interval), :func:`fisher_z_test` (two independent correlations, as the paper compares them) and
:func:`dependent_correlations_test` (Steiger's test of two correlations that share a variable and the models).

The distributions (Student's t tail and quantile, the normal tail and quantile) are computed here so that the
library needs no SciPy; the tests check them against SciPy.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

__all__ = [
    "VERDICTS",
    "correlation_with_ci",
    "dependent_correlations_test",
    "fisher_z_test",
    "holm_adjust",
    "is_finite",
    "normal_quantile",
    "normal_sf",
    "paired_test",
    "seed_statistics",
    "student_t_quantile",
    "student_t_sf",
    "verdict",
]

#: The verdicts of :func:`verdict`, from the claim's side to the missing measure.
VERDICTS = ("reproduced", "not at this scale", "contradicted", "not measured")


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c if abs(1.0 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_sf(t: float, df: float) -> float:
    """``P(T ≥ t)`` for Student's t with ``df`` degrees of freedom (upper tail; no SciPy needed)."""
    if not df > 0:
        raise ValueError(f"df={df} must be positive.")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


def _invert_decreasing(sf, q: float, low: float, high: float) -> float:
    """The ``x`` with ``sf(x) = q`` for a decreasing ``sf``: bracket, then bisect to machine precision."""
    while sf(low) < q:
        low *= 2.0
    while sf(high) > q:
        high *= 2.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        if middle in (low, high):
            break
        if sf(middle) > q:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


@functools.lru_cache(maxsize=1024)
def student_t_quantile(probability: float, df: float) -> float:
    """The ``probability`` quantile of Student's t with ``df`` degrees of freedom: ``t`` with ``P(T ≤ t) =
    probability`` (e.g. ``student_t_quantile(0.975, 2) = 4.303``, the half-width factor of a 95 % interval)."""
    if not 0 < probability < 1:
        raise ValueError(f"probability={probability} must be between 0 and 1 (exclusive), e.g. 0.975.")
    if not df > 0:
        raise ValueError(f"df={df} must be positive.")
    if probability == 0.5:
        return 0.0
    upper = max(probability, 1.0 - probability)
    t = _invert_decreasing(lambda x: student_t_sf(x, df), 1.0 - upper, 0.0, 1.0)
    return t if probability > 0.5 else -t


def normal_sf(z: float) -> float:
    """``P(Z ≥ z)`` for the standard normal."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def normal_quantile(probability: float) -> float:
    """The ``probability`` quantile of the standard normal (``normal_quantile(0.975) = 1.95996``)."""
    if not 0 < probability < 1:
        raise ValueError(f"probability={probability} must be between 0 and 1 (exclusive), e.g. 0.975.")
    if probability == 0.5:
        return 0.0
    upper = max(probability, 1.0 - probability)
    z = _invert_decreasing(normal_sf, 1.0 - upper, 0.0, 1.0)
    return z if probability > 0.5 else -z


def is_finite(value: Any) -> bool:
    """A real number (not a bool, None or a string) that is finite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def seed_statistics(values: Sequence[float]) -> dict[str, Any]:
    """``{"n_seeds", "mean", "sd" (n − 1), "values"}`` of one measure over seeds (NaN where undefined)."""
    n = len(values)
    mean = sum(values) / n if n else math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return {"n_seeds": n, "mean": mean, "sd": sd, "values": list(values)}


def _two_sided(t: float, df: float) -> float:
    return min(1.0, 2.0 * student_t_sf(abs(t), df))


def paired_test(
    differences: Sequence[float], sign: int = 1, margin: float = 0.0, confidence: float = 0.95
) -> dict[str, Any]:
    """The two-sided paired t-test of one claim, with its effect size.

    Args:
        differences: the per-seed paired differences ``d_s = f(a_s) − f(b_s)`` on the claim's scale.
        sign: +1 when the claim is ``d > 0`` (``a`` larger), −1 when ``d < 0``.
        margin: ≥ 0; the claim is ``sign · d > −margin`` and the null value ``δ₀ = −sign · margin`` (0: a strict
            direction; > 0: non-inferiority with that margin).
        confidence: of the interval of the mean difference (default 0.95).

    Returns:
        ``{"n", "df", "null_value", "mean_difference", "sd_difference", "ci_low", "ci_high", "confidence",
        "cohens_dz", "t", "p_value" (two-sided), "p_one_sided" (in the claim's direction), "direction" (+1 when
        the mean lies on the claim's side of δ₀, −1 on the other, 0 on it)}``. With fewer than 2 differences the
        statistics are ``None``. Identical differences give ``t = ±inf`` and an interval of zero width.
    """
    if sign not in (1, -1):
        raise ValueError(f"sign={sign} must be +1 (a larger) or -1 (a smaller).")
    if not margin >= 0:
        raise ValueError(f"margin={margin} must be ≥ 0 (the allowance of a non-inferiority claim, 0 for none).")
    null = -sign * margin if margin else 0.0
    n = len(differences)
    result: dict[str, Any] = {"n": n, "df": n - 1 if n > 1 else None, "null_value": null, "confidence": confidence}
    if n < 2:
        stats = ("mean_difference", "sd_difference", "ci_low", "ci_high", "cohens_dz", "t", "p_value", "p_one_sided")
        return result | dict.fromkeys(stats) | {"direction": 0}
    differences = [float(d) for d in differences]
    mean = sum(differences) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    shift = mean - null
    if sd == 0:
        t = 0.0 if shift == 0 else math.copysign(math.inf, shift)
        dz = 0.0 if shift == 0 else math.copysign(math.inf, shift)
    else:
        t, dz = shift / (sd / math.sqrt(n)), shift / sd
    half_width = student_t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    return result | {
        "mean_difference": mean,
        "sd_difference": sd,
        "ci_low": mean - half_width,
        "ci_high": mean + half_width,
        "cohens_dz": dz,
        "t": t,
        "p_value": _two_sided(t, n - 1),
        "p_one_sided": student_t_sf(sign * t, n - 1),
        "direction": 0 if shift == 0 else (1 if sign * shift > 0 else -1),
    }


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's (1979) step-down adjusted p-values of one family of tests (``None``: not in the family).

    The ``k``-th smallest of the ``m`` p-values becomes ``max_{j ≤ k} min(1, (m − j + 1) · p_(j))``; rejecting every
    hypothesis whose adjusted p-value is below α controls the family-wise error rate at α.
    """
    indexed = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    for p, _ in indexed:
        if not (is_finite(p) and 0 <= p <= 1):
            raise ValueError(f"A p-value must be a number in [0, 1] (or None); got {p!r}.")
    m = len(indexed)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(indexed):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def verdict(p_adjusted: float | None, direction: int, alpha: float = 0.05) -> str:
    """The verdict of one claim from its (Holm-corrected) two-sided p-value and the side of its mean (see the module
    docstring); ``None`` p-value: ``"not measured"``."""
    if p_adjusted is None:
        return "not measured"
    if p_adjusted < alpha and direction > 0:
        return "reproduced"
    if p_adjusted < alpha and direction < 0:
        return "contradicted"
    return "not at this scale"


# ---- correlations across models (TopoNets Fig. 3B) -------------------------------------------------------------


def _pearson(x: Sequence[float], y: Sequence[float]) -> float:
    x, y = [float(v) for v in x], [float(v) for v in y]
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        raise ValueError("A correlation needs values that vary: one of the two series is constant.")
    return max(-1.0, min(1.0, sxy / math.sqrt(sxx * syy)))


def correlation_with_ci(x: Sequence[float], y: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Pearson's correlation of ``x`` and ``y`` (one pair per model), its two-sided t-test and Fisher-z interval.

    Returns:
        ``{"r", "n", "t", "df" (n − 2), "p_value" (two-sided, exact under bivariate normality), "ci_low",
        "ci_high" (``tanh(atanh r ± z_{(1+confidence)/2} / √(n − 3))``, ``None`` for n < 4), "confidence"}``.

    Raises:
        ValueError: fewer than 3 pairs, unequal lengths, or a constant series.
    """
    if len(x) != len(y):
        raise ValueError(f"x and y must pair one value per model: got {len(x)} and {len(y)} values.")
    n = len(x)
    if n < 3:
        raise ValueError(f"A correlation test needs at least 3 models; got {n}.")
    r = _pearson(x, y)
    df = n - 2
    t = math.copysign(math.inf, r) if abs(r) == 1 else r * math.sqrt(df / (1.0 - r * r))
    ci_low = ci_high = None
    if n > 3:
        if abs(r) == 1:
            ci_low = ci_high = r
        else:
            half = normal_quantile(0.5 + confidence / 2.0) / math.sqrt(n - 3)
            ci_low, ci_high = math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half)
    return {
        "r": r, "n": n, "t": t, "df": df, "p_value": _two_sided(t, df), "ci_low": ci_low, "ci_high": ci_high,
        "confidence": confidence,
    }  # fmt: skip


def _fisher_z(r: float, name: str) -> float:
    if not -1 < r < 1:
        raise ValueError(f"{name}={r} must be a correlation strictly between -1 and 1.")
    return math.atanh(r)


def fisher_z_test(r1: float, n1: int, r2: float, n2: int) -> dict[str, Any]:
    """Two correlations from independent samples compared by Fisher's z (as TopoNets §3.2 compares dimensionality's
    correlation with smoothness and with performance).

    ``z = (atanh r1 − atanh r2) / √(1/(n1 − 3) + 1/(n2 − 3))``, two-sided normal p-value. When both correlations
    are taken on the same models and share a variable, :func:`dependent_correlations_test` is the exact design.

    Returns:
        ``{"z", "p_value", "r1", "n1", "r2", "n2"}``.
    """
    for name, n in (("n1", n1), ("n2", n2)):
        if n < 4:
            raise ValueError(f"{name}={n}: Fisher's z needs at least 4 pairs per correlation.")
    z = (_fisher_z(r1, "r1") - _fisher_z(r2, "r2")) / math.sqrt(1.0 / (n1 - 3) + 1.0 / (n2 - 3))
    return {"z": z, "p_value": min(1.0, 2.0 * normal_sf(abs(z))), "r1": r1, "n1": n1, "r2": r2, "n2": n2}


def dependent_correlations_test(r_xy: float, r_xz: float, r_yz: float, n: int) -> dict[str, Any]:
    """Steiger's (1980) test of ``r_xy = r_xz`` when both correlations are taken on the same ``n`` models and share
    ``x`` (e.g. ``x`` dimensionality, ``y`` smoothness, ``z`` performance).

    With ``r̄ = (r_xy + r_xz)/2``, ``ψ = r_yz (1 − 2r̄²) − ½ r̄² (1 − 2r̄² − r_yz²)`` and ``c = ψ / (1 − r̄²)²``:
    ``Z = (atanh r_xy − atanh r_xz) · √(n − 3) / √(2 − 2c)``, two-sided normal p-value. With ``r_yz = 0`` and
    ``r̄ = 0`` it is :func:`fisher_z_test` with ``n1 = n2 = n``.

    Returns:
        ``{"z", "p_value", "r_xy", "r_xz", "r_yz", "n"}``.
    """
    if n < 4:
        raise ValueError(f"n={n}: the test needs at least 4 models.")
    z_xy, z_xz = _fisher_z(r_xy, "r_xy"), _fisher_z(r_xz, "r_xz")
    if not -1 <= r_yz <= 1:
        raise ValueError(f"r_yz={r_yz} must be a correlation between -1 and 1.")
    mean_r2 = ((r_xy + r_xz) / 2.0) ** 2
    psi = r_yz * (1.0 - 2.0 * mean_r2) - 0.5 * mean_r2 * (1.0 - 2.0 * mean_r2 - r_yz * r_yz)
    c = psi / (1.0 - mean_r2) ** 2
    if c >= 1.0:
        raise ValueError("The two correlations are identical by construction (y and z perfectly related).")
    z = (z_xy - z_xz) * math.sqrt(n - 3) / math.sqrt(2.0 - 2.0 * c)
    return {"z": z, "p_value": min(1.0, 2.0 * normal_sf(abs(z))), "r_xy": r_xy, "r_xz": r_xz, "r_yz": r_yz, "n": n}
