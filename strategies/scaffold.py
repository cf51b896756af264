"""SCAFFOLD's server half: the global step with lr_g, and the server control variate c.

Each train message carries c (record `scaffold/c`, from the first aggregation on); each reply holds
the client's model y_i and its control change dc_i (entries `scaffold/c.<parameter>`) in one
record, which FedAvg's mean averages by num-examples (p_i = n_i / sum over the replies). Then
x <- x + lr_g (sum p_i y_i - x) and c <- c + (|S| / N) sum p_i dc_i, with |S| the replies
aggregated and N the number of clients (`participation()`). c is an attribute, so the round's checkpoint holds it.

Choice where the paper is silent: the paper's means over S are unweighted; here both are weighted by
samples, as FedAvg's is, so that with every control variate zero SCAFFOLD is flowerbed's FedAvg and,
with every client taking part, c is sum_i p_i c_i, the control variate of the sample-weighted objective.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

from flowerbed.strategies.flower import FedAvg, StepFromSent, is_float
from flowerbed.tasks.records import tensor_record

CONTROL = "scaffold/c"  # the record of c in a train message (clients/scaffold.py reads it)
DELTA = "scaffold/c."  # the prefix of dc_i's entries in a reply


class Scaffold(StepFromSent, FedAvg):
    def __init__(self, server_lr: float, **common) -> None:
        super().__init__(**common)
        self.server_lr = server_lr
        self.c: dict[str, np.ndarray] = {}

    def configure_train(self, server_round, arrays, config, grid):
        messages = list(super().configure_train(server_round, arrays, config, grid))
        if self.c:
            control = tensor_record({k: torch.from_numpy(v) for k, v in self.c.items()})  # bytes only where sent over a wire
            for msg in messages:  # the messages of a round may share one content
                msg.content[CONTROL] = control
        return messages

    def step(self, sent, mean, metrics):
        stepped = ArrayRecord()
        for key, array in mean.items():
            if key.startswith(DELTA):
                continue
            if self.server_lr == 1 or not is_float(array):  # x + 1 (mean - x) is the mean itself
                stepped[key] = array
            else:
                w = sent[key].numpy()
                stepped[key] = Array(w + self.server_lr * (array.numpy() - w))
        share = self.participation()
        for key, array in mean.items():
            if key.startswith(DELTA):
                name = key.removeprefix(DELTA)
                self.c[name] = self.c.get(name, 0.0) + share * array.numpy()
        return stepped
