"""FedBuff and FedAsync (strategies/fedbuff.py, fedasync.py) on the asynchronous loop (server/asynchronous.py)."""

import json
from collections import OrderedDict

import pytest
import torch
from flwr.app import Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from flowerbed.strategies.fedasync import FedAsync, polynomial
from flowerbed.strategies.fedbuff import FedBuff
from flowerbed.tasks.records import tensor_record, tensors
from flowerbed.simulations.engines.inprocess import InProcessGrid, run_in_process
from tests.conftest import flowerbed, read_metrics

# 2 ms vs 20 ms per sample, the same fast link (100 MB/s): the second client is ten times slower to compute
TRACE = {"1": {"computation": 2.0, "communication": 800_000.0}, "2": {"computation": 20.0, "communication": 800_000.0}}
COMMON = {"fraction_train": 1.0, "fraction_evaluate": 1.0, "min_train_nodes": 1, "min_evaluate_nodes": 1, "min_available_nodes": 1}


def _reply(values: dict[str, torch.Tensor]) -> Message:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0  # a Message outside a run needs one
    return Message(RecordDict({"arrays": tensor_record(OrderedDict(values)), "metrics": MetricRecord({"num-examples": 1})}),
                   dst_node_id=1, message_type="train")


def _record(values: dict[str, torch.Tensor]):
    return tensor_record(OrderedDict(values))


def test_fedbuff_steps_once_k_staleness_weighted_updates_are_buffered():
    strategy = FedBuff(buffer_size=2, server_lr=0.5, staleness_exponent=0.5, concurrency=0, **COMMON)
    sent0, sent1 = _record({"w": torch.tensor([1.0, 2.0])}), _record({"w": torch.tensor([0.0, 0.0])})
    current = _record({"w": torch.tensor([3.0, 3.0])})
    assert strategy.receive(_reply({"w": torch.tensor([2.0, 2.0])}), sent0, current, staleness=0) is None
    new = strategy.receive(_reply({"w": torch.tensor([4.0, -4.0])}), sent1, current, staleness=3)
    # w + lr * (1/K) * (s(0) d0 + s(3) d1), s(t) = 1/sqrt(1 + t)
    expected = torch.tensor([3.0, 3.0]) + 0.5 * (torch.tensor([1.0, 0.0]) + 0.5 * torch.tensor([4.0, -4.0])) / 2
    assert torch.allclose(tensors(new)["w"], expected)
    assert strategy.buffered == 0 and strategy.buffer is None  # emptied for the next K


def test_fedasync_mixes_each_reply_with_a_staleness_discounted_weight():
    strategy = FedAsync(mixing=0.6, staleness_exponent=0.5, concurrency=0, **COMMON)
    current = _record({"w": torch.tensor([1.0, 1.0])})
    new = strategy.receive(_reply({"w": torch.tensor([5.0, -3.0])}), current, current, staleness=8)
    alpha = 0.6 * polynomial(8, 0.5)
    assert alpha == pytest.approx(0.2)
    assert torch.allclose(tensors(new)["w"], (1 - alpha) * torch.tensor([1.0, 1.0]) + alpha * torch.tensor([5.0, -3.0]))


def _async_run(tmp_path, name, *overrides):
    run_dir = tmp_path / name
    assert flowerbed("run", "experiment=smoke", f"output.dir={run_dir}", *overrides) == 0
    return read_metrics(run_dir)


def _without_wall_clock(metrics):
    return [{k: v for k, v in m.items() if k != "time/round_s"} for m in metrics]


@pytest.mark.parametrize("algorithm", ["fedbuff", "fedasync"])
def test_async_runs_are_bit_identical_for_a_seed(tmp_path, algorithm):
    overrides = (f"algorithm={algorithm}", "rounds=4", "devices.profile=classes")
    first, second = (_async_run(tmp_path, name, *overrides) for name in ("a", "b"))
    assert _without_wall_clock(first) == _without_wall_clock(second)
    assert [m["round"] for m in first] == [0, 1, 2, 3, 4]
    assert all(m["time/virtual_total_s"] > 0 for m in first[1:])
    other_seed = _async_run(tmp_path, "c", *overrides, "seed=1")
    assert _without_wall_clock(other_seed) != _without_wall_clock(first)


def test_async_is_the_same_on_the_batched_engine(tmp_path):
    overrides = ("algorithm=fedbuff", "rounds=3", "devices.profile=classes")
    sequential = _async_run(tmp_path, "s", *overrides)
    batched = _async_run(tmp_path, "b", *overrides, "engine=batched")
    losses = ("train/loss", "personal/loss")  # the batched loss is summed in another order: equal to float32 rounding
    exact = [{k: v for k, v in m.items() if k not in losses} for m in _without_wall_clock(sequential)]
    assert exact == [{k: v for k, v in m.items() if k not in losses} for m in _without_wall_clock(batched)]
    for s, b in zip(sequential, batched):
        assert [s.get(k, 0.0) for k in losses] == pytest.approx([b.get(k, 0.0) for k in losses], rel=1e-6)


def test_updates_are_applied_in_virtual_arrival_order(tmp_path):
    """Two clients, one ten times slower: under FedAsync the fast one comes back again and again
    while the slow one trains, and the slow one's update arrives stale."""
    trace = tmp_path / "trace.json"
    trace.write_text(json.dumps(TRACE))
    metrics = _async_run(tmp_path, "r", "algorithm=fedasync", "rounds=12", "clients.num=2", "devices.profile=trace",
                         f"devices.trace={trace}", "train.local_steps=5", "train.batch_size=16")
    updates = metrics[1:]
    assert all(m["clients/trained"] == 1 for m in updates)
    stale = [m["async/staleness_max"] for m in updates]
    # 80 samples take the fast client 0.16 s, the slow one 1.6 s (plus 6 ms of transfer): nine fresh
    # updates from the fast client, then the slow one's, 9 updates stale; then the fast one's reply
    # that left at update 9 and arrives after the slow one's (stale by 1)
    assert stale == [0] * 9 + [9, 1, 0]
    times = [m["time/virtual_total_s"] for m in updates]
    size = metrics[1]["comm/bytes_up"]  # one reply: the model
    assert times[9] == pytest.approx(80 * 20e-3 + 2 * size / 1e8, rel=1e-9)
    assert times[0] == pytest.approx(80 * 2e-3 + 2 * size / 1e8, rel=1e-9)


def test_async_counts_failed_clients_and_goes_on(tmp_path):
    metrics = _async_run(tmp_path, "r", "algorithm=fedbuff", "rounds=4", "devices.profile=classes", "faults.raise_fraction=0.3")
    assert sum(m.get("clients/failures", 0) for m in metrics) > 0
    assert [m["round"] for m in metrics][-1] == 4
    assert all(m["clients/trained"] == 3 for m in metrics[1:])  # K=3 updates per server step, failures not among them


class SlowFirstNode(InProcessGrid):
    """A Grid that behaves as a deployment's: replies wait until pulled, and client 0's training
    replies come only on the fifth pull after their push (a slow device). Its module is not
    flowerbed's, so the server runs without a virtual clock and takes replies as they arrive."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.held: dict[str, list] = {}  # message id -> [reply, pulls before it arrives]
        self.slow_replies = 0

    def push_messages(self, messages):
        ids = []
        for message in messages:
            message_id = self.assign_id(message)
            slow = (self.contexts[message.metadata.dst_node_id].node_config["partition-id"] == 0
                    and message.metadata.message_type == "train")
            self.held[message_id] = [self.execute(message), 5 if slow else 0]
            self.slow_replies += slow
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids):
        arrived = []
        for message_id in message_ids:
            if message_id in self.held:
                if self.held[message_id][1] == 0:
                    arrived.append(self.held.pop(message_id)[0])
                else:
                    self.held[message_id][1] -= 1
        return arrived


def test_deployed_fedbuff_applies_updates_as_they_arrive(tmp_path):
    from flowerbed.clients.app import app as client_app
    from flowerbed.server.app import app as server_app
    from flowerbed.simulations import config

    flat = config.load(["experiment=smoke", "algorithm=fedbuff", "rounds=4", f"output.dir={tmp_path / 'r'}"])
    grid = run_in_process(server_app, client_app, flat, 4, SlowFirstNode)
    updates = read_metrics(tmp_path / "r")[1:]
    assert [m["round"] for m in updates] == [1, 2, 3, 4]
    assert all(m["clients/trained"] == 3 for m in updates)  # K = 3 replies per server step
    assert "time/virtual_s" not in updates[0]  # no virtual clock in a deployment: real arrivals
    # the fast clients went round again while the slow one trained; its update came in stale
    assert sum(m["async/staleness_mean"] > 0 for m in updates) >= 1
    assert grid.slow_replies >= 1
