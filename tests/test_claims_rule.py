"""The claims table's verdict rule and every claim's direction, checked against references written here.

* **Directions**: what each claim of :data:`hf_topo.experiments.claims.CLAIMS` asserts, re-read from its sentence in the paper
  (which model, which measure, larger or smaller), is tabulated below by hand; the table must equal the data, and
  planted numbers that go the claimed way must be judged "reproduced" for every claim.
* **Smaller is better**: a strict −1 claim (no margin) on planted numbers, both ways.
* **One-sided p**: the p-value of the rule is the one-sided upper tail of Student's t with ``n − 1`` degrees of
  freedom, checked against closed forms of that tail (Abramowitz & Stegun 26.7.3, the ``ν = 1, 2, 3, 4`` special
  cases: ``½ − atan(t)/π``, ``½ − t / (2√(t² + 2))``, ``½ − (u/(1 + u²) + atan u)/π`` with ``u = t/√3``, and
  ``½ − (3/8) · s · (1 − t²/(12 (1 + t²/4)))`` with ``s = t/√(1 + t²/4)``; when the test was written they agreed
  with mpmath's quadrature of the t density to 1e-15), on borderline cases where the one-sided and the two-sided
  p-values fall on either side of alpha = 0.05.

SciPy is not a test dependency, hence the closed forms.
"""

import math

import pytest

from hf_topo.experiments.claims import BASELINE_AT_TOPOLM_SITES, CLAIMS, Claim, evaluate_claim
from hf_topo.experiments.statistics import student_t_sf

# ---- Student's t: closed forms of the upper tail --------------------------------------------------------------


def _closed_form_sf(t: float, df: int) -> float:
    if df == 1:
        return 0.5 - math.atan(t) / math.pi
    if df == 2:
        return 0.5 - t / (2 * math.sqrt(t * t + 2))
    if df == 3:
        u = t / math.sqrt(3)
        return 0.5 - (u / (1 + u * u) + math.atan(u)) / math.pi
    if df == 4:
        s = t / math.sqrt(1 + t * t / 4)
        return 0.5 - 0.375 * s * (1 - t * t / (12 * (1 + t * t / 4)))
    raise ValueError(df)


@pytest.mark.parametrize("df", [1, 2, 3, 4])
@pytest.mark.parametrize("t", [-3.0, -0.7, 0.0, 0.4, 1.9, 2.5, 2 * math.sqrt(3), 4.303, 9.0])
def test_the_t_tail_equals_its_closed_forms(t, df):
    assert student_t_sf(t, df) == pytest.approx(_closed_form_sf(t, df), abs=1e-12)


@pytest.mark.parametrize(
    "t, df, two_sided",  # two-sided 5 % critical values (printed tables): the one-sided tail there is 2.5 %
    [(12.706, 1, 0.05), (4.303, 2, 0.05), (3.182, 3, 0.05), (2.776, 4, 0.05), (9.925, 2, 0.01)],
)
def test_a_two_sided_critical_value_leaves_half_its_level_in_one_tail(t, df, two_sided):
    assert student_t_sf(t, df) == pytest.approx(two_sided / 2, abs=1e-4)


# ---- planted numbers ----------------------------------------------------------------------------------------------

LARGER = Claim("larger", "a is larger", "paper", "Fig. 1", "larger", "m", "toponet", "baseline", +1)
SMALLER = Claim("smaller", "a is smaller", "paper", "Fig. 1", "smaller", "m", "toponet", "baseline", -1)


def _seeds(a, b, metric="m", metric_b=None, a_name="toponet", b_name="baseline"):
    seeds = []
    for x, y in zip(a, b, strict=True):
        measures = {a_name: {metric: x}}
        measures.setdefault(b_name, {})[metric_b or metric] = y
        seeds.append(measures)
    return seeds


def _t(margins):
    n = len(margins)
    mean = sum(margins) / n
    sd = math.sqrt(sum((m - mean) ** 2 for m in margins) / (n - 1))
    return mean / (sd / math.sqrt(n))


BASE = [2.0, 2.5, 3.0]
# b − a = 0.5, 1.0, 1.5: mean 1, sd 0.5, t = 2√3 = 3.464 on 2 df; one-sided p = 0.0371 < 0.05 < 0.0742 (two-sided)
BELOW = [b - d for b, d in zip(BASE, [0.5, 1.0, 1.5], strict=True)]


def test_a_strict_smaller_is_better_claim_on_planted_numbers():
    t = 2 * math.sqrt(3)
    p = _closed_form_sf(t, 2)
    assert p == pytest.approx(0.03709, abs=1e-5)

    smaller = evaluate_claim(SMALLER, _seeds(BELOW, BASE))  # a below b on every seed: the claimed way
    assert smaller["verdict"] == "reproduced"
    assert smaller["t"] == pytest.approx(t, rel=1e-12) and smaller["p_value"] == pytest.approx(p, abs=1e-12)
    assert smaller["p_value_against"] == pytest.approx(1 - p, abs=1e-12)
    assert smaller["ours"]["mean"] == pytest.approx(-1.0)  # the raw difference a − b keeps its sign

    larger = evaluate_claim(SMALLER, _seeds(BASE, BELOW))  # a above b: the other way
    assert larger["verdict"] == "contradicted"
    assert larger["t"] == pytest.approx(-t, rel=1e-12) and larger["p_value_against"] == pytest.approx(p, abs=1e-12)
    assert larger["ours"]["mean"] == pytest.approx(1.0)

    # The same numbers judged by the +1 claim: the verdicts swap.
    assert evaluate_claim(LARGER, _seeds(BELOW, BASE))["verdict"] == "contradicted"
    assert evaluate_claim(LARGER, _seeds(BASE, BELOW))["verdict"] == "reproduced"
    # Equal models: nothing to judge either way.
    assert evaluate_claim(SMALLER, _seeds(BASE, BASE))["verdict"] == "not at this scale"


@pytest.mark.parametrize(
    "differences",  # per-seed b − a of the smaller-is-better claim (so the signed margins of the rule)
    [
        [0.5, 1.0, 1.5],  # df 2: t = 3.464, one-sided p = 0.0371, two-sided 0.0742
        [0.2, 1.0, 1.8],  # df 2: t = 2.165, p = 0.0814 (half of it 0.041)
        [0.4, 1.0, 1.6, 0.2],  # df 3: t = 2.530, p = 0.0427, two-sided 0.0854
        [0.6, 1.0, 1.4, 0.9],  # df 3: t = 5.902, p = 0.0049
        [0.1, 1.9, 0.8, 1.2, 0.5],  # df 4: t = 2.920, p = 0.0216
        [0.1, 1.9, 0.8, 1.2, -0.1],  # df 4: t = 2.136, p = 0.0498, two-sided 0.0996
        [0.3, 1.7, 0.1, 1.3, -0.4],  # df 4: t = 1.539, p = 0.0993
    ],
)
def test_the_p_value_is_the_one_sided_t_tail_and_decides_at_alpha(differences):
    n = len(differences)
    a = [b - d for b, d in zip(BASE * 2, differences, strict=False)]
    entry = evaluate_claim(SMALLER, _seeds(a, (BASE * 2)[:n]))
    t = _t(differences)
    p = _closed_form_sf(t, n - 1)
    assert entry["t"] == pytest.approx(t, rel=1e-9)
    assert entry["p_value"] == pytest.approx(p, abs=1e-10)
    assert entry["p_value_against"] == pytest.approx(1 - p, abs=1e-10)
    assert entry["verdict"] == ("reproduced" if p < 0.05 else "not at this scale")
    # the alpha of the rule is the one-sided level: at alpha just above and below p, the verdict flips there
    assert evaluate_claim(SMALLER, _seeds(a, (BASE * 2)[:n]), alpha=p * 1.01)["verdict"] == "reproduced"
    assert evaluate_claim(SMALLER, _seeds(a, (BASE * 2)[:n]), alpha=p * 0.99)["verdict"] == "not at this scale"


def test_borderline_cases_fall_on_the_one_sided_side_of_alpha():
    # t = 2√3 on 2 df: reproduced one-sided (p = 0.037), not with a two-sided p (0.074)
    entry = evaluate_claim(LARGER, _seeds(BASE, BELOW))
    assert 0.03 < entry["p_value"] < 0.05 < 2 * entry["p_value"] and entry["verdict"] == "reproduced"
    # t = 2.165 on 2 df: p = 0.081, not reproduced (half of it, 0.041, would be)
    below = [b - d for b, d in zip(BASE, [0.2, 1.0, 1.8], strict=True)]
    entry = evaluate_claim(LARGER, _seeds(BASE, below))
    assert entry["p_value"] / 2 < 0.05 < entry["p_value"] < 0.1 and entry["verdict"] == "not at this scale"
    # the same borderline numbers the other way round: contradicted / not at this scale
    assert evaluate_claim(LARGER, _seeds(BELOW, BASE))["verdict"] == "contradicted"
    assert evaluate_claim(LARGER, _seeds(below, BASE))["verdict"] == "not at this scale"


# ---- every claim's direction, pinned ------------------------------------------------------------------------------

LOG_5_PERCENT = math.log(1.05)
TOPOLM_BASE = BASELINE_AT_TOPOLM_SITES
#: claim id → (measure of a, a, b, +1 if a should be larger / −1 smaller, log, margin, measure of b if another).
#: Written from each claim's sentence: "more topographic / more autocorrelated" is larger smoothness or Moran's I;
#: "more resilient / more robust / gains more" is a smaller relative Δ perplexity or a more negative Δ eval loss
#: (``delta_eval_loss`` = after − before fine-tuning); "lower dimensionality" is smaller; "no large cost" is a
#: perplexity below 1.05 × the baseline's (a log margin).
DIRECTIONS = {
    "smoothness": ("smoothness", "toponet", "baseline", +1, False, 0.0, None),
    "robust_smoothness": ("robust_smoothness", "toponet", "baseline", +1, False, 0.0, None),
    "morans_i": ("morans_i", "toponet", "baseline", +1, False, 0.0, None),
    "perplexity_cost": ("perplexity", "toponet", "baseline", -1, True, LOG_5_PERCENT, None),
    "effective_dimensionality": ("effective_dimensionality", "toponet", "baseline", -1, False, 0.0, None),
    "pruning": ("pruning_relative_delta", "toponet", "baseline", -1, False, 0.0, None),
    "downsampling": ("downsampling_relative_delta", "toponet", "baseline", -1, False, 0.0, None),
    "lora_gain": ("lora_delta_eval_loss", "toponet", "baseline", -1, False, 0.0, None),
    "temporal_clusters": ("temporal_c_morans_i", "toponet", "baseline", +1, False, 0.0, None),
    "ws_weight_noise": ("noise_relative_delta", "ws", "baseline", -1, False, 0.0, None),
    "as_weight_noise": ("noise_relative_delta", "as", "baseline", -1, False, 0.0, None),
    "ws_input_robustness": ("substitution_relative_delta", "ws", "baseline", -1, False, 0.0, None),
    "as_input_robustness": ("substitution_relative_delta", "as", "baseline", -1, False, 0.0, None),
    "ws_vs_as_weight_maps": ("weight_smoothness", "ws", "as", +1, False, 0.0, None),
    "ws_vs_as_activation_maps": ("morans_i", "ws", "as", +1, False, 0.0, None),
    "topolm_morans_i": ("morans_i", "topolm", TOPOLM_BASE, +1, False, 0.0, None),
    "topolm_smoothness": ("smoothness", "topolm", TOPOLM_BASE, +1, False, 0.0, None),
    "topolm_perplexity_cost": ("perplexity", "topolm", "baseline", -1, True, LOG_5_PERCENT, None),
    "arranged_smoothness": ("smoothness", "arranged_baseline", "baseline", +1, False, 0.0, None),
    "arranged_vs_toponet_smoothness": ("smoothness", "toponet", "arranged_baseline", +1, False, 0.0, None),
    "arranged_downsampling": ("downsampling_relative_delta", "arranged_baseline", "baseline", -1, False, 0.0, None),
    "arranged_vs_toponet_downsampling": (
        "downsampling_relative_delta", "toponet", "arranged_baseline", -1, False, 0.0, None,
    ),
    "gains_downsampling": (
        "downsampling_gains_relative_delta", "toponet", "toponet", -1, False, 0.0, "downsampling_relative_delta",
    ),
}  # fmt: skip


def test_every_claim_has_the_direction_its_sentence_states():
    assert sorted(c.id for c in CLAIMS) == sorted(DIRECTIONS), "a claim was added or removed: pin its direction here"
    for claim in CLAIMS:
        metric, a, b, sign, log, margin, metric_b = DIRECTIONS[claim.id]
        assert (claim.metric, claim.a, claim.b, claim.sign, claim.log, claim.metric_b) == (
            metric, a, b, sign, log, metric_b,
        ), claim.id  # fmt: skip
        assert claim.margin == pytest.approx(margin, abs=1e-15), claim.id
        assert ("<" if sign < 0 else ">") in claim.expected(), claim.id


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.id)
def test_numbers_that_go_the_claimed_way_reproduce_every_claim(claim):
    """Planted per-seed measures in the direction of :data:`DIRECTIONS` (not of the claim's own ``sign``)."""
    metric, a, b, sign, log, margin, metric_b = DIRECTIONS[claim.id]
    b_values = [2.0, 2.5, 3.0]
    if margin:  # "no large cost": a 1 % cost is within the 5 % allowance, a 20 % one is not
        within = [v * c for v, c in zip(b_values, [1.01, 1.0, 1.02], strict=True)]
        beyond = [v * c for v, c in zip(b_values, [1.20, 1.22, 1.18], strict=True)]
        assert evaluate_claim(claim, _seeds(within, b_values, metric, metric_b, a, b))["verdict"] == "reproduced"
        assert evaluate_claim(claim, _seeds(beyond, b_values, metric, metric_b, a, b))["verdict"] == "contradicted"
        return
    shift = [0.5, 0.6, 0.4]
    better = [v + sign * s for v, s in zip(b_values, shift, strict=True)]
    worse = [v - sign * s for v, s in zip(b_values, shift, strict=True)]
    entry = evaluate_claim(claim, _seeds(better, b_values, metric, metric_b, a, b))
    assert entry["verdict"] == "reproduced" and entry["ours"]["n_seeds"] == 3, claim.id
    assert entry["ours"]["mean"] == pytest.approx(sign * 0.5), claim.id  # a − b, its sign as the sentence says
    assert evaluate_claim(claim, _seeds(worse, b_values, metric, metric_b, a, b))["verdict"] == "contradicted"
