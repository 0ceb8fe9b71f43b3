"""The τ sweep of the claims run and the TopoNets paper's designs on it (hf_topo.experiments.tau_sweep): each design
on synthetic per-model measures with a planted answer, the matched pruning fractions by hand, the figures from a
JSON in a fresh process, and (slow) a tiny sweep end to end that is stopped, resumed and extended."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hf_topo.errors import InputError
from hf_topo.experiments.claims import ClaimsArguments, _planned, _trained_models
from hf_topo.experiments.tau_sweep import (
    FIGURES,
    dimensionality_design,
    downsampling_design,
    matched_pruning_fraction,
    pareto_design,
    pruning_design,
    sweep_table,
    tau_model_name,
    tau_sweep_designs,
)

TAUS = (0.0, 0.5, 1.0, 5.0, 10.0, 50.0)
SEEDS = (0, 1, 2)

# ---- matched pruning fractions, by hand --------------------------------------------------------------------------


def test_matched_pruning_fractions_by_hand():
    # 32 × 32 sheet (GPT-2's 1024 MLP units): φ = 2 keeps 16 × 16, the paper's "removes 75 %"
    assert matched_pruning_fraction([(32, 32, 256)], 2) == 0.75
    assert matched_pruning_fraction([(32, 32, 256)], 3) == 1 - 100 / 1024  # 10 × 10 kept
    assert matched_pruning_fraction([(32, 32, 256)], 4) == 1 - 64 / 1024
    assert matched_pruning_fraction([(16, 32, 128)], 3) == 1 - 50 / 512  # 5 × 10 kept
    # layers of different sheets and depths: weights counted, not units (kept 100·10 + 50·30 of 10240 + 15360)
    assert matched_pruning_fraction([(32, 32, 10), (16, 32, 30)], 3) == 1 - 2500 / 25600
    assert matched_pruning_fraction([(7, 9, 5)], 1) == 0.0
    with pytest.raises(ValueError, match="φ >= 1"):
        matched_pruning_fraction([(8, 8, 4)], 0.5)
    with pytest.raises(ValueError, match="at least one sheet"):
        matched_pruning_fraction([], 2)


def test_sweep_models_are_named_and_trained_once():
    assert tau_model_name(0, 5.0) == "baseline" and tau_model_name(5.0, 5.0) == "toponet"
    assert tau_model_name(0.5, 5.0) == "toponet_tau0.5" and tau_model_name(50, 5.0) == "toponet_tau50"
    args = ClaimsArguments(train_file="x.txt", families=["baseline", "toponet", "ws"], taus=[0, 0.5, 5, 50])
    assert _trained_models(args) == {
        "baseline": ("baseline", 0.0), "toponet": ("toponet", 5.0), "ws": ("ws", 2.0),
        "toponet_tau0.5": ("toponet", 0.5), "toponet_tau50": ("toponet", 50.0),
    }  # fmt: skip
    assert _planned(args) == ["baseline", "toponet", "ws", "toponet_tau0.5", "toponet_tau50"]
    for bad in ([0, -1], [1, 1], [math.nan]):
        with pytest.raises(InputError, match="taus"):
            ClaimsArguments(train_file="x.txt", taus=bad)
    with pytest.raises(InputError, match="downsampling_factors"):
        ClaimsArguments(train_file="x.txt", downsampling_factors=[1.0])


# ---- synthetic sweeps with planted answers -----------------------------------------------------------------------


def _table(measure) -> dict:
    """``{τ: {seed: measure(τ, seed)}}``."""
    return {tau: {seed: measure(tau, seed) for seed in SEEDS} for tau in TAUS}


def _curve(xs, ratios):
    return {"x": list(xs), "perplexity_ratio": list(ratios), "parameters_kept": [None] * len(xs)}


def test_pareto_front_and_the_perplexity_cost_on_the_log_scale():
    smooth = {0.0: 0.1, 0.5: 0.2, 1.0: 0.3, 5.0: 0.5, 10.0: 0.45, 50.0: 0.6}
    ppl = {0.0: 100.0, 0.5: 101.0, 1.0: 103.0, 5.0: 105.0, 10.0: 108.0, 50.0: 120.0}
    noise = {0: 0.99, 1: 1.0, 2: 1.012}  # a seed's models share their luck (same data order), not exactly
    table = _table(
        lambda tau, s: {
            "smoothness": smooth[tau] + 0.001 * s,
            "perplexity": ppl[tau] * noise[s] * (1 + 1e-3 * s * tau),
        }
    )
    block = pareto_design(table)
    # τ = 10 is beaten by τ = 5 (smoother and better); every other τ is on the front
    assert block["pareto_front_perplexity"] == [0.0, 0.5, 1.0, 5.0, 50.0]
    assert "pareto_front_blimp" not in block
    point = next(p for p in block["points"] if p["tau"] == 5.0)
    assert point["perplexity"]["mean"] == pytest.approx(np.mean([table[5.0][s]["perplexity"] for s in SEEDS]))
    assert point["smoothness"]["sd"] == pytest.approx(np.std([0.5, 0.501, 0.502], ddof=1))
    cost = {c["tau"]: c for c in block["perplexity_cost"]}
    logs = [math.log(table[50.0][s]["perplexity"] / table[0.0][s]["perplexity"]) for s in SEEDS]
    assert cost[50.0]["mean_difference"] == pytest.approx(np.mean(logs))
    assert cost[50.0]["direction"] == -1  # a cost: the claim "lower perplexity" is on the other side
    p_holm = sorted(c["p_holm"] for c in cost.values())
    assert all(c["p_holm"] >= c["p_value"] for c in cost.values()) and p_holm == sorted(p_holm)


def test_blimp_joins_the_pareto_when_measured():
    table = _table(
        lambda tau, s: {"smoothness": tau / 50 + 0.01 * s, "perplexity": 100 + tau, "blimp": 0.7 - tau / 500}
    )
    block = pareto_design(table)
    assert block["pareto_front_blimp"] == list(TAUS)  # a strict trade-off: nothing dominated


def test_a_planted_correlation_with_smoothness_and_none_with_performance():
    rng = random.Random(3)
    smooth = {(tau, s): 0.05 + 0.15 * i + 0.02 * s for i, tau in enumerate(TAUS) for s in SEEDS}
    table = _table(
        lambda tau, s: {
            "smoothness": smooth[tau, s],
            "effective_dimensionality": 12.0 - 10.0 * smooth[tau, s] + rng.gauss(0, 0.05),
            "perplexity": math.exp(5.0 + rng.gauss(0, 0.05)),
        }
    )
    block = dimensionality_design(table)
    corr = block["correlations"]["log_perplexity"]
    rows = [(m["effective_dimensionality"], m["smoothness"], math.log(m["perplexity"]))
            for seeds in table.values() for m in seeds.values()]  # fmt: skip
    dims, smooths, perfs = (np.array(column) for column in zip(*rows, strict=True))
    r_smooth, r_perf = np.corrcoef(dims, smooths)[0, 1], np.corrcoef(dims, perfs)[0, 1]
    assert corr["n"] == 18
    assert corr["dimensionality_vs_smoothness"]["r"] == pytest.approx(r_smooth)
    assert corr["dimensionality_vs_performance"]["r"] == pytest.approx(r_perf)
    assert r_smooth < -0.99 and corr["dimensionality_vs_smoothness"]["p_value"] < 1e-10
    # Fisher's z of |r|: (atanh|r1| − atanh|r2|) / sqrt(2 / 15)
    z = (math.atanh(abs(r_smooth)) - math.atanh(abs(r_perf))) / math.sqrt(2 / 15)
    assert corr["fisher_z"]["z"] == pytest.approx(z)
    assert corr["fisher_z"]["p_value"] < 1e-4 and corr["steiger"]["p_value"] < 1e-4


def test_a_planted_rise_then_fall_is_reproduced_and_a_monotone_fall_contradicts_it():
    peak = {0.0: 5.0, 0.5: 6.0, 1.0: 8.0, 5.0: 7.0, 10.0: 6.0, 50.0: 4.0}
    offset = {0: -0.3, 1: 0.1, 2: 0.25}  # a seed's level, shared by its models
    wobble = {(tau, s): 0.05 * math.sin(7 * i + 3 * s) for i, tau in enumerate(TAUS) for s in SEEDS}
    table = _table(lambda tau, s: {"effective_dimensionality": peak[tau] + offset[s] + wobble[tau, s]})
    block = dimensionality_design(table)
    rise_fall = block["rise_then_fall"]
    assert rise_fall["verdict"] == "reproduced" and rise_fall["largest_tau"] == 50.0
    rises = [table[1.0][s]["effective_dimensionality"] - table[0.0][s]["effective_dimensionality"] for s in SEEDS]
    assert rise_fall["rise"]["mean_difference"] == pytest.approx(np.mean(rises))
    assert block["bootstrap_peak"]["argmax_tau"] == 1.0
    assert {p["tau"]: p["share"] for p in block["bootstrap_peak"]["share_argmax"]}[1.0] == 1.0
    quadratic = block["quadratic_trend"]
    x = np.array([math.log1p(tau) for tau in TAUS for _ in SEEDS])
    y = np.array([table[tau][s]["effective_dimensionality"] for tau in TAUS for s in SEEDS])
    assert quadratic["b2"] == pytest.approx(np.polyfit(x, y, 2)[0]) and quadratic["b2"] < 0

    falling = _table(lambda tau, s: {"effective_dimensionality": 8.0 - math.log1p(tau) + offset[s] + wobble[tau, s]})
    assert dimensionality_design(falling)["rise_then_fall"]["verdict"] == "contradicted"
    no_peak = {tau: seeds for tau, seeds in table.items() if tau != 1.0}
    assert "note" in dimensionality_design(no_peak)["rise_then_fall"]


FRACTIONS = (0.1, 0.3, 0.5, 0.75, 0.9)
MATCHED = {"factor": [2.0], "fraction": [0.75]}


def _damage_table(resilience) -> dict:
    """Log damage ``d(τ) · strength`` with ``d`` falling with τ (``resilience``), a seed wobble, one architecture."""

    def measure(tau, s):
        scale = 1.0 / (1.0 + resilience * math.log1p(tau)) * (1 + 0.02 * (s - 1))
        return {
            "perplexity": 100.0,
            "pruning_curve": _curve(FRACTIONS, [math.exp(scale * f**2) for f in FRACTIONS]),
            "downsampling_curve": _curve((2.0, 3.0, 4.0), [math.exp(scale * phi / 4) for phi in (2.0, 3.0, 4.0)]),
            "matched_pruning": MATCHED,
        }

    return _table(measure)


def test_pruning_at_matched_fractions_and_over_the_sweep():
    table = _damage_table(resilience=0.5)
    block = pruning_design(table)
    assert [m["factor"] for m in block["matched"]] == [2.0] and block["matched"][0]["fraction"] == 0.75
    assert [s["fraction"] for s in block["sweep"]] == [0.1, 0.3, 0.5, 0.9]  # the matched 0.75 is its own family
    test = next(t for t in block["matched_tests"] if t["tau"] == 50.0)
    expected = [
        math.log(table[50.0][s]["pruning_curve"]["perplexity_ratio"][3])
        - math.log(table[0.0][s]["pruning_curve"]["perplexity_ratio"][3])
        for s in SEEDS
    ]
    assert test["mean_difference"] == pytest.approx(np.mean(expected)) and test["mean_difference"] < 0
    assert test["verdict"] == "reproduced" and len(block["matched_tests"]) == 5
    assert len(block["sweep_tests"]) == 5 * 4
    downsampled = {p["tau"]: p["mean"] for p in block["matched"][0]["downsampling_log_damage"]}
    assert downsampled[0.0] == pytest.approx(0.5)  # scale 1 · φ / 4 at φ = 2, the seeds' wobble averaging out


def test_downsampling_dose_response_finds_the_most_resilient_tau():
    table = _damage_table(resilience=0.5)
    block = downsampling_design(table)
    assert [f["factor"] for f in block["per_factor"]] == [2.0, 3.0, 4.0]
    for factor in block["per_factor"]:
        assert factor["most_resilient_tau"] == 50.0
        assert {b["tau"]: b["share"] for b in factor["bootstrap_most_resilient"]}[50.0] == 1.0
        trend = factor["trend_over_log1p_tau"]
        xs = [math.log1p(tau) for tau in TAUS for _ in SEEDS]
        ys = [math.log(table[tau][s]["downsampling_curve"]["perplexity_ratio"][block["per_factor"].index(factor)])
              for tau in TAUS for s in SEEDS]  # fmt: skip
        assert trend["slope"] == pytest.approx(np.polyfit(xs, ys, 1)[0]) and trend["p_value"] < 0.05
    contrasts = block["largest_tau_contrasts"]
    assert len(contrasts) == 3 * 5 and all(c["verdict"] == "reproduced" for c in contrasts)
    # no effect of τ: nothing reproduced, τ-independent damage
    flat = downsampling_design(_damage_table(resilience=0.0))
    assert all(c["verdict"] != "reproduced" for c in flat["largest_tau_contrasts"])


def test_the_designs_read_the_claims_per_seed_measures_and_draw_from_json_in_a_fresh_process(tmp_path):
    table = _damage_table(resilience=0.5)
    for tau, seeds in table.items():
        for s, m in seeds.items():
            m.update(smoothness=0.1 + tau / 60 + 0.01 * s, effective_dimensionality=6 + math.sin(tau + s), blimp=0.7)
    names = {tau: tau_model_name(tau, 5.0) for tau in TAUS}
    per_seed = {str(s): {names[tau]: table[tau][s] for tau in TAUS} | {"ws": {"perplexity": 1.0}} for s in SEEDS}
    assert sweep_table(per_seed, TAUS, 5.0) == table
    sweep = tau_sweep_designs(per_seed, TAUS, topo_tau=5.0)
    assert sweep["models"]["5"] == "toponet" and sweep["seeds_per_tau"]["50"] == [0, 1, 2]
    results = tmp_path / "paper_claims.json"
    results.write_text(json.dumps({"tau_sweep": sweep}))
    done = subprocess.run(
        [sys.executable, "-m", "hf_topo.experiments.tau_sweep", str(results), "--output_dir", str(tmp_path / "fig")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    for name in FIGURES.values():
        assert (tmp_path / "fig" / name).stat().st_size > 10_000 and name in done.stdout


def test_judging_again_recomputes_the_designs_from_the_per_seed_measures():
    from hf_topo.analysis.report import json_safe
    from hf_topo.experiments.claims import reevaluate

    table = _damage_table(resilience=0.5)
    for tau, seeds in table.items():
        for s, m in seeds.items():
            m.update(smoothness=0.1 + tau / 60 + 0.01 * s, effective_dimensionality=6 + math.sin(tau + s))
    names = {tau: tau_model_name(tau, 5.0) for tau in TAUS}
    per_seed = {str(s): {names[tau]: table[tau][s] for tau in TAUS} for s in SEEDS}
    results = {"seeds": list(SEEDS), "per_seed": per_seed, "tau_sweep": {"stale": "an older rule's designs"},
               "recipe": {"alpha": 0.05, "taus": list(TAUS), "topo_tau": 5.0}}  # fmt: skip
    expected = json_safe(tau_sweep_designs(per_seed, TAUS, 5.0, 0.05))  # NaN as None, as in the JSON
    assert reevaluate(results)["tau_sweep"] == expected
    stricter = reevaluate(results, alpha=0.001)["tau_sweep"]
    assert stricter["alpha"] == 0.001 and stricter["pruning"] == json.loads(json.dumps(pruning_design(table, 0.001)))
    # results of a run without a sweep keep their (absent) block
    assert reevaluate({**results, "recipe": {"alpha": 0.05, "taus": []}, "tau_sweep": None})["tau_sweep"] is None


# ---- a tiny sweep, end to end: stopped, resumed, extended -----------------------------------------------------

ANIMALS = ["cat", "dog", "bird", "horse", "fox", "owl"]
CORPUS = "".join(
    f"The {ANIMALS[i % 6]} saw {i % 13} {['apples', 'stones', 'boats', 'lamps'][i % 4]} near the river, "
    f"and {['then', 'so', 'later'][i % 3]} it went home.\n"
    for i in range(300)
)
TINY = [
    "--seeds", "0", "1", "--families", "baseline", "--config_overrides", "n_embd=32,n_layer=2,n_head=2",
    "--vocab_size", "300", "--block_size", "32", "--max_steps", "2", "--train_batch_size", "4", "--max_tokens", "256",
    "--eval_blocks", "4", "--morans_permutations", "0", "--temporal_windows", "false", "--pruning_sweep_fractions",
    "0.5", "0.9", "--device", "cpu", "--progress", "false", "--reuse_trained", "true",
]  # fmt: skip


def _command(tmp_path, taus):
    return [sys.executable, "-m", "hf_topo.cli", "claims", "--train_file", str(tmp_path / "corpus.txt"),
            "--output_dir", str(tmp_path / "out"), "--output", str(tmp_path / "results" / "paper_claims.json"),
            "--taus", *taus, *TINY]  # fmt: skip


def _measured(tmp_path, seed):
    path = tmp_path / "out" / f"seed{seed}" / "measures.json"
    return json.loads(path.read_text())["measures"] if path.is_file() else {}


@pytest.mark.slow
def test_a_tiny_sweep_stops_resumes_and_extends_without_training_or_measuring_twice(tmp_path):
    (tmp_path / "corpus.txt").write_text(CORPUS)
    env = os.environ | {"TOKENIZERS_PARALLELISM": "false"}
    # 1. stopped midway: killed once the first model of seed 0 is measured (its measures are on disk)
    run = subprocess.Popen(_command(tmp_path, ["0", "1"]), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 900
    while not _measured(tmp_path, 0) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    if run.poll() is None:
        os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    first = _measured(tmp_path, 0)
    assert "baseline" in first and not (tmp_path / "results" / "paper_claims.json").exists()
    # 2. resumed: the saved model and its measures are reused, the rest trained and measured
    subprocess.run(_command(tmp_path, ["0", "1"]), env=env, check=True, capture_output=True)
    resumed = _measured(tmp_path, 0)
    assert resumed["baseline"] == first["baseline"] and set(resumed) == {"baseline", "toponet_tau1"}
    trained = {name: os.path.getmtime(tmp_path / "out" / "seed1" / name / "model.safetensors")
               for name in ("baseline", "toponet_tau1")}  # fmt: skip
    # 3. extended to a third τ: only τ = 3 is trained and measured
    subprocess.run(_command(tmp_path, ["0", "1", "3"]), env=env, check=True, capture_output=True)
    for seed in (0, 1):
        extended = _measured(tmp_path, seed)
        assert set(extended) == {"baseline", "toponet_tau1", "toponet_tau3"}
    assert {k: v for k, v in _measured(tmp_path, 0).items() if k != "toponet_tau3"} == resumed
    for name, mtime in trained.items():
        assert os.path.getmtime(tmp_path / "out" / "seed1" / name / "model.safetensors") == mtime
    # the results, read in a fresh process
    loaded = json.loads(subprocess.run(
        [sys.executable, "-c", f"import json; print(json.dumps(json.load(open({str(tmp_path / 'results' / 'paper_claims.json')!r}))))"],
        capture_output=True, text=True, check=True,
    ).stdout)  # fmt: skip
    sweep = loaded["tau_sweep"]
    assert sweep["taus"] == [0.0, 1.0, 3.0] and sweep["seeds_per_tau"] == {"0": [0, 1], "1": [0, 1], "3": [0, 1]}
    assert sweep["models"] == {"0": "baseline", "1": "toponet_tau1", "3": "toponet_tau3"}
    points = {p["tau"]: p for p in sweep["pareto"]["points"]}
    assert points[3.0]["perplexity"]["values"] == [loaded["per_seed"][s]["toponet_tau3"]["perplexity"] for s in "01"]
    assert len(sweep["dimensionality"]["models"]) == 6
    for name in FIGURES.values():
        assert (tmp_path / "results" / name).stat().st_size > 0 and (tmp_path / "out" / name).stat().st_size > 0
    # the matched pruning fractions are those of the paper's downsampled layers, counted on the saved model
    _check_matched_fractions(tmp_path / "out" / "seed0" / "toponet_tau1", loaded["per_seed"]["0"]["toponet_tau1"])


def _check_matched_fractions(model_dir, measures):
    import torch
    from transformers import AutoModelForCausalLM

    import hf_topo  # noqa: F401  (registers the downsampled layers)
    from hf_topo.analysis import topographic_layers
    from hf_topo.downsampling import downsample_model

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    layers = topographic_layers(model)
    before = sum(layer.module.weight.numel() for layer in layers)
    matched = measures["matched_pruning"]
    assert matched["factor"] == [2.0, 3.0, 4.0]
    for factor, fraction in zip(matched["factor"], matched["fraction"], strict=True):
        smaller = downsample_model(model, (factor, factor), [layer.name for layer in layers], gains=False)
        after = sum(smaller.get_submodule(layer.name).weight.numel() for layer in layers)
        assert fraction == pytest.approx(1 - after / before, abs=1e-12)
        x = measures["pruning_curve"]["x"]
        assert any(math.isclose(fraction, at) for at in x)  # measured at that fraction
