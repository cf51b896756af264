"""FedProx's client half: FedAvg's local SGD (the task's loss) plus the proximal term (mu/2)||w - w_global||^2.

Flower's FedProx strategy sends mu as `proximal-mu` in the train config; the term is the
client's job.
"""

from __future__ import annotations

import torch
from flwr.app import Message
from torch import nn

from flowerbed.clients.fedavg import FedAvgClient


class FedProxClient(FedAvgClient):
    def loss_fn(self, model: nn.Module, msg: Message):
        mu = float(msg.content["config"]["proximal-mu"])
        anchor = [p.detach().clone() for p in model.parameters()]
        task_loss = super().loss_fn(model, msg)

        def proximal(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            drift = sum(((p - a) ** 2).sum() for p, a in zip(m.parameters(), anchor))
            return task_loss(m, x, y) + 0.5 * mu * drift

        return proximal
