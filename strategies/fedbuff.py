"""FedBuff's server half (Nguyen, Malik, Zhan, Yousefpour, Rabbat, Malek, Huba: "Federated Learning
with Buffered Asynchronous Aggregation", AISTATS 2022).

Clients train on whichever global model the server holds when they start (server/asynchronous.py);
each reply's update d_i = w_client - w_sent is weighted by s(staleness) = (1 + staleness)^-a
(a = `algorithm.staleness_exponent`, 0.5: the paper's 1/sqrt(1 + staleness)) and buffered; once
`algorithm.buffer_size` (K) updates are in the buffer the server steps

    w <- w + eta_g * (1/K) sum_i s(t_i) d_i      (eta_g = algorithm.server_lr)

and empties it. Each step is one server update (one metrics line).

Choices where the paper is silent or gives options:
- Updates are averaged with equal weights, as in the paper's algorithm, not by sample counts.
- Integer arrays (e.g. BatchNorm's batch counter) take the last buffered client's value.
- The client half is FedAvg's local SGD (clients/fedavg.py): FedBuff changes the server only.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from flowerbed.strategies.fedasync import AsynchronousServer, polynomial, reply_tensors
from flowerbed.tasks.records import tensor_record, tensors


class FedBuff(AsynchronousServer):
    def __init__(self, buffer_size: int, server_lr: float, staleness_exponent: float, concurrency: int, **common) -> None:
        super().__init__(**common)
        self.buffer_size, self.server_lr = buffer_size, server_lr
        self.staleness_exponent, self.concurrency = staleness_exponent, concurrency
        self.buffer: OrderedDict[str, torch.Tensor] | None = None  # sum of the weighted updates so far
        self.buffered = 0

    def receive(self, reply, sent, current, staleness):
        weight = polynomial(staleness, self.staleness_exponent)
        client, base = reply_tensors(reply), tensors(sent)
        if self.buffer is None:
            self.buffer = OrderedDict((k, torch.zeros_like(v, dtype=torch.float64) if v.is_floating_point() else v)
                                      for k, v in base.items())
        for k, v in base.items():
            new = client[k].to(v.device)
            self.buffer[k] = self.buffer[k] + weight * (new.double() - v.double()) if v.is_floating_point() else new.clone()
        self.buffered += 1
        if self.buffered < self.buffer_size:
            return None
        step = OrderedDict(
            (k, (w.double() + self.server_lr * self.buffer[k] / self.buffered).to(w.dtype) if w.is_floating_point() else self.buffer[k])
            for k, w in tensors(current).items())
        self.buffer, self.buffered = None, 0
        return tensor_record(step)


def options(cfg: dict) -> dict:
    return {"buffer_size": int(cfg["algorithm.buffer_size"]), "server_lr": float(cfg["algorithm.server_lr"]),
            "staleness_exponent": float(cfg["algorithm.staleness_exponent"]), "concurrency": int(cfg["algorithm.concurrency"])}
