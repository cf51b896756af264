"""Central evaluation of the global model on the held-out test set, by the run's task."""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord

from flowerbed.tasks.partitions import Federation
from flowerbed.tasks.records import tensors
from flowerbed.tasks.registry import task_of


class CentralEvaluator:
    """`global/*` of a global model: the task's central metrics (classification: accuracy,
    per-class and many/medium/few-shot accuracy) on the federation's test set."""

    def __init__(self, cfg: dict, federation: Federation, device: torch.device) -> None:
        self.cfg, self.fed, self.device = cfg, federation, device
        self.task = task_of(cfg)
        data = federation.data
        self.x = torch.as_tensor(data.x_test).to(device)
        self.y = torch.as_tensor(data.y_test).to(device)
        self._model: torch.nn.Module | None = None

    def model(self, arrays: ArrayRecord) -> torch.nn.Module:
        """The architecture, built once, holding `arrays` (every entry is loaded, so nothing stale stays)."""
        if self._model is None:
            self._model = self.task.build_model(self.cfg, self.fed.data).to(self.device)
        self._model.load_state_dict(tensors(arrays))
        return self._model

    def __call__(self, arrays: ArrayRecord, **options) -> dict:
        """The task's metrics of the model in `arrays`; `options` go to the task (classification:
        `heads`, other linear heads on the same backbone scored under their own prefixes, FedLoGe's)."""
        return self.task.central_metrics(self.model(arrays), self.x, self.y, self.fed, "global", **options)
