"""FedBABU's client half (Oh et al., ICLR 2022): train the body only, fine-tune to personalize.

During federated training the head stays at its (seed-determined, shared) initial weights: only
the body is in the optimizer, so every client's head is the same random classifier and the body
learns features for it. Personalized accuracy is that of the received model fine-tuned on the
client's own training data for `algorithm.finetune_epochs` (whole model, as in the paper), which
is done afresh at each evaluation and kept nowhere. Central evaluation uses the global model
as is (body + the fixed head).
"""

from __future__ import annotations

from flwr.app import Message, MetricRecord, RecordDict
from torch import nn

from flowerbed.clients.base import ClientAlgorithm
from flowerbed.clients.core import batch_plan, batches_from, sgd, sgd_train


class FedBABUClient(ClientAlgorithm):
    def fit(self, model: nn.Module, msg: Message) -> dict:
        d = self.data
        batches = batches_from(self.cfg, len(d.y_labeled), self.generator(self.server_round(msg)))
        loss = sgd_train(model, d.x_labeled, d.y_labeled, batches, sgd(model.features.parameters(), self.cfg))
        return {"train/loss": loss, "num-examples": len(d.y_labeled)}

    def evaluate(self, msg: Message) -> RecordDict:
        model, d = self.model_from(msg), self.data
        batches = batch_plan(len(d.y_labeled), int(self.cfg["train.batch_size"]), int(self.cfg["algorithm.finetune_epochs"]), 0,
                             self.generator(self.server_round(msg), "finetune"))
        sgd_train(model, d.x_labeled, d.y_labeled, batches, sgd(model.parameters(), self.cfg))
        return RecordDict({"metrics": MetricRecord(self.local_metrics(model))})
