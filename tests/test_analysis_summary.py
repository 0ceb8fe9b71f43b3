"""The typed analysis summary (hf_topo.analysis.summary): the flat keys derived from it, its record, old reports."""

import json

import pytest

from hf_topo.analysis import AnalysisSummary, SweepPoint, SweepSummary


def _summary() -> AnalysisSummary:
    return AnalysisSummary(
        perplexity=12.5,
        smoothness=0.2,
        n_topographic_layers=2,
        temporal_fractions={"power_law": 0.75, "exponential": 0.25},
        temporal_reach_morans_i=0.1,
        sweeps={
            "pruning": SweepSummary("pruning", "fraction", [SweepPoint(0.0, 12.5, 0.0), SweepPoint(0.5, 13.0, 0.5, -0.01)]),
            "noise": SweepSummary("noise", "σ", [SweepPoint(0.5, 14.0, 1.5)]),
            "downsampling": SweepSummary("downsampling", "φ", [SweepPoint(2.0, 15.0, 2.5, parameters_kept=0.8)]),
            "substitution": SweepSummary("substitution", "rate", [SweepPoint(0.1, 16.0, 3.5)]),
        },
    )  # fmt: skip


def test_flat_keys_are_derived_exactly_as_report_json_has_always_named_them():
    assert _summary().flat() == {
        "smoothness": 0.2,
        "perplexity": 12.5,
        "n_topographic_layers": 2,
        "temporal_fraction_power_law": 0.75,
        "temporal_fraction_exponential": 0.25,
        "temporal_reach_morans_i": 0.1,
        "pruned_0pct_perplexity": 12.5,
        "pruned_0pct_delta_perplexity": 0.0,
        "pruned_50pct_perplexity": 13.0,
        "pruned_50pct_delta_perplexity": 0.5,
        "pruned_50pct_delta_blimp": -0.01,
        "noise_sigma_0.5_perplexity": 14.0,
        "noise_sigma_0.5_delta_perplexity": 1.5,
        "downsampled_2x2_parameters_kept": 0.8,
        "downsampled_2x2_perplexity": 15.0,
        "downsampled_2x2_delta_perplexity": 2.5,
        "substitution_10pct_perplexity": 16.0,
        "substitution_10pct_delta_perplexity": 3.5,
    }


def test_record_round_trips_through_json_and_points_are_found_by_strength():
    summary = _summary()
    again = AnalysisSummary.from_dict(json.loads(json.dumps(summary.to_dict())))
    assert again == summary
    assert again.delta_perplexity("pruning", 0.5) == 0.5 and again.delta_perplexity("pruning", 0.3) is None
    assert again.delta_perplexity("deletion", 0.1) is None
    assert [p.x for p in again.sweeps["pruning"].perturbed_points()] == [0.5]
    assert [again.sweeps[k].strength(x) for k, x in (("pruning", 0.5), ("noise", 0.5), ("downsampling", 2.0))] == [
        "50 %",
        "σ 0.5",
        "φ 2",
    ]


def test_malformed_records_and_unknown_names_are_errors():
    with pytest.raises(ValueError, match="Unknown sweep kind 'prune'"):
        SweepSummary("prune", "x", [])
    with pytest.raises(ValueError, match="analysis summary in r.json is malformed"):
        AnalysisSummary.from_dict({"sweeps": {"noise": {"kind": "noise"}}}, source="r.json")
    with pytest.raises(ValueError, match="Unknown measure 'smoothnes'"):
        _summary().measure("smoothnes")
    with pytest.raises(ValueError, match="which='tuned'"):
        AnalysisSummary.from_report({}, "tuned")


def test_from_report_prefers_the_typed_section_and_has_none_for_a_missing_baseline():
    summary = _summary()
    report = {"summary": {"smoothness": -1.0}, "analysis_summary": summary.to_dict(), "baseline_summary": None}
    assert AnalysisSummary.from_report(report) == summary
    assert AnalysisSummary.from_report(report, "baseline") is None
