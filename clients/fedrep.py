"""FedRep's client half (Collins et al., ICML 2021): a shared body, a personal head.

Each round the client puts its own head (from `context.state`; the received head the first time)
on the received body, trains the head alone for `algorithm.head_epochs` with the body fixed, then
the body alone for the usual local epochs with the head fixed. Personalized accuracy uses that
personal head. The reply is the whole model, so the server's FedAvg also averages the heads: the
average is only used as the "generic" head in central evaluation (FedRep itself has none).
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from torch import nn

from flowerbed.clients.base import ClientAlgorithm
from flowerbed.clients.core import batch_plan, batches_from, sgd, sgd_train


class FedRepClient(ClientAlgorithm):
    def own_head(self, model: nn.Module) -> nn.Module:
        if "fedrep/head" in self.context.state:
            model.classifier.load_state_dict(self.context.state["fedrep/head"].to_torch_state_dict())
        return model

    def fit(self, model: nn.Module, msg: Message) -> dict:
        d, cfg = self.data, self.cfg
        model, gen = self.own_head(model), self.generator(self.server_round(msg))
        head_batches = batch_plan(len(d.y_labeled), int(cfg["train.batch_size"]), int(cfg["algorithm.head_epochs"]), 0, gen)
        sgd_train(model, d.x_labeled, d.y_labeled, head_batches, sgd(model.classifier.parameters(), cfg))
        loss = sgd_train(model, d.x_labeled, d.y_labeled, batches_from(cfg, len(d.y_labeled), gen), sgd(model.features.parameters(), cfg))
        self.context.state["fedrep/head"] = ArrayRecord(model.classifier.state_dict())
        return {"train/loss": loss, "num-examples": len(d.y_labeled)}

    def evaluate(self, msg: Message) -> RecordDict:
        return RecordDict({"metrics": MetricRecord(self.local_metrics(self.own_head(self.model_from(msg))))})
