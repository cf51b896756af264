"""FedLabel's server half: FedAvg, unchanged.

Algorithm 1 (line 9) updates w <- w + sum_k r_k / sum r * delta_k. Each client replies with
w + delta_k and num-examples = r_k (labeled + accepted pseudo-labeled samples this round), and the
weights sum to one, so Flower's weighted average computes exactly that rule (spec note N7).
FedAvg+FixMatch uses the same server half.
"""

from __future__ import annotations

from flowerbed.strategies.flower import FedAvg


class FedLabel(FedAvg):
    """A name for FedAvg in FedLabel's role; nothing to override."""
