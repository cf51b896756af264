"""FedAvg+UDA's client half: UDA (Xie, Dai, Hovy, Luong, Le: "Unsupervised Data Augmentation for
Consistency Training", NeurIPS 2020) run locally, FedAvg on the server; a semi-supervised baseline
beside FedAvg+FixMatch (clients/fixmatch.py), whose local loop, batches and views it shares.

Each step adds to the labeled cross-entropy `algorithm.lambda_u` times a consistency term on an
unlabeled batch: the model's prediction on the weak view, without gradient, sharpened to
softmax(z / T) (T = `algorithm.uda_temperature`), is the target of the prediction on the strong
view, through KL(target || student). Only samples whose unsharpened top probability exceeds
`algorithm.uda_threshold` count (confidence masking); the term is averaged over the whole batch.
Where FixMatch learns a hard label, UDA learns the sharpened distribution: as T -> 0 the two agree.

Choices where the paper is silent or differs from this setting:
- the target comes from FixMatch's weak view (a small random translation), not the unaugmented
  image, so the two baselines differ only in their unlabeled term; the student sees the same
  tensor-level RandAugment(1, 10) as FixMatch's (clients/augment.py), not UDA's AutoAugment+Cutout;
- T = 0.4 and threshold 0.8, the paper's CIFAR-10 values; no Training Signal Annealing (the paper
  uses it for its smallest labeled sets; off, as FixMatch's comparison runs UDA);
- one unlabeled batch of the labeled batch's size per step (the paper uses a larger unlabeled
  batch); the reply weighs the client by all its samples, as FixMatch's does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flowerbed.clients.fixmatch import FixMatchClient


def consistency(teacher: torch.Tensor, student: torch.Tensor, temperature: float, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """UDA's masked KL(softmax(teacher / T) || softmax(student)), averaged over the batch, and the mask."""
    mask = F.softmax(teacher, dim=1).max(dim=1).values > threshold
    target = F.softmax(teacher / temperature, dim=1)
    kl = F.kl_div(F.log_softmax(student, dim=1), target, reduction="none").sum(dim=1)
    return (kl * mask).mean(), mask


class UDAClient(FixMatchClient):
    name = "uda"

    def unlabeled_term(self, teacher: torch.Tensor, student: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return consistency(teacher, student, float(self.cfg["algorithm.uda_temperature"]), float(self.cfg["algorithm.uda_threshold"]))
