"""FedLoGe's client half (Xiao et al., ICLR 2024): one backbone, three heads, GLA-FR at evaluation.

The model that travels is the usual `classifier(features(x))`: `features` is the backbone theta and
`classifier` is the auxiliary global head psi. Two more heads stay here:
- SSE-C, the frozen sparse ETF (tasks/etf.py), rebuilt from the seed, never sent, never trained;
- phi_k, the personal head, kept in `context.state["fedloge/phi"]` and never put in a reply.

Every mini-batch takes the official code's three steps: theta by CE(SSE-C(h)), psi by
CE(psi(h.detach())), phi_k by CE(phi_k(h.detach())), all from the same features h. Because
psi and phi see detached features, the sum of the three losses gives each part exactly its own
gradient, so one `sgd_train` over (theta, psi, phi_k) is the three SGD optimizers of the paper.

Evaluation (GLA-FR, b.2 step 2) on the local test set, as the official `realignment.py` does it:
- personalized: argmax phi_k(h) + psi~(h), with psi~_c = psi_c * |phi_k,c|: the global head psi as
  trained, each class row rescaled by the personal head's norm of that class. `personal/acc` is
  without the absent-class mask, `personal/acc_masked` with it (the official `localtest`).
- diagnostics: phi_k alone, phi_k + psi without norm transfer (what the official logs report as
  "local"), the norm transfer onto the row-normalised psi, and the generic and universal models.
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from torch import nn

from flowerbed.clients.base import ClientAlgorithm
from flowerbed.clients.core import batches_from, sgd, sgd_train
from flowerbed.tasks.classification import client_scores
from flowerbed.tasks.etf import options as etf_options
from flowerbed.tasks.etf import row_normalized, sse_c_for


def norm_transfer(psi: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """GLA-FR's local realignment: row c of psi times |phi_k,c|."""
    return psi * phi.norm(dim=1, keepdim=True)


class FedLoGeNet(nn.Module):
    """Backbone + psi (the travelling model), the frozen SSE-C (a buffer) and the personal head."""

    def __init__(self, model: nn.Module, etf: torch.Tensor, phi: nn.Linear) -> None:
        super().__init__()
        self.model, self.phi = model, phi
        self.register_buffer("etf", etf)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.model.features(x)
        ce = nn.functional.cross_entropy
        return ce(h @ self.etf.T, y) + ce(self.model.classifier(h.detach()), y) + ce(self.phi(h.detach()), y)


class FedLoGeClient(ClientAlgorithm):
    def etf(self, model: nn.Module) -> torch.Tensor:
        return sse_c_for(model.state_dict(), int(self.cfg["seed"]), **etf_options(self.cfg)).to(self.device)

    def personal_head(self) -> nn.Linear:
        """phi_k from client state, or the model's initial head before this client first trains."""
        head = self.new_model().classifier
        if "fedloge/phi" in self.context.state:
            head.load_state_dict(self.context.state["fedloge/phi"].to_torch_state_dict())
        return head

    def fit(self, model: nn.Module, msg: Message) -> dict:
        net = FedLoGeNet(model, self.etf(model), self.personal_head())
        d = self.data
        batches = batches_from(self.cfg, len(d.y_labeled), self.generator(self.server_round(msg)))
        loss = sgd_train(net, d.x_labeled, d.y_labeled, batches, sgd(parameters(net), self.cfg), lambda m, x, y: m.loss(x, y))
        self.context.state["fedloge/phi"] = ArrayRecord(net.phi.state_dict())
        return {"train/loss": loss, "num-examples": len(d.y_labeled)}

    @torch.no_grad()
    def evaluate(self, msg: Message) -> RecordDict:
        model, phi = self.model_from(msg).eval(), self.personal_head().eval()
        h = model.features(self.data.x_test)
        psi, normalised = model.classifier, row_normalized(model.classifier.weight)
        heads = {
            "personal": phi(h) + nn.functional.linear(h, norm_transfer(psi.weight, phi.weight), psi.bias),
            "personal_phi": phi(h),
            "personal_sum": phi(h) + psi(h),
            "personal_normalised": phi(h) + nn.functional.linear(h, norm_transfer(normalised, phi.weight), psi.bias),
            "personal_generic": nn.functional.linear(h, normalised, psi.bias),
            "personal_universal": h @ self.etf(model).T,
        }
        y, num_classes = self.data.y_test, self.data.num_classes
        metrics = {"num-examples": len(y)}
        for name, logits in heads.items():  # each head's accuracy without and with the absent-class mask
            metrics.update(client_scores(logits, y, num_classes, name))
        return RecordDict({"metrics": MetricRecord(metrics)})


def parameters(net: FedLoGeNet) -> list[nn.Parameter]:
    """theta, psi and phi_k: everything trainable (SSE-C is a buffer, so never stepped)."""
    return list(net.model.parameters()) + list(net.phi.parameters())
