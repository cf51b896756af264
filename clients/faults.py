"""Faults injected on purpose (`faults.*`, all off by default), on the client side of the app.

Injecting in the ClientApp rather than in an engine makes the sequential engine, Flower's Ray
engine and a real deployment fail in the same way. Which client fails, and how, is drawn from
`Random((seed, round, client id))`, so a faulty run is as reproducible as a healthy one.

- raise:   the client half raises; Flower turns that into an error reply.
- timeout: the client sleeps past `clients.timeout`; the server stops waiting and counts it failed.
- dropout: the client leaves mid-round; its node answers with an error reply (`ClientDropout`).
- slow:    a node whose node config sets `train-delay-s` waits that long before each training (a
           device made slow on purpose, for asynchronous aggregation in a deployment).
- poison:  the client trains, then sends NaN (`faults.poison=nonfinite`) or its trained model plus
           a random update of norm 1e6 per array (`faults.poison=huge`), for the server's screening.
"""

from __future__ import annotations

import functools
import random
import time

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict

from flowerbed.tasks.config_key import config_key

KINDS = ("raise", "timeout", "dropout", "poison")


class InjectedFault(RuntimeError):
    """A client failure that `faults.raise_fraction` asked for."""


class ClientDropout(RuntimeError):
    """A client that left the round (`faults.dropout_fraction`)."""


def draw(cfg: dict, server_round: int, client_id: int) -> str | None:
    """The fault this client suffers in this round, if any (one uniform draw against the shares)."""
    shares = _shares(config_key(cfg))
    if not any(shares):
        return None  # no faults asked for: no draw (a seeded Random per call is 3% of a small client call)
    u = random.Random(f"{cfg.get('seed', 0)}/{server_round}/{client_id}/faults").random()
    edge = 0.0
    for kind, share in zip(KINDS, shares):
        edge += share
        if u < edge:
            return kind
    return None


@functools.lru_cache(maxsize=8)
def _shares(cfg: tuple) -> tuple[float, ...]:
    config = dict(cfg)
    return tuple(float(config.get(f"faults.{kind}_fraction", 0.0)) for kind in KINDS)


def before_train(cfg: dict, server_round: int, client_id: int) -> str | None:
    """Act out the faults that happen instead of training; returns the drawn fault."""
    kind = draw(cfg, server_round, client_id)
    if kind == "raise":
        raise InjectedFault(f"injected failure (faults.raise_fraction) at client {client_id}, round {server_round}")
    if kind == "dropout":
        raise ClientDropout(f"client {client_id} dropped out of round {server_round} (faults.dropout_fraction)")
    if kind == "timeout":
        time.sleep(float(cfg["clients.timeout"]) + 0.5)  # the reply comes, but too late to count
    return kind


def slow_device(node_config: dict) -> None:
    """Wait `train-delay-s` seconds (node config) before training: a slow device, on purpose."""
    delay = float(node_config.get("train-delay-s", 0.0))
    if delay > 0:
        time.sleep(delay)


def poison(content: RecordDict, cfg: dict, server_round: int, client_id: int) -> RecordDict:
    """The reply with its model replaced by NaN or by a huge update (norm ~1e6 per array)."""
    rng = np.random.default_rng([int(cfg.get("seed", 0)), server_round, client_id, 7])
    for name, record in content.array_records.items():
        bad = ArrayRecord()
        for key, array in record.items():
            x = array.numpy()
            if x.dtype.kind == "f":
                if cfg.get("faults.poison", "huge") == "nonfinite":
                    x = np.full_like(x, np.nan)
                else:
                    noise = rng.standard_normal(x.shape).astype(x.dtype)
                    x = x + noise * (1e6 / max(float(np.linalg.norm(noise)), 1e-12))
            bad[key] = Array(np.ascontiguousarray(x))
        content[name] = bad
    return content
