"""FedAvg's client half: E local epochs (or S steps) of SGD from the global weights.

Also the client half of the server-side variants (FedAvgM, FedAdam, FedYogi, FedTrimmedAvg, FedMedian, Krum):
they differ only in how the server combines the same updates. `train.augment` picks the view of
the labeled images each batch trains on (clients/augment.py), for FedAvg and every client half
built on it (FedProx, FedBN).
"""

from __future__ import annotations

import torch
from flwr.app import Message
from torch import nn

from flowerbed.clients.augment import with_view
from flowerbed.clients.base import ClientAlgorithm
from flowerbed.clients.core import batches_from, sgd, sgd_train


class FedAvgClient(ClientAlgorithm):
    def fit(self, model: nn.Module, msg: Message) -> dict:
        loss = self.local_sgd(model, msg, self.loss_fn(model, msg))
        return {"train/loss": loss, "num-examples": len(self.data.y_labeled)}

    def local_sgd(self, model: nn.Module, msg: Message, loss_fn, stream: str = "train") -> float:
        """`train.*`'s local SGD of `model` on `loss_fn`; returns the mean loss. Batches and augmented
        views come from the generator stream `stream` (a second model, Ditto's, draws its own)."""
        d, rnd = self.data, self.server_round(msg)
        views = lambda: self.generator(rnd, "augment" if stream == "train" else f"{stream}/augment")  # noqa: E731
        loss_fn = with_view(loss_fn, str(self.cfg.get("train.augment", "none")), views)
        return sgd_train(model, d.x_labeled, d.y_labeled, self.plan(msg, stream), sgd(self.parameters(model), self.cfg), loss_fn)

    def plan(self, msg: Message, stream: str = "train") -> list[torch.Tensor]:
        """This round's batches (index tensors): a function of (seed, round, client, stream), so a
        client half that calls it again after `fit` (FedNova, SCAFFOLD) gets the plan `fit` followed."""
        return batches_from(self.cfg, len(self.data.y_labeled), self.generator(self.server_round(msg), stream))

    def loss_fn(self, model: nn.Module, msg: Message):
        """The local objective: the task's loss here (classification: cross-entropy)."""
        return self.task.loss
