"""Evaluation shared by the server (global test set) and the clients (local test sets)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tasks.models import set_training


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits for `x`, in evaluation mode, in batches."""
    was_training = model.training
    set_training(model, False)
    logits = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]) if len(x) else torch.zeros(0)
    set_training(model, was_training)
    return logits


def classification_metrics(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> dict[str, float | list[float]]:
    """Loss, accuracy and per-class accuracy (NaN-free: absent classes report 0 and are skipped)."""
    if len(y) == 0:
        return {"loss": 0.0, "acc": 0.0}
    loss = nn.functional.cross_entropy(logits, y).item()
    correct = (logits.argmax(1) == y).cpu().numpy()
    labels = y.cpu().numpy()
    return {"loss": loss, "acc": float(correct.mean()), "per_class": per_class_accuracy(correct, labels, num_classes)}


def per_class_accuracy(correct: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float]:
    totals = np.bincount(labels, minlength=num_classes)
    hits = np.bincount(labels, weights=correct.astype(float), minlength=num_classes)
    return [float(h / t) if t else 0.0 for h, t in zip(hits, totals)]


def group_accuracy(per_class: list[float], groups: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean per-class accuracy within each of the many/medium/few class groups."""
    acc = np.asarray(per_class)
    return {name: float(acc[ids].mean()) for name, ids in groups.items() if len(ids)}
