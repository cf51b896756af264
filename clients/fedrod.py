"""FedRoD's client half (Chen and Chao: "On Bridging Generic and Personalized Federated Learning for
Image Classification", ICLR 2022): one body, a generic head and a personal head.

The model that travels is the usual `classifier(features(x))`: the body and the generic head g,
trained together with the balanced softmax loss (BSM: the cross-entropy of g(h) + log n_c, n_c the
client's count of class c), whose minimiser on a long-tailed client is a class-balanced classifier,
so the average of the clients' g is a generic model for the balanced test set. The personal head p
stays here (`context.state["fedrod/head"]`, never in a reply) and is trained with plain
cross-entropy on g(h) + p(h) with g's output and h detached: p learns what the client's own
distribution adds to the generic prediction. The two terms touch disjoint parameters, so one
`sgd_train` over (body, g, p) on their sum is the paper's two updates from the same features.

Evaluation on the local test set: `personal/*` is g(h) + p(h) (the personalized model),
`personal_generic/*` is g(h) alone. Central evaluation scores the averaged (body, g).

Choices where the paper is silent or loose (this is the linear-head FedRoD, without the
hypernetwork variant):
- p starts as the model's initial head (the same for every client, from the seed) and takes the
  same optimizer settings as the body (`train.*`).
- A class absent from the client's labeled data counts as n_c = 1e-8 in BSM (log n_c = -18.4): it
  drops out of the local softmax instead of making log 0 = -inf.
- The server half is FedAvg weighted by samples; p is updated in the same mini-batch steps as the
  body (not in a separate pass).
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from torch import nn

from flowerbed.clients.base import ClientAlgorithm
from flowerbed.tasks.classification import client_scores
from flowerbed.clients.core import batches_from, sgd, sgd_train
from flowerbed.clients.fedlc import label_counts


def balanced_softmax(logits: torch.Tensor, y: torch.Tensor, log_counts: torch.Tensor) -> torch.Tensor:
    """BSM (Ren et al., 2020): cross-entropy of logits + log n_c."""
    return nn.functional.cross_entropy(logits + log_counts, y)


class FedRoDNet(nn.Module):
    """Body + generic head (the travelling model) and the personal head, with the client's log n_c."""

    def __init__(self, model: nn.Module, personal: nn.Linear, log_counts: torch.Tensor) -> None:
        super().__init__()
        self.model, self.personal = model, personal
        self.register_buffer("log_counts", log_counts)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.model.features(x)
        generic = self.model.classifier(h)
        personalized = generic.detach() + self.personal(h.detach())
        return balanced_softmax(generic, y, self.log_counts) + nn.functional.cross_entropy(personalized, y)


class FedRoDClient(ClientAlgorithm):
    def personal_head(self) -> nn.Linear:
        """p from client state, or the model's initial head before this client first trains."""
        head = self.new_model().classifier
        if "fedrod/head" in self.context.state:
            head.load_state_dict(self.context.state["fedrod/head"].to_torch_state_dict())
        return head

    def fit(self, model: nn.Module, msg: Message) -> dict:
        d = self.data
        log_counts = label_counts(d.y_labeled, d.num_classes).log().to(self.device)
        net = FedRoDNet(model, self.personal_head(), log_counts)
        batches = batches_from(self.cfg, len(d.y_labeled), self.generator(self.server_round(msg)))
        loss = sgd_train(net, d.x_labeled, d.y_labeled, batches, sgd(net.parameters(), self.cfg), lambda m, x, y: m.loss(x, y))
        self.context.state["fedrod/head"] = ArrayRecord(net.personal.state_dict())
        return {"train/loss": loss, "num-examples": len(d.y_labeled)}

    @torch.no_grad()
    def evaluate(self, msg: Message) -> RecordDict:
        model, personal = self.model_from(msg).eval(), self.personal_head().eval()
        h = model.features(self.data.x_test)
        generic = model.classifier(h)
        y, num_classes = self.data.y_test, self.data.num_classes
        metrics = {**client_scores(generic + personal(h), y, num_classes, "personal"),
                   **client_scores(generic, y, num_classes, "personal_generic")}
        return RecordDict({"metrics": MetricRecord(metrics)})
