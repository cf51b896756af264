"""The shape every model shares: `classifier(features(x))`.

Algorithms that treat the head apart from the body (FedRep, FedBABU, FedLoGe, pFedPG) find both
under the same names whichever architecture the run uses.
"""

from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    """A feature extractor and a linear head."""

    def __init__(self, features: nn.Module, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.classifier = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
