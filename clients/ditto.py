"""Ditto's client half (Li, Hu, Beirami, Smith, ICML 2021): FedAvg's global update plus a personal model.

A train call does two things. The global model w takes FedAvg's local update, unchanged: that is the
reply, so Ditto's global model is FedAvg's. The personal model v_k, kept in
`context.state["ditto/personal"]` (written to the node's state-dir by the ClientApp), takes the
same local SGD on F_k(v) + (lambda/2) ||v - w^t||^2, w^t the received global model
(`algorithm.ditto_lambda`). Evaluation scores v_k on the client's local test set (`personal/*`);
the server scores the global model on the central test set (`global/*`).

Choices where the paper is silent:
- v_k starts from the received global model the first time the client trains (the paper: v_k = w^0);
- v_k's batches and augmented views come from their own generator stream ("personal"), so the global
  update draws exactly FedAvg's batches; its epochs or steps, batch size and optimizer are `train.*`'s;
- a client asked to evaluate before it ever trained has no v_k and is scored with the received model;
- the whole state dict is personal (BatchNorm statistics included); only w travels.
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from torch import nn

from flowerbed.clients.fedavg import FedAvgClient

PERSONAL = "ditto/personal"  # v_k, a record of context.state


class DittoClient(FedAvgClient):
    def fit(self, model: nn.Module, msg: Message) -> dict:
        received = {k: v.detach().clone() for k, v in model.state_dict().items()}
        personal = self.personal_model(received)
        anchor = [received[n] for n, _ in personal.named_parameters()]
        lam = float(self.cfg["algorithm.ditto_lambda"])

        def regularized(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.task.loss(m, x, y) + 0.5 * lam * sum(((p - a) ** 2).sum() for p, a in zip(m.parameters(), anchor))

        personal_loss = self.local_sgd(personal, msg, regularized, stream="personal")
        self.context.state[PERSONAL] = ArrayRecord({k: v.detach().cpu() for k, v in personal.state_dict().items()})
        return {**super().fit(model, msg), "ditto/personal_loss": personal_loss}  # the global update: FedAvg's

    def personal_model(self, start: dict[str, torch.Tensor] | None = None) -> nn.Module:
        """v_k from client state, or a model holding `start` (the received w) before this client first trains."""
        model = self.new_model()
        model.load_state_dict(self.context.state[PERSONAL].to_torch_state_dict() if PERSONAL in self.context.state else start)
        return model

    def evaluate(self, msg: Message) -> RecordDict:
        if PERSONAL not in self.context.state:
            return super().evaluate(msg)
        return RecordDict({"metrics": MetricRecord(self.local_metrics(self.personal_model()))})
