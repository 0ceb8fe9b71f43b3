"""LoRA on vision TopoNets with real PEFT: a tiny ViT (attention projections, TopoLoss on mlp.fc2 through the adapter)
and a tiny ResNet (Conv2d LoRA on its block convolutions, a new head), fine-tuned on an image folder of PNGs."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from _scripts import offline_env
from PIL import Image
from transformers import (
    AutoModelForImageClassification,
    ResNetConfig,
    ResNetForImageClassification,
    ViTConfig,
    ViTForImageClassification,
)
from transformers.models.convnext.image_processing_pil_convnext import ConvNextImageProcessorPil
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

from hf_topo import TopoConfig, TopoRegularizer
from hf_topo.cli import finetune_lora
from hf_topo.cli.arguments import run_command
from hf_topo.lora import CONVOLUTION_TARGETS, load_lora_image_classifier

CLASSES = ["blue", "green", "red"]


def _write_image_folder(root, classes=CLASSES, per_class=12, size=32, seed=0):
    """Noisy images whose mean colour is the class (channel k bright for class k): learnable in a few steps."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 120, (size, size, 3))
            pixels[..., k % 3] += 120
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return _write_image_folder(tmp_path_factory.mktemp("images") / "colours")


def _save_toponet(model, processor, target_modules, path, tau=2.0):
    TopoRegularizer(TopoConfig(tau=tau, target_modules=target_modules)).config_for(model).attach_to(model.config)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    """A tiny ViT TopoNet whose labels are the folder's classes (its head is kept), sheets on mlp.fc2."""
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        num_labels=3, id2label=dict(enumerate(CLASSES)), label2id={c: i for i, c in enumerate(CLASSES)},
    )  # fmt: skip
    processor = ViTImageProcessorPil(size={"height": 32, "width": 32})
    return _save_toponet(ViTForImageClassification(config), processor, ["mlp.fc2"], tmp_path_factory.mktemp("vit"))


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """A tiny ResNet TopoNet with 2 labels of its own (so the 3-class folder gets a new head)."""
    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", num_labels=2)
    processor = ConvNextImageProcessorPil(size={"shortest_edge": 32}, crop_pct=1.0)
    model = ResNetForImageClassification(config)
    return _save_toponet(model, processor, CONVOLUTION_TARGETS["resnet"], tmp_path_factory.mktemp("resnet"))


def _finetune(model_dir, images, out, *extra):
    argv = ["--model_name_or_path", str(model_dir), "--train_dir", str(images), "--lora_r", "4"]
    argv += ["--validation_fraction", "0.25", "--max_steps", "12", "--per_device_train_batch_size", "9"]
    argv += ["--per_device_eval_batch_size", "9", "--use_cpu", "true", "--output_dir", str(out)]
    argv += ["--learning_rate", "1e-2", "--disable_tqdm", "true", *extra]
    return finetune_lora.main(argv)


def _pixels(seed=0):
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


_FRESH = r"""
import json, sys, torch
from transformers import AutoModelForImageClassification
from hf_topo import TopoConfig
from hf_topo.lora import load_lora_image_classifier
run, base = sys.argv[1], sys.argv[2]
pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(int(sys.argv[3])))
adapted = load_lora_image_classifier(base, run)
merged = AutoModelForImageClassification.from_pretrained(run + "/merged").eval()
c = TopoConfig.from_pretrained(run)
with torch.no_grad():
    logits = [adapted(pixel_values=pixels).logits.tolist(), merged(pixel_values=pixels).logits.tolist()]
print(json.dumps({"tau": c.tau, "finetuning": c.finetuning, "layers": sorted(c.layers), "logits": logits,
                  "labels": merged.config.id2label}))
"""


def _fresh_load(run, base, seed):
    """The adapter on its base and the merged model, loaded in a new process, on ``_pixels(seed)``."""
    result = subprocess.run(
        [sys.executable, "-c", _FRESH, str(run), str(base), str(seed)],
        capture_output=True,
        text=True,
        env=offline_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.mark.slow  # a fresh process or a training run: the fast lane leaves it to CI
def test_vit_lora_on_attention_trains_saves_and_reloads(vit, images, tmp_path):
    run = tmp_path / "run"
    metrics = _finetune(vit, images, run, "--merge", "true")
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]
    assert metrics["accuracy_after"] >= metrics["accuracy_before"] and not metrics["new_head"]
    assert metrics["classes"] == CLASSES and "top5_accuracy_after" not in metrics  # 3 classes: no top-5
    assert metrics["topo_loss_after"] == pytest.approx(metrics["topo_loss_before"], abs=1e-7)  # fc2 is not adapted

    record = json.loads((run / "topography.json").read_text())
    assert record["tau"]["value"] == 2.0  # the TopoNet's own τ, not the fine-tuning's
    (step,) = record["finetuning"]
    assert step["target_modules"] == ["attention.q_proj", "attention.v_proj"]
    assert step["modules_to_save"] == ["classifier"] and step["dataset"] == "colours" and step["steps"] == 12
    assert (run / "preprocessor_config.json").is_file() and (run / "merged" / "preprocessor_config.json").is_file()

    # Only the adapted projections and the head moved: the merged model against the base, tensor by tensor.
    base = AutoModelForImageClassification.from_pretrained(vit).state_dict()
    merged = AutoModelForImageClassification.from_pretrained(run / "merged")
    changed = {n for n, p in merged.state_dict().items() if not torch.equal(p, base[n])}
    expected = {f"vit.layers.{i}.attention.{p}.weight" for i in range(2) for p in ("q_proj", "v_proj")}
    assert changed == expected | {"classifier.weight", "classifier.bias"}

    pixels = _pixels()
    adapted = load_lora_image_classifier(vit, run)
    with torch.no_grad():
        adapted_logits = adapted(pixel_values=pixels).logits
        base_logits = AutoModelForImageClassification.from_pretrained(vit)(pixel_values=pixels).logits
    assert not torch.allclose(adapted_logits, base_logits, atol=1e-3)  # the adapter learned something
    fresh = _fresh_load(run, vit, 0)
    assert fresh["tau"] == 2.0 and fresh["finetuning"] == record["finetuning"]
    assert fresh["layers"] == ["vit.layers.0.mlp.fc2", "vit.layers.1.mlp.fc2"]
    for logits in fresh["logits"]:  # the adapter on its base in a new process, and the merged model
        assert torch.allclose(torch.tensor(logits), adapted_logits, atol=1e-5)


def test_vit_tau_through_the_adapter_on_fc2(vit, images, tmp_path):
    targets = ["--lora_target_modules", "attention.q_proj", "attention.v_proj", "mlp.fc2"]
    plain = _finetune(vit, images, tmp_path / "tau0", *targets)
    topo = _finetune(vit, images, tmp_path / "tau50", *targets, "--tau", "50", "--merge", "true")
    assert plain["topo_loss_before"] == pytest.approx(topo["topo_loss_before"])
    assert topo["topo_loss_after"] < topo["topo_loss_before"] - 0.01  # τ reached the sheets through B·A
    assert topo["topo_loss_after"] < plain["topo_loss_after"] - 0.01
    # TopoLoss of the adapted model (effective weights W + s·B·A) equals the loss of the merged model's weights.
    merged = AutoModelForImageClassification.from_pretrained(tmp_path / "tau50" / "merged")
    reference = TopoRegularizer(TopoConfig.from_pretrained(merged))(merged).item()
    assert reference == pytest.approx(topo["topo_loss_after"], abs=1e-6)


@pytest.mark.slow  # a fresh process or a training run: the fast lane leaves it to CI
def test_resnet_conv2d_lora_with_a_new_head(resnet, images, tmp_path):
    run = tmp_path / "resnet"
    metrics = _finetune(resnet, images, run, "--tau", "20", "--merge", "true")
    assert metrics["new_head"] and metrics["classes"] == CLASSES
    assert metrics["topo_loss_after"] < metrics["topo_loss_before"]  # the block convolutions' sheets, through B·A
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]

    record = json.loads((run / "topography.json").read_text())
    step = record["finetuning"][-1]
    assert step["new_head"] and step["classes"] == CLASSES and step["target_modules"] == CONVOLUTION_TARGETS["resnet"]
    assert step["batch_norm"] == "running statistics frozen"
    base = AutoModelForImageClassification.from_pretrained(resnet).state_dict()
    merged = AutoModelForImageClassification.from_pretrained(run / "merged").state_dict()
    for name in (n for n in base if "running_" in n):  # the adapter alone (and the head) define the new model
        assert torch.equal(merged[name], base[name]), name
    conv_layers = sorted(TopoConfig.from_pretrained(resnet).layers)
    # 2 stages × 1 basic block × 2 convolutions, and the second stage's shortcut projection (16 → 32 channels)
    assert len(conv_layers) == 5 and "resnet.encoder.stages.1.layers.0.shortcut.convolution" in conv_layers
    from safetensors import safe_open

    with safe_open(str(run / "adapter_model.safetensors"), framework="pt") as f:
        adapted = sorted({k.removeprefix("base_model.model.").split(".lora_A")[0] for k in f.keys() if ".lora_A" in k})
        kernel = f.get_tensor(f"base_model.model.{conv_layers[0]}.lora_A.weight").shape
    assert adapted == conv_layers
    assert tuple(kernel) == (4, 16, 3, 3)  # PEFT's Conv2d LoRA: lora_A is a 3×3 convolution to r channels

    fresh = _fresh_load(run, resnet, 1)
    assert fresh["labels"] == {str(i): c for i, c in enumerate(CLASSES)}
    adapter_logits, merged_logits = (torch.tensor(x) for x in fresh["logits"])
    assert adapter_logits.shape == (4, 3) and torch.allclose(adapter_logits, merged_logits, atol=1e-4)


def test_bad_input_is_refused_before_training(vit, images, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="train_dir="):
        _finetune(vit, tmp_path / "missing", tmp_path / "a")
    argv = ["--model_name_or_path", str(vit), "--output_dir", str(tmp_path / "b"), "--use_cpu", "true"]
    with pytest.raises(ValueError, match="is an image classifier: pass train_dir= "):
        finetune_lora.main(argv)
    # hf-topo finetune-lora words the parameter as its flag
    assert run_command(finetune_lora.main, argv, prog="hf-topo finetune-lora") == 1
    assert "is an image classifier: pass --train_dir (a folder" in capsys.readouterr().err
    one_class = _write_image_folder(tmp_path / "one", classes=["only"], per_class=4)
    with pytest.raises(ValueError, match="has no class subfolders"):
        _finetune(vit, one_class, tmp_path / "c")
    other = _write_image_folder(tmp_path / "other", classes=["x", "y"], per_class=2)
    with pytest.raises(ValueError, match="same class subfolders"):
        _finetune(vit, images, tmp_path / "d", "--validation_dir", str(other))
    assert not any((tmp_path / name).exists() for name in "abcd")
