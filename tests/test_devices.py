"""Device profiles (tasks/devices.py) and the virtual clock (server/clock.py) against hand computations."""

import json
import random

import pytest

from flowerbed.tasks.devices import CLASSES, MBIT, Availability, from_classes, read_trace, sessions

# two clients with known speeds and links: 2 ms and 10 ms per sample; 800 kbit/s both ways, and 400 down / 80 up
TRACE = {"1": {"computation": 2.0, "communication": 800.0},
         "2": {"computation": 10.0, "down_kbps": 400.0, "up_kbps": 80.0}}


def _trace(tmp_path, trace=TRACE):
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(trace))
    return path


def test_trace_reader_reads_fedscale_fields(tmp_path):
    path = _trace(tmp_path, {**TRACE, "3": {"computation": 5.0, "communication": 80.0, "active": [10, 50],
                                             "inactive": [20, 60], "finish_time": 100}})
    fast, slow, third = read_trace(path, 3)
    assert fast.samples_per_s == 500 and fast.up_bytes_per_s == fast.down_bytes_per_s == 100_000
    assert (slow.down_bytes_per_s, slow.up_bytes_per_s) == (50_000, 10_000)
    a = third.availability
    assert [a.online(t) for t in (5, 10, 19.9, 20, 55, 115, 160)] == [False, True, True, False, True, True, False]
    assert a.online_until(12) == 20 and a.next_online(25) == 50 and a.next_online(70) == 110


def test_availability_sessions_are_seeded_and_near_their_share():
    first = sessions(0.5, 600.0, random.Random(1))
    assert first == sessions(0.5, 600.0, random.Random(1))
    on = sum(e - s for s, e in zip(first.starts, first.ends)) / first.period
    assert 0.4 < on < 0.6
    assert sessions(1.0, 600.0, random.Random(1)) == Availability()


def test_classes_are_drawn_per_client_and_seed():
    cfg = {"seed": 3, "devices.classes": "laptop+rpi4"}
    drawn = from_classes(cfg, 40)
    assert drawn == from_classes(cfg, 40)
    assert {p.name for p in drawn} == {"laptop", "rpi4"}
    fast, slow = (next(p for p in drawn if p.name == n) for n in ("laptop", "rpi4"))
    assert fast.samples_per_s / slow.samples_per_s == pytest.approx(10)
    assert slow.up_bytes_per_s == CLASSES["rpi4"].up_mbit * MBIT
