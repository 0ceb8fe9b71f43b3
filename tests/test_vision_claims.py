"""`hf-topo claims --domain vision`: the vision claims' verdicts on synthetic per-seed measures with known answers,
Truong & Hasson's input noise against independent NumPy references, and the runner end to end (slow) with its
resume (`--reuse_trained`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _scripts import offline_env
from scipy import stats

from hf_topo.errors import InputError
from hf_topo.experiments.statistics import VERDICTS
from hf_topo.experiments.vision_claims import (
    NOISE_TYPES,
    VISION_CLAIMS,
    VISION_FAMILIES,
    VisionClaimsArguments,
    judge_claims,
)

HF_TOPO = str(Path(sys.executable).with_name("hf-topo"))


def _per_seed(values: dict[str, dict[str, list[float]]]) -> list[dict]:
    """``{family: {metric: [one value per seed]}}`` → the runner's per-seed ``[{family: {metric: value}}]``."""
    n = len(next(iter(next(iter(values.values())).values())))
    return [
        {family: {metric: v[s] for metric, v in metrics.items()} for family, metrics in values.items()}
        for s in range(n)
    ]


def _by_id(entries):
    return {entry["id"]: entry for entry in entries}


def test_synthetic_measures_get_the_verdicts_they_were_built_for():
    toponet_smooth, baseline_smooth = [0.50, 0.55, 0.60, 0.52], [0.10, 0.12, 0.09, 0.11]
    per_seed = _per_seed(
        {
            "toponet": {
                "smoothness": toponet_smooth,
                "pruning_delta_accuracy_claim": [-0.30, -0.35, -0.32, -0.31],  # worse than the baseline every time
                "accuracy": [0.950, 0.940, 0.960, 0.955],  # within the 5 % margin
                "effective_dimensionality": [5.0, 9.0, 4.0, 7.0],  # noise around the baseline's
            },
            "baseline": {
                "smoothness": baseline_smooth,
                "pruning_delta_accuracy_claim": [-0.05, -0.06, -0.04, -0.05],
                "accuracy": [0.955, 0.945, 0.950, 0.950],
                "effective_dimensionality": [6.0, 5.0, 8.0, 6.0],
            },
            "th_baseline": {"morans_i": [0.10, 0.12, 0.08, 0.11]},
            # far smoother than the baseline ("not smooth" fails); bimodal on every seed
            "th_as": {"morans_i": [0.90, 0.85, 0.92, 0.88], "neighbour_bimodality": [0.80, 0.82, 0.79, 0.81]},
        }
    )
    entries = _by_id(judge_claims(VISION_CLAIMS, per_seed, alpha=0.05))
    assert set(entries) == {claim.id for claim in VISION_CLAIMS}
    smooth = entries["vision_smoothness"]
    assert smooth["verdict"] == "reproduced"
    reference = stats.ttest_rel(toponet_smooth, baseline_smooth)  # two-sided
    assert smooth["p_value"] == pytest.approx(reference.pvalue, rel=1e-6)
    assert smooth["effect"]["mean_difference"] == pytest.approx(np.mean(np.subtract(toponet_smooth, baseline_smooth)))
    measured = [e for e in entries.values() if e["p_value"] is not None]
    assert len(measured) == 6 and all(e["family"]["size"] == 6 for e in measured)
    assert all(e["p_holm"] >= e["p_value"] for e in measured)
    ordered = sorted(measured, key=lambda e: e["p_value"])  # Holm's step-down adjustment, written out
    running = 0.0
    for k, entry in enumerate(ordered):
        running = max(running, min(1.0, (len(ordered) - k) * entry["p_value"]))
        assert entry["p_holm"] == pytest.approx(running, rel=1e-9)
    assert entries["vision_pruning"]["verdict"] == "contradicted"
    assert entries["vision_accuracy_cost"]["verdict"] == "reproduced"
    assert entries["vision_effective_dimensionality"]["verdict"] == "not at this scale"
    assert entries["th_as_not_smooth"]["verdict"] == "contradicted"
    assert entries["th_as_bimodal_neighbours"]["verdict"] == "reproduced"
    assert entries["vision_selectivity_vs_untrained"]["verdict"] == "not measured"  # no untrained model
    assert entries["th_ws_smooth_maps"]["verdict"] == "not measured"


def test_every_claim_compares_models_of_the_runner():
    for claim in VISION_CLAIMS:
        assert claim.a in VISION_FAMILIES and (claim.b is None or claim.b in VISION_FAMILIES), claim.id
        assert claim.a != claim.b and claim.sign in (-1, 1)
    noise_claims = [c.id for c in VISION_CLAIMS if c.metric in {f"{n}_delta_accuracy" for n in NOISE_TYPES}]
    assert len(noise_claims) == 6  # three noise types × (WS, AS)


def test_bad_recipes_are_refused():
    with pytest.raises(InputError, match="baseline"):
        VisionClaimsArguments(families=["toponet"])
    with pytest.raises(InputError, match="pruning_claim_fraction"):
        VisionClaimsArguments(pruning_fractions=[0.5])
    with pytest.raises(InputError, match="th_lambda"):
        VisionClaimsArguments(th_lambda=0.0)


def _run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        HF_TOPO, "claims", "--domain", "vision", "--seeds", "0", "1", "--families", "baseline", "toponet",
        "untrained", "th_baseline", "th_as", "--max_steps", "3", "--th_max_steps", "3", "--batch_size", "16",
        "--image_size", "8", "--output_dir", str(out), "--output", str(out / "copy.json"), "--progress", "false",
        *extra,
    ]  # fmt: skip
    env = offline_env() | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow  # trains 8 tiny models and measures 10, then measures one again
def test_vision_claims_end_to_end_resume_and_fresh_process(tmp_path):
    out = tmp_path / "claims"
    first = _run(out)
    assert "| claim |" in first.stdout
    models = {f: out / "seed1" / f / "model.safetensors" for f in ("baseline", "toponet", "th_baseline", "th_as")}
    assert all(path.is_file() for path in models.values())
    assert not (out / "seed1" / "untrained").exists()  # made from the baseline's config when measured

    check = (
        "import json, sys; r = json.load(open(sys.argv[1])); "
        "print(json.dumps({e['id']: [e['verdict'], e['ours']['n_seeds']] for e in r['claims']}), r['seeds'])"
    )
    fresh = subprocess.run([sys.executable, "-c", check, str(out / "copy.json")], capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr
    verdicts = json.loads(fresh.stdout.rsplit(" [", 1)[0])
    assert set(verdicts) == {claim.id for claim in VISION_CLAIMS}
    assert all(v in VERDICTS for v, _ in verdicts.values())
    for claim_id in ("vision_smoothness", "vision_pruning", "vision_downsampling", "vision_selectivity_vs_untrained",
                     "th_as_gaussian_robustness", "th_as_salt_and_pepper_robustness", "th_as_not_smooth",
                     "th_as_bimodal_neighbours"):  # fmt: skip
        assert verdicts[claim_id][1] == 2, claim_id  # both seeds measured
    assert verdicts["th_ws_smooth_maps"] == ["not measured", 0]  # no WS model in this run

    result = json.loads((out / "paper_claims_vision.json").read_text())
    seed0 = result["per_seed"]["0"]
    assert 0.0 <= seed0["baseline"]["accuracy"] <= 1.0
    assert seed0["untrained"]["accuracy"] < 0.5  # ten classes, never trained
    assert seed0["baseline"]["downsampling_parameters_kept"] < 1.0
    assert (out / "paper_claims_vision.png").stat().st_size > 0
    assert (out / "paper_claims_vision.md").read_text().startswith("| claim |")

    # A run stopped after the first seed's AS model was trained but before it was measured: its measures are gone.
    measures_file = out / "seed1" / "measures.json"
    saved = json.loads(measures_file.read_text())
    del saved["measures"]["th_as"]
    measures_file.write_text(json.dumps(saved))
    mtimes = {f: os.path.getmtime(path) for f, path in models.items()}
    second = _run(out, "--reuse_trained")
    assert {f: os.path.getmtime(path) for f, path in models.items()} == mtimes  # nothing retrained
    reused = "Reusing the measures of ['baseline', 'th_as', 'th_baseline', 'toponet', 'untrained'] for seed 0"
    assert reused in second.stderr
    assert "Reusing the trained th_as of seed 1" in second.stderr  # measured again, from the saved model
    again = json.loads((out / "paper_claims_vision.json").read_text())
    assert again["per_seed"]["1"]["th_as"] == result["per_seed"]["1"]["th_as"] | {
        "wall_time_s": again["per_seed"]["1"]["th_as"]["wall_time_s"]
    }
    assert [e["verdict"] for e in again["claims"]] == [e["verdict"] for e in result["claims"]]


def test_activation_similarity_is_evaluated_on_an_image_batch():
    """The runner's AS models: ``TopoRegularizer.evaluate`` takes ``pixel_values`` (an image classifier's batch) and
    gives the mean correlation distance of neighbouring units' pre-activation responses, computed independently."""
    from hf_topo.config import TopoConfig
    from hf_topo.regularizers.similarity import neighbour_distance_loss
    from hf_topo.topo_regularizer import TopoRegularizer
    from hf_topo.vision.truong_hasson_cnn import TruongHassonCNNForImageClassification
    from hf_topo.vision.truong_hasson_cnn_config import TruongHassonCNNConfig

    torch.manual_seed(0)
    model = TruongHassonCNNForImageClassification(TruongHassonCNNConfig(num_labels=10)).eval()
    pixels = torch.rand(32, 1, 8, 8)
    regularizer = TopoRegularizer(
        TopoConfig(target_modules=["fc1"], loss="activation_similarity", distance="correlation", tau=1.0)
    )
    value, per_layer = regularizer.evaluate(model, {"pixel_values": pixels})
    captured = {}
    handle = model.fc1.register_forward_hook(lambda module, inputs, output: captured.update(fc1=output.detach()))
    with torch.no_grad():
        model(pixel_values=pixels)
    handle.remove()
    reference = neighbour_distance_loss(captured["fc1"].T.reshape(11, 11, -1))
    assert float(value) == pytest.approx(float(reference), rel=1e-5)
    assert list(per_layer) == ["fc1"]
    with pytest.raises(ValueError, match="pixel_values"):
        regularizer.evaluate(model, {"labels": torch.zeros(2)})
