"""FedSTO: the orthogonality regulariser, the EMA teacher and a stage-1 client round."""

from __future__ import annotations

import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from torch import nn

from flowerbed.clients.data import LocalData
from flowerbed.clients.fedsto import FedSTOClient, TEACHER, ema_update
from flowerbed.tasks.orthogonality import regularised_weights, srip
from flowerbed.tasks import weather_shapes
from flowerbed.tasks.detectors import build_detector, part_names
from flowerbed.tasks.records import snapshot, tensors
from flowerbed.tasks.registry import task_of


@pytest.fixture(autouse=True)
def task_identity():
    """Messages built outside a running app need Flower's task identity (as in test_fedlabel)."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0


def test_srip_is_zero_for_orthogonal_kernels_and_positive_otherwise():
    torch.manual_seed(0)
    wide = torch.linalg.qr(torch.randn(27, 8))[0].T.reshape(8, 3, 3, 3)  # 8 orthonormal rows of length 27
    tall = torch.linalg.qr(torch.randn(16, 4))[0].reshape(16, 4, 1, 1)  # 4 orthonormal columns of length 16
    assert srip([wide, tall]).item() == pytest.approx(0.0, abs=1e-5)
    assert srip([wide * 1.1]).item() == pytest.approx(1.1 ** 2 - 1, rel=1e-3)  # every singular value 1.1: |1.21 - 1|
    assert srip([torch.randn(8, 3, 3, 3)]).item() > 0.1
    skewed = wide.clone()
    skewed[0] += 0.5 * skewed[1]  # two rows no longer orthogonal
    assert srip([skewed]).item() > 0.1


def test_srip_covers_full_convs_only_and_has_gradients():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 1, 1), nn.Conv2d(8, 4, 1))
    covered = regularised_weights(model)
    assert [w.shape for w in covered] == [torch.Size([8, 3, 3, 3]), torch.Size([4, 8, 1, 1])]
    srip(covered).backward()
    assert model[0].weight.grad is not None and model[1].weight.grad is None


def test_ema_moves_the_teacher_toward_the_student():
    teacher, student = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        student.weight.fill_(3.0)
        student.num_batches_tracked.fill_(5)
    ema_update(teacher, student, 0.75)
    assert torch.allclose(teacher.weight, torch.full((2,), 1.5)) and int(teacher.num_batches_tracked) == 5


CFG = {
    "task.name": "detection", "model.name": "ssdlite", "seed": 0, "dataset.image_size": 64, "train.batch_size": 2, "train.local_epochs": 1,
    "train.local_steps": 2, "train.lr": 0.05, "train.momentum": 0.0, "train.weight_decay": 0.0,
    "algorithm.pseudo_threshold": 0.0, "algorithm.ema_rate": 0.9, "algorithm.teacher_reset": False, "train.device": "cpu",
}


def _client() -> FedSTOClient:
    """A FedSTO client holding four unlabeled generated images (its data set directly: the unit under
    test is `fit`, not the data loading)."""
    arrays = weather_shapes.generate(4, 64, ("fog",), seed=3)
    x, y = torch.from_numpy(arrays.images), torch.from_numpy(arrays.targets)
    client = FedSTOClient.__new__(FedSTOClient)
    client.context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config=CFG)
    client.cfg, client.client_id, client.device = CFG, 0, torch.device("cpu")
    client.task = task_of(CFG)
    client.data = LocalData(x[:0], y[:0], x, y, x[:1], y[:1], 3, (3, 64, 64))
    return client


def _round(client: FedSTOClient, model: nn.Module, stage: int) -> tuple[dict, dict]:
    """`fit` on `model` in place; (its metrics, the arrays the reply would carry)."""
    content = RecordDict({"arrays": snapshot(model.state_dict()),
                          "config": ConfigRecord({"server-round": 1, "fedsto-stage": stage, "fedsto-ortho": 1e-3})})
    metrics = client.fit(model, Message(content=content, dst_node_id=1, message_type="train"))
    return metrics, tensors(client.reply_arrays(model))


def test_a_stage_one_round_leaves_neck_and_head_exactly_as_sent():
    sent = build_detector("ssdlite", 3, 64, seed=0)
    before = {k: v.clone() for k, v in sent.state_dict().items()}
    parts = part_names("ssdlite", sent)
    client = _client()
    metrics, returned = _round(client, sent, stage=1)
    assert metrics["fedsto/steps"] == 2
    assert sorted(returned) == sorted(parts["backbone"])  # only the backbone travels back
    assert any(not torch.equal(returned[k], before[k]) for k in parts["backbone"])  # it trained
    for key in parts["neck"] + parts["head"]:
        assert torch.equal(sent.state_dict()[key], before[key]), key
    assert TEACHER in client.context.state  # the teacher is client state (clients/state.py writes it)


def test_a_stage_two_round_trains_every_part():
    sent = build_detector("ssdlite", 3, 64, seed=0)
    before = {k: v.clone() for k, v in sent.state_dict().items()}
    returned = _round(_client(), sent, stage=2)[1]
    for part, keys in part_names("ssdlite", sent).items():
        assert any(not torch.equal(returned[k], before[k]) for k in keys), part


def test_the_teacher_survives_a_restart(tmp_path):
    from flowerbed.clients import state

    cfg = {**CFG, "output.dir": str(tmp_path)}
    first = _client()
    first.context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config=cfg)
    first.cfg = cfg
    received = build_detector("ssdlite", 3, 64, seed=0)
    _round(first, received, stage=2)
    state.save(first.context, 0, 1)
    kept = first.context.state[TEACHER].to_torch_state_dict()
    assert any(not torch.equal(kept[k], v) for k, v in build_detector("ssdlite", 3, 64, seed=0).state_dict().items())

    restarted = _client()  # a new process: empty state, restored from the node's files before round 2
    restarted.context = Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config=cfg)
    restarted.cfg = cfg
    state.restore(restarted.context, 0, 2)
    teacher = restarted.teacher(build_detector("ssdlite", 3, 64, seed=1))  # not the received model: the kept teacher
    assert all(torch.equal(v, kept[k]) for k, v in teacher.state_dict().items())


def test_fedsto_runs_end_to_end_and_stage_one_sends_the_backbone_only(tmp_path):
    from tests.conftest import flowerbed, read_metrics

    assert flowerbed("run", "task.name=detection", "dataset=weather-shapes", "partition=domain", "model=ssdlite", "algorithm=fedsto",
                     "dataset.image_size=64", "dataset.images_per_domain=4", "partition.domains=identity+fog+contrast",
                     "clients.num=2", "clients.min_train=1", "rounds=2", "algorithm.t1=1", "algorithm.warmup_steps=2",
                     "algorithm.server_steps=1", "algorithm.pseudo_threshold=0.0", "train.local_epochs=0", "train.local_steps=1",
                     "train.batch_size=2", f"output.dir={tmp_path}/r") == 0
    first, second = read_metrics(tmp_path / "r")[1:]
    assert first["clients/trained"] == second["clients/trained"] == 2 and first["clients/failures"] == 0
    assert first["comm/bytes_up"] < second["comm/bytes_up"] == second["comm/bytes_down"]  # stage 1: backbones; stage 2: all
    assert {"global/map50", "global/map", "global/map50/fog", "global/map50/contrast", "personal/map50"} <= set(second)
