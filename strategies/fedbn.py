"""FedBN's server half (Li et al., ICLR 2021): FedAvg over everything but BatchNorm.

The server sends and averages every array except the BatchNorm layers' (`tasks.models.
batchnorm_keys`: affine weight and bias, running statistics), which each client keeps. Its own
copy of those stays at the seed's initial values, only so that the checkpoint holds a whole model;
a model assembled from it is nobody's, so the loop's central evaluation is skipped
(`central_evaluation` hook) and the metric is per-client accuracy on each client's own test set.
"""

from __future__ import annotations

from flwr.app import ArrayRecord

from strategies.flower import FedAvg
from tasks.errors import ConfigError
from tasks.models import batchnorm_keys


class FedBN(FedAvg):
    _held: ArrayRecord | None = None  # the whole global arrays of the round in progress

    def central_evaluation(self, evaluate):
        """The loop's hook: no global model to score (its BatchNorm layers are nobody's)."""
        return lambda arrays: {}

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
        return super().configure_train(server_round, self.shared(arrays), config, grid)

    def evaluated(self, arrays: ArrayRecord) -> ArrayRecord:
        """What an evaluation message carries."""
        return self.shared(arrays)

    def configure_evaluate(self, server_round, arrays, config, grid):
        return super().configure_evaluate(server_round, self.evaluated(arrays), config, grid)

    def aggregate_train(self, server_round, replies):
        arrays, metrics = super().aggregate_train(server_round, replies)
        held, self._held = self._held, None  # not worth a place in the checkpoint
        if arrays is not None and held is not None:
            arrays = ArrayRecord({**{k: arrays[k] if k in arrays else v for k, v in held.items()},
                                  **{k: v for k, v in arrays.items() if k not in held}})
        return arrays, metrics
