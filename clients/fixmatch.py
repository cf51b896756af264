"""FedAvg+FixMatch's client half: FixMatch (Sohn et al., 2020) run locally, FedAvg on the server.

The FedLabel paper's semi-supervised baseline: one model, trained from the global weights; each
step adds to the labeled cross-entropy a pseudo-label term on an unlabeled batch, where the model
itself labels the weak view (no gradient), keeps labels whose top probability exceeds
`algorithm.threshold`, and learns them on the strong view, weighted `algorithm.lambda_u`. Unlike
FedLabel only the local (current) model labels, and there is no consistency term.

The steps follow `train.local_steps`/`train.local_epochs` over the labeled data, as FedAvg's do;
each step draws an unlabeled batch of the same size. Views come from `flowerbed.clients.augment`.
The reply weighs the client by all its samples, labeled and unlabeled. A semi-supervised client
half with another unlabeled term (UDA: clients/uda.py) overrides `unlabeled_term` alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from flwr.app import Message
from torch import nn

from flowerbed.clients.augment import strong_view, weak_view
from flowerbed.clients.base import ClientAlgorithm
from flowerbed.clients.core import batch_plan, batches_from, sgd, sgd_train


class FixMatchClient(ClientAlgorithm):
    name = "fixmatch"  # the prefix of the diagnostics

    def unlabeled_term(self, teacher: torch.Tensor, student: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the unlabeled loss, which samples it kept) from the logits of the weak view (no gradient)
        and of the strong view: FixMatch's hard pseudo-labels above the threshold."""
        top, pseudo = F.softmax(teacher, dim=1).max(dim=1)
        mask = top > float(self.cfg["algorithm.threshold"])
        return (F.cross_entropy(student, pseudo, reduction="none") * mask).mean(), mask

    def fit(self, model: nn.Module, msg: Message) -> dict:
        cfg, d, rnd = self.cfg, self.data, self.server_round(msg)
        labeled = batches_from(cfg, len(d.y_labeled), self.generator(rnd))
        unlabeled = iter(batch_plan(len(d.y_unlabeled), int(cfg["train.batch_size"]), 0, len(labeled), self.generator(rnd, "unlabeled")))
        gen = self.generator(rnd, "strong")
        lambda_u = float(cfg["algorithm.lambda_u"])
        seen, kept, correct = 0, 0, 0

        def loss(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            nonlocal seen, kept, correct
            supervised = F.cross_entropy(m(x), y)
            idx = next(unlabeled, None)
            if idx is None:  # no unlabeled data
                return supervised
            x_u = d.x_unlabeled[idx.to(d.x_unlabeled.device)]
            with torch.no_grad():
                teacher = m(weak_view(x_u, gen))
            unsup, mask = self.unlabeled_term(teacher, m(strong_view(x_u, gen)))
            seen, kept = seen + len(idx), kept + int(mask.sum())
            correct += int((teacher.argmax(dim=1)[mask] == d.y_unlabeled[idx.to(d.y_unlabeled.device)][mask]).sum())
            return supervised + lambda_u * unsup

        train_loss = sgd_train(model, d.x_labeled, d.y_labeled, labeled, sgd(model.parameters(), cfg), loss)
        return {
            "train/loss": train_loss,
            f"{self.name}/pseudo_acc": correct / kept if kept else 0.0,
            f"{self.name}/coverage": kept / seen if seen else 0.0,
            "num-examples": len(d.y_labeled) + len(d.y_unlabeled),
        }
