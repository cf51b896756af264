"""Client sampling is seeded and keyed by stable client ids; bad updates never get averaged."""

import numpy as np
from flwr.app import ArrayRecord, Error, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from flowerbed.simulations.config import app_config_defaults
from flowerbed.strategies.registry import build_strategy


def strategy(fraction=0.5, seed=0):
    cfg = {**app_config_defaults(), "clients.fraction_train": fraction, "seed": seed}
    return build_strategy(cfg)


def chosen_clients(node_ids, fraction=0.5, seed=0, rnd=1):
    s = strategy(fraction, seed)
    s.client_of_node = {node: client for client, node in enumerate(node_ids)}
    return [s.client_of_node[n] for n in s.sample_clients(rnd, fraction, 2, "train")]


def test_the_same_clients_are_chosen_whatever_flower_node_ids_they_got():
    assert chosen_clients([11, 22, 33, 44, 55, 66]) == chosen_clients([9, 8, 7, 6, 5, 4])


def test_sampling_changes_with_round_and_seed_and_respects_fraction():
    picks = {tuple(chosen_clients(list(range(100, 110)), rnd=r)) for r in range(1, 6)}
    assert len(picks) > 1 and all(len(p) == 5 for p in picks)
    assert chosen_clients(list(range(10)), seed=1) != chosen_clients(list(range(10)), seed=2) or \
        chosen_clients(list(range(10)), seed=1, rnd=2) != chosen_clients(list(range(10)), seed=2, rnd=2)


def _reply(node_id: int, value: float) -> Message:
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0
    instruction = Message(RecordDict({}), dst_node_id=node_id, message_type="train")
    instruction.metadata.__dict__["_message_id"] = f"m{node_id}"
    content = RecordDict({"arrays": ArrayRecord([np.full(3, value, np.float32)]), "metrics": MetricRecord({"num-examples": 1})})
    return Message(content, reply_to=instruction)


def test_non_finite_updates_are_rejected_and_counted():
    s = strategy()
    s.client_of_node = {1: 0, 2: 1, 3: 2}
    arrays, _ = s.aggregate_train(1, [_reply(1, 1.0), _reply(2, float("nan")), _reply(3, 3.0)])
    assert s.round_stats == {"failures": 0, "rejected": 1, "rejected_norm": 0, "short": 0}
    np.testing.assert_allclose(next(iter(arrays.values())).numpy(), 2.0)


def test_error_replies_are_counted_as_failures():
    s = strategy()
    s.client_of_node = {1: 0, 2: 1}
    good = _reply(1, 1.0)
    failed = Message(Error(code=300, reason="boom"), reply_to=_reply(2, 0).__class__(RecordDict({}), dst_node_id=2, message_type="train"))
    s.aggregate_train(1, [good, failed])
    assert s.round_stats["failures"] == 1
