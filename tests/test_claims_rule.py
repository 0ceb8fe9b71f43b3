"""The claims table's verdict rule and every claim's direction, checked on synthetic inputs with known answers.

* **Distributions**: Student's t tail against its closed forms (Abramowitz & Stegun 26.7.3, ``ν = 1, 2, 3, 4``:
  ``½ − atan(t)/π``, ``½ − t / (2√(t² + 2))``, ``½ − (u/(1 + u²) + atan u)/π`` with ``u = t/√3``, and
  ``½ − (3/8) · s · (1 − t²/(12 (1 + t²/4)))`` with ``s = t/√(1 + t²/4)``); the t and normal quantiles, the paired
  test, its interval and Pearson's r against SciPy (``scipy.stats``, which scikit-learn brings in).
* **Holm** on the textbook example (four hypotheses, p = 0.01, 0.04, 0.03, 0.005 at α = 0.05: two rejected).
* **The interval's coverage** and the test's level on seeded simulations (binomial tolerances).
* **Log scales** on planted perplexities with a known log ratio.
* **Correlations**: Fisher's z on a worked example, Steiger's test reducing to it, and its level under the null.
* **Directions**: what each claim of :data:`hf_topo.experiments.claims.CLAIMS` asserts, re-read from its sentence
  in the paper (which model, which measure, larger or smaller, on which scale, with which margin), tabulated by
  hand; the table must equal the data, and planted numbers that go the claimed way must reproduce every claim.
"""

import json
import math
import random
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from hf_topo.experiments.claims import (
    BASELINE_AT_TOPOLM_SITES,
    CLAIMS,
    Claim,
    evaluate_claim,
    evaluate_claims,
    judge_family,
    reevaluate,
)
from hf_topo.experiments.statistics import (
    correlation_with_ci,
    dependent_correlations_test,
    fisher_z_test,
    holm_adjust,
    normal_quantile,
    paired_test,
    student_t_quantile,
    student_t_sf,
    verdict,
)

# ---- Student's t and the normal: closed forms and SciPy --------------------------------------------------------


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


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 30, 1000])
@pytest.mark.parametrize("q", [0.001, 0.025, 0.3, 0.5, 0.9, 0.975, 0.995])
def test_the_t_quantile_equals_scipys(q, df):
    expected = stats.t.ppf(q, df)
    assert student_t_quantile(q, df) == pytest.approx(expected, rel=1e-10, abs=1e-12)
    assert student_t_sf(student_t_quantile(q, df), df) == pytest.approx(1 - q, rel=1e-9)


@pytest.mark.parametrize("q", [1e-6, 0.025, 0.2, 0.5, 0.8, 0.975, 0.999999])
def test_the_normal_quantile_equals_scipys(q):
    assert normal_quantile(q) == pytest.approx(stats.norm.ppf(q), rel=1e-10, abs=1e-12)


def test_quantiles_refuse_probabilities_outside_0_1():
    for q in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="between 0 and 1"):
            student_t_quantile(q, 3)
        with pytest.raises(ValueError, match="between 0 and 1"):
            normal_quantile(q)


# ---- the paired test and its effect size --------------------------------------------------------------------------

SAMPLES = [
    [0.5, 1.0, 1.5],
    [0.2, 1.0, 1.8],
    [0.4, 1.0, 1.6, 0.2],
    [-0.3, 0.1, -0.6, -0.2, 0.05],
    [2.1, 1.9, 2.4, 2.0, 2.2, 1.7, 2.3],
]


@pytest.mark.parametrize("d", SAMPLES)
@pytest.mark.parametrize("sign, margin", [(1, 0.0), (-1, 0.0), (-1, 0.3), (1, 0.25)])
def test_the_paired_test_equals_scipys_one_sample_t_test(d, sign, margin):
    test = paired_test(d, sign, margin)
    null = -sign * margin
    reference = stats.ttest_1samp(d, popmean=null)
    interval = stats.ttest_1samp(d, popmean=0.0).confidence_interval(0.95)
    assert test["null_value"] == pytest.approx(null)
    assert test["t"] == pytest.approx(reference.statistic, rel=1e-10)
    assert test["p_value"] == pytest.approx(reference.pvalue, rel=1e-9)
    assert test["df"] == len(d) - 1
    assert test["ci_low"] == pytest.approx(interval.low, rel=1e-10) and test["ci_high"] == pytest.approx(interval.high)
    assert test["mean_difference"] == pytest.approx(np.mean(d))
    assert test["cohens_dz"] == pytest.approx((np.mean(d) - null) / np.std(d, ddof=1), rel=1e-12)
    one_sided = stats.ttest_1samp(d, popmean=null, alternative="greater" if sign > 0 else "less").pvalue
    assert test["p_one_sided"] == pytest.approx(one_sided, rel=1e-9)
    assert test["direction"] == (1 if sign * (np.mean(d) - null) > 0 else -1)


def test_the_paired_test_with_too_few_or_identical_differences():
    assert paired_test([0.3])["p_value"] is None and verdict(None, 0) == "not measured"
    same = paired_test([0.25, 0.25, 0.25])  # exact in binary: sd 0
    assert same["t"] == math.inf and same["p_value"] == 0.0 and same["ci_low"] == same["ci_high"] == 0.25
    assert paired_test([0.0, 0.0])["p_value"] == 1.0
    with pytest.raises(ValueError, match="sign"):
        paired_test([1.0, 2.0], sign=0)
    with pytest.raises(ValueError, match="margin"):
        paired_test([1.0, 2.0], margin=-0.1)


def test_the_95_percent_interval_covers_the_true_mean_95_percent_of_the_time():
    rng = random.Random(1234)
    trials, covered, rejected = 4000, 0, 0
    for _ in range(trials):
        d = [rng.gauss(0.7, 2.0) for _ in range(3)]
        test = paired_test(d, +1, margin=0.0)
        covered += test["ci_low"] <= 0.7 <= test["ci_high"]
        rejected += paired_test([x - 0.7 for x in d])["p_value"] < 0.05  # the level of the two-sided test
    tolerance = 4 * math.sqrt(0.05 * 0.95 / trials)  # four binomial standard errors: 0.0138
    assert abs(covered / trials - 0.95) < tolerance
    assert abs(rejected / trials - 0.05) < tolerance


def test_the_verdict_follows_the_corrected_p_value_and_the_side():
    assert verdict(0.01, +1) == "reproduced" and verdict(0.01, -1) == "contradicted"
    assert verdict(0.05, +1) == "not at this scale" and verdict(0.2, -1) == "not at this scale"
    assert verdict(0.04, +1, alpha=0.01) == "not at this scale"


# ---- Holm ------------------------------------------------------------------------------------------------------------


def test_holm_on_the_textbook_example():
    # H1..H4 with p = 0.01, 0.04, 0.03, 0.005 at alpha = 0.05: 0.005 < 0.05/4 and 0.01 < 0.05/3 are rejected, then
    # 0.03 > 0.05/2 stops. Adjusted: 4·0.005 = 0.02, 3·0.01 = 0.03, max(0.03, 2·0.03) = 0.06, max(0.06, 0.04) = 0.06.
    adjusted = holm_adjust([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [p < 0.05 for p in adjusted] == [True, False, False, True]


def test_holm_leaves_missing_tests_out_of_the_family_and_caps_at_one():
    assert holm_adjust([None, 0.02, None, 0.5]) == [None, pytest.approx(0.04), None, pytest.approx(0.5)]
    assert holm_adjust([0.4, 0.6, 0.9]) == pytest.approx([1.0, 1.0, 1.0])
    assert holm_adjust([0.03]) == [0.03] and holm_adjust([]) == []
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm_adjust([0.1, 1.5])


def test_holm_controls_the_family_wise_error_on_a_simulation():
    rng = random.Random(7)
    families, any_rejected = 1000, 0
    for _ in range(families):  # 10 true nulls of 3 seeds each
        p = [paired_test([rng.gauss(0, 1) for _ in range(3)])["p_value"] for _ in range(10)]
        any_rejected += any(q < 0.05 for q in holm_adjust(p))
    assert any_rejected / families < 0.05 + 3 * math.sqrt(0.05 * 0.95 / families)


# ---- correlations ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, rho, seed", [(5, 0.0, 0), (8, 0.6, 1), (30, -0.4, 2), (200, 0.9, 3)])
def test_correlation_with_ci_equals_scipys_pearsonr(n, rho, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = rho * x + math.sqrt(1 - rho * rho) * rng.normal(size=n)
    ours = correlation_with_ci(list(x), list(y))
    reference = stats.pearsonr(x, y)
    interval = reference.confidence_interval(0.95)
    assert ours["r"] == pytest.approx(reference.statistic, rel=1e-12) and ours["n"] == n and ours["df"] == n - 2
    assert ours["p_value"] == pytest.approx(reference.pvalue, rel=1e-8, abs=1e-300)
    assert ours["ci_low"] == pytest.approx(interval.low, rel=1e-10)
    assert ours["ci_high"] == pytest.approx(interval.high, rel=1e-10)


def test_correlation_needs_three_varying_pairs():
    with pytest.raises(ValueError, match="at least 3"):
        correlation_with_ci([1, 2], [2, 3])
    with pytest.raises(ValueError, match="constant"):
        correlation_with_ci([1, 2, 3], [5, 5, 5])
    assert correlation_with_ci([1, 2, 3], [2, 1, 4])["ci_low"] is None  # n = 3: no Fisher interval


def test_fisher_z_on_a_worked_example():
    # r1 = 0.5, r2 = 0.3 on 103 models each: z = (atanh 0.5 − atanh 0.3) / √(2/100)
    z = (0.5 * math.log(3) - 0.5 * math.log(1.3 / 0.7)) / math.sqrt(0.02)
    result = fisher_z_test(0.5, 103, 0.3, 103)
    assert z == pytest.approx(1.6955, abs=1e-4)
    assert result["z"] == pytest.approx(z, rel=1e-12)
    assert result["p_value"] == pytest.approx(2 * stats.norm.sf(z), rel=1e-10)
    assert fisher_z_test(0.3, 50, 0.5, 20)["z"] == pytest.approx(
        (math.atanh(0.3) - math.atanh(0.5)) / math.sqrt(1 / 47 + 1 / 17)
    )
    with pytest.raises(ValueError, match="at least 4"):
        fisher_z_test(0.1, 3, 0.2, 10)
    with pytest.raises(ValueError, match="strictly between"):
        fisher_z_test(1.0, 10, 0.2, 10)


def test_steigers_test_reduces_to_fishers_z_without_shared_correlation():
    # r̄ = 0 and r_yz = 0 make the covariance term vanish: independent samples of n each
    assert dependent_correlations_test(0.3, -0.3, 0.0, 40)["z"] == pytest.approx(
        fisher_z_test(0.3, 40, -0.3, 40)["z"], rel=1e-12
    )


def test_steigers_test_holds_its_level_when_the_correlations_are_equal():
    rng = np.random.default_rng(11)
    # x shares r = 0.4 with y and with z; y and z correlate 0.5 (the same models measured twice)
    cov = np.array([[1.0, 0.4, 0.4], [0.4, 1.0, 0.5], [0.4, 0.5, 1.0]])
    trials, rejected = 2000, 0
    for _ in range(trials):
        x, y, z = rng.multivariate_normal(np.zeros(3), cov, size=40).T
        r = np.corrcoef([x, y, z])
        rejected += dependent_correlations_test(r[0, 1], r[0, 2], r[1, 2], 40)["p_value"] < 0.05
    assert abs(rejected / trials - 0.05) < 4 * math.sqrt(0.05 * 0.95 / trials)


# ---- log scales on planted numbers --------------------------------------------------------------------------------

LARGER = Claim("larger", "a is larger", "paper", "Fig. 1", "larger", "m", "toponet", "baseline", +1)
SMALLER = Claim("smaller", "a is smaller", "paper", "Fig. 1", "smaller", "m", "toponet", "baseline", -1)


def _seeds(a, b, metric="m", metric_b=None, a_name="toponet", b_name="baseline"):
    seeds = []
    for x, y in zip(a, b, strict=True):
        measures = {a_name: {metric: x}}
        if b_name is not None:
            measures.setdefault(b_name, {})[metric_b or metric] = y
        seeds.append(measures)
    return seeds


def test_a_log_claim_tests_the_planted_log_ratio():
    noise = [0.02, -0.01, 0.05, -0.03]
    b = [150.0, 148.0, 162.0, 140.0]
    a = [v * math.exp(-0.08 + e) for v, e in zip(b, noise, strict=True)]  # a = b · exp(−0.08 + ε)
    claim = Claim("ratio", "a < b", "p", "w", "v", "perplexity", "toponet", "baseline", -1, "log")
    entry = evaluate_claim(claim, _seeds(a, b, "perplexity"))
    d = [-0.08 + e for e in noise]
    assert entry["ours"]["values"] == pytest.approx(d, abs=1e-12)
    assert entry["t"] == pytest.approx(stats.ttest_1samp(d, 0).statistic, rel=1e-9)
    assert entry["effect"]["mean_difference"] == pytest.approx(-0.08 + sum(noise) / 4)
    assert entry["scale"] == "log" and entry["difference"].startswith("log perplexity(toponet)")


def test_a_damage_claim_compares_log_perplexity_ratios_and_reports_the_damage_ratio():
    clean, factor_a, factor_b = 100.0, [1.04, 1.035, 1.05], [6.0, 9.5, 4.9]  # perturbed / clean perplexity
    delta_a = [f - 1 for f in factor_a]  # relative Δ perplexity
    delta_b = [f - 1 for f in factor_b]
    claim = Claim("damage", "a more robust", "p", "w", "v", "downsampling_relative_delta", "toponet", "baseline",
                  -1, "log1p")  # fmt: skip
    entry = evaluate_claim(claim, _seeds(delta_a, delta_b, "downsampling_relative_delta"))
    d = [math.log(clean * fa / clean) - math.log(fb) for fa, fb in zip(factor_a, factor_b, strict=True)]
    assert entry["ours"]["values"] == pytest.approx(d, rel=1e-12)
    assert entry["t"] == pytest.approx(stats.ttest_1samp(d, 0).statistic, rel=1e-9)
    ratios = [math.log(x / y) for x, y in zip(delta_a, delta_b, strict=True)]
    assert entry["damage_ratio"]["geometric_mean"] == pytest.approx(math.exp(np.mean(ratios)), rel=1e-12)
    assert entry["damage_ratio"]["t"] == pytest.approx(stats.ttest_1samp(ratios, 0).statistic, rel=1e-9)
    # a perturbation that helps (Δ < 0) is still on the scale; the damage ratio is then undefined
    helped = evaluate_claim(claim, _seeds([-0.001, 0.002, 0.001], [0.003, -0.0005, 0.004], claim.metric))
    assert helped["ours"]["n_seeds"] == 3 and "damage_ratio" not in helped


def test_a_non_inferiority_claim_is_reproduced_exactly_when_the_interval_clears_the_margin():
    margin = math.log(1.05)
    claim = Claim("cost", "no large cost", "p", "w", "v", "perplexity", "toponet", "baseline", -1, "log", margin,
                  margin_reason="planted")  # fmt: skip
    rng = random.Random(3)
    outcomes = set()
    for _ in range(200):
        b = [rng.uniform(100, 200) for _ in range(3)]
        a = [v * math.exp(rng.gauss(rng.uniform(-0.1, 0.15), rng.uniform(0.005, 0.06))) for v in b]
        entry = evaluate_claim(claim, _seeds(a, b, "perplexity"))
        effect = entry["effect"]
        assert (entry["verdict"] == "reproduced") == (effect["ci_high"] < margin)  # a family of one
        assert (entry["verdict"] == "contradicted") == (effect["ci_low"] > margin)
        assert entry["p_one_sided"] == pytest.approx(entry["p_value"] / 2 if entry["direction"] > 0 else 1, abs=0.5)
        outcomes.add(entry["verdict"])
    assert outcomes == {"reproduced", "not at this scale", "contradicted"}


# ---- a family of claims -------------------------------------------------------------------------------------------

BASE = [2.0, 2.5, 3.0]


def test_a_claim_significant_alone_is_not_reproduced_in_a_family_that_dilutes_it():
    strong = [v + s for v, s in zip(BASE, [0.5, 0.6, 0.4], strict=True)]  # t = 8.66, two-sided p = 0.013
    alone = evaluate_claim(LARGER, _seeds(strong, BASE))
    assert alone["p_value"] == pytest.approx(stats.ttest_rel(strong, BASE).pvalue, rel=1e-9)
    assert alone["verdict"] == "reproduced" and alone["p_holm"] == alone["p_value"]
    others = [Claim(f"null{i}", "x", "p", "w", "v", f"m{i}", "toponet", "baseline", +1) for i in range(4)]
    per_seed = _seeds(strong, BASE)
    for i in range(4):  # four claims with nothing to find (p = 1)
        for seed in per_seed:
            seed["toponet"][f"m{i}"] = seed["baseline"][f"m{i}"] = 1.0
    entries = evaluate_claims([LARGER, *others], per_seed)
    assert entries[0]["p_holm"] == pytest.approx(5 * alone["p_value"], rel=1e-12)
    assert entries[0]["verdict"] == "not at this scale"
    assert all(e["family"]["size"] == 5 and e["family"]["correction"] == "Holm" for e in entries)


def test_entries_made_elsewhere_join_the_family():
    entries = judge_family([{"id": "x", "p_value": 0.001, "direction": -1}, {"id": "y", "p_value": None}], 0.05)
    assert entries[0]["verdict"] == "contradicted" and entries[0]["p_holm"] == pytest.approx(0.001)
    assert entries[1]["verdict"] == "not measured" and entries[0]["family"]["size"] == 1


def test_a_robustness_claim_judges_against_the_matched_baseline_and_reports_the_uncontrolled_one():
    claim = next(c for c in CLAIMS if c.id == "as_weight_noise")
    per_seed = [
        {"as": {"noise_relative_delta": 0.001, "perplexity": 190.0},
         "baseline": {"noise_relative_delta": 0.005, "perplexity": 150.0}},
        {"as": {"noise_relative_delta": 0.0012, "perplexity": 210.0},
         "baseline": {"noise_relative_delta": 0.006, "perplexity": 151.0}},
        {"as": {"noise_relative_delta": 0.0008, "perplexity": 195.0},
         "baseline": {"noise_relative_delta": 0.004, "perplexity": 160.0}},
    ]  # fmt: skip
    entry = evaluate_claim(claim, per_seed)
    assert entry["verdict"] == "not measured"  # no perplexity-matched baseline
    naive = [math.log1p(s["as"]["noise_relative_delta"]) - math.log1p(s["baseline"]["noise_relative_delta"])
             for s in per_seed]  # fmt: skip
    assert entry["uncontrolled"]["b"] == "baseline"
    assert entry["uncontrolled"]["t"] == pytest.approx(stats.ttest_1samp(naive, 0).statistic, rel=1e-9)
    assert entry["uncontrolled"]["clean_log_perplexity_ratio"]["values"] == pytest.approx(
        [math.log(190 / 150), math.log(210 / 151), math.log(195 / 160)]
    )
    for seed, matched in zip(per_seed, [0.0011, 0.0010, 0.0009], strict=True):
        seed["baseline_matched_as"] = {"noise_relative_delta": matched, "perplexity": seed["as"]["perplexity"]}
    entry = evaluate_claim(claim, per_seed)
    assert entry["compared"]["b"] == "baseline_matched_as" and entry["verdict"] == "not at this scale"
    assert entry["ours"]["baseline_matched_as"]["values"] == [0.0011, 0.0010, 0.0009]


def test_reevaluating_results_judges_their_per_seed_measures_again(tmp_path):
    per_seed = {
        str(seed): {"toponet": {"smoothness": t, "perplexity": pt}, "baseline": {"smoothness": b, "perplexity": pb}}
        for seed, (t, b, pt, pb) in enumerate([(0.9, 0.1, 140, 150), (0.8, 0.12, 141, 149), (0.85, 0.08, 135, 160)])
    }
    results = {"seeds": [0, 1, 2], "per_seed": per_seed, "recipe": {"alpha": 0.05}, "claims": [], "command": "x"}
    updated = reevaluate(results)
    by_id = {entry["id"]: entry for entry in updated["claims"]}
    assert set(by_id) == {claim.id for claim in CLAIMS} and updated["command"] == "x"
    assert by_id["smoothness"]["p_value"] == pytest.approx(stats.ttest_rel([0.9, 0.8, 0.85], [0.1, 0.12, 0.08]).pvalue)
    assert by_id["smoothness"]["family"]["size"] == 2  # smoothness and perplexity_cost are measured
    assert by_id["pruning"]["verdict"] == "not measured"
    assert sum(updated["verdict_counts"].values()) == len(CLAIMS)
    # the command writes the same, and the JSON loads in a fresh process
    from hf_topo.cli.claims import main

    source = tmp_path / "old.json"
    source.write_text(json.dumps(results))
    main(
        ["--from_results", str(source), "--output_dir", str(tmp_path / "out"), "--output", str(tmp_path / "new.json")]
    )
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", f"import json; print(json.dumps(json.load(open({str(tmp_path / 'new.json')!r}))))"],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    assert loaded["claims"] == json.loads(json.dumps(updated["claims"]))
    assert loaded["reevaluated"]["from"] == "old.json" and "--from_results" in loaded["reevaluated"]["command"]
    assert (tmp_path / "out" / "paper_claims.md").read_text().count("**") == 2 * len(CLAIMS)


# ---- every claim's direction, pinned ------------------------------------------------------------------------------

LOG_5_PERCENT = math.log(1.05)
TOPOLM_BASE = BASELINE_AT_TOPOLM_SITES
#: claim id → (measure of a, a, b, +1 if a should be larger / −1 smaller, scale, margin, measure of b if another,
#: threshold). Written from each claim's sentence: "more topographic / more autocorrelated" is larger smoothness or
#: Moran's I; "more resilient / more robust" is a smaller damage log(1 + relative Δ perplexity); "gains more" a more
#: negative Δ eval loss (after − before fine-tuning, already a log-perplexity difference); "no large cost" a
#: perplexity below 1.05 × the baseline's (a log margin); "bimodal" Sarle's coefficient above 5/9; "lacks spatial
#: smoothness" a Moran's I at most 0.1 above the baseline's; WS / AS robustness against the perplexity-matched
#: baseline; "gains more from LoRA" a larger mean log(ppl before / after), "as well" one at most log 1.05 smaller;
#: "exponential windows early" a share falling from the first to the middle layers (< 0), "power law in the middle"
#: one rising (> 0); "kinds cluster" a larger Moran's I of the kind maps.
DIRECTIONS = {
    "smoothness": ("smoothness", "toponet", "baseline", +1, "raw", 0.0, None, None),
    "robust_smoothness": ("robust_smoothness", "toponet", "baseline", +1, "raw", 0.0, None, None),
    "morans_i": ("morans_i", "toponet", "baseline", +1, "raw", 0.0, None, None),
    "perplexity_cost": ("perplexity", "toponet", "baseline", -1, "log", LOG_5_PERCENT, None, None),
    "effective_dimensionality": ("effective_dimensionality", "toponet", "baseline", -1, "raw", 0.0, None, None),
    "pruning": ("pruning_relative_delta", "toponet", "baseline", -1, "log1p", 0.0, None, None),
    "downsampling": ("downsampling_relative_delta", "toponet", "baseline", -1, "log1p", 0.0, None, None),
    "lora_gain": ("lora_gain_mean", "toponet", "baseline", +1, "raw", 0.0, None, None),
    "lora_noninferiority": ("lora_gain_mean", "toponet", "baseline", +1, "raw", LOG_5_PERCENT, None, None),
    "temporal_clusters": ("temporal_c_morans_i", "toponet", "baseline", +1, "raw", 0.0, None, None),
    "temporal_exponential_early": ("temporal_exponential_change", "toponet", None, -1, "raw", 0.0, None, 0.0),
    "temporal_power_law_middle": ("temporal_power_law_change", "toponet", None, +1, "raw", 0.0, None, 0.0),
    "temporal_kind_clusters": ("temporal_kind_morans_i", "toponet", "baseline", +1, "raw", 0.0, None, None),
    "temporal_kind_clusters_vs_arranged": (
        "temporal_kind_morans_i", "toponet", "arranged_baseline", +1, "raw", 0.0, None, None,
    ),
    "ws_weight_noise": ("noise_relative_delta", "ws", "baseline_matched_ws", -1, "log1p", 0.0, None, None),
    "as_weight_noise": ("noise_relative_delta", "as", "baseline_matched_as", -1, "log1p", 0.0, None, None),
    "ws_input_robustness": ("substitution_relative_delta", "ws", "baseline_matched_ws", -1, "log1p", 0.0, None, None),
    "as_input_robustness": ("substitution_relative_delta", "as", "baseline_matched_as", -1, "log1p", 0.0, None, None),
    "ws_vs_as_weight_maps": ("weight_smoothness", "ws", "as", +1, "raw", 0.0, None, None),
    "ws_smooth_activation_maps": ("morans_i", "ws", "baseline", +1, "raw", 0.0, None, None),
    "ws_correlated_neighbours": ("neighbour_correlation_mean", "ws", "baseline", +1, "raw", 0.0, None, None),
    "as_bimodal_neighbours": ("neighbour_bimodality", "as", None, +1, "raw", 0.0, None, 5 / 9),
    "as_not_smooth": ("morans_i", "as", "baseline", -1, "raw", 0.1, None, None),
    "topolm_morans_i": ("morans_i", "topolm", TOPOLM_BASE, +1, "raw", 0.0, None, None),
    "topolm_smoothness": ("smoothness", "topolm", TOPOLM_BASE, +1, "raw", 0.0, None, None),
    "topolm_perplexity_cost": ("perplexity", "topolm", "baseline", -1, "log", LOG_5_PERCENT, None, None),
    "arranged_smoothness": ("smoothness", "arranged_baseline", "baseline", +1, "raw", 0.0, None, None),
    "arranged_vs_toponet_smoothness": ("smoothness", "toponet", "arranged_baseline", +1, "raw", 0.0, None, None),
    "arranged_downsampling": (
        "downsampling_relative_delta", "arranged_baseline", "baseline", -1, "log1p", 0.0, None, None,
    ),
    "arranged_vs_toponet_downsampling": (
        "downsampling_relative_delta", "toponet", "arranged_baseline", -1, "log1p", 0.0, None, None,
    ),
    "gains_downsampling": (
        "downsampling_gains_relative_delta", "toponet", "toponet", -1, "log1p", 0.0, "downsampling_relative_delta",
        None,
    ),
}  # fmt: skip


def test_every_claim_has_the_direction_its_sentence_states():
    assert sorted(c.id for c in CLAIMS) == sorted(DIRECTIONS), "a claim was added or removed: pin its direction here"
    for claim in CLAIMS:
        metric, a, b, sign, scale, margin, metric_b, threshold = DIRECTIONS[claim.id]
        assert (claim.metric, claim.a, claim.b, claim.sign, claim.scale, claim.metric_b) == (
            metric, a, b, sign, scale, metric_b,
        ), claim.id  # fmt: skip
        assert claim.margin == pytest.approx(margin, abs=1e-15), claim.id
        assert claim.threshold == pytest.approx(threshold) if threshold is not None else claim.threshold is None, (
            claim.id
        )
        assert ("<" if sign < 0 else ">") in claim.expected(), claim.id
        assert not claim.margin or claim.margin_reason, claim.id


def test_morans_i_is_credited_to_truong_and_hasson_not_to_the_toponets_paper():
    morans = next(c for c in CLAIMS if c.id == "morans_i")
    assert "TopoNets (ICLR" not in morans.source and "Truong & Hasson" in morans.where
    assert all("Truong" in c.source for c in CLAIMS if c.id in ("as_bimodal_neighbours", "as_not_smooth"))


def _planted(claim_id, better: bool):
    """Per-seed measures on the claim's scale that go the claimed way (``better``) or clearly the other."""
    metric, a, b, sign, scale, margin, metric_b, threshold = DIRECTIONS[claim_id]
    if threshold is not None:
        values = [threshold + sign * (0.15 if better else -0.15) + e for e in (0.0, 0.05, -0.05)]
        return _seeds(values, [None] * 3, metric, a_name=a, b_name=None)
    b_values = [2.0, 2.5, 3.0]
    if margin and scale == "log":  # a 1 % cost is within the 5 % allowance, a 20 % one is not
        factors = [1.01, 1.0, 1.02] if better else [1.20, 1.22, 1.18]
        return _seeds([v * c for v, c in zip(b_values, factors, strict=True)], b_values, metric, metric_b, a, b)
    if margin:  # raw margin: 0.01 beyond b is within it, 0.5 beyond is not
        shifts = [0.01, 0.0, 0.02] if better else [0.5, 0.6, 0.4]
        return _seeds([v - sign * s for v, s in zip(b_values, shifts, strict=True)], b_values, metric, metric_b, a, b)
    shift = [0.5, 0.6, 0.4]
    a_values = [v + (sign if better else -sign) * s for v, s in zip(b_values, shift, strict=True)]
    return _seeds(a_values, b_values, metric, metric_b, a, b)


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.id)
def test_numbers_that_go_the_claimed_way_reproduce_every_claim(claim):
    """Planted per-seed measures in the direction of :data:`DIRECTIONS` (not of the claim's own ``sign``)."""
    entry = evaluate_claim(claim, _planted(claim.id, better=True))
    assert entry["verdict"] == "reproduced" and entry["ours"]["n_seeds"] == 3, claim.id
    assert entry["effect"]["ci_low"] < entry["effect"]["mean_difference"] < entry["effect"]["ci_high"]
    assert evaluate_claim(claim, _planted(claim.id, better=False))["verdict"] == "contradicted", claim.id


# ---- the perplexity-matched baseline, on real tiny models ---------------------------------------------------------


def test_the_matched_baseline_is_the_checkpoint_nearest_in_clean_perplexity(tmp_path):
    import torch
    from conftest import build_gpt2
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from hf_topo.evaluation import TokenBatch, evaluate_perplexity
    from hf_topo.experiments.claims import MATCH_TOLERANCE, ClaimsArguments, matched_baseline_measures

    baseline = tmp_path / "baseline"
    build_gpt2(seed=0).save_pretrained(baseline)
    vocab = {f"t{i}": i for i in range(64)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="t0", eos_token="t0").save_pretrained(baseline)
    perplexities = {}
    text = TokenBatch(torch.randint(0, 64, (8, 32), generator=torch.Generator().manual_seed(0)), None)
    for step, scale in ((10, 1.0), (20, 6.0)):  # sharper random logits: another clean perplexity
        model = build_gpt2(seed=step)
        with torch.no_grad():
            model.transformer.wte.weight.mul_(scale)
        model.save_pretrained(baseline / f"checkpoint-{step}")
        perplexities[f"checkpoint-{step}"] = evaluate_perplexity(model, TokenBatch(text.input_ids[:4], None))
    args = ClaimsArguments(train_file="x.txt", max_tokens=128, eval_blocks=4, morans_permutations=0, device="cpu",
                           progress=False)  # fmt: skip
    target = perplexities["checkpoint-20"] * 1.02
    final = {"perplexity": 1e6, "noise_relative_delta": 0.5, "substitution_relative_delta": 0.4}
    found = matched_baseline_measures(args, 0, str(baseline), text, {"baseline": final, "as": {"perplexity": target}})
    candidates = {**perplexities, "final": 1e6}
    nearest = min(candidates, key=lambda c: abs(math.log(candidates[c] / target)))
    assert nearest == "checkpoint-20"
    matched = found["baseline_matched_as"]
    assert matched["matched_checkpoint"] == "checkpoint-20" and matched["matched_to"] == "as"
    assert matched["matched_log_perplexity_ratio"] == pytest.approx(math.log(1 / 1.02), abs=1e-6)
    assert matched["perplexity"] == pytest.approx(perplexities["checkpoint-20"], rel=1e-5)  # the same blocks
    assert math.isfinite(matched["noise_relative_delta"]) and math.isfinite(matched["substitution_relative_delta"])
    assert "baseline_matched_ws" not in found  # no WS model measured
    # nothing within 5 %: no matched baseline; the final baseline within 5 %: its own measures
    far = {"baseline": final, "as": {"perplexity": target * math.exp(3 * MATCH_TOLERANCE)}}
    assert "baseline_matched_as" not in matched_baseline_measures(args, 0, str(baseline), text, far)
    near = {"baseline": final, "ws": {"perplexity": 1.03e6}}
    same = matched_baseline_measures(args, 0, str(baseline), text, near)["baseline_matched_ws"]
    assert same["matched_checkpoint"] == "final" and same["noise_relative_delta"] == 0.5
