"""MOON's client half (Li, He, Song, CVPR 2021): FedAvg's loss plus a model-contrastive term.

For a batch, z is the representation of the model being trained, z_glob that of the received global
model and z_prev that of this client's previous local model; the term is
-log(e^{sim(z, z_glob)/tau} / (e^{sim(z, z_glob)/tau} + e^{sim(z, z_prev)/tau})) with sim the cosine
similarity, averaged over the batch and weighted by mu (`algorithm.contrastive_mu`, tau is
`algorithm.temperature`). The previous local model lives in `context.state["moon/previous"]`
(written to the node's state-dir by the ClientApp).

Choices where the paper is silent or the setting differs:
- the representation is the model's penultimate features (`model.features`, tasks/classifier.py)
  with no projection head: the paper adds a 2-layer head to its encoder, but here the model that
  travels and is evaluated stays the run's own, so MOON compares with every other algorithm on the
  same architecture;
- the global and previous models run in evaluation mode (BatchNorm running statistics), without
  gradients;
- before a client first trains, its previous model is the received global one (the official code
  starts every previous model from the initial global model): the term is then log 2 with zero
  gradient, so a client's first round is FedAvg's;
- one previous model is kept (the paper's default buffer size of 1);
- classification only (`task.name`): the supervised term is cross-entropy on the head over the same
  features z, computed once per batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, Message
from torch import nn

from flowerbed.clients.fedavg import FedAvgClient
from flowerbed.tasks.classification import ClassificationTask
from flowerbed.tasks.errors import ConfigError

PREVIOUS = "moon/previous"  # the last local model, a record of context.state


def contrastive(z: torch.Tensor, z_glob: torch.Tensor, z_prev: torch.Tensor, temperature: float) -> torch.Tensor:
    """MOON's l_con, averaged over the batch: cross-entropy with the global representation as the positive."""
    logits = torch.stack([F.cosine_similarity(z, z_glob, dim=1), F.cosine_similarity(z, z_prev, dim=1)], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(len(z), dtype=torch.long, device=z.device))


class MoonClient(FedAvgClient):
    def fit(self, model: nn.Module, msg: Message) -> dict:
        if not isinstance(self.task, ClassificationTask):
            raise ConfigError.invalid("task.name", self.cfg.get("task.name"), "classification for MOON (cross-entropy on the head over its features)")
        if not hasattr(model, "features") or not hasattr(model, "classifier"):
            raise ConfigError.invalid("model.name", self.cfg["model.name"], "a model with `features` and `classifier` (tasks/classifier.py) for MOON")
        received = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.global_model = self.frozen(received)
        self.previous = self.frozen(self.context.state[PREVIOUS].to_torch_state_dict() if PREVIOUS in self.context.state else received)
        metrics = super().fit(model, msg)
        self.context.state[PREVIOUS] = ArrayRecord({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        return metrics

    def frozen(self, state: dict[str, torch.Tensor]) -> nn.Module:
        model = self.new_model()
        model.load_state_dict(state)
        return model.eval().requires_grad_(False)

    def loss_fn(self, model: nn.Module, msg: Message):
        mu, temperature = float(self.cfg["algorithm.contrastive_mu"]), float(self.cfg["algorithm.temperature"])
        global_features, previous_features = self.global_model.features, self.previous.features

        def model_contrastive(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            z = m.features(x)
            with torch.no_grad():
                z_glob, z_prev = global_features(x), previous_features(x)
            return F.cross_entropy(m.classifier(z), y) + mu * contrastive(z, z_glob, z_prev, temperature)

        return model_contrastive
