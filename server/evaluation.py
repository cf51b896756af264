"""Central evaluation of the global model on the balanced test set."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord

from tasks.metrics import classification_metrics, group_accuracy, predict
from tasks.models import build_model
from tasks.partitions import Federation


class CentralEvaluator:
    """Accuracy, per-class accuracy and (long-tailed data) many/medium/few-shot accuracy."""

    def __init__(self, cfg: dict, federation: Federation, device: torch.device) -> None:
        self.cfg, self.fed, self.device = cfg, federation, device
        data = federation.data
        self.x = torch.as_tensor(data.x_test).to(device)
        self.y = torch.as_tensor(data.y_test).to(device)

    def model(self, arrays: ArrayRecord) -> torch.nn.Module:
        d = self.fed.data
        model = build_model(str(self.cfg["model.name"]), d.input_shape, d.num_classes, int(self.cfg["seed"]), self.cfg)
        model.load_state_dict(arrays.to_torch_state_dict())
        return model.to(self.device)

    def __call__(self, arrays: ArrayRecord) -> dict:
        result = classification_metrics(predict(self.model(arrays), self.x), self.y, self.fed.data.num_classes)
        metrics = {"global/acc": result["acc"], "global/loss": result["loss"], "global/acc_per_class": result["per_class"]}
        for name, acc in group_accuracy(result["per_class"], self.fed.shot_groups).items():
            metrics[f"global/acc_{name}"] = acc
        return metrics
