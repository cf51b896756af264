"""FedRoD's server half: FedAvg on (body, generic head).

The replies hold the body and the BSM-trained generic head; Flower's FedAvg averages them by
`num-examples`, as the paper does. The personal heads never arrive here, and `global/*` scores the
averaged generic model on the balanced test set.
"""

from __future__ import annotations

from flowerbed.strategies.flower import FedAvg


class FedRoD(FedAvg):
    """A name for FedAvg in FedRoD's role; nothing to override."""
