"""Single-label classification as a task: `(x, y) -> logits`, cross-entropy, accuracy.

Wraps what the project had before tasks were a seam: the datasets and partitions
(tasks/datasets.py, tasks/partitions.py: a partitioner splits by class), the models of
tasks/models.py (each a `Classifier`, tasks/classifier.py) and the metrics of tasks/metrics.py.
A batch is images (or feature vectors) `x` and integer labels `y`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from flowerbed.tasks.metrics import classification_metrics, group_accuracy, predict
from flowerbed.tasks.models import build_model
from flowerbed.tasks.partitions import Federation, build_federation
from flowerbed.tasks.task import DataShape, Task

Head = tuple[torch.Tensor, torch.Tensor]  # (weight [C, d], bias [C]) of a linear classifier


def cross_entropy(model: Callable[..., torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x), y)


class ClassificationTask(Task):
    name = "classification"
    metric = "acc"

    def federation(self, cfg: dict) -> Federation:
        return build_federation(cfg)

    def build_model(self, cfg: dict, data: DataShape) -> nn.Module:
        return build_model(str(cfg["model.name"]), tuple(data.input_shape), int(data.num_classes), int(cfg["seed"]), cfg)

    def loss(self, model: Callable[..., torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return cross_entropy(model, x, y)

    def central_metrics(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, federation: Federation,
                        prefix: str = "global", heads: dict[str, Head] | None = None) -> dict:
        """Accuracy, loss, per-class accuracy and (long-tailed data) many/medium/few-shot accuracy;
        with `heads`, also `<name>/*` of the same backbone under each other linear head (FedLoGe's
        three global models), from one pass over the test set."""
        if not heads:
            return central_scores(predict(model, x), y, federation, prefix)
        h = predict(model.features, x)
        metrics = central_scores(model.classifier(h), y, federation, prefix)
        for name, (weight, bias) in heads.items():
            metrics.update(central_scores(nn.functional.linear(h, weight.to(h), bias.to(h)), y, federation, name))
        return metrics

    def client_metrics(self, model: nn.Module, data, prefix: str = "personal") -> dict:
        return client_scores(predict(model, data.x_test), data.y_test, data.num_classes, prefix)


def central_scores(logits: torch.Tensor, y: torch.Tensor, federation: Federation, prefix: str) -> dict:
    result = classification_metrics(logits, y, federation.data.num_classes)
    metrics = {f"{prefix}/acc": result["acc"], f"{prefix}/loss": result["loss"], f"{prefix}/acc_per_class": result["per_class"]}
    for name, acc in group_accuracy(result["per_class"], federation.shot_groups).items():
        metrics[f"{prefix}/acc_{name}"] = acc
    return metrics


def client_scores(logits: torch.Tensor, y: torch.Tensor, num_classes: int, prefix: str = "personal") -> dict:
    """A client's metrics on its local test set from the model's logits (also the batched engine's)."""
    if len(y) == 0:  # classification_metrics' placeholder, left out of means over clients
        return {f"{prefix}/acc": 0.0, f"{prefix}/loss": 0.0, f"{prefix}/acc_masked": 0.0, "num-examples": 0}
    # classification_metrics' loss and accuracies (the same floats) without its per-class lists, which
    # no one reads here; the argmaxes in NumPy, several times cheaper than torch on a client's few rows
    loss = nn.functional.cross_entropy(logits, y).item()
    scores, labels = (logits.detach().float() if logits.dtype == torch.bfloat16 else logits.detach()).cpu().numpy(), y.cpu().numpy()
    masked = np.where(np.bincount(labels, minlength=num_classes) > 0, scores, np.float32(-1e10))  # mask_absent
    hits = [int((s.argmax(1) == labels).sum()) for s in (scores, masked)]
    return {f"{prefix}/acc": hits[0] / len(y), f"{prefix}/loss": loss, f"{prefix}/acc_masked": hits[1] / len(y),
            "num-examples": len(y)}


def mask_absent(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Logits with classes absent from the local test set ruled out: the label-prior oracle that
    FedLoGe's official `localtest` applies, reported beside the plain number."""
    if len(y) == 0:
        return logits
    return logits.masked_fill(torch.bincount(y, minlength=num_classes) == 0, -1e10)
