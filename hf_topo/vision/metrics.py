"""Top-1 and top-5 accuracy of an image classifier, as ``Trainer``'s ``compute_metrics``.

``preprocess_logits_for_metrics`` keeps only each image's ``k`` best classes (``k = min(5, n_classes)``), so the
evaluation never holds a ``(n_images, n_classes)`` matrix of logits. ``eval_accuracy`` is the share of images whose
best class is their label; ``eval_top5_accuracy`` (reported with 5 classes or more) the share whose label is among
the 5 best. Ties are broken as ``torch.topk`` breaks them.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

__all__ = ["top_k_predictions", "accuracy_from_top_k", "ClassificationAccuracy"]


def top_k_predictions(logits: torch.Tensor, k: int) -> torch.Tensor:
    """The indices of the ``k`` largest logits of each row, best first: ``(n, n_classes)`` → ``(n, k)``."""
    return logits.topk(min(k, logits.shape[-1]), dim=-1).indices


def accuracy_from_top_k(top_k: np.ndarray, labels: np.ndarray, n_classes: int) -> dict[str, float]:
    """``{"accuracy": top-1, "top5_accuracy": top-5}`` (the latter only where ``n_classes ≥ 5``) of predictions
    ``top_k`` ``(n, k)`` (best first) against ``labels`` ``(n,)``."""
    top_k, labels = np.asarray(top_k), np.asarray(labels)
    if top_k.ndim != 2 or top_k.shape[0] != labels.shape[0] or labels.size == 0:
        raise ValueError(
            f"Expected predictions of shape (n, k) and n labels with n > 0, got {top_k.shape} and {labels.shape}."
        )
    metrics = {"accuracy": float((top_k[:, 0] == labels).mean())}
    if n_classes >= 5:
        if top_k.shape[1] < 5:
            raise ValueError(f"Top-5 accuracy needs 5 predictions per image, got {top_k.shape[1]}.")
        metrics["top5_accuracy"] = float((top_k[:, :5] == labels[:, None]).any(axis=1).mean())
    return metrics


class ClassificationAccuracy:
    """``compute_metrics`` and ``preprocess_logits_for_metrics`` for ``Trainer``; keeps the last evaluation's
    predictions, which :meth:`save_predictions` writes (``labels`` and the ``k`` best classes of every image)."""

    def __init__(self, n_classes: int):
        self.n_classes = n_classes
        self.k = min(5, n_classes)
        self.last_predictions: tuple[np.ndarray, np.ndarray] | None = None

    def preprocess_logits_for_metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        return top_k_predictions(logits, self.k)

    def __call__(self, eval_prediction) -> dict[str, float]:
        top_k, labels = eval_prediction.predictions, eval_prediction.label_ids
        self.last_predictions = (np.asarray(top_k), np.asarray(labels))
        return accuracy_from_top_k(top_k, labels, self.n_classes)

    def save_predictions(self, path: str | os.PathLike) -> None:
        """Write ``{"labels": [...], "top_k": [[...], ...]}`` of the last evaluation to ``path`` (JSON)."""
        if self.last_predictions is None:
            raise ValueError("No evaluation has run yet: call trainer.evaluate() first.")
        top_k, labels = self.last_predictions
        with open(path, "w") as f:
            json.dump({"labels": labels.tolist(), "top_k": top_k.tolist()}, f)
