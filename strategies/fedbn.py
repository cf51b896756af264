"""FedBN's server half (Li et al., ICLR 2021): FedAvg over everything but BatchNorm.

The server sends and averages every array except the BatchNorm layers' (`tasks.models.
batchnorm_keys`: affine weight and bias, running statistics), which each client keeps. Its own
copy of those stays at the starting values (the seed's, or model.init's), only so that the checkpoint holds a whole model;
a model assembled from it is nobody's, so the loop's central evaluation is skipped
(`central_evaluation` hook) and the metric is per-client accuracy on each client's own test set.

A run that starts from given weights (`model.init`, e.g. a model `flowerbed pretrain` trained)
also sends their BatchNorm layers, as a second record `batchnorm` next to the arrays: a client
that has none of its own yet starts from them, as FedBN's clients start from one shared model.
Without `model.init` they are the seed's initial layers, which a client builds itself, so they do
not travel. The arrays that clients train and return, and their averaging, stay without BatchNorm.
"""

from __future__ import annotations

from flwr.app import ArrayRecord

from flowerbed.strategies.flower import FedAvg
from flowerbed.strategies.sampling import no_central_evaluation
from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.models import BATCHNORM_RECORD, batchnorm_keys


class FedBN(FedAvg):
    _held: ArrayRecord | None = None  # the whole global arrays of the round in progress

    def __init__(self, send_batchnorm: bool = False, **common) -> None:
        super().__init__(**common)
        self.send_batchnorm = send_batchnorm

    def with_batchnorm(self, messages, arrays: ArrayRecord):
        """The messages, carrying the starting BatchNorm layers too if this run sends them."""
        messages = list(messages)
        if self.send_batchnorm:
            local = ArrayRecord({k: arrays[k] for k in self.local_keys(arrays)})
            for msg in messages:  # the messages of a round may share one content: set once, counted per message
                msg.content[BATCHNORM_RECORD] = local
        return messages

    def central_evaluation(self, evaluate):
        """The loop's hook: no global model to score (its BatchNorm layers are nobody's)."""
        return lambda arrays: {}

    def central_evaluate_fn(self, evaluate_fn):
        """The same under Flower's `Strategy.start`: `evaluate_fn` is not called."""
        return no_central_evaluation(type(self).__name__, "its BatchNorm layers stay on the clients")

    def local_keys(self, arrays: ArrayRecord) -> set[str]:
        """The keys the clients keep: the model's BatchNorm layers."""
        return set(batchnorm_keys(arrays.keys()))

    def shared(self, arrays: ArrayRecord) -> ArrayRecord:
        """What travels: the arrays without BatchNorm layers."""
        local = self.local_keys(arrays)
        if not local:
            raise ConfigError.invalid("model.name", "(this model)", "a model with BatchNorm layers for FedBN and FRAug (cnn_bn, resnet8, ...)")
        return ArrayRecord({k: v for k, v in arrays.items() if k not in local})

    def configure_train(self, server_round, arrays, config, grid):
        self._held = arrays
        return self.with_batchnorm(super().configure_train(server_round, self.shared(arrays), config, grid), arrays)

    def evaluated(self, arrays: ArrayRecord) -> ArrayRecord:
        """What an evaluation message carries."""
        return self.shared(arrays)

    def configure_evaluate(self, server_round, arrays, config, grid):
        return self.with_batchnorm(super().configure_evaluate(server_round, self.evaluated(arrays), config, grid), arrays)

    def aggregate_train(self, server_round, replies):
        arrays, metrics = super().aggregate_train(server_round, replies)
        held, self._held = self._held, None  # not worth a place in the checkpoint
        if arrays is not None and held is not None:
            arrays = ArrayRecord({**{k: arrays[k] if k in arrays else v for k, v in held.items()},
                                  **{k: v for k, v in arrays.items() if k not in held}})
        return arrays, metrics


def options(cfg: dict) -> dict:
    return {"send_batchnorm": bool(cfg.get("model.init"))}
