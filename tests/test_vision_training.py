"""`hf-topo pretrain --train_dir`: an image-classification TopoNet trained end to end through the console command,
loaded in a fresh process, its accuracy recomputed independently, resumed exactly, and a second run refused."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _images import write_image_folder
from _scripts import ACCELERATE_ONE_CPU, offline_env, run_script
from safetensors.torch import load_file

from hf_topo.cli.pretrain import main as pretrain_main

HF_TOPO = str(Path(sys.executable).with_name("hf-topo"))
COMMON = [
    "--image_size", "16", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8",
    "--learning_rate", "3e-3", "--logging_steps", "1", "--report_to", "none", "--use_cpu", "true", "--seed", "3",
]  # fmt: skip

# In a fresh process: load the saved classifier and its image processor, classify the validation folder with the
# evaluation transform, and print the top-1 accuracy computed here, the saved predictions' and the reported one.
_INDEPENDENT_ACCURACY = """
import json, sys, os
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification
from hf_topo import TopoConfig
from hf_topo.vision.augmentation import EvalTransform
out, validation = sys.argv[1], sys.argv[2]
model = AutoModelForImageClassification.from_pretrained(out).eval()
processor = AutoImageProcessor.from_pretrained(out)
transform = EvalTransform(16, processor.image_mean, processor.image_std)
label2id = model.config.label2id
correct = total = 0
for name in sorted(os.listdir(validation)):
    for file in sorted(os.listdir(os.path.join(validation, name))):
        pixels = transform(Image.open(os.path.join(validation, name, file)))[None]
        with torch.no_grad():
            correct += int(model(pixel_values=pixels).logits.argmax(-1).item() == label2id[name])
        total += 1
saved = json.load(open(os.path.join(out, "eval_predictions.json")))
from_saved = sum(p[0] == y for p, y in zip(saved["top_k"], saved["labels"])) / len(saved["labels"])
top5 = sum(y in p[:5] for p, y in zip(saved["top_k"], saved["labels"])) / len(saved["labels"])
topo = TopoConfig.from_pretrained(out)
print(json.dumps({"accuracy": correct / total, "from_saved": from_saved, "top5_from_saved": top5, "n": total,
                  "model_type": model.config.model_type, "id2label": model.config.id2label,
                  "layers": sorted(topo.layers), "tau": topo.tau, "mean": list(processor.image_mean)}))
"""


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    return (
        write_image_folder(root / "train", classes=5, per_class=8, seed=0),
        write_image_folder(root / "validation", classes=5, per_class=3, size=(14, 18), seed=1),
    )


@pytest.mark.slow
def test_pretrain_image_folder_end_to_end(tmp_path, folders):
    train, validation = folders
    out = tmp_path / "resnet"
    cmd = [
        HF_TOPO,
        "pretrain",
        "--train_dir",
        str(train),
        "--validation_dir",
        str(validation),
        "--output_dir",
        str(out),
    ]
    cmd += ["--model_preset", "tiny-resnet", "--tau", "2", "--tau_schedule", "warmup:2", "--max_steps", "6"]
    cmd += ["--eval_strategy", "steps", "--eval_steps", "3", "--save_steps", "3", *COMMON]
    result = run_script(cmd, tmp_path)
    assert "TopoNet saved to" in result.stdout and "accuracy" in result.stdout and "top-5" in result.stdout

    metrics = json.loads((out / "metrics.json").read_text())
    evaluation = json.loads((out / "eval_results.json").read_text())
    assert metrics["classes"] == ["c0", "c1", "c2", "c3", "c4"] and metrics["n_eval_images"] == 15
    assert evaluation["eval_accuracy"] == metrics["eval_accuracy"] and "eval_top5_accuracy" in evaluation
    assert 0 < metrics["topo_loss"] < 1 and len(metrics["topo_loss_per_layer"]) == 9
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [h["tau"] for h in history if "tau" in h] == [0.0, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert [h["step"] for h in history if "eval_accuracy" in h] == [3, 6, 6]  # two evaluations and the final one
    assert json.loads((out / "checkpoint-3" / "config.json").read_text())["topography"]["tau"]["at_step"] == 3

    code = subprocess.run(
        [sys.executable, "-c", _INDEPENDENT_ACCURACY, str(out), str(validation)],
        env=offline_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert code.returncode == 0, code.stderr[-3000:]
    fresh = json.loads(code.stdout.strip().splitlines()[-1])
    assert fresh["n"] == 15 and fresh["model_type"] == "resnet"
    assert fresh["id2label"] == {str(i): f"c{i}" for i in range(5)}
    assert fresh["accuracy"] == pytest.approx(metrics["eval_accuracy"])  # recomputed from the images
    assert fresh["from_saved"] == pytest.approx(metrics["eval_accuracy"])
    assert fresh["top5_from_saved"] == pytest.approx(metrics["eval_top5_accuracy"]) == 1.0  # 5 classes: all in top 5
    assert fresh["mean"] == pytest.approx([0.485, 0.456, 0.406])  # ImageNet's, from the saved image processor
    assert len(fresh["layers"]) == 9 and fresh["tau"] == 2.0
    assert {n.rsplit(".", 2)[-2] for n in fresh["layers"]} == {"0", "1", "shortcut"}


@pytest.mark.slow
def test_pretrain_image_folder_resumes_exactly_and_refuses_a_second_run(tmp_path, folders):
    """An uninterrupted 6-step run (checkpoints every 3) and a second run resumed from its checkpoint-3 in a new
    process: same data order, same random crops and flips (the Trainer restores the random states), same weights."""
    train, _ = folders
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    base = [HF_TOPO, "pretrain", "--train_dir", str(train), "--model_preset", "tiny-resnet", "--tau", "1"]
    base += ["--max_steps", "6", "--save_steps", "3", "--validation_split_percentage", "20", *COMMON]
    run_script([*base, "--output_dir", str(full)], tmp_path)
    run_script([*base, "--output_dir", str(resumed), "--resume_from_checkpoint", str(full / "checkpoint-3")], tmp_path)
    a, b = load_file(full / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:  # weights and BatchNorm statistics
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    losses = [
        [
            (h["step"], h["loss"])
            for h in json.loads((d / "trainer_state.json").read_text())["log_history"]
            if "loss" in h
        ]
        for d in (full, resumed)
    ]
    assert losses[0] == losses[1] and [step for step, _ in losses[1]] == [1, 2, 3, 4, 5, 6]  # 1-3 from the checkpoint

    with pytest.raises(ValueError, match=r"already holds a training run .*resume_from_checkpoint=true"):
        pretrain_main([*base[2:], "--output_dir", str(full)])


@pytest.mark.slow
def test_tiny_vit_trains_on_its_mlp_output_layers_and_reloads(tmp_path, folders):
    train, validation = folders
    out = tmp_path / "vit"
    metrics = pretrain_main(
        ["--train_dir", str(train), "--validation_dir", str(validation), "--model_preset", "tiny-vit",
         "--output_dir", str(out), "--tau", "1", "--max_steps", "3", "--save_strategy", "no", *COMMON]
    )  # fmt: skip
    assert set(metrics["topo_loss_per_layer"]) == {f"layers.{i}.mlp.fc2" for i in range(4)}
    code = (
        "import sys; from transformers import AutoModelForImageClassification, AutoImageProcessor; "
        "m = AutoModelForImageClassification.from_pretrained(sys.argv[1]); p = AutoImageProcessor.from_pretrained(sys.argv[1]); "
        "print(type(m).__name__, m.config.image_size, list(p.image_mean))"
    )
    result = subprocess.run([sys.executable, "-c", code, str(out)], env=offline_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[:2] == ["ViTForImageClassification", "16"]


@pytest.mark.slow
def test_pretrain_image_folder_under_accelerate_launch(tmp_path, folders):
    train, validation = folders
    out = tmp_path / "accelerate"
    cmd = [sys.executable, *ACCELERATE_ONE_CPU, "-m", "hf_topo.cli.pretrain", "--train_dir", str(train)]
    cmd += ["--validation_dir", str(validation), "--output_dir", str(out), "--model_preset", "tiny-resnet"]
    cmd += ["--tau", "1", "--max_steps", "2", "--save_strategy", "no", *COMMON]
    run_script(cmd, tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["eval_accuracy"] <= 1 and metrics["n_eval_images"] == 15
