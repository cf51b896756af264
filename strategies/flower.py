"""Flower's own strategies, used as they are, with seeded, stable-id client sampling mixed in."""

from __future__ import annotations

from flwr.serverapp import strategy as flwr_strategy

from strategies.sampling import StableClients


class FedAvg(StableClients, flwr_strategy.FedAvg):
    pass


class FedProx(StableClients, flwr_strategy.FedProx):
    pass


class FedAvgM(StableClients, flwr_strategy.FedAvgM):
    pass


class FedAdam(StableClients, flwr_strategy.FedAdam):
    pass


class FedYogi(StableClients, flwr_strategy.FedYogi):
    pass


class FedTrimmedAvg(StableClients, flwr_strategy.FedTrimmedAvg):
    pass


class FedMedian(StableClients, flwr_strategy.FedMedian):
    pass


class Krum(StableClients, flwr_strategy.Krum):
    pass
