"""The virtual clock: how long each client's message takes on its device, in simulated seconds.

A client's time for a training message is its compute plus its transfer:

    samples trained / samples_per_s  +  bytes down / down_bytes_per_s  +  bytes up / up_bytes_per_s

where the samples trained are `train.local_steps * train.batch_size`, or `train.local_epochs` times
the `num-examples` its reply reports, and the bytes are what the message's and the reply's arrays
take on the wire. A synchronous round lasts as long as its slowest selected client; with
`clients.deadline_s` it ends at the deadline and later replies are dropped (failures); with
`clients.over_select` it ends when the first K of the over-selected clients have replied.

Choices where nothing forces one:
- Evaluation costs no virtual time: it is the experimenter's measurement, not the fleet's work.
- A client that fails (an error reply) reports the failure once it has the model (download time).
- A reply that never comes (a timeout fault, a client that went offline mid-round) is noticed at
  the deadline, or at `clients.timeout` without one: the server cannot know sooner.
- The clock reads only bytes, sample counts and profiles, never the wall clock, so every engine
  computes the same times for a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flwr.app import ArrayRecord, Message, MetricRecord

from flowerbed.tasks.devices import DeviceProfile
from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.records import records_of, wire_bytes


@dataclass(frozen=True)
class Trip:
    """One client's training message in virtual time."""

    client: int
    start: float
    arrival: float  # when the server has the reply (or notices it never comes)
    ok: bool  # a usable reply arrived (not an error, not lost)
    lost: bool = False  # no reply at all (timeout fault, went offline)


def message_bytes(message: Message | None) -> int:
    if message is None or not message.has_content():
        return 0
    return sum(wire_bytes(record) for record in records_of(message.content, ArrayRecord))


def trained_examples(reply: Message) -> int:
    for record in records_of(reply.content, MetricRecord):
        if "num-examples" in record:
            return int(record["num-examples"])
    return 0


class VirtualClock:
    def __init__(self, cfg: dict, profiles: list[DeviceProfile], now: float = 0.0) -> None:
        self.profiles = profiles
        self.now = now
        self.deadline = float(cfg.get("clients.deadline_s", 0.0)) or math.inf
        self.timeout = float(cfg["clients.timeout"])
        self.steps, self.epochs = int(cfg["train.local_steps"]), int(cfg["train.local_epochs"])
        self.batch_size = int(cfg["train.batch_size"])

    def samples(self, num_examples: int) -> int:
        """Samples a client trains on: local steps times batch size, or epochs times its examples."""
        return self.steps * self.batch_size if self.steps > 0 else self.epochs * num_examples

    def duration(self, client: int, samples: int, bytes_down: int, bytes_up: int) -> float:
        p = self.profiles[client]
        return samples / p.samples_per_s + bytes_down / p.down_bytes_per_s + bytes_up / p.up_bytes_per_s

    def trip(self, client: int, start: float, sent: Message, reply: Message | None) -> Trip:
        """When `client`'s reply to `sent`, begun at `start`, reaches the server, and whether it counts."""
        profile, down = self.profiles[client], message_bytes(sent)
        if reply is None:
            return self._lost(client, start)
        if reply.has_error():
            return Trip(client, start, start + down / profile.down_bytes_per_s, ok=False)
        arrival = start + self.duration(client, self.samples(trained_examples(reply)), down, message_bytes(reply))
        if profile.availability.online_until(start) < arrival:  # left before it could reply
            return self._lost(client, start)
        if arrival - start > self.deadline:
            return Trip(client, start, start + self.deadline, ok=False, lost=True)
        return Trip(client, start, arrival, ok=True)

    def _lost(self, client: int, start: float) -> Trip:
        return Trip(client, start, start + min(self.deadline, self.timeout), ok=False, lost=True)

    def online(self, clients, t: float | None = None) -> list[int]:
        t = self.now if t is None else t
        return [c for c in clients if self.profiles[c].availability.online(t)]

    def wait_for_online(self, clients) -> None:
        """Move the clock on to the first moment some client is online (a fleet that is all asleep)."""
        self.now = min(self.profiles[c].availability.next_online(self.now) for c in clients)

    def check_deadline(self, model_bytes: int, examples: list[int]) -> None:
        """Refuse a deadline that no client can meet even with the model alone (`examples`: each client's)."""
        if math.isinf(self.deadline):
            return
        fastest = min(self.duration(c, self.samples(n), model_bytes, model_bytes) for c, n in enumerate(examples))
        if fastest > self.deadline:
            raise ConfigError.invalid("clients.deadline_s", self.deadline,
                                      f"a deadline some client can meet: the fastest needs {fastest:.3g} virtual seconds a round")


@dataclass
class SettledRound:
    replies: list[Message]  # the replies the round keeps, the strategy's to aggregate
    duration: float
    late: int  # usable replies dropped: past the deadline, or their client went offline
    surplus: int  # over-selected replies that came after the first K (not failures)


def settle_round(clock: VirtualClock, sent: list[Message], replies: list[Message], client_of_node: dict[int, int],
                 keep: int | None) -> SettledRound:
    """The round in virtual time from its start at `clock.now`; moves the clock to its end."""
    by_node = {m.metadata.src_node_id: m for m in replies}
    start = clock.now
    trips = {}
    for message in sent:
        node = message.metadata.dst_node_id
        trips[node] = clock.trip(client_of_node[node], start, message, by_node.get(node))
    arrived = sorted((t.arrival, t.client, n) for n, t in trips.items() if t.ok)
    surplus = 0
    if keep is not None and len(arrived) >= keep:
        surplus, arrived = len(arrived) - keep, arrived[:keep]
        end = arrived[-1][0]
    else:
        end = max((t.arrival for t in trips.values()), default=start)
    kept_nodes = {n for _, _, n in arrived}
    errors = [m for m in replies if m.has_error()]
    late = sum(1 for n, t in trips.items() if t.lost and n in by_node and not by_node[n].has_error())
    clock.now = end
    return SettledRound([m for m in replies if m.metadata.src_node_id in kept_nodes] + errors, end - start, late, surplus)
