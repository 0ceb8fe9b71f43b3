"""`hf-topo demo --domain vision` end to end on a small image folder (the digits need scikit-learn, the optional
extra `vision-demo`; `--data_dir` runs the same demo on any train/validation folders)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _images import write_image_folder
from _scripts import offline_env, run_script

from hf_topo.cli.arguments import split_domain

HF_TOPO = str(Path(sys.executable).with_name("hf-topo"))


def test_domain_flag_is_taken_out_of_the_arguments():
    assert split_domain(["--tau", "2"]) == ("language", ["--tau", "2"])
    assert split_domain(["--domain", "vision", "--tau", "2"]) == ("vision", ["--tau", "2"])
    assert split_domain(["--tau", "2", "--domain=vision"]) == ("vision", ["--tau", "2"])


@pytest.mark.slow
def test_vision_demo_trains_both_models_and_reports(tmp_path):
    data = tmp_path / "data"
    write_image_folder(data / "train", classes=5, per_class=6, seed=0)
    write_image_folder(data / "validation", classes=5, per_class=2, seed=1)
    out = tmp_path / "demo"
    cmd = [HF_TOPO, "demo", "--domain", "vision", "--data_dir", str(data), "--output_dir", str(out)]
    cmd += ["--max_steps", "3", "--batch_size", "4", "--image_size", "16", "--tau", "50"]
    result = run_script(cmd, tmp_path)
    assert "| toponet | 50 |" in result.stdout and "| baseline | 0 |" in result.stdout

    summary = json.loads((out / "summary.json").read_text())
    for name in ("baseline", "toponet"):
        entry = summary[name]
        assert 0 <= entry["eval_accuracy"] <= entry["eval_top5_accuracy"] == 1.0  # 5 classes
        assert len(entry["weight_smoothness_per_layer"]) == 9 and entry["n_eval_images"] == 10
    # the same initialization and data: 3 steps at τ = 50 lower the TopoLoss below the twin's
    assert summary["toponet"]["topo_loss"] < summary["baseline"]["topo_loss"] - 0.01
    assert Path(summary["figures"][0]).stat().st_size > 10_000  # sheet_maps.png
    assert "top-1 accuracy" in (out / "summary.md").read_text()
    code = (
        "import sys, json; from transformers import AutoModelForImageClassification; "
        "s = json.load(open(sys.argv[1])); "
        "print(*[AutoModelForImageClassification.from_pretrained(s[n]['output_dir']).config.num_labels "
        "for n in ('baseline', 'toponet')])"
    )
    fresh = subprocess.run(
        [sys.executable, "-c", code, str(out / "summary.json")], env=offline_env(), capture_output=True, text=True
    )
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert fresh.stdout.split() == ["5", "5"]
    again = subprocess.run(cmd, env=offline_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode != 0 and "holds a previous vision demo run; pass another --output_dir" in again.stderr
