"""Model cards, upload folders and `hf-topo push --dry_run` for vision TopoNets (image classifiers with Conv2d and
Linear sheets), rendered for real and read back: YAML metadata, model-index, the sheets table, a fresh-process load."""

import json
import subprocess
import sys

import pytest
import torch
import yaml
from _scripts import offline_env
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import model_index_to_eval_results
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
from hf_topo.cli import push
from hf_topo.hub import build_upload_folder, read_results, toponet_card
from hf_topo.lora import CONVOLUTION_TARGETS

CLASSES = ["ant", "bee", "cat", "dog", "eel", "fox"]
# What `hf-topo pretrain --train_dir` writes next to an image classifier (hf_topo.vision.training).
METRICS = {
    "eval_loss": 1.2345678,
    "eval_accuracy": 0.5833333,
    "eval_top5_accuracy": 0.9166667,
    "topo_loss": 0.61234,
    "tau": 5.0,
    "classes": CLASSES,
    "n_train_images": 48,
    "n_eval_images": 12,
    "n_parameters": 12345,
    "output_dir": "/somewhere/local",
}


def _parse_card(text: str) -> dict:
    """The card's YAML metadata, validated by huggingface_hub's own classes."""
    card = ModelCard(text)  # raises on an invalid model-index
    assert isinstance(card.data, ModelCardData)
    metadata = yaml.safe_load(text.split("---\n")[1])
    ModelCardData(**metadata)
    return metadata


@pytest.fixture(scope="module")
def resnet_dir(tmp_path_factory):
    """A saved tiny ResNet TopoNet (sheets on its block convolutions, τ=5) with its image processor and metrics."""
    torch.manual_seed(0)
    config = ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", num_labels=len(CLASSES),
        id2label=dict(enumerate(CLASSES)), label2id={c: i for i, c in enumerate(CLASSES)},
    )  # fmt: skip
    model = ResNetForImageClassification(config)
    TopoRegularizer(TopoConfig(tau=5.0, target_modules=CONVOLUTION_TARGETS["resnet"])).config_for(model).attach_to(
        model.config
    )
    path = tmp_path_factory.mktemp("resnet")
    model.save_pretrained(path)
    ConvNextImageProcessorPil(size={"shortest_edge": 32}, crop_pct=1.0).save_pretrained(path)
    (path / "metrics.json").write_text(json.dumps(METRICS))
    return path


@pytest.fixture(scope="module")
def converted_vit():
    """A tiny ViT with sheets on mlp.fc2 and the conversion record `hf-topo convert-toponet` writes."""
    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        num_labels=3,
    )  # fmt: skip
    model = ViTForImageClassification(config)
    TopoRegularizer(TopoConfig(tau=10.0, target_modules=["mlp.fc2"])).config_for(model).attach_to(model.config)
    model.config.conversion = {
        "from": "torchvision-vit",
        "checkpoint": "tau_10.0.pt",
        "source": "murtylab/topo-vit-b-32-imagenet",
        "epoch": 90,
    }
    return model


def test_vision_card_metadata_and_sheets(resnet_dir):
    model = AutoModelForImageClassification.from_pretrained(resnet_dir)
    results = read_results(resnet_dir)
    assert results["eval_accuracy"] == METRICS["eval_accuracy"] and results["n_classes"] == len(CLASSES)
    card = toponet_card(model, repo_id="me/topo-tiny-resnet", results=results, datasets=["me/animals"])
    metadata = _parse_card(str(card))
    assert metadata["pipeline_tag"] == "image-classification" and metadata["library_name"] == "transformers"
    assert metadata["datasets"] == ["me/animals"] and "language" not in metadata
    name, evals = model_index_to_eval_results(metadata["model-index"])
    assert name == "topo-tiny-resnet"
    by_metric = {e.metric_type: e for e in evals}
    assert set(by_metric) == {"accuracy", "top_5_accuracy"} == set(metadata["metrics"])
    assert by_metric["accuracy"].metric_value == round(METRICS["eval_accuracy"], 4) == 0.5833
    assert by_metric["top_5_accuracy"].metric_value == 0.9167
    assert all(e.task_type == "image-classification" and e.dataset_type == "me/animals" for e in evals)

    text = card.text
    assert "A **vision TopoNet**: a ResNetForImageClassification image classifier" in text and "τ = 5" in text
    # Conv2d sheets: units = output channels, depth = in·kh·kw (stage 1's shortcut is a 1×1 projection 16 → 32)
    assert "| `resnet.encoder.stages.0.layers.0.layer.0.convolution` | Conv2d | 4 × 4 | 16 | 16·3·3 = 144 |" in text
    assert "| `resnet.encoder.stages.1.layers.0.shortcut.convolution` | Conv2d | 4 × 8 | 32 | 16·1·1 = 16 |" in text
    assert "| top-1 accuracy (evaluation images) | 0.5833 |" in text and "| classes | 6 |" in text
    # the regex's "|" is escaped, so the row keeps its two cells
    assert r"(layer\.\d+\|shortcut)\.convolution` |" in text
    assert 'AutoModelForImageClassification.from_pretrained("me/topo-tiny-resnet")' in text
    assert "AutoModelForCausalLM" not in text and "AutoTokenizer" not in text and "import hf_topo  #" not in text
    assert "perplexity" not in text.lower()


def test_vision_card_of_a_converted_checkpoint_without_results(converted_vit):
    card = toponet_card(converted_vit, datasets=["ILSVRC/imagenet-1k"])
    metadata = _parse_card(str(card))
    assert metadata["pipeline_tag"] == "image-classification" and "model-index" not in metadata  # no results
    text = card.text
    assert "Converted from the authors' checkpoint `tau_10.0.pt` of" in text
    assert "(the authors' torchvision ViT, whose logits this model reproduces on the same weights)" in text
    assert "[`murtylab/topo-vit-b-32-imagenet`](https://huggingface.co/murtylab/topo-vit-b-32-imagenet)" in text
    assert "| converted from | the authors' checkpoint `tau_10.0.pt` of `murtylab/topo-vit-b-32-imagenet` |" in text
    assert "| epochs (the checkpoint's) | 90 |" in text and "nanoGPT" not in text
    assert "| `vit.layers.1.mlp.fc2` | Linear | 4 × 8 | 32 | 64 | target |" in text
    assert "hf-topo pretrain --train_dir` writes `metrics.json` (top-1" in text


@pytest.mark.slow  # a fresh process or a training run: the fast lane leaves it to CI
def test_push_dry_run_writes_a_folder_that_loads_in_a_fresh_process(resnet_dir, tmp_path):
    folder = tmp_path / "upload"
    argv = ["--model", str(resnet_dir), "--repo_id", "me/topo-tiny-resnet", "--dry_run", "--output_dir", str(folder)]
    result = push.main(argv + ["--datasets", "me/animals", "--license", "mit"])
    assert result["commit_url"] is None
    assert set(result["files"]) == {
        "config.json", "model.safetensors", "preprocessor_config.json", "README.md", "figures/sheet_maps.png",
    }  # fmt: skip
    with Image.open(folder / "figures" / "sheet_maps.png") as figure:
        assert figure.format == "PNG" and figure.size[0] > 100
    readme = (folder / "README.md").read_text()
    metadata = _parse_card(readme)
    assert metadata["pipeline_tag"] == "image-classification" and metadata["license"] == "mit"
    assert "language" not in metadata and "top_5_accuracy" in metadata["metrics"]
    assert "/somewhere/local" not in readme and str(resnet_dir) not in readme  # no local paths leak
    assert "(figures/sheet_maps.png)" in readme

    code = r"""
import json, sys, torch
import numpy as np
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageClassification
from hf_topo import TopoConfig
model = AutoModelForImageClassification.from_pretrained(sys.argv[1]).eval()
processor = AutoImageProcessor.from_pretrained(sys.argv[1])
image = Image.fromarray((np.arange(40 * 48 * 3) % 251).astype(np.uint8).reshape(40, 48, 3))
pixels = processor(image, return_tensors="pt")["pixel_values"]
topo = TopoConfig.from_pretrained(model)
with torch.no_grad():
    logits = model(pixel_values=pixels).logits[0].tolist()
print(json.dumps({"logits": logits, "shape": list(pixels.shape), "tau": topo.tau, "layers": sorted(topo.layers),
                  "labels": model.config.id2label}))
"""
    fresh = {}
    for source in (folder, resnet_dir):
        run = subprocess.run(
            [sys.executable, "-c", code, str(source)], capture_output=True, text=True, env=offline_env()
        )
        assert run.returncode == 0, run.stderr[-3000:]
        fresh[source] = json.loads(run.stdout)
    assert fresh[folder]["shape"] == [1, 3, 32, 32] and fresh[folder]["tau"] == 5.0
    assert len(fresh[folder]["layers"]) == 5 and fresh[folder]["labels"]["5"] == "fox"
    assert fresh[folder]["logits"] == fresh[resnet_dir]["logits"]  # the same weights and processor, bit for bit


def test_vision_upload_folder_needs_an_image_processor(tmp_path, converted_vit):
    model_dir = tmp_path / "vit"
    converted_vit.save_pretrained(model_dir)
    with pytest.raises(ValueError, match=r"No image processor in .*preprocessor_config.json.*pass tokenizer=PATH_OR"):
        build_upload_folder(model_dir, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "processor")
    files = build_upload_folder(model_dir, tmp_path / "out", tokenizer=tmp_path / "processor")
    assert "preprocessor_config.json" in files and "tokenizer.json" not in files
    assert "Converted from the authors' checkpoint" in (tmp_path / "out" / "README.md").read_text()
