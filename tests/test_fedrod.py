"""FedRoD: BSM is CE only on balanced counts; the personal head never shapes the reply; both accuracies reported."""

from __future__ import annotations

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from flowerbed.clients.fedavg import FedAvgClient
from flowerbed.clients.fedrod import FedRoDClient, balanced_softmax
from tests.conftest import run


@pytest.fixture(autouse=True)
def task_identity():
    """Messages built outside a running app need Flower's task identity (as in test_sampling)."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0


def _client(kind: type, partition: int = 1):
    from flowerbed.simulations import config

    cfg = config.load(["experiment=fedloge-small", "train.device=cpu", f"algorithm={'fedrod' if kind is FedRoDClient else 'fedavg'}"])
    node = {"partition-id": partition, "num-partitions": int(cfg["clients.num"])}
    return kind(Context(run_id=1, node_id=5, node_config=node, state=RecordDict(), run_config=cfg))


def _message(client, server_round: int = 1) -> Message:
    return Message(RecordDict({"config": ConfigRecord({"server-round": server_round}), "arrays": ArrayRecord(client.new_model().state_dict())}),
                   dst_node_id=5, message_type=MessageType.TRAIN)


def _sent(reply: RecordDict) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v.numpy().copy()) for rec in reply.array_records.values() for k, v in rec.items()}


def test_balanced_softmax_is_cross_entropy_only_when_the_counts_are_equal():
    logits, y = torch.randn(32, 5, generator=torch.Generator().manual_seed(0)), torch.arange(32) % 5
    ce = torch.nn.functional.cross_entropy(logits, y)
    assert torch.allclose(balanced_softmax(logits, y, torch.full((5,), 7.0).log()), ce)
    long_tailed = torch.tensor([100.0, 30.0, 10.0, 3.0, 1.0]).log()
    assert not torch.allclose(balanced_softmax(logits, y, long_tailed), ce)


def test_generic_head_learns_less_of_the_clients_majority_than_plain_cross_entropy():
    fedrod, fedavg = _client(FedRoDClient), _client(FedAvgClient)
    y = fedrod.data.y_labeled
    majority = int(torch.bincount(y).argmax())
    assert torch.bincount(y).max() > 3 * len(y) / len(torch.unique(y))  # a long-tailed client
    shares = []
    for client in (fedrod, fedavg):
        model = client.model_from(_message(client))
        client.fit(model, _message(client))
        with torch.no_grad():
            shares.append(torch.softmax(model.eval()(client.data.x_labeled), 1)[:, majority].mean().item())
    assert shares[0] < shares[1] - 0.05  # BSM leaves the client's prior out of the generic head


def test_personal_head_stays_in_client_state_and_does_not_change_the_reply():
    replies, heads = [], []
    for std in (0.0, 3.0):
        client = _client(FedRoDClient)
        own = torch.nn.Linear(*reversed(client.new_model().classifier.weight.shape))
        torch.nn.init.normal_(own.weight, std=std, generator=torch.Generator().manual_seed(0))
        client.context.state["fedrod/head"] = ArrayRecord(own.state_dict())  # p from an earlier round
        replies.append(_sent(client.train(_message(client))))
        heads.append(client.context.state["fedrod/head"].to_torch_state_dict()["weight"])
        assert not torch.equal(heads[-1], own.weight)  # p trained, from the stored head
    assert set(replies[0]) == set(client.new_model().state_dict())  # body + generic head, nothing else
    assert all(torch.equal(replies[0][k], replies[1][k]) for k in replies[0])  # p never reaches body or g
    assert not torch.equal(heads[0], heads[1])


def test_end_to_end_reports_generic_and_personalized_accuracy(tmp_path):
    last = run(tmp_path, "algorithm=fedrod")[-1]
    for key in ("global/acc", "personal/acc", "personal/acc_masked", "personal_generic/acc"):
        assert 0.2 < last[key] <= 1.0, key  # it learns (10 classes: 0.1 is chance)
    assert last["personal/acc"] != last["personal_generic/acc"]  # the personal head is used
