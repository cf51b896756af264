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

flowerbed's loop (server/loop.py) asks every node for its stable id and sets `client_of_node`.
Under Flower's own `Strategy.start` nobody does: each round's connected nodes are then their own
clients (node id = client id, after Flower's wait for `min_available_nodes`), so a strategy works in
any ServerApp with any ClientApp that speaks its messages. What only the loop can do (stop at a
privacy budget, run SecAgg+) is refused by `start` in one line instead of being skipped.

Replies that hold tensors (the in-process engines, tasks/records.py) are screened on their device
in one pass: the batched engine's per stacked array, separate replies with one foreach norm over
all their arrays; updates in float64; one host copy of the per-reply results. Replies that hold
bytes are read in place (`float_values`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from logging import WARNING

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp.strategy.strategy_utils import sample_nodes, validate_message_reply_consistency

from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.records import TensorArray, is_tensor_backed, readdressed, records_of, stacked, tensors


class StableClients:
    """Mix in before a Flower strategy class: `class FedAvg(StableClients, flwr.FedAvg)`."""

    seed: int = 0
    client_of_node: dict[int, int] | None = None  # Flower node id -> stable client id, set by the server loop
    clients_from_grid: bool = False  # True once `client_of_node` is read from the grid each round (Strategy.start)
    round_stats: dict[str, int] = {}
    max_update_norm: float = 0.0  # 0: no bound
    aggregation = None  # a Flower strategy computing a robust model (strategies/robust.py), or None
    privacy = None  # differential privacy / secure aggregation (strategies/privacy.py), or None
    _global: ArrayRecord | None = None  # the arrays sent this round, to measure updates against
    offline: frozenset[int] = frozenset()  # client ids the virtual clock says are away: not chosen to train
    over_select: float = 0.0  # train: choose (1 + over_select) times the round's size (server/clock.py keeps the first)

    def start(self, grid, initial_arrays, num_rounds=3, timeout=3600, train_config=None, evaluate_config=None, evaluate_fn=None):
        """Flower's `Strategy.start`, after a check of what it cannot do without flowerbed's loop, with
        `evaluate_fn` as this strategy's central evaluation (`central_evaluate_fn`)."""
        check_start(self, initial_arrays)
        evaluate_fn = self.central_evaluate_fn(evaluate_fn) if evaluate_fn is not None else None
        return super().start(grid, initial_arrays, num_rounds, timeout, train_config, evaluate_config, evaluate_fn)

    def central_evaluate_fn(self, evaluate_fn):
        """Flower's `evaluate_fn(round, arrays)` as this strategy scores its global model (FedLoGe: three)."""
        return evaluate_fn

    def known_clients(self, grid) -> dict[int, int]:
        """`client_of_node`; when no loop set it, every connected node as its own client (read each
        round, after Flower's wait until `min_available_nodes` are connected)."""
        if self.client_of_node is None or self.clients_from_grid:
            sample_nodes(grid, self.min_available_nodes, 0)
            self.client_of_node, self.clients_from_grid = {n: n for n in grid.get_node_ids()}, True
        return self.client_of_node

    def sample_clients(self, server_round: int, fraction: float, minimum: int, purpose: str) -> list[int]:
        """Node ids of the clients chosen for this round and purpose, in client-id order."""
        by_client = {c: n for n, c in (self.client_of_node or {}).items() if purpose != "train" or c not in self.offline}
        ids = sorted(by_client)
        size = sample_size(len(ids), fraction, minimum)
        if purpose == "train" and self.over_select > 0:
            size = min(len(ids), math.ceil(size * (1 + self.over_select)))
        chosen = random.Random(f"{self.seed}/{server_round}/{purpose}").sample(ids, size)
        return [by_client[c] for c in sorted(chosen)]

    def _retarget(self, messages: Iterable[Message], node_ids: list[int]) -> list[Message]:
        """Send the content Flower built for one node to each chosen node instead."""
        messages = list(messages)
        if not messages:
            return []
        if [m.metadata.dst_node_id for m in messages] == node_ids:  # built for them (`_construct_messages`)
            return messages
        first = messages[0]
        return [Message(content=first.content, dst_node_id=n, message_type=first.metadata.message_type) for n in node_ids]

    def _check_and_log_replies(self, replies, is_train, validate=True):
        """Flower's, with its consistency check run on `ReplyRecords` (Flower's own check, which
        would build four synced record views per reply otherwise)."""
        valid, errors = super()._check_and_log_replies(replies, is_train, validate=False)
        if validate and valid:
            validate_message_reply_consistency([ReplyRecords(m.content) for m in valid], self.weighted_by_key, is_train)
        return valid, errors

    def _construct_messages(self, record, node_ids, message_type):
        """Flower's FedAvg family builds its messages here: for the nodes this class chose, not
        for the ones Flower sampled (`_retarget` rebuilds them where a strategy does not come here).
        Flower builds the first; the others are its copies addressed to their nodes (a Message
        checks every argument when it is built: 12 µs, twice per client and round)."""
        chosen = getattr(self, "_chosen", None)
        node_ids = list(chosen if chosen is not None else node_ids)
        if not node_ids:
            return []
        first = list(super()._construct_messages(record, node_ids[:1], message_type))[0]
        return [first, *(readdressed(first, node) for node in node_ids[1:])]

    def configure_train(self, server_round, arrays, config, grid):
        self.known_clients(grid)
        chosen = self._chosen = self.sample_clients(server_round, self.fraction_train, self.min_train_nodes, "train")
        self._global = arrays
        if self.privacy is not None:  # may add to `config` (the clipping norm for client-side clipping)
            self.privacy.configure(server_round, arrays, config, grid, [self.client_of_node[n] for n in chosen])
        try:
            return self._retarget(super().configure_train(server_round, arrays, config, grid), chosen)
        finally:
            self._chosen = None

    def configure_evaluate(self, server_round, arrays, config, grid):
        self.known_clients(grid)
        chosen = self._chosen = self.sample_clients(server_round, self.fraction_evaluate, self.min_evaluate_nodes, "evaluate")
        try:
            return self._retarget(super().configure_evaluate(server_round, arrays, config, grid), chosen)
        finally:
            self._chosen = None

    def screen(self, replies: Iterable[Message]) -> list[Message]:
        """Replies in client-id order, without errors and non-finite updates (both counted)."""
        replies = list(replies)
        answered = [m for m in replies if not m.has_error()]
        bound = self.max_update_norm
        kept, failures, rejected, too_large = [], len(replies) - len(answered), 0, 0
        for msg, (finite, norm) in zip(answered, reply_checks(answered, self._global, bound > 0)):
            if not finite:
                rejected += 1
            elif bound > 0 and norm > bound:
                rejected, too_large = rejected + 1, too_large + 1
            else:
                kept.append(msg)
        self.round_stats = {"failures": failures, "rejected": rejected, "rejected_norm": too_large}
        return self.in_client_order(kept)

    def in_client_order(self, replies: Iterable[Message]) -> list[Message]:
        """The replies sorted by their stable client ids (the order every engine aggregates in)."""
        return sorted(replies, key=lambda m: self.client_of_node.get(m.metadata.src_node_id, 0))

    def aggregate_train(self, server_round: int, replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        kept = self.screen(replies)
        self._global = None  # measured; not worth a place in the checkpoint
        self.round_stats["short"] = int(len(kept) < self.min_train_nodes)
        if self.round_stats["short"]:
            return None, None  # too few usable replies: keep the model, the loop counts the round
        if self.aggregation is not None:
            from flowerbed.strategies.robust import robust_replies

            kept = robust_replies(self.aggregation, server_round, kept)
        if self.privacy is not None:
            kept = self.privacy.privatize(server_round, kept)
            if kept is None:
                return None, None  # nothing released this round
        return super().aggregate_train(server_round, kept)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return super().aggregate_evaluate(server_round, self.in_client_order(m for m in replies if not m.has_error()))


class ReplyRecords(dict):
    """A reply's records by name, with RecordDict's `array_records` and `metric_records` views made
    once, as plain dicts (read-only use: Flower's `validate_message_reply_consistency`)."""

    def __init__(self, content) -> None:
        super().__init__(content.items())
        self.array_records = {k: v for k, v in self.items() if isinstance(v, ArrayRecord)}
        self.metric_records = {k: v for k, v in self.items() if isinstance(v, MetricRecord)}


def check_start(strategy: StableClients, initial_arrays) -> None:
    """One line for what `Strategy.start` would otherwise get wrong silently: no model to train, a
    privacy budget nothing would enforce, SecAgg+ rounds only flowerbed's loop runs."""
    name = type(strategy).__name__
    if not isinstance(initial_arrays, ArrayRecord) or (not len(initial_arrays) and getattr(strategy, "has_global_model", True)):
        raise ConfigError(f"{name}.start(initial_arrays=...) needs the global model's weights, e.g. "
                          f"ArrayRecord(model.state_dict()); got {type(initial_arrays).__name__} with "
                          f"{len(initial_arrays) if isinstance(initial_arrays, ArrayRecord) else 0} arrays")
    settings = getattr(strategy.privacy, "settings", None)
    if settings is not None and settings.target_epsilon is not None:
        raise ConfigError(f"privacy.target_epsilon={settings.target_epsilon:g} needs flowerbed's round loop to stop at the budget; "
                          f"{name}.start would run past it (leave it out, or run with `flowerbed run`)")
    if settings is not None and settings.secagg:
        raise ConfigError(f"privacy.secagg=true needs flowerbed's round loop (server/loop.py runs SecAgg+); {name}.start "
                          "would send the updates in the clear (leave it out, or run with `flowerbed run`)")


def no_central_evaluation(name: str, why: str):
    """An `evaluate_fn` for a strategy with no global model: says so once, scores nothing."""
    log(WARNING, "%s: evaluate_fn is not called (%s); see the clients' personal/acc", name, why)
    return lambda server_round, arrays: None


def reply_checks(replies: list[Message], sent: ArrayRecord | None, with_norm: bool) -> list[tuple[bool, float]]:
    """Per reply: are all its float values finite, and (`with_norm`) the L2 norm of reply - `sent`."""
    records = [records_of(m.content, ArrayRecord) for m in replies]
    on_device = [i for i, r in enumerate(records) if len(r) == 1 and is_tensor_backed(r[0])]
    device_side = set(on_device)
    out = [None if i in device_side else (all(_finite(rec) for rec in recs), update_norm(m, sent) if with_norm else 0.0)
           for i, (m, recs) in enumerate(zip(replies, records))]
    if on_device:
        for i, result in zip(on_device, _tensor_checks([records[i][0] for i in on_device], sent, with_norm)):
            out[i] = result
    return out  # type: ignore[return-value]


def _tensor_checks(records: list[ArrayRecord], sent: ArrayRecord | None, with_norm: bool) -> list[tuple[bool, float]]:
    """`reply_checks` on the replies' device, one copy of the results to the host. The batched
    engine's replies are checked over their stacked tensors, whose rows are then picked; separate
    replies with one foreach over all their arrays, never copied into one."""
    base = tensors(sent) if with_norm and sent is not None else {}
    names = [k for k, t in tensors(records[0]).items() if t.is_floating_point()]
    if not names:
        return [(True, 0.0)] * len(records)
    found = stacked(records)
    if found is None:
        ok, squares = _separate_checks([[r[n].tensor for n in names] for r in records], [base.get(n) for n in names], with_norm)
    else:
        pick = torch.as_tensor(found[1], device=found[0][names[0]].device)
        rows = [found[0][n].reshape(len(found[0][n]), -1) for n in names]
        ok = torch.stack([_finite_rows(r)[pick] for r in rows]).all(0)
        squares = torch.stack([_update_squares(r, base.get(n))[pick] for r, n in zip(rows, names)]).sum(0) if with_norm else None
    norms = squares.sqrt().cpu().tolist() if squares is not None else [0.0] * len(records)
    return list(zip(ok.cpu().tolist(), norms))


def _separate_checks(arrays: list[list[torch.Tensor]], sent: list[torch.Tensor | None], with_norm: bool):
    """Per reply (rows of `arrays`, one tensor per name): all values finite, and the squared norm
    of the update against `sent`. Through the arrays' L2 norms, one foreach call over all replies:
    a NaN or Inf anywhere makes the norm NaN or Inf. Per-array Python calls (a sum, an isfinite)
    cost five times more on a small model's 50 replies."""
    flat = [t for row in arrays for t in row]
    ok = _overflow_checked(_norms(flat).isfinite(), flat).view(len(arrays), -1).all(1)
    if not with_norm:
        return ok, None
    updates = [t.double() - (old.to(t.device).double() if old is not None else 0.0) for row in arrays for t, old in zip(row, sent)]
    return ok, _norms(updates).square().view(len(arrays), -1).sum(1)


def _norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    """[len(tensors)] L2 norms, one foreach call, on the first tensor's device."""
    norms = torch._foreach_norm(tensors)
    device = tensors[0].device
    return torch.stack(norms if all(t.device == device for t in tensors) else [n.to(device) for n in norms])


def _finite_rows(rows: torch.Tensor) -> torch.Tensor:
    """[rows] booleans: is every value of the row finite. On a CPU through the row sums (a NaN or
    Inf anywhere makes the sum NaN or Inf), which is several times faster there than an
    elementwise isfinite."""
    if rows.device.type != "cpu":
        return torch.isfinite(rows).all(1)
    return _overflow_checked(torch.isfinite(rows.sum(1)), rows)


def _overflow_checked(ok: torch.Tensor, values) -> torch.Tensor:
    """`ok` from sums or norms of `values[i]`; where one is not finite, whether the values are
    (a sum or norm of finite values can overflow)."""
    for i in (~ok).nonzero().flatten().tolist():
        ok[i] = bool(torch.isfinite(values[i]).all())
    return ok


def _update_squares(rows: torch.Tensor, sent: torch.Tensor | None) -> torch.Tensor:
    """[rows] squared float64 norms of each row minus `sent`."""
    old = sent.reshape(1, -1).to(rows.device).double() if sent is not None else 0.0
    return (rows.double() - old).square().sum(1)


def sample_size(num_clients: int, fraction: float, minimum: int) -> int:
    """How many clients a round samples: a fraction, at least `minimum`, at most all."""
    return min(num_clients, max(int(num_clients * fraction), minimum))


def update_norm(reply: Message, sent: ArrayRecord | None) -> float:
    """L2 norm of (reply - global) over every float array the reply and the global model share."""
    total = 0.0
    for record in records_of(reply.content, ArrayRecord):
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
    if isinstance(array, TensorArray) and array.tensor is not None:  # no bytes made just to read them
        return array.numpy().ravel()
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
    """Unweighted mean of each scalar metric over the clients that have a local test set.

    Personalized accuracy is per client, and the papers report the mean of the clients' accuracies,
    so clients are not weighted by their test samples. A client with none (`weighted_by_key` 0: a
    small client's share of the test set rounds to nothing) has no accuracy to report, and counting
    its 0.0 would pull the mean down (issue 31, defect 5): it is left out.
    """
    totals: dict[str, list[float]] = {}
    for record in records:
        if not has_test_samples(record, weighted_by_key):
            continue
        for metrics in records_of(record, MetricRecord):
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and key != weighted_by_key:
                    totals.setdefault(key, []).append(float(value))
    return MetricRecord({k: float(np.mean(v)) for k, v in totals.items()})


def has_test_samples(record, weighted_by_key: str = "num-examples") -> bool:
    """Whether an evaluation reply's metrics come from at least one sample (a reply without the key counts)."""
    return all(float(metrics.get(weighted_by_key, 1)) > 0 for metrics in records_of(record, MetricRecord))
