"""Device profiles (tasks/devices.py) and the virtual clock (server/clock.py) against hand computations."""

import json
import math
import random

import pytest

from flowerbed.tasks.devices import CLASSES, MBIT, Availability, from_classes, read_trace, sessions
from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.models import build_model
from flowerbed.tasks.records import tensor_record, wire_bytes
from tests.conftest import flowerbed, read_metrics

# two clients with known speeds and links: 2 ms and 10 ms per sample; 800 kbit/s both ways, and 400 down / 80 up
TRACE = {"1": {"computation": 2.0, "communication": 800.0},
         "2": {"computation": 10.0, "down_kbps": 400.0, "up_kbps": 80.0}}
STEPS, BATCH = 3, 16


def _trace(tmp_path, trace=TRACE):
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(trace))
    return path


def _two_clients(tmp_path, *extra):
    run_dir = tmp_path / "run"
    code = flowerbed("run", "experiment=smoke", "rounds=1", "clients.num=2", "devices.profile=trace",
                     f"devices.trace={_trace(tmp_path)}", f"train.local_steps={STEPS}", f"train.batch_size={BATCH}",
                     f"output.dir={run_dir}", *extra)
    assert code == 0
    return read_metrics(run_dir)[1]


def _hand_times() -> tuple[float, float, int]:
    """Each client's round by hand: samples / speed + model bytes down / bandwidth + model bytes up / bandwidth."""
    model = build_model("cnn", (1, 8, 8), 10, 0, {})
    size = wire_bytes(tensor_record(model.state_dict()))
    samples = STEPS * BATCH
    fast = samples / 500 + size / 100_000 + size / 100_000  # 1000/2 samples/s; 800 kbit/s = 100,000 B/s
    slow = samples / 100 + size / 50_000 + size / 10_000
    return fast, slow, size


def test_a_round_lasts_as_long_as_its_slowest_client(tmp_path):
    fast, slow, size = _hand_times()
    record = _two_clients(tmp_path)
    assert record["comm/bytes_down"] == record["comm/bytes_up"] == 2 * size  # the model each way, per client
    assert record["time/virtual_s"] == pytest.approx(slow, rel=1e-12)
    assert record["time/virtual_total_s"] == pytest.approx(slow, rel=1e-12)
    assert record["clients/trained"] == 2 and record["clients/failures"] == 0


def test_a_deadline_drops_the_late_reply_and_counts_it_failed(tmp_path):
    fast, slow, _ = _hand_times()
    deadline = (fast + slow) / 2
    record = _two_clients(tmp_path, f"clients.deadline_s={deadline}")
    assert record["clients/trained"] == 1 and record["clients/late"] == 1 and record["clients/failures"] == 1
    assert record["time/virtual_s"] == pytest.approx(deadline, rel=1e-12)  # the server waited until the deadline


def test_over_selection_keeps_the_first_reply(tmp_path):
    fast, _, _ = _hand_times()
    record = _two_clients(tmp_path, "clients.fraction_train=0.5", "clients.min_train=1", "clients.over_select=1.0")
    assert record["clients/trained"] == 1 and record["clients/surplus"] == 1 and record["clients/failures"] == 0
    assert record["time/virtual_s"] == pytest.approx(fast, rel=1e-12)


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


@pytest.mark.parametrize("trace,message", [
    ({"1": {"computation": -2.0, "communication": 800.0}}, "client 1: computation a number > 0 (got -2.0)"),
    ({"1": {"communication": 800.0}}, "client 1: computation a number > 0 (got None)"),
    ({"1": {"computation": 2.0, "communication": 8.0, "active": [0, 5], "inactive": [-1, 9], "finish_time": 10}},
     "client 1: active and inactive times with 0 <= active < inactive <= finish_time"),
    ({"1": {"computation": 2.0, "communication": 8.0, "active": [0], "inactive": [5]}}, "client 1: finish_time a number > 0"),
])
def test_bad_trace_is_one_line_and_exit_2(tmp_path, capsys, trace, message):
    path = _trace(tmp_path, {**trace, "2": TRACE["2"]})
    assert flowerbed("run", "experiment=smoke", "clients.num=2", "devices.profile=trace", f"devices.trace={path}",
                     f"output.dir={tmp_path}/r") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("overrides,message", [
    (["devices.profile=classes", "devices.classes=laptop+toaster"], "devices.classes='toaster' is not valid: one of laptop"),
    (["devices.profile=classes", "clients.deadline_s=0.001"], "clients.deadline_s=0.001 is not valid: a deadline some client can meet"),
    (["clients.deadline_s=5"], "clients.deadline_s=5 is not valid: 0 without a virtual clock"),
    (["devices.profile=trace"], "devices.trace='' is not valid: a JSON trace file"),
    (["algorithm=fedbuff", "algorithm.buffer_size=5"], "algorithm.buffer_size=5 is not valid: at most clients.num=4"),
])
def test_bad_device_settings_are_one_line_and_exit_2(tmp_path, capsys, overrides, message):
    assert flowerbed("run", "experiment=smoke", *overrides, f"output.dir={tmp_path}/r") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_clock_reads_no_wall_clock_the_same_on_both_in_process_engines(tmp_path):
    runs = []
    for engine in ("sequential", "batched"):
        flowerbed("run", "experiment=smoke", "rounds=2", f"engine={engine}", "devices.profile=classes",
                  "devices.availability=classes", "devices.session_s=0.5", f"output.dir={tmp_path}/{engine}")
        runs.append([(m.get("time/virtual_total_s"), m.get("clients/trained")) for m in read_metrics(tmp_path / engine)])
    assert runs[0] == runs[1]
    assert all(math.isfinite(t) for t, _ in runs[0])


def test_time_to_accuracy_is_the_clock_at_the_first_evaluation_past_the_target(tmp_path):
    from flowerbed.simulations.report import Run, time_to_accuracy

    metrics = [{"round": 0, "global/acc": 0.1, "time/virtual_total_s": 0.0},
               {"round": 1, "global/acc": 0.6, "time/virtual_total_s": 4.0},
               {"round": 2, "global/acc": 0.9, "time/virtual_total_s": 9.5},
               {"round": 3, "global/acc": 0.8, "time/virtual_total_s": 12.0}]
    run = Run(tmp_path, {}, metrics, {})
    assert time_to_accuracy(run, 0.6) == 4.0 and time_to_accuracy(run, 0.85) == 9.5
    assert time_to_accuracy(run, 0.95) is None
