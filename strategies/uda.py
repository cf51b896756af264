"""FedAvg+UDA's server half: FedAvg, unchanged (UDA is local training; the reply weighs each
client by all its samples, labeled and unlabeled, as FedAvg+FixMatch's does)."""

from __future__ import annotations

from flowerbed.strategies.flower import FedAvg


class UDA(FedAvg):
    """A name for FedAvg in UDA's role; nothing to override."""
