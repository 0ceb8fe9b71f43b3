"""The verdict rule of the experiments: a paired one-sided t-test over seeds, and Student's t without SciPy.

A comparison of model ``a`` with model ``b`` over seeds ``s`` (the seed pairs them: same initialization and data
order) reduces to signed margins ``x_s = sign · (f(a_s) − f(b_s)) + margin``; :func:`paired_verdict` tests whether
their mean is above 0:

* **reproduced**: mean ``x`` > 0 with ``p < alpha`` (the expected direction, significant over the seeds);
* **contradicted**: mean ``x`` < 0 with ``p < alpha`` in the other direction;
* **not at this scale**: neither;
* **not measured**: fewer than 2 margins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["VERDICTS", "is_finite", "paired_verdict", "seed_statistics", "student_t_sf"]

#: The verdicts of :func:`paired_verdict`, from the claim's side to the missing measure.
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


def is_finite(value: Any) -> bool:
    """A real number (not a bool, None or a string) that is finite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def seed_statistics(values: Sequence[float]) -> dict[str, Any]:
    """``{"n_seeds", "mean", "sd" (n − 1), "values"}`` of one measure over seeds (NaN where undefined)."""
    n = len(values)
    mean = sum(values) / n if n else math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return {"n_seeds": n, "mean": mean, "sd": sd, "values": list(values)}


def paired_verdict(margins: Sequence[float], alpha: float = 0.05) -> dict[str, Any]:
    """The paired one-sided t-test of the mean of ``margins`` (one per seed) against 0, and its verdict.

    Returns:
        ``{"t", "p_value", "p_value_against", "verdict"}``; with fewer than 2 margins ``{"t": None, "p_value":
        None, "verdict": "not measured"}``. Identical margins give ``t = ±inf`` (0 when all are 0).
    """
    n = len(margins)
    if n < 2:
        return {"t": None, "p_value": None, "verdict": "not measured"}
    mean = sum(margins) / n
    sd = math.sqrt(sum((m - mean) ** 2 for m in margins) / (n - 1))
    t = math.copysign(math.inf, mean) if sd == 0 else mean / (sd / math.sqrt(n))
    if sd == 0 and mean == 0:
        t = 0.0
    p_for, p_against = student_t_sf(t, n - 1), student_t_sf(-t, n - 1)
    verdict = "reproduced" if p_for < alpha else "contradicted" if p_against < alpha else "not at this scale"
    return {"t": t, "p_value": p_for, "p_value_against": p_against, "verdict": verdict}
