"""hf_topo.vision.metrics: top-1 / top-5 accuracy against an independent computation on logits."""

import numpy as np
import pytest
import torch
from transformers import EvalPrediction

from hf_topo.vision.metrics import ClassificationAccuracy, accuracy_from_top_k


def test_accuracy_matches_argsort_of_the_logits():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 7, generator=generator)
    labels = torch.randint(0, 7, (200,), generator=generator)
    metric = ClassificationAccuracy(n_classes=7)
    top_k = metric.preprocess_logits_for_metrics(logits, labels)
    assert top_k.shape == (200, 5)
    result = metric(EvalPrediction(predictions=top_k.numpy(), label_ids=labels.numpy()))
    order = np.argsort(-logits.numpy(), axis=1)  # independent: a full sort
    expected_top1 = np.mean(order[:, 0] == labels.numpy())
    expected_top5 = np.mean([labels[i].item() in order[i, :5] for i in range(200)])
    assert result == {"accuracy": pytest.approx(expected_top1), "top5_accuracy": pytest.approx(expected_top5)}
    assert 0 < result["accuracy"] < result["top5_accuracy"] < 1


def test_known_predictions_and_fewer_than_five_classes():
    top_k = np.array([[2, 0, 1], [1, 2, 0], [0, 1, 2], [2, 1, 0]])
    labels = np.array([2, 2, 0, 0])
    assert accuracy_from_top_k(top_k, labels, n_classes=3) == {"accuracy": 0.5}  # no top-5 under 5 classes
    five = np.array([[4, 3, 2, 1, 0], [0, 1, 2, 3, 4]])
    assert accuracy_from_top_k(five, np.array([0, 9]), n_classes=10) == {"accuracy": 0.0, "top5_accuracy": 0.5}
    with pytest.raises(ValueError, match="shape"):
        accuracy_from_top_k(np.zeros((0, 5)), np.zeros(0), n_classes=10)


def test_saved_predictions_give_the_reported_accuracy(tmp_path):
    import json

    metric = ClassificationAccuracy(n_classes=3)
    with pytest.raises(ValueError, match="No evaluation"):
        metric.save_predictions(tmp_path / "p.json")
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0], [1.0, 0.0, 2.0]])
    result = metric(
        EvalPrediction(
            predictions=metric.preprocess_logits_for_metrics(logits, None).numpy(), label_ids=np.array([0, 2, 2])
        )
    )
    metric.save_predictions(tmp_path / "p.json")
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved == {"labels": [0, 2, 2], "top_k": [[0, 2, 1], [1, 2, 0], [2, 0, 1]]}
    assert result["accuracy"] == pytest.approx(2 / 3)
