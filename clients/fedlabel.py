"""FedLabel's client half (Cho, Joshi, Dimitriadis, ICCV 2023): local or global pseudo-labels.

Each round, from the global model w_G:
1. a local model w_L trains `tau_l` SGD steps on the labeled data (Eq. 1-2);
2. for each unlabeled sample, the more confident of w_G and w_L (variance of the softmax vector,
   or an entropy score) gives the pseudo-label, kept only if its top probability exceeds beta
   (Eq. 3-4);
3. a separate model w_U, also started at w_G, trains `tau_u` steps on cross-entropy with the
   pseudo-labels on a strong view, plus KL consistency with the discarded model's output weighted
   lambda0 * h(discarded) / h(selected) where the two models agree (Eq. 5-8);
4. the reply is w_G + (w_L - w_G) + (w_U - w_G) with num-examples r_k = labeled + accepted
   samples, so Flower's FedAvg gives Algorithm 1's server rule exactly (N7).

Choices the paper leaves open (numbered N1-N7, as docs/results/fedlabel.md cites them):
- N1: s is the softmax probability vector; h(s) is its variance across classes (unbiased=False),
  and beta is compared with its top probability. `confidence=entropy` uses h = 1 - H(s)/log C,
  in [0, 1] and increasing with confidence, so that the ratio in lambda stays meaningful.
- N2: selection and threshold read the un-augmented sample; the pseudo-label cross-entropy reads
  the strong view (`flowerbed.clients.augment.strong_view`, RandAugment(1, 10) at tensor level); the KL
  student reads the un-augmented sample, as Eq. 6 is written.
- N3: the KL is KL(teacher || student) with the discarded model's output as a constant teacher.
- N4: mini-batches are drawn from the whole unlabeled set and the loss is averaged over the batch,
  rejected samples included (they add zero): Eq. 8's 1/|D_U| read literally, as FixMatch does.
- The ablations `selection=local|global` change only who pseudo-labels; the other model is then
  the "discarded" one for the consistency term, its weight capped at lambda0 (the ratio at 1).
- BN buffers follow the same delta arithmetic as the weights (N6).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from flwr.app import Message
from torch import nn

from flowerbed.clients.augment import strong_view
from flowerbed.clients.base import ClientAlgorithm
from flowerbed.clients.core import batch_plan, sgd, sgd_train
from flowerbed.tasks.metrics import predict

SELECTIONS = ("both", "local", "global")
CONFIDENCES = ("variance", "entropy")


@dataclass(frozen=True)
class PseudoLabels:
    """Per unlabeled sample: the pseudo-label and what the unlabeled loss needs to use it."""

    labels: torch.Tensor  # argmax of the selected output s*
    accepted: torch.Tensor  # max s* > beta
    from_local: torch.Tensor  # s* is the local model's output
    teacher: torch.Tensor  # the discarded output s^-*, the consistency target
    kl_weight: torch.Tensor  # lambda0 h(s^-*)/h(s*) where accepted and the models agree, else 0

    @classmethod
    def empty(cls) -> PseudoLabels:
        """For a client without unlabeled samples."""
        none = torch.zeros(0, dtype=torch.bool)
        return cls(torch.zeros(0, dtype=torch.long), none, none, torch.zeros(0, 0), torch.zeros(0))


def confidence(probs: torch.Tensor, kind: str = "variance") -> torch.Tensor:
    """h(s) per row of softmax vectors: higher means more confident."""
    if kind == "variance":
        return probs.var(dim=1, unbiased=False)
    if kind == "entropy":
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(dim=1)
        return 1 - entropy / math.log(probs.shape[1])
    raise ValueError(f"confidence={kind!r}: use one of {', '.join(CONFIDENCES)}")


def consistency_weight(h_selected: torch.Tensor, h_discarded: torch.Tensor, agree: torch.Tensor, lambda0: float) -> torch.Tensor:
    """lambda0 * h(s^-*)/h(s*) where the models agree, 0 where they do not (Eq. 7).

    The ratio is <= 1 when selection picked the more confident model; forced selections
    (the only-local/only-global ablations) are capped there too.
    """
    ratio = (h_discarded / h_selected.clamp_min(1e-12)).clamp(max=1.0)
    return lambda0 * ratio * agree.float()


def select_pseudo_labels(
    p_global: torch.Tensor,
    p_local: torch.Tensor,
    beta: float,
    lambda0: float,
    selection: str = "both",
    kind: str = "variance",
) -> PseudoLabels:
    """Eq. 3-4 and 7: pick the more confident model per sample, threshold, weight the KL."""
    h_global, h_local = confidence(p_global, kind), confidence(p_local, kind)
    if selection == "both":
        from_local = h_local > h_global  # ties go to the global model
    elif selection in ("local", "global"):
        from_local = torch.full_like(h_local, selection == "local", dtype=torch.bool)
    else:
        raise ValueError(f"selection={selection!r}: use one of {', '.join(SELECTIONS)}")
    pick = from_local.unsqueeze(1)
    selected, discarded = torch.where(pick, p_local, p_global), torch.where(pick, p_global, p_local)
    top, labels = selected.max(dim=1)
    accepted = top > beta
    agree = discarded.argmax(dim=1) == labels
    h_sel, h_dis = torch.where(from_local, h_local, h_global), torch.where(from_local, h_global, h_local)
    weight = consistency_weight(h_sel, h_dis, agree & accepted, lambda0)
    return PseudoLabels(labels, accepted, from_local, discarded, weight)


def semi_supervised_loss(
    logits_strong: torch.Tensor, logits_plain: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """Eq. 8 on one batch: pseudo-label cross-entropy on the strong view where accepted (`mask`),
    plus the weighted KL of the plain view to the discarded model's output (shared with the
    batched form in clients/batched.py, so both compute the same numbers)."""
    ce = F.cross_entropy(logits_strong, labels, reduction="none")
    kl = F.kl_div(F.log_softmax(logits_plain, dim=1), teacher, reduction="none").sum(dim=1)
    return (mask * ce + weight * kl).mean()


def unlabeled_loss(pseudo: PseudoLabels, gen: torch.Generator):
    """Eq. 8 as an `sgd_train` loss: `y` carries the batch's indices into the unlabeled set."""

    def loss(model: nn.Module, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        strong = model(strong_view(x, gen))
        return semi_supervised_loss(strong, model(x), pseudo.labels[idx], pseudo.accepted[idx].float(), pseudo.teacher[idx], pseudo.kl_weight[idx])

    return loss


def pseudo_label_stats(pseudo: PseudoLabels, y_true: torch.Tensor) -> dict[str, float]:
    """Diagnostics against the true labels, which only the simulation knows."""
    n, kept = len(y_true), int(pseudo.accepted.sum())
    correct = (pseudo.labels[pseudo.accepted] == y_true[pseudo.accepted]).sum()
    return {
        "fedlabel/pseudo_acc": float(correct) / kept if kept else 0.0,
        "fedlabel/coverage": kept / n if n else 0.0,
        "fedlabel/local_share": float(pseudo.from_local.float().mean()) if n else 0.0,
        "fedlabel/kl_share": float((pseudo.kl_weight > 0).sum()) / kept if kept else 0.0,
    }


def combine(global_state: dict, *trained: dict) -> dict:
    """w_G + sum_i (w_i - w_G): the sum of the deltas, not their mean (N5)."""
    return {k: g + sum(t[k] - g for t in trained) for k, g in global_state.items()}


def local_plan(cfg: dict, num_samples: int, steps_key: str, gen: torch.Generator) -> list[torch.Tensor]:
    """`algorithm.tau_l` (labeled) or `algorithm.tau_u` (unlabeled) mini-batches of `train.batch_size`."""
    return batch_plan(num_samples, int(cfg["train.batch_size"]), 0, int(cfg[steps_key]), gen)


def pseudo_labels(cfg: dict, p_global: torch.Tensor, p_local: torch.Tensor) -> PseudoLabels:
    """Eq. 3-4 and 7 with the run's beta, lambda0, selection and confidence; empty for no samples."""
    if len(p_global) == 0:
        return PseudoLabels.empty()
    return select_pseudo_labels(p_global, p_local, float(cfg["algorithm.beta"]), float(cfg["algorithm.lambda0"]),
                                str(cfg["algorithm.selection"]), str(cfg["algorithm.confidence"]))


def fit_metrics(loss_l: float, loss_u: float, pseudo: PseudoLabels, y_unlabeled: torch.Tensor, num_labeled: int) -> dict:
    """The reply's metrics; num-examples is r_k = labeled + accepted samples (Algorithm 1)."""
    accepted = int(pseudo.accepted.sum())
    return {"train/loss": loss_l, "fedlabel/unlabeled_loss": loss_u, **pseudo_label_stats(pseudo, y_unlabeled),
            "num-examples": num_labeled + accepted}


class FedLabelClient(ClientAlgorithm):
    def fit(self, model: nn.Module, msg: Message) -> dict:
        cfg, d, rnd = self.cfg, self.data, self.server_round(msg)
        global_state = copy.deepcopy(model.state_dict())

        # 1. supervised local model from the global weights
        local = copy.deepcopy(model)
        plan = local_plan(cfg, len(d.y_labeled), "algorithm.tau_l", self.generator(rnd))
        loss_l = sgd_train(local, d.x_labeled, d.y_labeled, plan, sgd(local.parameters(), cfg))

        # 2. pseudo-labels from the more confident of the two models, above beta
        with torch.no_grad():
            pseudo = pseudo_labels(cfg, F.softmax(predict(model, d.x_unlabeled), dim=1), F.softmax(predict(local, d.x_unlabeled), dim=1))

        # 3. w_U from the global weights on the unlabeled data (`model` itself: w_G is saved)
        loss_u = 0.0
        if pseudo.accepted.any():
            plan = local_plan(cfg, len(d.y_unlabeled), "algorithm.tau_u", self.generator(rnd, "unlabeled"))
            index = torch.arange(len(d.y_unlabeled), device=d.x_unlabeled.device)
            loss_u = sgd_train(model, d.x_unlabeled, index, plan, sgd(model.parameters(), cfg), unlabeled_loss(pseudo, self.generator(rnd, "strong")))
        # 4. the reply: w_G + (w_L - w_G) + (w_U - w_G)
        model.load_state_dict(combine(global_state, local.state_dict(), model.state_dict()))
        return fit_metrics(loss_l, loss_u, pseudo, d.y_unlabeled, len(d.y_labeled))
