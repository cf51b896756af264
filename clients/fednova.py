"""FedNova's client half (Wang et al., NeurIPS 2020): FedAvg's local SGD, its update normalized.

The reply is w + (w_i - w) / a_i, where w is the global model, w_i the locally trained one and a_i
the total weight of the local steps (strategies/fednova.py scales the average back), with a_i as
the metric `fednova/a`. Choices where the paper is silent: buffers (BatchNorm statistics) are
normalized like the weights; with `train.weight_decay` > 0 the paper's a_i differs, and the
plain-SGD/momentum a_i is used all the same.
"""

from __future__ import annotations

import torch
from flwr.app import Message
from torch import nn

from flowerbed.clients.fedavg import FedAvgClient


def normalizer(steps: int, momentum: float) -> float:
    """a_i: tau for plain SGD; with momentum rho, (tau - rho (1 - rho^tau) / (1 - rho)) / (1 - rho)."""
    if momentum == 0:
        return float(steps)
    return (steps - momentum * (1 - momentum**steps) / (1 - momentum)) / (1 - momentum)


def normalize(start: dict[str, torch.Tensor], trained: dict[str, torch.Tensor], a: float) -> None:
    """trained <- start + (trained - start) / a, in place, for the floating-point entries."""
    if a > 0:
        with torch.no_grad():
            for key, value in trained.items():
                if value.is_floating_point():
                    value.copy_(start[key] + (value - start[key]) / a)


class FedNovaClient(FedAvgClient):
    def fit(self, model: nn.Module, msg: Message) -> dict:
        start = {k: v.detach().clone() for k, v in model.state_dict().items()}
        metrics = super().fit(model, msg)  # FedAvg's local SGD, unchanged
        a = normalizer(len(self.plan(msg)), float(self.cfg["train.momentum"]))  # the plan fit just followed
        normalize(start, model.state_dict(), a)
        return {**metrics, "fednova/a": a}
