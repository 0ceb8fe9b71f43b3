"""hf_topo.experiments.claims and .statistics: the verdict rule on planted numbers, the t distribution against printed tables, and the
`hf-topo claims` command end to end on a 2-step recipe (offline, tiny models)."""

import json
import math
import os
import subprocess
import sys

import pytest
from _scripts import run_script

from hf_topo.errors import InputError
from hf_topo.experiments.claims import CLAIMS, Claim, ClaimsArguments, evaluate_claim, portable_command, topolm_radius
from hf_topo.experiments.statistics import VERDICTS, student_t_sf

# ---- statistics --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "t, df, p",  # one-sided upper-tail critical values of Student's t (printed tables)
    [(6.314, 1, 0.05), (2.920, 2, 0.05), (2.353, 3, 0.05), (6.965, 2, 0.01), (1.645, 1e6, 0.05), (0.0, 4, 0.5)],
)
def test_student_t_tail_matches_printed_tables(t, df, p):
    assert student_t_sf(t, df) == pytest.approx(p, abs=2e-4)
    assert student_t_sf(-t, df) == pytest.approx(1 - p, abs=2e-4)


def test_student_t_tail_of_one_degree_of_freedom_is_the_cauchy_tail():
    for t in (0.3, 1.0, 4.0):
        assert student_t_sf(t, 1) == pytest.approx(0.5 - math.atan(t) / math.pi, rel=1e-10)


# ---- the recipe ----------------------------------------------------------------------------------------------------


def test_topolm_radius_is_clipped_to_the_recipes_hidden_size_sheet_before_any_training(caplog):
    """TopoLM's radius 5 needs a 9 × 9 window: the default 4 × 128 recipe's 8 × 16 sheet takes 4 (7 × 7), a 256-wide
    model's 16 × 16 sheet takes 5; a sheet under 3 × 3 is refused (an error before the run, not after four models)."""
    args = ClaimsArguments(train_file="t.txt")
    with caplog.at_level("WARNING", logger="hf_topo.experiments.claims"):
        assert topolm_radius(args) == 4
    assert "radius 5 needs a 9 x 9 window but the recipe's hidden-size sheet is 8 x 16; using radius 4" in caplog.text
    wide = ClaimsArguments(train_file="t.txt", config_overrides="n_layer=6,n_embd=256,n_head=8")
    assert topolm_radius(wide) == 5
    assert topolm_radius(ClaimsArguments(train_file="t.txt", topolm_radius=3)) == 3
    with pytest.raises(InputError, match="hidden size 4 makes a 2 x 2 sheet, too small for TopoLM"):
        topolm_radius(ClaimsArguments(train_file="t.txt", config_overrides="n_embd=4,n_head=1"))


# ---- the verdict rule --------------------------------------------------------------------------------------------

GREATER = Claim("x", "a is larger", "paper", "Fig. 1", "larger", "m", "toponet", "baseline", +1)


def _seeds(a, b):
    return [{"toponet": {"m": x}, "baseline": {"m": y}} for x, y in zip(a, b, strict=True)]


def test_a_consistent_difference_in_the_claimed_direction_is_reproduced():
    entry = evaluate_claim(GREATER, _seeds([1.0, 1.1, 0.9], [0.1, 0.15, 0.05]))
    assert entry["verdict"] == "reproduced"
    d = [0.9, 0.95, 0.85]
    assert entry["ours"]["n_seeds"] == 3 and entry["ours"]["mean"] == pytest.approx(sum(d) / 3)
    assert entry["ours"]["sd"] == pytest.approx(0.05)
    assert entry["t"] == pytest.approx(0.9 / (0.05 / math.sqrt(3)))
    assert entry["ours"]["toponet"]["mean"] == pytest.approx(1.0) and entry["ours"]["baseline"]["values"] == [
        0.1,
        0.15,
        0.05,
    ]


def test_the_other_direction_is_contradicted_and_noise_is_not_at_this_scale():
    assert evaluate_claim(GREATER, _seeds([0.1, 0.15, 0.05], [1.0, 1.1, 0.9]))["verdict"] == "contradicted"
    assert evaluate_claim(GREATER, _seeds([1.0, 0.2, 0.6], [0.5, 0.7, 0.55]))["verdict"] == "not at this scale"


def test_a_margin_claim_on_log_perplexity():
    cost = next(c for c in CLAIMS if c.id == "perplexity_cost")  # toponet < 1.05 × baseline
    assert evaluate_claim(cost, _seeds_ppl([101, 100, 102], [100, 100, 100]))["verdict"] == "reproduced"
    assert evaluate_claim(cost, _seeds_ppl([130, 131, 129], [100, 100, 100]))["verdict"] == "contradicted"


def _seeds_ppl(a, b):
    return [{"toponet": {"perplexity": x}, "baseline": {"perplexity": y}} for x, y in zip(a, b, strict=True)]


def test_missing_measures_or_one_seed_are_not_measured():
    assert evaluate_claim(GREATER, _seeds([1.0], [0.0]))["verdict"] == "not measured"
    entry = evaluate_claim(GREATER, [{"baseline": {"m": 0.1}}, {"baseline": {"m": 0.2}}])
    assert entry["verdict"] == "not measured" and entry["ours"]["n_seeds"] == 0


def test_every_claim_names_known_models_and_a_direction():
    assert len({c.id for c in CLAIMS}) == len(CLAIMS)
    from hf_topo.experiments.claims import BASELINE_AT_TOPOLM_SITES, MATCHED_BASELINES, POST_HOC, TRAINED_FAMILIES

    models = {*TRAINED_FAMILIES, *POST_HOC, BASELINE_AT_TOPOLM_SITES, *MATCHED_BASELINES}
    for claim in CLAIMS:
        assert claim.a in models and claim.sign in (1, -1)
        assert claim.b in models or (claim.b is None and claim.threshold is not None)
        assert claim.a != claim.b or (claim.metric_b and claim.metric_b != claim.metric)  # never a model with itself


def test_post_hoc_models_need_their_trained_model():
    with pytest.raises(ValueError, match="arranged_toponet arranges the toponet model"):
        ClaimsArguments(train_file="x.txt", families=["baseline", "arranged_toponet"])


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="baseline"):
        ClaimsArguments(train_file="x.txt", families=["toponet"])
    with pytest.raises(ValueError, match="seeds"):
        ClaimsArguments(train_file="x.txt", seeds=[0, 0])
    with pytest.raises(ValueError, match="pruning_fraction"):
        ClaimsArguments(train_file="x.txt", pruning_fraction=1.5)
    with pytest.raises(ValueError, match="lora_ranks"):
        ClaimsArguments(train_file="x.txt", lora_ranks=[0, 2])
    with pytest.raises(ValueError, match="'lags=21' is not key=value with a key of"):
        ClaimsArguments(train_file="x.txt", temporal_window_settings="lags=21")
    with pytest.raises(ValueError, match="batch_size must be of type int, got 'many'"):
        ClaimsArguments(train_file="x.txt", temporal_window_settings="sequence_words=8,batch_size=many")
    settings = ClaimsArguments(train_file="x.txt", temporal_window_settings="sequence_words=8, r2_threshold=0.8")
    assert settings.window_settings() == {"max_delta": 20, "max_sequences": 100, "yoking_sequences": 100,
                                          "sequence_words": 8, "r2_threshold": 0.8}  # fmt: skip


def test_portable_command_drops_machine_paths(tmp_path):
    command = portable_command(["hf-topo", "claims", "--train_file", str(tmp_path / "corpus.txt"), "--seeds", "0"])
    assert str(tmp_path) not in command and "corpus.txt" in command


# ---- the command, end to end -------------------------------------------------------------------------------------

ANIMALS = ["cat", "dog", "bird", "horse", "fox", "owl"]
PLACES = ["river", "hill", "market", "forest", "harbour"]
CORPUS = "".join(
    f"The {ANIMALS[i % 6]} saw {i % 13} {['apples', 'stones', 'boats', 'lamps'][i % 4]} near the {PLACES[i % 5]}, "
    f"and {['then', 'so', 'later'][i % 3]} it went {['home', 'away', 'north'][i % 7 % 3]}. "
    f"{['It', 'Rain', 'Night'][i % 3]} was {['calm', 'cold', 'near', 'late'][i % 4]}.\n"  # the yoking's sentences
    for i in range(400)
)
CODE = "".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(400))
TINY = [
    "--seeds", "0", "1", "--families", "baseline", "toponet", "as", "topolm", "arranged_baseline", "--topolm_radius", "2",
    "--config_overrides", "n_embd=32,n_layer=2,n_head=2",
    "--vocab_size", "300", "--block_size", "32", "--max_steps", "2", "--train_batch_size", "4", "--max_tokens", "256",
    "--eval_blocks", "4", "--morans_permutations", "9", "--temporal_max_delta", "3", "--temporal_max_sequences", "4",
    "--temporal_window_settings", "sequence_words=8,sentence_words=3,sentences_per_sequence=3,patch_shuffles=3",
    "--lora_steps", "2", "--lora_max_train_tokens", "2000", "--lora_code", "true", "--lora_ranks", "2",
    "--device", "cpu", "--progress", "false",
    "--taus", "0", "5",  # the τ sweep of the baseline and the TopoNet (τ = 5): no model more
]  # fmt: skip


@pytest.mark.slow
def test_claims_command_end_to_end_writes_a_table_that_loads_in_a_fresh_process(tmp_path):
    corpus, code = tmp_path / "corpus.txt", tmp_path / "code.txt"
    corpus.write_text(CORPUS)
    code.write_text(CODE)
    output = tmp_path / "results" / "paper_claims.json"
    result = run_script(
        [sys.executable, "-m", "hf_topo.cli", "claims", "--train_file", str(corpus), "--lora_train_file", str(code),
         "--output_dir", str(tmp_path / "out"), "--output", str(output), *TINY],
    )  # fmt: skip
    assert "| claim | paper (where)" in result.stdout
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", f"import json; print(json.dumps(json.load(open({str(output)!r}))))"],
            capture_output=True, text=True, check=True,
        ).stdout
    )  # fmt: skip
    assert str(tmp_path) not in output.read_text()  # no machine-specific paths
    assert loaded["seeds"] == [0, 1] and loaded["recipe"]["max_steps"] == 2 and "hf-topo claims" in loaded["command"]
    assert loaded["topolm_radius_used"] == 2
    by_id = {entry["id"]: entry for entry in loaded["claims"]}
    assert set(by_id) == {claim.id for claim in CLAIMS}
    for entry in loaded["claims"]:
        assert entry["verdict"] in VERDICTS and {"claim", "where", "paper_value", "ours"} <= set(entry)
    for claim_id in ("smoothness", "robust_smoothness", "morans_i", "pruning", "downsampling", "lora_gain",
                     "lora_noninferiority", "temporal_clusters", "temporal_exponential_early",
                     "temporal_power_law_middle", "temporal_kind_clusters", "temporal_kind_clusters_vs_arranged",
                     "as_weight_noise", "as_input_robustness", "effective_dimensionality", "perplexity_cost",
                     "topolm_morans_i", "topolm_perplexity_cost",
                     "arranged_smoothness", "arranged_vs_toponet_downsampling", "gains_downsampling"):  # fmt: skip
        ours = by_id[claim_id]["ours"]
        assert ours["n_seeds"] == 2 and math.isfinite(ours["mean"]) and math.isfinite(ours["sd"]), claim_id
        assert by_id[claim_id]["verdict"] != "not measured"
    assert by_id["ws_weight_noise"]["verdict"] == "not measured"  # no WS model trained
    # the baseline saved checkpoints (every step of 2): the AS robustness claims have their matched baseline
    assert {"checkpoint-1", "checkpoint-2"} <= set(os.listdir(tmp_path / "out" / "seed0" / "baseline"))
    for claim_id in ("as_weight_noise", "as_input_robustness"):
        assert by_id[claim_id]["verdict"] != "not measured" and by_id[claim_id]["ours"]["n_seeds"] == 2, claim_id
    assert by_id["as_bimodal_neighbours"]["verdict"] != "not measured"
    gains = by_id["gains_downsampling"]["ours"]  # two measures of one model, kept apart
    assert set(gains) >= {"toponet", "toponet:downsampling_relative_delta"}
    for seed in ("0", "1"):
        measures = loaded["per_seed"][seed]
        planned = {"baseline", "toponet", "as", "topolm", "arranged_baseline", "baseline_at_topolm_sites"}
        assert set(measures) == planned | {"baseline_matched_as"}
        for name in ("baseline", "toponet", "as"):  # Truong & Hasson's neighbour-correlation structure
            assert -1 <= measures[name]["neighbour_correlation_mean"] <= 1
            assert measures[name]["neighbour_bimodality"] > 0
        assert "neighbour_bimodality" not in measures["topolm"]
        matched = measures["baseline_matched_as"]  # the final baseline or one of its checkpoints, within 5 %
        assert matched["matched_checkpoint"] in ("final", "checkpoint-1", "checkpoint-2")
        assert abs(matched["matched_log_perplexity_ratio"]) < math.log(1.05)
        if matched["matched_checkpoint"] == "final":
            assert matched["noise_relative_delta"] == measures["baseline"]["noise_relative_delta"]
        assert 0 < measures["baseline"]["morans_i_p_value"] <= 1
        # A.11's sweep (rank 2 on the text and the code domain) and Fig. 5B's window kinds, merged per model
        for name in ("baseline", "toponet"):
            assert {"lora_gain_text_r2", "lora_gain_code_r2"} <= set(measures[name])
            gains = [measures[name]["lora_gain_text_r2"], measures[name]["lora_gain_code_r2"]]
            assert measures[name]["lora_gain_mean"] == pytest.approx(sum(gains) / 2)
        assert "lora_gain_mean" not in measures["topolm"]
        sweep = json.loads((tmp_path / "out" / f"seed{seed}" / "lora_sweep" / "lora_sweep.json").read_text())
        assert {(c["domain"], c["rank"]) for c in sweep["comparisons"]} == {("text", 2), ("code", 2)}
        kinds = json.loads((tmp_path / "out" / f"seed{seed}" / "window_kinds" / "window_kinds.json").read_text())
        assert kinds["settings"]["max_delta"] == 3 and kinds["arranged_topoloss"] == {"given": True}
        for name in ("baseline", "toponet", "arranged_baseline"):
            assert {"temporal_exponential_change", "temporal_kind_morans_i", "temporal_c_morans_i"} <= set(
                measures[name]
            )
        # the arrangement lowered TopoLoss and is the baseline's function: same perplexity
        arranged = measures["arranged_baseline"]
        assert arranged["arranged_topoloss_after"] < arranged["arranged_topoloss_before"]
        assert arranged["perplexity"] == pytest.approx(measures["baseline"]["perplexity"], rel=1e-4)
        # the baseline on TopoLM's sites is the baseline's function too, measured on other sheets
        at_sites = measures["baseline_at_topolm_sites"]
        assert at_sites["perplexity"] == pytest.approx(measures["baseline"]["perplexity"], rel=1e-6)
        assert at_sites["smoothness"] != measures["baseline"]["smoothness"]
    assert (tmp_path / "out" / "paper_claims.png").stat().st_size > 0
    table = (tmp_path / "out" / "paper_claims.md").read_text()
    assert table.count("\n") == len(CLAIMS) + 4  # header, rule, one row per claim, a blank line, the family
    assert "Holm, alpha = 0.05" in table.splitlines()[-1]


def test_saved_measures_of_the_same_recipe_are_reused_and_judged(tmp_path):
    from hf_topo.experiments.claims import _measure_recipe, run_claims

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    args = ClaimsArguments(
        train_file=str(corpus), output_dir=str(tmp_path / "out"), families=["baseline", "toponet"], reuse_trained=True,
        progress=False, taus=[0, 5],  # the sweep of these two models only: nothing to train
        temporal_windows=False,  # (the window kinds would load the two models)
    )  # fmt: skip
    for seed, (topo, base) in enumerate([(0.9, 0.10), (0.8, 0.12), (0.85, 0.08)]):
        (tmp_path / "out" / f"seed{seed}").mkdir(parents=True)
        saved = {"recipe": _measure_recipe(args), "seed": seed,
                 "measures": {"toponet": {"smoothness": topo}, "baseline": {"smoothness": base}}}  # fmt: skip
        (tmp_path / "out" / f"seed{seed}" / "measures.json").write_text(json.dumps(saved))
    result = run_claims(args)  # nothing to train: every seed's measures are saved
    entry = next(e for e in result["claims"] if e["id"] == "smoothness")
    assert entry["verdict"] == "reproduced" and entry["ours"]["toponet"]["values"] == [0.9, 0.8, 0.85]
    assert next(e for e in result["claims"] if e["id"] == "pruning")["verdict"] == "not measured"
    assert json.loads((tmp_path / "out" / "paper_claims.json").read_text())["claims"] == result["claims"]
    assert (tmp_path / "out" / "paper_claims.png").stat().st_size > 0
    other = ClaimsArguments(**{**vars(args), "max_steps": 7})  # another recipe: its saved measures do not count
    from hf_topo.experiments.claims import _cached_measures

    assert _cached_measures(other, 0) is None and _cached_measures(args, 0) is not None
    # A file of an earlier release (families listed, the TopoLM settings not yet in the recipe) still counts.
    path = tmp_path / "out" / "seed0" / "measures.json"
    saved = json.loads(path.read_text())
    saved["recipe"] = {k: v for k, v in saved["recipe"].items() if not k.startswith("topolm_")} | {"families": ["x"]}
    path.write_text(json.dumps(saved))
    assert _cached_measures(args, 0) is not None
    assert _cached_measures(ClaimsArguments(**{**vars(args), "topolm_tau": 3.0}), 0) is None
