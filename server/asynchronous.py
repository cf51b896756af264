"""Asynchronous rounds: clients start on whichever model the server holds, the server applies
replies as they arrive (FedBuff, FedAsync: strategies/fedbuff.py, strategies/fedasync.py).

`algorithm.concurrency` clients (0: as many as a synchronous round samples) are kept training;
whenever one replies (or fails), the server hands the strategy its reply and the staleness (how
many server updates happened since its model was sent), then sends the then-current model to a
client that is idle and online, drawn from `Random(seed, dispatch)`.

The order of arrivals:
- in simulation, by the virtual clock (server/clock.py: each client's compute and transfer at its
  device profile; ties by dispatch order). The in-process engines answer a message at once; the
  clock, not the wall clock, says when the reply "arrives", so a seed fixes the run on every engine.
- in a deployment (no clock), by arrival at the SuperLink: messages go out with Flower's
  `Grid.push_messages` and replies are collected with `pull_messages` as they come; replies pulled
  together are taken in client-id order. A client silent past `clients.timeout` counts as failed.

Each server update is one "round" of metrics.jsonl: `async/staleness_mean|max` of the updates it
applied, the bytes and failures since the previous update, and the virtual clock's times.
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, Message
from flwr.serverapp import Grid

from flowerbed.server.clock import VirtualClock, message_bytes
from flowerbed.strategies.sampling import sample_size
from flowerbed.tasks.records import as_tensor_record


@dataclass
class Flight:
    """A training message out with a client."""

    dispatch: int
    client: int
    version: int  # the server update the client's model is from
    message: Message
    start: float  # virtual seconds, or time.monotonic() in a deployment


class VirtualArrivals:
    """Replies in the order of the virtual clock: a message is answered when sent, arrives later."""

    def __init__(self, grid: Grid, clock: VirtualClock, timeout: float) -> None:
        self.grid, self.clock, self.timeout = grid, clock, timeout
        self.queue: list[tuple[float, int, Flight, Message | None]] = []

    def send(self, flights: list[Flight]) -> None:
        replies = {m.metadata.src_node_id: m for m in self.grid.send_and_receive([f.message for f in flights], timeout=self.timeout)}
        for f in flights:
            reply = replies.get(f.message.metadata.dst_node_id)
            trip = self.clock.trip(f.client, f.start, f.message, reply)
            heapq.heappush(self.queue, (trip.arrival, f.dispatch, f, reply if trip.ok else None))

    def next(self) -> tuple[Flight, Message | None] | None:
        if not self.queue:
            return None
        arrival, _, flight, reply = heapq.heappop(self.queue)
        self.clock.now = arrival
        return flight, reply

    def now(self) -> float:
        return self.clock.now

    def online(self, clients: list[int]) -> list[int]:
        return self.clock.online(clients)

    def wait_for_online(self, clients: list[int]) -> None:
        self.clock.wait_for_online(clients)


class LiveArrivals:
    """Replies in the order they reach the SuperLink (a deployment)."""

    def __init__(self, grid: Grid, timeout: float, poll_s: float = 0.05) -> None:
        self.grid, self.timeout, self.poll_s = grid, timeout, poll_s
        self.out: dict[str, Flight] = {}
        self.ready: list[tuple[Flight, Message | None]] = []

    def send(self, flights: list[Flight]) -> None:
        for flight, message_id in zip(flights, self.grid.push_messages([f.message for f in flights])):
            if message_id:
                self.out[message_id] = flight
            else:  # the SuperLink refused it: a failure now
                self.ready.append((flight, None))

    def next(self) -> tuple[Flight, Message | None] | None:
        while not self.ready and self.out:
            replies = list(self.grid.pull_messages(list(self.out)))
            arrived = sorted(((self.out.pop(m.metadata.reply_to_message_id), m) for m in replies
                              if m.metadata.reply_to_message_id in self.out), key=lambda fm: fm[0].client)
            late = [i for i, f in self.out.items() if time.monotonic() - f.start > self.timeout]
            self.ready += arrived + [(self.out.pop(i), None) for i in late]
            if not self.ready:
                time.sleep(self.poll_s)
        return self.ready.pop(0) if self.ready else None

    def now(self) -> float:
        return time.monotonic()

    def online(self, clients: list[int]) -> list[int]:
        return clients

    def wait_for_online(self, clients: list[int]) -> None:
        time.sleep(self.poll_s)


@dataclass
class Tally:
    """What happened since the last server update, for its metrics line."""

    staleness: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    failures: int = 0
    rejected: int = 0
    bytes_down: int = 0
    bytes_up: int = 0
    virtual_start: float = 0.0


def asynchronous_rounds(grid: Grid, strategy, clock: VirtualClock | None, arrays: ArrayRecord, num_rounds: int,
                        timeout: float) -> Iterator[tuple[int, ArrayRecord, dict, float]]:
    """Yields (server update, global arrays, its metrics so far, its wall-clock start) as
    `synchronous_rounds` does, one per server update, until `num_rounds` updates."""
    arrivals = VirtualArrivals(grid, clock, timeout) if clock is not None else LiveArrivals(grid, timeout)
    node_of = {c: n for n, c in strategy.client_of_node.items()}
    clients = sorted(node_of)
    width = strategy.concurrency or sample_size(len(clients), strategy.fraction_train, strategy.min_train_nodes)
    versions, version, dispatches, launches, busy = {0: arrays}, 0, 0, 0, set()
    tally, wall = Tally(virtual_start=clock.now if clock else 0.0), time.perf_counter()

    def launch(count: int) -> None:
        nonlocal dispatches, launches
        idle = arrivals.online([c for c in clients if c not in busy])
        chosen = sorted(random.Random(f"{strategy.seed}/async/{dispatches}").sample(idle, min(count, len(idle))))
        if not chosen:
            return
        launches += 1  # the clients sent out together share a `server-round` (the batched engine trains them as one)
        flights = []
        for client in chosen:
            dispatches += 1
            message = strategy.train_message(launches, versions[version], node_of[client])
            flights.append(Flight(dispatches, client, version, message, arrivals.now()))
            tally.bytes_down += message_bytes(message)
        busy.update(chosen)
        arrivals.send(flights)

    launch(width)
    while version < num_rounds:
        event = arrivals.next()
        if event is None:  # nobody out: every idle client is away
            arrivals.wait_for_online(clients)
            launch(width - len(busy))
            continue
        flight, reply = event
        busy.discard(flight.client)
        new = _receive(strategy, flight, reply, versions, version, tally)
        if new is not None:
            version += 1
            versions[version] = arrays = as_tensor_record(new)
            yield version, arrays, _record(version, tally, clock), wall
            tally, wall = Tally(virtual_start=clock.now if clock else 0.0), time.perf_counter()
        in_use = {version} | {f.version for f in _out(arrivals)}
        for old in [v for v in versions if v not in in_use]:
            del versions[old]
        launch(width - len(busy))


def _receive(strategy, flight: Flight, reply: Message | None, versions: dict, version: int, tally: Tally) -> ArrayRecord | None:
    """Screen one reply and hand it to the strategy; None while the global model stays as it is."""
    if reply is None or reply.has_error():
        tally.failures += 1
        return None
    tally.bytes_up += message_bytes(reply)
    strategy._global = versions[flight.version]  # screening measures the update against the model it started from
    kept = strategy.screen([reply])
    strategy._global = None
    tally.rejected += strategy.round_stats["rejected"]
    if not kept:
        return None
    staleness = version - flight.version
    tally.staleness.append(staleness)
    tally.losses += [float(r["train/loss"]) for r in reply.content.metric_records.values() if "train/loss" in r]
    return strategy.receive(kept[0], versions[flight.version], versions[version], staleness)


def _out(arrivals) -> list[Flight]:
    if isinstance(arrivals, VirtualArrivals):
        return [f for _, _, f, _ in arrivals.queue]
    return list(arrivals.out.values()) + [f for f, _ in arrivals.ready]


def _record(version: int, tally: Tally, clock: VirtualClock | None) -> dict:
    record = {"round": version, "clients/trained": len(tally.staleness), "clients/failures": tally.failures,
              "clients/rejected": tally.rejected, "comm/bytes_down": tally.bytes_down, "comm/bytes_up": tally.bytes_up,
              "async/staleness_mean": sum(tally.staleness) / max(len(tally.staleness), 1),
              "async/staleness_max": max(tally.staleness, default=0)}
    if tally.losses:
        record["train/loss"] = sum(tally.losses) / len(tally.losses)
    if clock is not None:
        record["time/virtual_s"] = clock.now - tally.virtual_start
        record["time/virtual_total_s"] = clock.now
    return record
