"""FedAsync's server half (Xie, Koyejo, Gupta: "Asynchronous Federated Optimization", 2019).

Clients train on whichever global model the server holds when they start (server/asynchronous.py
sends and receives); the server mixes each reply in as it arrives:

    w <- (1 - alpha_s) w + alpha_s w_client,   alpha_s = alpha * s(staleness),   s(t) = (1 + t)^-a

where the staleness t is how many server updates happened since the client's model was sent, and
s is the paper's polynomial staleness function (`algorithm.staleness_exponent` a, 0.5 by default;
`algorithm.mixing` alpha, 0.6 by default). Every reply is one server update (one metrics line).

Choices where the paper is silent or gives options:
- The polynomial s(t) of the paper's three (constant, polynomial, hinge): one knob, no threshold.
- Integer arrays (e.g. BatchNorm's batch counter) take the client's value: they are not averaged.
- The client half is FedAvg's (clients/fedavg.py), without FedAsync's proximal term in local
  training, so that the comparison with FedAvg and FedBuff is about the server alone.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict

from flowerbed.strategies.flower import FedAvg
from flowerbed.tasks.records import tensor_record, tensors


def polynomial(staleness: int, exponent: float) -> float:
    """s(t) = (1 + t)^-a: 1 for a fresh update, smaller the staler it is."""
    return (1.0 + staleness) ** -exponent


def reply_tensors(reply: Message) -> OrderedDict[str, torch.Tensor]:
    """The reply's one array record as tensors (FedAvg-shaped client halves send one)."""
    return tensors(next(iter(reply.content.array_records.values())))


class AsynchronousServer(FedAvg):
    """What the asynchronous loop asks of a strategy: a training message for one client, and what
    an arriving reply does to the global model (`receive`, None while nothing changes)."""

    asynchronous = True
    concurrency: int = 0  # clients training at once; 0: as many as a synchronous round trains

    def train_message(self, server_round: int, arrays: ArrayRecord, node_id: int) -> Message:
        """The message Flower's FedAvg would send, for one node; `server_round` counts the server's
        sends (server/asynchronous.py), so a client's seeded batches differ from one send to the next."""
        content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: ConfigRecord({"server-round": server_round})})
        return Message(content=content, dst_node_id=node_id, message_type=MessageType.TRAIN)

    def receive(self, reply: Message, sent: ArrayRecord, current: ArrayRecord, staleness: int) -> ArrayRecord | None:
        raise NotImplementedError


class FedAsync(AsynchronousServer):
    def __init__(self, mixing: float, staleness_exponent: float, concurrency: int, **common) -> None:
        super().__init__(**common)
        self.mixing, self.staleness_exponent, self.concurrency = mixing, staleness_exponent, concurrency

    def receive(self, reply, sent, current, staleness):
        alpha = self.mixing * polynomial(staleness, self.staleness_exponent)
        client = reply_tensors(reply)
        mixed = OrderedDict(
            (k, torch.lerp(w, client[k].to(w.device, w.dtype), alpha) if w.is_floating_point() else client[k].clone())
            for k, w in tensors(current).items())
        return tensor_record(mixed)


def options(cfg: dict) -> dict:
    return {"mixing": float(cfg["algorithm.mixing"]), "staleness_exponent": float(cfg["algorithm.staleness_exponent"]),
            "concurrency": int(cfg["algorithm.concurrency"])}
