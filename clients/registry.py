"""Every client half, by name: the one place that lists them (the server side mirrors it)."""

from __future__ import annotations

from clients.base import ClientAlgorithm
from clients.fedavg import FedAvgClient
from clients.fedprox import FedProxClient

CLIENTS: dict[str, type[ClientAlgorithm]] = {
    "fedavg": FedAvgClient,
    "fedprox": FedProxClient,
    # Flower's server-side optimizers and robust aggregators train like FedAvg on the client.
    "fedavgm": FedAvgClient,
    "fedadam": FedAvgClient,
    "fedyogi": FedAvgClient,
    "fedtrimmedavg": FedAvgClient,
    "krum": FedAvgClient,
    "fedmedian": FedAvgClient,
}
