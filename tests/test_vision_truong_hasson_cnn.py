"""Truong & Hasson's CNN: its layers and shapes, its 11 x 11 fc1 sheet, Weight / Activation Similarity on fc1 against
a loop over neighbour pairs, and save/load through the Auto classes in a fresh process."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _scripts import offline_env

from hf_topo import TopoConfig, TopoRegularizer
from hf_topo.vision.truong_hasson_cnn import TruongHassonCNNForImageClassification
from hf_topo.vision.truong_hasson_cnn_config import TruongHassonCNNConfig


def _model(seed=0, **overrides):
    torch.manual_seed(seed)
    return TruongHassonCNNForImageClassification(TruongHassonCNNConfig(num_labels=10, **overrides)).eval()


def test_the_network_has_a_121_unit_fc1_between_its_convolutions_and_classifier():
    model = _model()
    assert [type(m).__name__ for m in model.features] == ["Conv2d", "ReLU", "Conv2d", "ReLU"]
    assert model.fc1.in_features == 32 * 4 * 4 and model.fc1.out_features == 121
    assert (model.classifier.in_features, model.classifier.out_features) == (121, 10)
    pixels = torch.rand(5, 1, 8, 8)
    labels = torch.tensor([0, 1, 2, 3, 4])
    out = model(pixel_values=pixels, labels=labels)
    assert out.logits.shape == (5, 10)
    assert torch.allclose(out.loss, F.cross_entropy(out.logits, labels))
    hidden = F.relu(model.fc1(F.adaptive_avg_pool2d(model.features(pixels), 4).flatten(1)))
    assert torch.allclose(out.logits, model.classifier(hidden))
    assert model(pixel_values=torch.rand(2, 1, 28, 28)).logits.shape == (2, 10)  # adaptive pooling: any image size


def test_pytorch_default_initialization_not_transformers_small_normal():
    weight = _model().fc1.weight.detach()
    bound = 1 / np.sqrt(512)  # kaiming_uniform(a=√5) of a Linear: U(-1/√fan_in, 1/√fan_in)
    assert float(weight.abs().max()) <= bound and float(weight.std()) == pytest.approx(bound / np.sqrt(3), rel=0.05)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"conv_channels": []}, "conv_channels"),
        ({"kernel_size": 4}, "must be odd"),
        ({"sheet_height": 0}, "sheet_height=0 must be a positive integer"),
        ({"dropout": 1.0}, r"dropout=1.0 must lie in \[0, 1\)"),
    ],
)
def test_bad_configs_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        TruongHassonCNNConfig(**overrides)


def test_fc1_resolves_to_an_eleven_by_eleven_sheet():
    (layer,) = TopoRegularizer(TopoConfig(target_modules=["fc1"], loss="weight_similarity")).layers(_model())
    assert (layer.name, layer.sheet.height, layer.sheet.width, layer.sheet.depth) == ("fc1", 11, 11, 512)


def _neighbour_mean_correlation_distance(vectors: np.ndarray) -> float:
    """Mean of 1 - Pearson r over ordered queen-neighbour pairs of an 11x11 sheet, by a loop over units."""
    distances = []
    for u in range(121):
        for v in range(121):
            if u != v and max(abs(u // 11 - v // 11), abs(u % 11 - v % 11)) <= 1:
                distances.append(1 - np.corrcoef(vectors[u], vectors[v])[0, 1])
    return float(np.mean(distances))


def test_weight_similarity_on_fc1_is_the_mean_neighbour_correlation_distance_of_its_weight_rows():
    model = _model()
    topo = TopoRegularizer(TopoConfig(target_modules=["fc1"], loss="weight_similarity", distance="correlation"))
    expected = _neighbour_mean_correlation_distance(model.fc1.weight.detach().double().numpy())
    assert float(topo(model).detach()) == pytest.approx(expected, rel=1e-5)


def test_activation_similarity_reads_fc1s_batch_by_units_output():
    """AS on a (batch, units) Linear output: each unit's vector is its pre-activation responses over the batch."""
    model = _model()
    pixels = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    topo = TopoRegularizer(TopoConfig(target_modules=["fc1"], loss="activation_similarity", distance="correlation"))
    with topo.record_activations(model) as recorded:
        model(pixel_values=pixels)
    value, _ = topo.compute(model, activations=recorded)
    with torch.no_grad():
        responses = model.fc1(F.adaptive_avg_pool2d(model.features(pixels), 4).flatten(1))  # (16, 121), before ReLU
    expected = _neighbour_mean_correlation_distance(responses.double().T.numpy())
    assert float(value.detach()) == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow  # a fresh process
def test_saved_model_loads_with_the_auto_class_in_a_fresh_process(tmp_path):
    model = _model(seed=3, conv_channels=[8, 12], sheet_height=5, sheet_width=6)
    model.save_pretrained(tmp_path)
    pixels = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    expected = model(pixel_values=pixels).logits.tolist()
    code = (
        "import json, sys, torch, hf_topo\n"
        "from transformers import AutoModelForImageClassification\n"
        f"model = AutoModelForImageClassification.from_pretrained({str(tmp_path)!r}).eval()\n"
        f"pixels = torch.tensor({pixels.tolist()!r})\n"
        "print(json.dumps([type(model).__name__, model.config.conv_channels, model.config.fc1_units,"
        " model(pixel_values=pixels).logits.tolist()]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=offline_env(), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    name, channels, units, logits = json.loads(result.stdout.strip().splitlines()[-1])
    assert (name, channels, units) == ("TruongHassonCNNForImageClassification", [8, 12], 30)
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-6)


@pytest.mark.slow  # through the Trainer
def test_trainer_evaluate_reports_activation_similarity_on_the_first_image_batch(tmp_path):
    from torch.utils.data import Dataset

    from hf_topo import TopoTrainer
    from hf_topo.trainer import TopoTrainingArguments

    pixels = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    labels = torch.arange(40) % 10

    class Images(Dataset):
        def __len__(self):
            return 40

        def __getitem__(self, i):
            return {"pixel_values": pixels[i], "labels": labels[i]}

    model = _model(seed=4)
    args = TopoTrainingArguments(
        output_dir=str(tmp_path), tau=1.0, topo_loss_type="activation_similarity", topo_target_modules=["fc1"],
        per_device_eval_batch_size=16, report_to="none", use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    metrics = TopoTrainer(model=model, args=args, eval_dataset=Images()).evaluate()
    with torch.no_grad():
        responses = model.fc1(F.adaptive_avg_pool2d(model.features(pixels[:16]), 4).flatten(1))
    expected = _neighbour_mean_correlation_distance(responses.double().T.numpy())
    assert metrics["eval_topo_loss"] == pytest.approx(expected, rel=1e-5)
