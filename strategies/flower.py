"""Flower's own strategies, used as they are, with seeded, stable-id client sampling mixed in.

The FedAvg family (FedAvg, FedProx, FedAvgM, FedAdam, FedYogi and the algorithms built on them)
averages through `DeviceMean`, which sits right above Flower's FedAvg in their class order: replies
that hold tensors (the in-process engines) are averaged on their device, the rest by Flower.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import strategy as flwr_strategy

from flowerbed.strategies.sampling import StableClients, sample_size
from flowerbed.tasks.records import is_tensor_backed, records_of, stacked, tensor_record, tensors


class DeviceMean(flwr_strategy.FedAvg):
    """Flower FedAvg's `aggregate_train`, on the device when every reply holds tensors.

    The arithmetic and its order are those of Flower's `aggregate_arrayrecords` (each reply times
    weight / total weight, summed in reply order, integer arrays in float64), so on a CPU the result
    is Flower's to the last bit; the server optimizers of FedAvgM/FedAdam/FedYogi then run on it as
    they are. The batched engine's replies are views of one stacked tensor per name and are summed
    from it directly. Replies that hold bytes go to Flower's own code.
    """

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        answered = [m.content for m in replies if m.has_content()]
        if not answered or not all(_one_tensor_record(c) for c in answered):
            return super().aggregate_train(server_round, replies)
        valid, _ = self._check_and_log_replies(replies, is_train=True)
        if not valid:
            return None, None
        contents = [m.content for m in valid]
        return weighted_mean(contents, self.weighted_by_key), self.train_metrics_aggr_fn(contents, self.weighted_by_key)


def _one_tensor_record(content: RecordDict) -> bool:
    records = records_of(content, ArrayRecord)
    return len(records) == 1 and is_tensor_backed(records[0])


def weighted_mean(contents: list[RecordDict], weight_key: str) -> ArrayRecord:
    """Flower's `aggregate_arrayrecords` on tensors: sum_k (w_k / sum w) * arrays_k, in reply order."""
    weights = [float(records_of(c, MetricRecord)[0][weight_key]) for c in contents]
    total = sum(weights)
    records = [records_of(c, ArrayRecord)[0] for c in contents]
    names = list(records[0].keys())
    found = stacked(records)

    def arrays(i: int) -> list[torch.Tensor]:
        held = [found[0][n][found[1][i]] for n in names] if found is not None else list(tensors(records[i]).values())
        return [t if t.is_floating_point() else t.double() for t in held]  # NumPy: int * float -> float64

    mean = torch._foreach_mul(arrays(0), weights[0] / total)
    for i in range(1, len(records)):
        torch._foreach_add_(mean, torch._foreach_mul(arrays(i), weights[i] / total))
    return tensor_record(OrderedDict(zip(names, mean)))


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


class FedAvg(StableClients, DeviceMean):
    pass


class FedProx(StableClients, flwr_strategy.FedProx, DeviceMean):
    pass


class FedAvgM(StableClients, flwr_strategy.FedAvgM, DeviceMean):
    pass


class FedAdam(ModelDtypes, StableClients, flwr_strategy.FedAdam, DeviceMean):
    pass


class FedYogi(ModelDtypes, StableClients, flwr_strategy.FedYogi, DeviceMean):
    pass


class FedTrimmedAvg(StableClients, flwr_strategy.FedTrimmedAvg):
    pass


class FedMedian(StableClients, flwr_strategy.FedMedian):
    pass


class Krum(StableClients, flwr_strategy.Krum):
    pass


class StepFromSent:
    """Mixed in before a FedAvg-family strategy whose new model is a step from the model it sent
    (FedNova, SCAFFOLD, FedDyn): `step(sent, mean, metrics)` gets this round's sent arrays and the
    screened replies' weighted mean, and returns the new global arrays. The sent arrays are
    dropped after the round (not worth a place in the checkpoint)."""

    sent: ArrayRecord | None = None

    def configure_train(self, server_round, arrays, config, grid):
        self.sent = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        mean, metrics = super().aggregate_train(server_round, replies)
        sent, self.sent = self.sent, None
        if mean is None or sent is None:
            return mean, metrics
        return self.step(sent, mean, metrics), metrics

    def step(self, sent: ArrayRecord, mean: ArrayRecord, metrics: MetricRecord) -> ArrayRecord:
        raise NotImplementedError

    def participation(self) -> float:
        """|S| / N: the share of all the clients whose replies this round's mean holds (in `step`)."""
        clients = len(self.client_of_node)
        sampled = sample_size(clients, self.fraction_train, self.min_train_nodes)
        return (sampled - self.round_stats["failures"] - self.round_stats["rejected"]) / clients


def is_float(array: Array) -> bool:
    return np.dtype(array.dtype).kind == "f"
