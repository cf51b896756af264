"""FedAvg's client half: E local epochs (or S steps) of SGD from the global weights.

Also the client half of the server-side variants (FedAvgM, FedAdam, FedYogi, FedTrimmedAvg, FedMedian, Krum):
they differ only in how the server combines the same updates. `train.augment` picks the view of
the labeled images each batch trains on (clients/augment.py), for FedAvg and every client half
built on it (FedProx, FedBN).
"""

from __future__ import annotations

from flwr.app import Message
from torch import nn

from flowerbed.clients.augment import with_view
from flowerbed.clients.base import ClientAlgorithm
from flowerbed.clients.core import batches_from, sgd, sgd_train


class FedAvgClient(ClientAlgorithm):
    def fit(self, model: nn.Module, msg: Message) -> dict:
        d, rnd = self.data, self.server_round(msg)
        batches = batches_from(self.cfg, len(d.y_labeled), self.generator(rnd))
        loss_fn = with_view(self.loss_fn(model, msg), str(self.cfg.get("train.augment", "none")), lambda: self.generator(rnd, "augment"))
        loss = sgd_train(model, d.x_labeled, d.y_labeled, batches, sgd(model.parameters(), self.cfg), loss_fn)
        return {"train/loss": loss, "num-examples": len(d.y_labeled)}

    def loss_fn(self, model: nn.Module, msg: Message):
        """The local objective: the task's loss here (classification: cross-entropy)."""
        return self.task.loss
