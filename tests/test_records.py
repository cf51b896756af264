"""Replies stay tensors in process (tasks/records.py): no bytes unless asked, the same numbers and
byte counts as Flower's serialised records, and Flower's own strategies take them unchanged."""

from __future__ import annotations

import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import strategy as flwr_strategy
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents
from flwr.supercore.task_identity import TaskIdentity

from flowerbed.simulations.config import app_config_defaults
from flowerbed.strategies.registry import build_strategy
from flowerbed.tasks.records import TensorArray, snapshot, tensor_record, wire_bytes
from tests.conftest import run


def _state(seed: int) -> OrderedDict:
    gen = torch.Generator().manual_seed(seed)
    return OrderedDict([("w", torch.randn(4, 3, generator=gen)), ("b", torch.randn(3, generator=gen)),
                        ("steps", torch.tensor(seed, dtype=torch.int64))])  # a 0-d integer buffer, as BatchNorm's


def _reply(node_id: int, arrays: ArrayRecord, examples: int) -> Message:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    instruction = Message(RecordDict({}), dst_node_id=node_id, message_type="train")
    instruction.metadata.__dict__["_message_id"] = f"m{node_id}"
    return Message(RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": examples})}), reply_to=instruction)


def test_a_tensor_record_is_a_flower_record_in_every_way_that_reads_it():
    state = _state(1)
    lazy, plain = snapshot(state), ArrayRecord(state)
    assert wire_bytes(lazy) == plain.count_bytes()
    assert all("_data" not in vars(a) for a in lazy.values())  # wire_bytes made no bytes
    for key in state:
        assert lazy[key].numpy().shape == plain[key].numpy().shape and np.array_equal(lazy[key].numpy(), plain[key].numpy())
        copy = lazy[key].numpy()
        copy[...] = 7  # a fresh array, as Array.numpy gives: the tensor is untouched
        assert not torch.equal(lazy[key].tensor, torch.full_like(lazy[key].tensor, 7))
    assert [a.data for a in lazy.values()] == [a.data for a in plain.values()]  # asked: exactly Flower's bytes
    assert lazy.count_bytes() == plain.count_bytes()
    restored = pickle.loads(pickle.dumps(lazy))  # checkpoints hold plain Arrays
    assert restored == plain and all(type(a) is Array for a in restored.values())
    # Flower's object store (the flower engine, deployments) deflates and inflates it as an Array
    objects = get_all_nested_objects(snapshot(state))
    contents = {object_id: obj.deflate() for object_id, obj in objects.items()}
    inflated = inflate_object_from_contents(next(reversed(contents)), contents, keep_object_contents=True)
    assert isinstance(inflated, ArrayRecord) and inflated == plain


@pytest.mark.parametrize("flower", [flwr_strategy.FedAvg, flwr_strategy.FedMedian, flwr_strategy.FedTrimmedAvg])
def test_flowers_own_strategies_aggregate_tensor_replies_unchanged(flower):
    states, sizes = [_state(s) for s in range(5)], [3, 1, 4, 1, 5]
    tensor_replies = [_reply(i + 1, snapshot(s), n) for i, (s, n) in enumerate(zip(states, sizes))]
    byte_replies = [_reply(i + 1, ArrayRecord(s), n) for i, (s, n) in enumerate(zip(states, sizes))]
    ours, _ = flower().aggregate_train(1, tensor_replies)
    theirs, _ = flower().aggregate_train(1, byte_replies)
    assert ours == theirs


def test_the_fedavg_family_averages_tensor_replies_on_the_device_to_flowers_last_bit():
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0  # configure_train builds messages
    cfg = {**app_config_defaults(), "clients.num": 5}
    states, sizes = [_state(s) for s in range(5)], [3, 1, 4, 1, 5]
    for name in ("fedavg", "fedprox", "fedavgm"):
        mean = {}
        for kind, make in (("tensors", snapshot), ("bytes", ArrayRecord)):
            strategy = build_strategy({**cfg, "algorithm.name": name})
            strategy.client_of_node = {i + 1: i for i in range(5)}
            strategy.configure_train(1, snapshot(_state(9)), ConfigRecord(), _Nodes(5))
            replies = [_reply(i + 1, make(s), n) for i, (s, n) in enumerate(zip(states, sizes))]
            mean[kind], _ = strategy.aggregate_train(1, replies)
        if name != "fedavgm":  # FedAvgM's server step runs in NumPy on the mean, as it is
            assert all(isinstance(a, TensorArray) for a in mean["tensors"].values()), name
        assert {k: a.data for k, a in mean["tensors"].items()} == {k: a.data for k, a in mean["bytes"].items()}, name


def test_device_screening_rejects_what_the_numpy_screening_rejects():
    cfg = {**app_config_defaults(), "clients.num": 4, "clients.max_update_norm": 5.0}
    sent = _state(0)
    far = OrderedDict((k, v + 10 if v.is_floating_point() else v) for k, v in sent.items())
    bad = OrderedDict((k, v.clone()) for k, v in sent.items())
    bad["w"][1, 2] = float("nan")
    near = OrderedDict((k, v + 0.1 if v.is_floating_point() else v) for k, v in sent.items())
    stats = {}
    for kind, make in (("tensors", snapshot), ("bytes", ArrayRecord)):
        strategy = build_strategy(cfg)
        strategy.client_of_node = {i + 1: i for i in range(4)}
        strategy._global = make(sent)
        kept = strategy.screen([_reply(i + 1, make(s), 1) for i, s in enumerate([near, far, bad, sent])])
        stats[kind] = (strategy.round_stats, [m.metadata.src_node_id for m in kept])
    assert stats["tensors"] == stats["bytes"] == ({"failures": 0, "rejected": 2, "rejected_norm": 1}, [1, 4])
    # the batched engine's replies: views of one stacked tensor per name, screened as the stack
    stacks = {k: torch.stack([s[k] for s in (near, far, bad, sent)]) for k in sent}
    replies = [_reply(i + 1, tensor_record(OrderedDict((k, v[i]) for k, v in stacks.items()), stacks, i), 1) for i in range(4)]
    strategy = build_strategy(cfg)
    strategy.client_of_node = {i + 1: i for i in range(4)}
    strategy._global = snapshot(sent)
    assert [m.metadata.src_node_id for m in strategy.screen(replies)] == [1, 4] and strategy.round_stats["rejected_norm"] == 1


def test_each_in_process_node_edits_its_own_records_and_shares_the_arrays():
    """A mod may pop a key from what its node received (SecAgg+ pops its stage); the other nodes of
    the round, sent the same content, must not see that. The arrays are shared, never serialised."""
    from flowerbed.simulations.engines.inprocess import node_copy

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    arrays = snapshot(_state(0))
    sent = Message(RecordDict({"arrays": arrays, "config": ConfigRecord({"stage": "setup", "lr": 0.1})}), dst_node_id=5, message_type="train")
    sent.metadata.__dict__["_message_id"] = "m1"
    received = node_copy(sent)
    received.content.config_records["config"].pop("stage")
    del received.content.array_records["arrays"]["w"]
    received.metadata.__dict__["_message_id"] = "m2"
    assert dict(sent.content.config_records["config"]) == {"stage": "setup", "lr": 0.1} and list(sent.content["arrays"]) == ["w", "b", "steps"]
    assert sent.metadata.message_id == "m1" and received.metadata.dst_node_id == 5
    assert received.content["arrays"]["b"] is arrays["b"] and "_data" not in vars(arrays["b"])


def test_screening_keeps_finite_values_whose_sum_or_norm_overflows():
    """Screening reads NaN/Inf from sums and norms; a float32 reply of 1e30s overflows both and is
    still finite, as the value-by-value NumPy screening says."""
    huge = OrderedDict((k, torch.full_like(v, 1e30) if v.is_floating_point() else v) for k, v in _state(0).items())
    poisoned = OrderedDict((k, v.clone()) for k, v in huge.items())
    poisoned["b"][0] = float("inf")
    for make in (snapshot, ArrayRecord):
        strategy = build_strategy({**app_config_defaults(), "clients.num": 2})
        strategy.client_of_node = {1: 0, 2: 1}
        kept = strategy.screen([_reply(1, make(huge), 1), _reply(2, make(poisoned), 1)])
        assert [m.metadata.src_node_id for m in kept] == [1] and strategy.round_stats["rejected"] == 1


class _Nodes:
    """The part of a Grid that configure_train reads."""

    def __init__(self, n: int) -> None:
        self.n = n

    def get_node_ids(self):
        return list(range(1, self.n + 1))


@pytest.mark.parametrize("engine", ["sequential", "batched"])
def test_in_process_engines_make_no_bytes_unless_asked(tmp_path, monkeypatch, engine):
    """A whole FedAvg run (train, screening, aggregation, evaluation, checkpoints) serialises nothing;
    the byte counts are still the serialised size of the model each way."""
    made = []
    serialise = Array.from_numpy_ndarray.__func__
    monkeypatch.setattr(Array, "from_numpy_ndarray", classmethod(lambda cls, a: made.append(a.shape) or serialise(cls, a)))
    metrics = run(tmp_path / engine, f"engine={engine}", "clients.max_update_norm=1000")
    assert made == []
    from flowerbed.tasks.models import build_model

    model = ArrayRecord(build_model("cnn", (1, 8, 8), 10, 0).state_dict()).count_bytes()
    assert metrics[1]["comm/bytes_up"] == metrics[1]["clients/trained"] * model


def test_records_built_without_flowers_per_entry_checks_equal_flowers_and_still_refuse_bad_values():
    """metric_record / record_dict / tensor_record store plain entries directly: the records must be
    the ones Flower's constructors give (equal, same type, serialised alike), and what Flower would
    refuse must still be refused."""
    from flowerbed.tasks.records import metric_record, record_dict

    metrics = {"train/loss": 0.25, "num-examples": 36, "personal/acc_per_class": [0.5, 1.0]}
    fast, flower = metric_record(metrics), MetricRecord(metrics)
    assert type(fast) is MetricRecord and fast == flower and fast.count_bytes() == flower.count_bytes()
    assert fast.deflate() == flower.deflate()
    with pytest.raises(TypeError):
        metric_record({"acc": torch.tensor(0.5)})  # a tensor is no metric: Flower's check runs on it
    with pytest.raises(TypeError):
        metric_record({"flag": True})  # nor a bool, which Flower refuses
    arrays, expected = tensor_record(_state(2)), ArrayRecord(_state(2))
    assert type(arrays) is ArrayRecord and arrays.is_dirty and arrays.count_bytes() == expected.count_bytes()
    assert list(arrays) == list(expected) and [a.data for a in arrays.values()] == [a.data for a in expected.values()]
    content = record_dict({"arrays": arrays, "metrics": fast})
    assert type(content) is RecordDict and content == RecordDict({"arrays": arrays, "metrics": flower})
    assert list(content.array_records) == ["arrays"] and list(content.metric_records) == ["metrics"]
    with pytest.raises(TypeError):
        record_dict({"metrics": {"acc": 0.5}})  # a plain dict is no record
    with pytest.raises(TypeError):
        record_dict({3: fast})


def test_a_read_only_run_config_is_keyed_once_and_a_plain_one_every_time():
    from types import MappingProxyType

    from flowerbed.tasks.config_key import config_key

    plain = {"seed": 1, "algorithm.name": "fedavg"}
    shared = MappingProxyType(dict(plain))
    assert config_key(shared) == tuple(sorted(plain.items())) and hash(config_key(shared)) == hash(tuple(sorted(plain.items())))
    assert config_key(shared) is config_key(shared)
    first = config_key(plain)
    plain["seed"] = 2  # a dict may change between calls: its key follows
    assert config_key(plain) != first and dict(config_key(plain))["seed"] == 2
