"""The Truong & Hasson experiment: its data split, its argument checks, the per-condition summary, and (slow) a tiny
end-to-end run through `hf-topo truong-hasson`."""

import json
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from _scripts import offline_env

from hf_topo.experiments.truong_hasson import (
    TruongHassonArguments,
    digits_tensors,
    run_truong_hasson,
    summarize_runs,
)
from hf_topo.experiments.vision_demo import digits_split

HF_TOPO = str(Path(sys.executable).with_name("hf-topo"))


def test_the_digits_split_holds_out_every_fifth_image_of_each_class():
    images, labels, held_out = digits_split()
    assert images.shape == (1797, 8, 8) and int(held_out.sum()) == 364
    for digit in range(10):
        of_class = held_out[labels == digit]
        assert of_class.tolist() == [i % 5 == 0 for i in range(len(of_class))]
    data = digits_tensors()
    (train_x, train_y), (test_x, test_y) = data["train"], data["test"]
    assert torch.equal(train_y, torch.as_tensor(labels[~held_out]))
    assert train_x.shape == (1433, 1, 8, 8) and test_x.shape == (364, 1, 8, 8)
    assert float(train_x.min()) == 0.0 and float(train_x.max()) == 1.0
    assert torch.equal(test_y, torch.as_tensor(labels[held_out]))
    torch.testing.assert_close(test_x[:, 0].double(), torch.as_tensor(images[held_out] / 16.0))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"families": ["ws", "topoloss"]}, "families=\\['ws', 'topoloss'\\]: choose one or more of"),
        ({"seeds": []}, "seeds= is empty"),
        ({"lambdas": [1.0, 0.0]}, "every λ must be a number > 0"),
        ({"noise_levels": [0.1, 1.5]}, r"levels in \[0, 1\]"),
        ({"max_steps": 0}, "max_steps=0 must be at least 1"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_trained(tmp_path, changes, message):
    args = TruongHassonArguments(output_dir=str(tmp_path / "out"), **changes)
    with pytest.raises(ValueError, match=message):
        run_truong_hasson(args)
    assert not (tmp_path / "out").exists()


def _run(family, lam, seed, accuracy, bc):
    return {
        "family": family, "lambda": lam, "seed": seed, "clean_accuracy": accuracy, "morans_i": accuracy / 2,
        "activation_smoothness": 0.1, "activation_smoothness_robust": 0.2, "weight_smoothness": 0.3,
        "weight_smoothness_robust": 0.4,
        "neighbour_correlation": {"mean": 0.5, "bimodality_coefficient": bc, "gmm_delta_bic": -3.0},
        "pair_correlation": {"mean": 0.1, "bimodality_coefficient": 0.4},
        "input_noise": {k: {"mean_delta_accuracy": -0.01} for k in ("gaussian", "pink", "salt_and_pepper")},
        "weight_noise": {"mean_delta_accuracy": -accuracy / 10},
    }  # fmt: skip


def test_the_summary_has_each_conditions_mean_and_sd_over_seeds():
    runs = [_run("baseline", 0.0, s, a, b) for s, a, b in ((0, 0.9, 0.3), (1, 0.95, 0.5), (2, 0.8, 0.4))]
    runs += [_run("as", 3.0, 0, 0.7, 0.6)]
    rows = {(r["family"], r["lambda"]): r for r in summarize_runs(runs)}
    baseline = rows[("baseline", 0.0)]
    assert baseline["n_seeds"] == 3
    assert baseline["clean_accuracy"]["mean"] == pytest.approx(statistics.mean([0.9, 0.95, 0.8]))
    assert baseline["clean_accuracy"]["sd"] == pytest.approx(statistics.stdev([0.9, 0.95, 0.8]))
    assert baseline["neighbour_correlation.bimodality_coefficient"]["sd"] == pytest.approx(0.1)
    assert baseline["weight_noise.mean_delta_accuracy"]["mean"] == pytest.approx(-statistics.mean([0.09, 0.095, 0.08]))
    assert rows[("as", 3.0)]["n_seeds"] == 1 and rows[("as", 3.0)]["clean_accuracy"]["sd"] == 0.0


@pytest.mark.slow  # trains three small CNNs through the command
def test_a_tiny_run_end_to_end_through_the_command(tmp_path):
    out = tmp_path / "th"
    cmd = [
        HF_TOPO, "truong-hasson", "--seeds", "0", "--lambdas", "1", "--max_steps", "4", "--batch_size", "32",
        "--noise_levels", "0.05", "0.2", "--noise_repeats", "1", "--weight_noise_sigmas", "0.3",
        "--weight_noise_repeats", "2", "--output_dir", str(out), "--output", str(tmp_path / "copy.json"),
    ]  # fmt: skip
    result = subprocess.run(cmd, env=offline_env(), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "| ws | 1 | 1 |" in result.stdout
    data = json.loads((out / "results.json").read_text())
    assert data == json.loads((tmp_path / "copy.json").read_text())
    assert [(r["family"], r["lambda"]) for r in data["runs"]] == [("baseline", 0.0), ("ws", 1.0), ("as", 1.0)]
    for run in data["runs"]:
        assert run["train"]["steps"] == 4
        for curve in [*run["input_noise"].values(), run["weight_noise"]]:
            assert curve["delta_accuracy"] == pytest.approx([a - run["clean_accuracy"] for a in curve["accuracy"]])
        assert run["neighbour_correlation"]["n_pairs"] == len(run["neighbour_correlation"]["values"]) == 420
        assert sum(run["pair_correlation"]["histogram"]) == run["pair_correlation"]["n"] == 121 * 120 // 2
        assert len(run["maps"]["weight_pc1"]) == 11 and len(run["maps"]["weight_pc1"][0]) == 11
    assert data["runs"][0]["train"]["final_topo_loss"] is not None  # the baseline logs WS with λ = 0
    assert {Path(p).name for p in data["figures"]} == {"truong_hasson.png", "truong_hasson_lambda.png"}
    assert all(Path(p).stat().st_size > 10_000 for p in data["figures"])
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(out / "models" / "as_lambda1_seed0")
    assert model.config.topography["loss"] == "activation_similarity" and model.config.topography["tau"]["value"] == 1


def test_the_vision_demo_folders_hold_the_same_split(tmp_path):
    from hf_topo.experiments.vision_demo import write_digits_folders

    _, labels, held_out = digits_split()
    train_dir, validation_dir = write_digits_folders(str(tmp_path))
    for folder, mask in ((validation_dir, held_out), (train_dir, ~held_out)):
        files = sorted(Path(folder).glob("*/*.png"))
        assert sorted(int(f.stem) for f in files) == np.flatnonzero(mask).tolist()
        assert all(int(f.parent.name) == labels[int(f.stem)] for f in files)
