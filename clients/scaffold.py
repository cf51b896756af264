"""SCAFFOLD's client half (Karimireddy et al., ICML 2020): local SGD corrected by control variates.

The server sends its control variate c next to the model (the train message's record
`scaffold/c`); this client keeps its own c_i in `context.state["scaffold/c_i"]`, which the
ClientApp writes to the node's state-dir. Every local step follows g_i(y) - c_i + c: the loss gains
the linear term <c - c_i, y>, whose gradient is exactly that correction. After the K local steps,
option II: c_i+ = c_i - c + (x - y) / (K lr). The reply is y, with c_i+ - c_i under
`scaffold/c.<parameter>` in the same record (strategies/scaffold.py takes it out of the mean).

Choices where the paper is silent: control variates cover the parameters only (BatchNorm
statistics travel and are averaged as under FedAvg); the correction enters the optimizer like a
gradient (so `train.momentum` and `train.weight_decay` act on it too); K lr uses `train.lr` also with
momentum; c and c_i are zero until first set (the server sends no `scaffold/c` before its first
aggregation); a client with no sample takes no step and keeps its c_i.
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Message
from torch import nn

from flowerbed.clients.fedavg import FedAvgClient
from flowerbed.tasks.records import tensor_record, tensors

CONTROL = "scaffold/c"  # the server's c: a record of the train message
OWN = "scaffold/c_i"  # this client's c_i: a record of context.state
DELTA = "scaffold/c."  # prefix of c_i+ - c_i's entries in the reply's record


class ScaffoldClient(FedAvgClient):
    def fit(self, model: nn.Module, msg: Message) -> dict:
        start = {n: p.detach().clone() for n, p in model.named_parameters()}
        c, c_i = self.variate(msg.content, CONTROL, start), self.variate(self.context.state, OWN, start)
        self.correction = {n: c[n] - c_i[n] for n in start}
        metrics = super().fit(model, msg)
        steps, lr = len(self.plan(msg)), float(self.cfg["train.lr"])
        new_c_i = {n: c_i[n] - c[n] + (start[n] - p.detach()) / (steps * lr) if steps else c_i[n] for n, p in model.named_parameters()}
        self.delta = {DELTA + n: new_c_i[n] - c_i[n] for n in start}
        self.context.state[OWN] = ArrayRecord({n: v.cpu() for n, v in new_c_i.items()})
        return metrics

    def variate(self, records, key: str, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A control variate from a message's or the state's record, zero where it has no entry."""
        held = tensors(records[key]) if key in records.array_records else {}
        return {n: held[n].to(self.device) if n in held else torch.zeros_like(t) for n, t in like.items()}

    def loss_fn(self, model: nn.Module, msg: Message):
        correction = [self.correction[n] for n, _ in model.named_parameters()]
        task_loss = super().loss_fn(model, msg)

        def corrected(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return task_loss(m, x, y) + sum((d * p).sum() for d, p in zip(correction, m.parameters()))

        return corrected

    def reply_arrays(self, model: nn.Module) -> ArrayRecord:
        record = super().reply_arrays(model)
        for key, array in tensor_record(self.delta).items():
            record[key] = array
        return record
