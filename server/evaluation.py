"""Central evaluation of the global model on the balanced test set."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord

from tasks.metrics import classification_metrics, group_accuracy, predict
from tasks.models import build_model
from tasks.partitions import Federation
from tasks.records import tensors


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

    def __call__(self, arrays: ArrayRecord) -> dict:
        result = classification_metrics(predict(self.model(arrays), self.x), self.y, self.fed.data.num_classes)
        metrics = {"global/acc": result["acc"], "global/loss": result["loss"], "global/acc_per_class": result["per_class"]}
        for name, acc in group_accuracy(result["per_class"], self.fed.shot_groups).items():
            metrics[f"global/acc_{name}"] = acc
        return metrics
