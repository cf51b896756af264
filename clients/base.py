"""What every client half shares: its data, its model, its seeds, and the reply format.

A client half subclasses `ClientAlgorithm` and overrides `fit` (local training) and, where it
keeps a personal model, `evaluate`. One instance serves one ClientApp call; anything that must
outlive the call goes into `context.state`, which `clients.state` also writes to disk.
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from torch import nn

from clients.core import generator, resolve_device
from clients.data import LocalData, client_index, local_data
from tasks.metrics import classification_metrics, predict
from tasks.models import build_model


class ClientAlgorithm:
    """The client half of FedAvg; other algorithms override the parts that differ."""

    def __init__(self, context: Context) -> None:
        self.context = context
        self.cfg = context.run_config
        self.client_id = client_index(context.node_config)
        self.device = resolve_device(str(self.cfg["train.device"]))
        torch.set_num_threads(int(self.cfg["train.num_threads"]))
        self.data: LocalData = local_data(self.cfg, context.node_config, self.device)

    # -- building blocks -------------------------------------------------------------------
    def new_model(self) -> nn.Module:
        model = build_model(str(self.cfg["model.name"]), self.data.input_shape, self.data.num_classes, int(self.cfg["seed"]), self.cfg)
        return model.to(self.device)

    def model_from(self, msg: Message) -> nn.Module:
        model = self.new_model()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        return model

    def generator(self, server_round: int, purpose: str = "train") -> torch.Generator:
        return generator(int(self.cfg["seed"]), server_round, self.client_id, purpose)

    @staticmethod
    def server_round(msg: Message) -> int:
        return int(msg.content["config"]["server-round"])

    # -- the two message handlers ------------------------------------------------------------
    def train(self, msg: Message) -> RecordDict:
        model = self.model_from(msg)
        metrics = self.fit(model, msg)
        metrics.setdefault("num-examples", len(self.data.y_labeled))
        return RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord(metrics)})

    def fit(self, model: nn.Module, msg: Message) -> dict:
        """Local training in place; returns the reply's metrics."""
        raise NotImplementedError

    def evaluate(self, msg: Message) -> RecordDict:
        """Personalized accuracy: the model this client would use, on its local test set."""
        model = self.model_from(msg)
        metrics = self.local_metrics(model)
        return RecordDict({"metrics": MetricRecord(metrics)})

    def local_metrics(self, model: nn.Module, prefix: str = "personal") -> dict:
        logits, y, c = predict(model, self.data.x_test), self.data.y_test, self.data.num_classes
        result, masked = classification_metrics(logits, y, c), classification_metrics(mask_absent(logits, y, c), y, c)
        return {f"{prefix}/acc": result["acc"], f"{prefix}/loss": result["loss"], f"{prefix}/acc_masked": masked["acc"],
                "num-examples": len(y)}


def mask_absent(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Logits with classes absent from the local test set ruled out: the label-prior oracle that
    FedLoGe's official `localtest` applies (algorithms.md b.3), reported beside the plain number."""
    if len(y) == 0:
        return logits
    return logits.masked_fill(torch.bincount(y, minlength=num_classes) == 0, -1e10)
