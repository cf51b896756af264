"""FedLC's client half (Zhang, Li, Li, Xu, Ji: "Federated Learning with Label Distribution Skew via
Logits Calibration", ICML 2022): FedAvg's local SGD on calibrated logits.

Each logit is shifted down by tau * n_c^(-1/4), n_c the client's count of class c in its labeled
data, before the cross-entropy: a rare class loses more margin in training, so the model is pushed
to learn a larger one for it, and the classes a client never saw stop being pushed down by it.
Evaluation uses the raw logits: the calibration is a training-time loss only. The server half is
FedAvg.

Choices where the paper is silent or loose:
- The loss is the cross-entropy of the calibrated logits (the denominator sums over every class,
  y included): the paper's Eq. (8) writes the sum over c != y, which is unbounded below; the
  public implementations use the full softmax.
- A class absent from the client's labeled data counts as n_c = 1e-8: a shift of 100 tau, which
  takes it out of the local softmax (its logit gets no gradient from this client) instead of an
  infinite or undefined one.
- tau (`algorithm.calibration_tau`; `algorithm.tau` is FedAdam's) defaults to 1.0; the paper tunes it per data set.
"""

from __future__ import annotations

import torch
from flwr.app import Message
from torch import nn

from flowerbed.clients.fedavg import FedAvgClient

ABSENT_COUNT = 1e-8  # the count an absent class is calibrated with


def label_counts(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """n_c of every class in `y`, as floats, with absent classes at ABSENT_COUNT."""
    return torch.bincount(y, minlength=num_classes).float().clamp(min=ABSENT_COUNT)


def calibration(counts: torch.Tensor, tau: float) -> torch.Tensor:
    """The shift subtracted from each class's logit: tau * n_c^(-1/4)."""
    return tau * counts.pow(-0.25)


def calibrated_cross_entropy(logits: torch.Tensor, y: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(logits - shift, y)


class FedLCClient(FedAvgClient):
    def loss_fn(self, model: nn.Module, msg: Message):
        counts = label_counts(self.data.y_labeled, self.data.num_classes)
        shift = calibration(counts, float(self.cfg["algorithm.calibration_tau"])).to(self.device)
        return lambda m, x, y: calibrated_cross_entropy(m(x), y, shift)
