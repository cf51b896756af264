"""FedLC's server half: FedAvg, unchanged (the calibration is all in the client's loss)."""

from __future__ import annotations

from flowerbed.strategies.flower import FedAvg


class FedLC(FedAvg):
    """A name for FedAvg in FedLC's role; nothing to override."""
