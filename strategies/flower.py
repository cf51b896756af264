"""Flower's own strategies, used as they are, with seeded, stable-id client sampling mixed in."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.serverapp import strategy as flwr_strategy

from strategies.sampling import StableClients


class ModelDtypes:
    """Flower's server optimizers (FedAdam, FedYogi) compute in float64 and return float64 arrays;
    the model goes back out in its own dtypes, so that a round sends the bytes FedAvg's does and
    every client loads exactly what the checkpoint holds."""

    def aggregate_train(self, server_round, replies):
        arrays, metrics = super().aggregate_train(server_round, replies)
        if arrays is not None and self.current_arrays:
            dtypes = {k: v.dtype for k, v in self.current_arrays.items()}
            arrays = ArrayRecord({k: Array(np.asarray(a.numpy(), dtype=dtypes[k])) for k, a in arrays.items()})
        return arrays, metrics


class FedAvg(StableClients, flwr_strategy.FedAvg):
    pass


class FedProx(StableClients, flwr_strategy.FedProx):
    pass


class FedAvgM(StableClients, flwr_strategy.FedAvgM):
    pass


class FedAdam(ModelDtypes, StableClients, flwr_strategy.FedAdam):
    pass


class FedYogi(ModelDtypes, StableClients, flwr_strategy.FedYogi):
    pass


class FedTrimmedAvg(StableClients, flwr_strategy.FedTrimmedAvg):
    pass


class FedMedian(StableClients, flwr_strategy.FedMedian):
    pass


class Krum(StableClients, flwr_strategy.Krum):
    pass
