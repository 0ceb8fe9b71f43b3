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
    add_input_noise,
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
    toponet_smooth, baseline_smooth = [0.50, 0.55, 0.60], [0.10, 0.12, 0.09]
    per_seed = _per_seed(
        {
            "toponet": {
                "smoothness": toponet_smooth,
                "pruning_delta_accuracy_claim": [-0.30, -0.35, -0.32],  # worse than the baseline on every seed
                "accuracy": [0.950, 0.940, 0.960],  # within the 2-point margin
                "effective_dimensionality": [5.0, 9.0, 4.0],  # noise around the baseline's
            },
            "baseline": {
                "smoothness": baseline_smooth,
                "pruning_delta_accuracy_claim": [-0.05, -0.06, -0.04],
                "accuracy": [0.955, 0.945, 0.950],
                "effective_dimensionality": [6.0, 5.0, 8.0],
                "morans_i": [0.10, 0.12, 0.08],
            },
            "as": {"morans_i": [0.90, 0.85, 0.92]},  # far smoother than the baseline: "not smooth" fails
        }
    )
    entries = _by_id(judge_claims(VISION_CLAIMS, per_seed, alpha=0.05))
    assert set(entries) == {claim.id for claim in VISION_CLAIMS}
    smooth = entries["vision_smoothness"]
    assert smooth["verdict"] == "reproduced"
    reference = stats.ttest_rel(toponet_smooth, baseline_smooth, alternative="greater")
    assert smooth["p_value"] == pytest.approx(reference.pvalue, rel=1e-9)
    assert smooth["ours"]["mean"] == pytest.approx(np.mean(np.subtract(toponet_smooth, baseline_smooth)))
    assert entries["vision_pruning"]["verdict"] == "contradicted"
    assert entries["vision_accuracy_cost"]["verdict"] == "reproduced"
    assert entries["vision_effective_dimensionality"]["verdict"] == "not at this scale"
    assert entries["as_not_smooth"]["verdict"] == "contradicted"
    assert entries["as_bimodal"]["verdict"] == "not measured"  # no neighbour_bimodality in the measures
    assert entries["vision_selectivity_vs_untrained"]["verdict"] == "not measured"  # no untrained model


def test_every_claim_compares_two_models_of_the_runner():
    for claim in VISION_CLAIMS:
        assert {claim.a, claim.b} <= set(VISION_FAMILIES), claim.id
        assert claim.a != claim.b and claim.sign in (-1, 1)
    noise_claims = [c.id for c in VISION_CLAIMS if c.metric in {f"{n}_delta_accuracy" for n in NOISE_TYPES}]
    assert len(noise_claims) == 6  # three noise types × (WS, AS)


def test_salt_and_pepper_replaces_the_given_fraction_of_pixels_with_black_or_white():
    grey = torch.full((64, 3, 16, 16), 0.5)
    noisy = add_input_noise(grey, "salt_and_pepper", 0.2, torch.Generator().manual_seed(0))
    changed = (noisy != 0.5).numpy()
    assert (changed[:, 0] == changed[:, 1]).all() and (changed[:, 0] == changed[:, 2]).all()
    fraction = changed[:, 0].mean()
    assert abs(fraction - 0.2) < 4 * np.sqrt(0.2 * 0.8 / changed[:, 0].size)
    values = noisy.numpy()[changed]
    assert set(np.unique(values)) == {0.0, 1.0}
    assert abs((values == 1.0).mean() - 0.5) < 0.05


def test_gaussian_noise_has_the_level_as_its_standard_deviation():
    grey = torch.full((64, 1, 32, 32), 0.5)
    noisy = add_input_noise(grey, "gaussian", 0.1, torch.Generator().manual_seed(1))
    assert float((noisy - 0.5).std()) == pytest.approx(0.1, rel=0.03)


def test_pink_noise_power_falls_as_one_over_frequency():
    grey = torch.full((200, 1, 64, 64), 0.5)
    noise = (add_input_noise(grey, "pink", 0.01, torch.Generator().manual_seed(2)) - 0.5).numpy()[:, 0]
    assert noise.std(axis=(1, 2), ddof=1) == pytest.approx(np.full(200, 0.01), rel=1e-4)  # small: never clipped
    power = (np.abs(np.fft.fft2(noise)) ** 2).mean(axis=0)  # independent: NumPy's FFT, radially binned
    fy, fx = np.meshgrid(np.fft.fftfreq(64), np.fft.fftfreq(64), indexing="ij")
    radius = np.hypot(fy, fx)
    edges = np.linspace(0.03, 0.45, 12)
    centres, means = [], []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        ring = (radius >= low) & (radius < high)
        centres.append(radius[ring].mean())
        means.append(power[ring].mean())
    slope = np.polyfit(np.log(centres), np.log(means), 1)[0]
    assert slope == pytest.approx(-1.0, abs=0.1)


def test_unknown_noise_and_bad_recipes_are_refused():
    with pytest.raises(ValueError, match="Unknown noise"):
        add_input_noise(torch.zeros(1, 1, 4, 4), "speckle", 0.1, torch.Generator())
    with pytest.raises(InputError, match="baseline"):
        VisionClaimsArguments(families=["toponet"])
    with pytest.raises(InputError, match="pruning_claim_fraction"):
        VisionClaimsArguments(pruning_fractions=[0.5])
    with pytest.raises(InputError, match="noise_levels"):
        VisionClaimsArguments(noise_levels=[0.0])


def _run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        HF_TOPO, "claims", "--domain", "vision", "--seeds", "0", "1", "--families", "baseline", "toponet",
        "untrained", "as", "--max_steps", "3", "--batch_size", "16", "--image_size", "8", "--noise_levels", "0.1",
        "--weight_noise_sigmas", "0.5", "--weight_noise_repeats", "1", "--output_dir", str(out), "--output",
        str(out / "copy.json"), "--progress", "false", *extra,
    ]  # fmt: skip
    env = offline_env() | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.mark.slow  # trains 6 tiny models and measures 8 (about 3 min of CPU at load 10)
def test_vision_claims_end_to_end_resume_and_fresh_process(tmp_path):
    pytest.importorskip("sklearn")
    out = tmp_path / "claims"
    first = _run(out)
    assert "| claim |" in first.stdout
    models = {f: out / "seed1" / f / "model.safetensors" for f in ("baseline", "toponet", "as")}
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
                     "as_gaussian_robustness", "as_salt_and_pepper_robustness", "as_not_smooth"):  # fmt: skip
        assert verdicts[claim_id][1] == 2 and verdicts[claim_id][0] != "not measured", claim_id
    assert verdicts["ws_smooth_maps"] == ["not measured", 0]  # no WS model in this run

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
    del saved["measures"]["as"]
    measures_file.write_text(json.dumps(saved))
    mtimes = {f: os.path.getmtime(path) for f, path in models.items()}
    second = _run(out, "--reuse_trained")
    assert {f: os.path.getmtime(path) for f, path in models.items()} == mtimes  # nothing retrained
    assert "Reusing the measures of ['as', 'baseline', 'toponet', 'untrained'] for seed 0" in second.stderr
    assert "Reusing the trained as of seed 1" in second.stderr  # measured again, from the saved model
    again = json.loads((out / "paper_claims_vision.json").read_text())
    assert again["per_seed"]["1"]["as"]["accuracy"] == result["per_seed"]["1"]["as"]["accuracy"]
    assert [e["verdict"] for e in again["claims"]] == [e["verdict"] for e in result["claims"]]
