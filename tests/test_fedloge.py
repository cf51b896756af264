"""FedLoGe: SSE-C geometry and sparsity, frozen-ness, phi_k never leaving, GLA-FR arithmetic, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from flowerbed.tasks.classification import mask_absent
from flowerbed.clients.core import sgd, sgd_train
from flowerbed.clients.fedloge import FedLoGeClient, FedLoGeNet, norm_transfer, parameters
from flowerbed.tasks.etf import (GENERIC_NORM, NO_BATCHNORM_NORM, PAPER_NORM, has_batchnorm, row_normalized, simplex_etf, sparsity_mask,
                       sse_c, sse_c_for, target_norm)
from tests.conftest import run

SMALL_ETF = ("algorithm.etf_steps=100", "algorithm.etf_lr=0.001")


@pytest.fixture(autouse=True)
def task_identity():
    """Messages built outside a running app need Flower's task identity (as in test_sampling)."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0


@pytest.mark.parametrize("dim,classes", [(64, 10), (16, 16), (512, 100)])
def test_simplex_etf_has_unit_columns_and_equal_negative_cosines(dim, classes):
    m = simplex_etf(dim, classes, torch.Generator().manual_seed(0))
    assert m.shape == (dim, classes)
    assert torch.allclose(m.norm(dim=0), torch.ones(classes, dtype=m.dtype), atol=1e-10)
    cos = m.T @ m
    off = cos[~torch.eye(classes, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, -1.0 / (classes - 1)), atol=1e-10)


def test_sse_c_is_sparse_reoptimised_and_a_function_of_the_seed():
    w = sse_c.__wrapped__(64, 10, 3, steps=300, lr=1e-3)
    assert w.shape == (10, 64) and w.dtype == torch.float32
    pruned = sparsity_mask(64, 10, 0.6, _after_etf(64, 10, 3)).T == 0
    assert int(pruned.sum()) == int(0.6 * 64 * 10)
    assert torch.all(w[pruned] == 0)  # pruned entries stayed exactly zero through Adam
    assert (w == 0).float().mean().item() == pytest.approx(0.6, abs=0.01)
    assert torch.all(w.norm(dim=1) < 0.2)  # pulled from ~0.63 (unit columns, 40% kept) toward 0.1
    assert torch.equal(w, sse_c.__wrapped__(64, 10, 3, steps=300, lr=1e-3))  # server and clients agree
    assert not torch.equal(w, sse_c.__wrapped__(64, 10, 4, steps=300, lr=1e-3))


def _after_etf(dim: int, classes: int, seed: int) -> torch.Generator:
    """The generator state sse_c uses for its mask (after drawing the ETF's basis)."""
    gen = torch.Generator().manual_seed(seed)
    simplex_etf(dim, classes, gen)
    return gen


def _client(*overrides: str) -> FedLoGeClient:
    from flowerbed.simulations import config

    cfg = config.load(["experiment=fedloge-small", "clients.num=4", "train.device=cpu", *SMALL_ETF, *overrides])
    context = Context(run_id=1, node_id=5, node_config={"partition-id": 1, "num-partitions": 4}, state=RecordDict(), run_config=cfg)
    return FedLoGeClient(context)


def _train_message(client: FedLoGeClient, server_round: int = 1) -> Message:
    model = client.new_model()
    return Message(RecordDict({"config": ConfigRecord({"server-round": server_round}), "arrays": ArrayRecord(model.state_dict())}),
                   dst_node_id=5, message_type=MessageType.TRAIN)


def test_sse_c_is_frozen_during_local_training():
    client = _client()
    model = client.new_model()
    net = FedLoGeNet(model, client.etf(model).clone(), client.personal_head())
    before = net.etf.clone()
    assert all(p.data_ptr() != net.etf.data_ptr() for p in parameters(net))
    x, y = client.data.x_labeled, client.data.y_labeled
    sgd_train(net, x, y, [torch.arange(len(y))] * 3, sgd(parameters(net), client.cfg), lambda m, a, b: m.loss(a, b))
    assert torch.equal(net.etf, before)
    assert not torch.equal(model.classifier.weight, client.new_model().classifier.weight)  # psi did train


def test_personal_head_stays_in_client_state_and_never_in_the_reply():
    client = _client()
    own = torch.nn.Linear(*reversed(client.new_model().classifier.weight.shape))
    torch.nn.init.normal_(own.weight, std=3.0, generator=torch.Generator().manual_seed(0))
    client.context.state["fedloge/phi"] = ArrayRecord(own.state_dict())  # phi_k from an earlier round
    reply = client.train(_train_message(client))
    phi = client.context.state["fedloge/phi"].to_torch_state_dict()
    sent = {k: torch.from_numpy(v.numpy().copy()) for rec in reply.array_records.values() for k, v in rec.items()}
    assert set(sent) == set(client.new_model().state_dict())  # backbone + psi, nothing else
    for tensor in sent.values():
        assert all(tensor.shape != p.shape or not torch.allclose(tensor, p) for p in phi.values())
    assert not torch.equal(phi["weight"], own.weight)  # phi_k trained, from the stored head
    # the next round starts from the stored phi_k, and evaluation does not change it
    client.evaluate(_train_message(client, 2))
    assert torch.equal(client.context.state["fedloge/phi"].to_torch_state_dict()["weight"], phi["weight"])
    assert torch.equal(client.personal_head().weight, phi["weight"])


def test_gla_fr_arithmetic():
    psi = torch.tensor([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]])
    phi = torch.tensor([[1.0, 0.0], [0.0, 3.0], [0.5, 0.5]])
    generic = row_normalized(psi)
    assert torch.allclose(generic, torch.tensor([[0.6, 0.8], [0.0, 1.0], [1.0, 0.0]]) * GENERIC_NORM)
    personal = norm_transfer(psi, phi)  # the official local realignment: raw psi rows times |phi_k,c|
    expected = torch.tensor([[3.0, 4.0], [0.0, 6.0], [np.sqrt(0.5), 0.0]], dtype=torch.float32)
    assert torch.allclose(personal, expected)
    assert torch.allclose(personal.norm(dim=1), psi.norm(dim=1) * phi.norm(dim=1))
    onto_generic = norm_transfer(generic, phi)  # the `personal_normalised` diagnostic: psi's directions, phi_k's norms
    assert torch.allclose(onto_generic.norm(dim=1), GENERIC_NORM * phi.norm(dim=1))


def test_sse_c_norm_follows_batchnorm_unless_given():
    from flowerbed.tasks.models import build_model

    cnn, resnet = (build_model(name, (1, 8, 8), 10, 0).state_dict() for name in ("cnn", "resnet8"))
    assert not has_batchnorm(cnn) and has_batchnorm(resnet)
    assert target_norm("auto", has_batchnorm(resnet)) == PAPER_NORM == 0.1  # the paper's, for its BatchNorm ResNets
    assert target_norm("auto", has_batchnorm(cnn)) == NO_BATCHNORM_NORM
    assert target_norm(0.5, True) == target_norm("0.5", False) == 0.5  # a number is taken as given
    small = {"steps": 1000, "lr": 1e-3}  # as experiment=fedloge-small
    assert sse_c_for(resnet, 0, **small).norm(dim=1).mean() == pytest.approx(0.1, rel=0.05)
    assert sse_c_for(cnn, 0, **small).norm(dim=1).mean() == pytest.approx(NO_BATCHNORM_NORM, rel=0.05)


def test_three_global_heads_score_as_three_separate_models():
    """One pass over the test set for FedLoGe's three global models gives what three full passes give."""
    from flowerbed.server.evaluation import CentralEvaluator
    from flowerbed.strategies.fedloge import FedLoGe, options, with_head
    from flowerbed.tasks.partitions import build_federation

    client = _client()
    model = client.new_model()
    x, y = client.data.x_labeled, client.data.y_labeled
    sgd_train(model, x, y, [torch.arange(len(y))] * 5, sgd(model.parameters(), client.cfg))  # psi away from its init
    arrays = ArrayRecord(model.state_dict())
    evaluator = CentralEvaluator(client.cfg, build_federation(client.cfg), torch.device("cpu"))
    strategy = FedLoGe(**options(client.cfg))
    strategy.seed = int(client.cfg["seed"])
    together = strategy.central_evaluation(evaluator)(arrays)
    psi = model.classifier.weight.detach()
    universal = with_head(arrays, sse_c_for(arrays, strategy.seed, **strategy.etf))
    universal["classifier.bias"] = ArrayRecord({"b": torch.zeros(psi.shape[0])})["b"]
    apart = {"global": evaluator(with_head(arrays, row_normalized(psi))), "global_raw": evaluator(arrays),
             "global_universal": evaluator(universal)}
    for prefix, metrics in apart.items():
        for key, value in metrics.items():
            assert together[prefix + key[len("global"):]] == pytest.approx(value, abs=1e-6), prefix + key


def test_absent_class_mask_never_predicts_an_absent_class():
    y = torch.tensor([0, 0, 2])
    logits = torch.tensor([[0.0, 5.0, 1.0], [2.0, 0.0, 1.0], [0.0, 9.0, 1.0]])
    masked = mask_absent(logits, y, 3)
    assert masked.argmax(1).tolist() == [2, 0, 2]  # class 1 is absent from this test set


def test_fedloge_end_to_end(run_dir):
    metrics = run(run_dir, "algorithm=fedloge", "partition.imbalance_factor=10", *SMALL_ETF)
    last = metrics[-1]
    for key in ("global/acc", "global/acc_few", "global_raw/acc", "global_universal/acc", "personal/acc", "personal/acc_masked"):
        assert 0.0 <= last[key] <= 1.0, key
    assert last["personal/acc_masked"] >= last["personal/acc"]  # the mask only removes wrong answers
    assert last["comm/bytes_up"] == last["comm/bytes_down"]  # up = down = backbone + psi: no phi_k
    server = torch.load(run_dir / "checkpoints" / "server.pt", weights_only=False)["arrays"]
    assert not any("phi" in key for key in server)
    saved = list((run_dir / "checkpoints" / "clients").glob("*/round-*.pt"))
    assert saved and all("fedloge/phi" in torch.load(p, weights_only=False) for p in saved)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert [m["round"] for m in metrics] == list(range(summary["rounds"] + 1)) and summary["rounds"] >= 2
    assert summary["final/personal/acc"] == last["personal/acc"]
