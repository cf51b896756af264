"""Central evaluation of the global model on the balanced test set."""

from __future__ import annotations

from typing import Callable

import torch
from flwr.app import ArrayRecord, MetricRecord

from flowerbed.tasks.metrics import classification_metrics, group_accuracy, predict
from flowerbed.tasks.models import build_model
from flowerbed.tasks.partitions import Federation
from flowerbed.tasks.records import tensors

Head = tuple[torch.Tensor, torch.Tensor]  # (weight [C, d], bias [C]) of a linear classifier


class CentralEvaluator:
    """Accuracy, per-class accuracy and (long-tailed data) many/medium/few-shot accuracy."""

    def __init__(self, cfg: dict, federation: Federation, device: torch.device) -> None:
        self.cfg, self.fed, self.device = cfg, federation, device
        data = federation.data
        self.x = torch.as_tensor(data.x_test).to(device)
        self.y = torch.as_tensor(data.y_test).to(device)
        self._model: torch.nn.Module | None = None

    def model(self, arrays: ArrayRecord) -> torch.nn.Module:
        """The architecture, built once, holding `arrays` (every entry is loaded, so nothing stale stays)."""
        if self._model is None:
            d = self.fed.data
            model = build_model(str(self.cfg["model.name"]), d.input_shape, d.num_classes, int(self.cfg["seed"]), self.cfg)
            self._model = model.to(self.device)
        self._model.load_state_dict(tensors(arrays))
        return self._model

    def __call__(self, arrays: ArrayRecord, heads: dict[str, Head] | None = None) -> dict:
        """`global/*` of the model in `arrays`; with `heads`, also `<prefix>/*` of the same backbone under
        each other linear head (FedLoGe's three global models), from one pass over the test set."""
        model = self.model(arrays)
        if not heads:
            return self.scores(predict(model, self.x), "global")
        h = predict(model.features, self.x)
        metrics = self.scores(model.classifier(h), "global")
        for prefix, (weight, bias) in heads.items():
            metrics.update(self.scores(torch.nn.functional.linear(h, weight.to(h), bias.to(h)), prefix))
        return metrics

    def scores(self, logits: torch.Tensor, prefix: str) -> dict:
        result = classification_metrics(logits, self.y, self.fed.data.num_classes)
        metrics = {f"{prefix}/acc": result["acc"], f"{prefix}/loss": result["loss"], f"{prefix}/acc_per_class": result["per_class"]}
        for name, acc in group_accuracy(result["per_class"], self.fed.shot_groups).items():
            metrics[f"{prefix}/acc_{name}"] = acc
        return metrics


def evaluate_fn(cfg: dict) -> Callable[[int, ArrayRecord], MetricRecord]:
    """Flower's `evaluate_fn(server_round, arrays)` for `Strategy.start` in a user's own ServerApp:
    flowerbed's central evaluation on the balanced test set of the run config `cfg` (its dataset,
    partition and model keys), the metrics `flowerbed run` writes (`global/acc`, `global/loss`, ...)."""
    from flowerbed.tasks.models import resolve_device
    from flowerbed.tasks.partitions import build_federation

    evaluator = CentralEvaluator(cfg, build_federation(cfg), resolve_device(str(cfg.get("train.device", "cpu"))))
    return lambda server_round, arrays: MetricRecord(evaluator(arrays))
