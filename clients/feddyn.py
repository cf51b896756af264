"""FedDyn's client half (Acar et al., ICLR 2021): FedAvg's local SGD on a dynamically regularized loss.

Client k minimizes L_k(theta) (the task's loss) - <g_k, theta> + (alpha/2) ||theta - theta^{t-1}||^2, where theta^{t-1}
is the received global model and g_k, its estimate of grad L_k at its last local model, lives in
`context.state["feddyn/grad"]` (zero before its first round; the ClientApp writes it to the node's
state-dir). After training, g_k <- g_k - alpha (theta_k^t - theta^{t-1}). The reply is theta_k^t.

Choices where the paper is silent: the terms cover the parameters only (BatchNorm statistics are
trained and averaged as under FedAvg); the regularized loss goes through the run's optimizer
(`train.momentum`, `train.weight_decay` as for FedAvg; the paper's code adds weight decay too).
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Message
from torch import nn

from flowerbed.clients.fedavg import FedAvgClient

GRAD = "feddyn/grad"  # g_k, a record of context.state


class FedDynClient(FedAvgClient):
    def fit(self, model: nn.Module, msg: Message) -> dict:
        alpha = float(self.cfg["algorithm.dyn_alpha"])
        self.anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
        held = self.context.state[GRAD].to_torch_state_dict() if GRAD in self.context.state else {}
        self.grad = {n: held[n].to(self.device) if n in held else torch.zeros_like(a) for n, a in self.anchor.items()}
        metrics = super().fit(model, msg)
        with torch.no_grad():
            grad = {n: self.grad[n] - alpha * (p - self.anchor[n]) for n, p in model.named_parameters()}
        self.context.state[GRAD] = ArrayRecord({n: g.cpu() for n, g in grad.items()})
        return metrics

    def loss_fn(self, model: nn.Module, msg: Message):
        alpha = float(self.cfg["algorithm.dyn_alpha"])
        names = [n for n, _ in model.named_parameters()]
        grad, anchor = [self.grad[n] for n in names], [self.anchor[n] for n in names]
        task_loss = super().loss_fn(model, msg)

        def dynamic(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            params = list(m.parameters())
            linear = sum((g * p).sum() for g, p in zip(grad, params))
            drift = sum(((p - a) ** 2).sum() for p, a in zip(params, anchor))
            return task_loss(m, x, y) - linear + 0.5 * alpha * drift

        return dynamic
