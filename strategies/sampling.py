"""Reproducible client sampling and reply screening, keyed by stable client ids.

Flower's strategies sample with the unseeded `random` module over node ids, which are random per
run. `StableClients` keeps Flower's message construction and aggregation, but chooses the clients
of round r from `Random(seed, r)` over sorted stable client ids (the partition id in simulation,
the configured `client-id` of a SuperNode), and aggregates replies in client-id order, so that
every engine sees the same clients and sums in the same order. Replies whose arrays hold NaN or
Inf, or whose update (reply minus global) has an L2 norm above `clients.max_update_norm`, are
rejected and counted, never averaged. A round with fewer usable replies than `min_train_nodes`
leaves the model as it was (`round_stats["short"]`); `aggregation` (strategies/robust.py)
optionally replaces the mean by a robust statistic.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord


class StableClients:
    """Mix in before a Flower strategy class: `class FedAvg(StableClients, flwr.FedAvg)`."""

    seed: int = 0
    client_of_node: dict[int, int]  # Flower node id -> stable client id, set by the server loop
    round_stats: dict[str, int]
    max_update_norm: float = 0.0  # 0: no bound
    aggregation = None  # a Flower strategy computing a robust model (strategies/robust.py), or None
    _global: ArrayRecord | None = None  # the arrays sent this round, to measure updates against

    def sample_clients(self, server_round: int, fraction: float, minimum: int, purpose: str) -> list[int]:
        """Node ids of the clients chosen for this round and purpose, in client-id order."""
        by_client = {c: n for n, c in self.client_of_node.items()}
        ids = sorted(by_client)
        size = min(len(ids), max(int(len(ids) * fraction), minimum))
        chosen = random.Random(f"{self.seed}/{server_round}/{purpose}").sample(ids, size)
        return [by_client[c] for c in sorted(chosen)]

    def _retarget(self, messages: Iterable[Message], node_ids: list[int]) -> list[Message]:
        """Send the content Flower built for one node to each chosen node instead."""
        messages = list(messages)
        if not messages:
            return []
        first = messages[0]
        return [Message(content=first.content, dst_node_id=n, message_type=first.metadata.message_type) for n in node_ids]

    def configure_train(self, server_round, arrays, config, grid):
        chosen = self.sample_clients(server_round, self.fraction_train, self.min_train_nodes, "train")
        self._global = arrays
        return self._retarget(super().configure_train(server_round, arrays, config, grid), chosen)

    def configure_evaluate(self, server_round, arrays, config, grid):
        chosen = self.sample_clients(server_round, self.fraction_evaluate, self.min_evaluate_nodes, "evaluate")
        return self._retarget(super().configure_evaluate(server_round, arrays, config, grid), chosen)

    def screen(self, replies: Iterable[Message]) -> list[Message]:
        """Replies in client-id order, without errors and non-finite updates (both counted)."""
        kept, failures, rejected, too_large = [], 0, 0, 0
        for msg in replies:
            if msg.has_error():
                failures += 1
            elif not all(_finite(rec) for rec in msg.content.array_records.values()):
                rejected += 1
            elif self.max_update_norm > 0 and update_norm(msg, self._global) > self.max_update_norm:
                rejected, too_large = rejected + 1, too_large + 1
            else:
                kept.append(msg)
        self.round_stats = {"failures": failures, "rejected": rejected, "rejected_norm": too_large}
        return sorted(kept, key=lambda m: self.client_of_node.get(m.metadata.src_node_id, 0))

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        kept = self.screen(replies)
        self._global = None  # measured; not worth a place in the checkpoint
        self.round_stats["short"] = int(len(kept) < self.min_train_nodes)
        if self.round_stats["short"]:
            return None, None  # too few usable replies: keep the model, the loop counts the round
        if self.aggregation is not None:
            from strategies.robust import robust_replies

            kept = robust_replies(self.aggregation, server_round, kept)
        return super().aggregate_train(server_round, kept)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return super().aggregate_evaluate(server_round, sorted(
            (m for m in replies if not m.has_error()), key=lambda m: self.client_of_node.get(m.metadata.src_node_id, 0)
        ))


def update_norm(reply: Message, sent: ArrayRecord | None) -> float:
    """L2 norm of (reply - global) over every float array the reply and the global model share."""
    total = 0.0
    for record in reply.content.array_records.values():
        for key, array in record.items():
            new = float_values(array)
            if new is None:
                continue
            old = float_values(sent[key]) if sent is not None and key in sent else None
            diff = new.astype(np.float64) - (old if old is not None else 0.0)
            total += float(np.dot(diff, diff))
    return float(np.sqrt(total))


def float_values(array: Array) -> np.ndarray | None:
    """A flat read-only view of a float Array's values, or None for integer arrays.

    `Array.numpy()` parses the .npy header with `ast.literal_eval` on every call, which made
    screening a 50-client round cost more than its training on a GPU; the header's length is all
    that is needed to view the values in place. Anything unexpected falls back to `numpy()`.
    """
    dtype = np.dtype(array.dtype)
    if dtype.kind != "f":
        return None
    data = array.data
    if data[:6] == b"\x93NUMPY" and data[6] in (1, 2, 3):
        size = 2 if data[6] == 1 else 4
        start = 8 + size + int.from_bytes(data[8 : 8 + size], "little")
        count = int(np.prod(array.shape, dtype=np.int64))
        header = data[:start].decode("latin1")
        if len(data) - start == count * dtype.itemsize and f"'descr': '{dtype.str}'" in header and "'fortran_order': False" in header:
            return np.frombuffer(data, dtype=dtype, count=count, offset=start)
    return array.numpy().ravel()


def _finite(record: ArrayRecord) -> bool:
    return all(np.isfinite(v).all() for v in map(float_values, record.values()) if v is not None)


def mean_over_clients(records, weighted_by_key: str) -> MetricRecord:
    """Unweighted mean of each scalar metric over clients (personalized accuracy is per client)."""
    totals: dict[str, list[float]] = {}
    for record in records:
        for metrics in record.metric_records.values():
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and key != weighted_by_key:
                    totals.setdefault(key, []).append(float(value))
    return MetricRecord({k: float(np.mean(v)) for k, v in totals.items()})
