"""UDA: the masked, sharpened consistency term; with lambda_u = 0 it is FedAvg on the labeled part; it runs end to end."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from flowerbed.clients.fedavg import FedAvgClient
from flowerbed.clients.uda import UDAClient, consistency
from tests.conftest import run


@pytest.fixture(autouse=True)
def task_identity():
    """Messages built outside a running app need Flower's task identity (as in test_sampling)."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0


def _logits(seed: int) -> torch.Tensor:
    return 3 * torch.randn(64, 10, generator=torch.Generator().manual_seed(seed))


def test_consistency_is_masked_and_sharpened_and_tends_to_fixmatchs_term():
    teacher, student = _logits(0), _logits(1)
    loss, mask = consistency(teacher, student, 0.4, 0.8)
    assert 0 < mask.sum() < len(mask)  # some samples are confident enough, some not
    assert loss > 0
    assert consistency(teacher, teacher, 1.0, 0.0)[0].abs() < 1e-6  # agreement costs nothing
    # only the masked-in samples count: changing the others' student logits changes nothing
    moved = student.clone()
    moved[~mask] += 5 * torch.randn(int((~mask).sum()), 10)
    assert torch.equal(consistency(teacher, moved, 0.4, 0.8)[0], loss)
    # as T -> 0 the target is the hard pseudo-label: FixMatch's masked cross-entropy
    hard = (F.cross_entropy(student, teacher.argmax(1), reduction="none") * mask).mean()
    assert torch.allclose(consistency(teacher, student, 1e-4, 0.8)[0], hard, atol=1e-5)
    assert not torch.allclose(loss, hard, atol=1e-3)


def _client(kind: type, *overrides: str):
    from flowerbed.simulations import config

    name = "uda" if kind is UDAClient else "fedavg"
    cfg = config.load(["experiment=smoke", "train.device=cpu", "partition.labeled_fraction=0.3", f"algorithm={name}", *overrides])
    node = {"partition-id": 1, "num-partitions": int(cfg["clients.num"])}
    return kind(Context(run_id=1, node_id=5, node_config=node, state=RecordDict(), run_config=cfg))


def _trained(client) -> dict[str, torch.Tensor]:
    msg = Message(RecordDict({"config": ConfigRecord({"server-round": 1}), "arrays": ArrayRecord(client.new_model().state_dict())}),
                  dst_node_id=5, message_type=MessageType.TRAIN)
    reply = client.train(msg)
    return {k: torch.from_numpy(v.numpy().copy()) for k, v in reply["arrays"].items()}


def test_with_lambda_u_zero_uda_trains_as_fedavg_on_the_labeled_part():
    fedavg = _trained(_client(FedAvgClient))
    uda = _client(UDAClient, "algorithm.lambda_u=0", "algorithm.uda_threshold=0")
    assert len(uda.data.y_unlabeled) > 0  # the unlabeled term really ran, with weight 0
    assert all(torch.equal(v, fedavg[k]) for k, v in _trained(uda).items())
    weighted = _trained(_client(UDAClient, "algorithm.uda_threshold=0"))
    assert not all(torch.equal(v, fedavg[k]) for k, v in weighted.items())


def test_uda_runs_end_to_end_and_reports_its_coverage(tmp_path):
    uda = run(tmp_path, "algorithm=uda", "partition.labeled_fraction=0.3", "rounds=3", "algorithm.uda_threshold=0.2")
    assert 0 < uda[-1]["uda/coverage"] <= 1 and 0 <= uda[-1]["uda/pseudo_acc"] <= 1
    assert uda[-1]["global/acc"] > uda[0]["global/acc"]
