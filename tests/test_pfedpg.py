"""pFedPG: server update direction, frozen backbone, per-client prompts, domains, end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict

from flowerbed.strategies.pfedpg import FedVPT, PFedPG, mean_pairwise_cosine
from tests.conftest import flowerbed, read_metrics

K, DIM = 4, 64  # prompts; the tiny ViT's width


@pytest.fixture(autouse=True)
def task_identity():
    """Messages built outside a running app need Flower's task identity (as in test_sampling)."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """A one-epoch tiny ViT for digits with half the training set held out (as pfedpg-small)."""
    from flowerbed.simulations import config
    from flowerbed.simulations.pretrain import pretrain

    path = tmp_path_factory.mktemp("ckpt") / "tiny-vit-digits.pt"
    pretrain(config.load(["experiment=pfedpg-small"], load_data=False), epochs=1, out=str(path))
    return str(path)


def strategy(cls=PFedPG, clients: int = 3, **kw):
    s = cls(num_clients=clients, num_prompts=K, dim=DIM, seed=0, **kw)
    s.client_of_node = {100 + 7 * c: c for c in range(clients)}  # node ids unrelated to client ids
    s.round_stats = {}
    return s


def reply(sent: Message, delta: torch.Tensor) -> Message:
    sent.metadata.__dict__["_message_id"] = f"m{sent.metadata.dst_node_id}"
    metrics = MetricRecord({"train/loss": 1.0, "num-examples": 10})
    content = RecordDict({"arrays": ArrayRecord({"delta": delta}), "metrics": metrics})
    return Message(content=content, reply_to=sent)


def prompt_of(msg: Message) -> torch.Tensor:
    return torch.from_numpy(msg.content["arrays"]["prompt"].numpy().copy())


def test_each_client_receives_its_own_prompt():
    s = strategy()
    sent = list(s.configure_train(1, ArrayRecord(), ConfigRecord(), grid=None))
    assert sorted(m.metadata.dst_node_id for m in sent) == sorted(s.client_of_node)
    prompts = [prompt_of(m) for m in sent]
    assert all(p.shape == (K, DIM) for p in prompts)
    for i in range(len(prompts)):
        for j in range(i + 1, len(prompts)):
            assert not torch.allclose(prompts[i], prompts[j])
    assert mean_pairwise_cosine(torch.stack(prompts)) < 1.0
    # FedVPT, by contrast, sends everyone the same prompt.
    shared = [prompt_of(m) for m in strategy(FedVPT).configure_train(1, ArrayRecord(), ConfigRecord(), grid=None)]
    assert all(torch.equal(shared[0], p) for p in shared)


@pytest.mark.parametrize("cls_kw", [{}, {"residual": False}])
def test_server_update_moves_generated_prompt_toward_adapted_prompt(cls_kw):
    s = strategy(lr=1e-2, **cls_kw)
    sent = list(s.configure_train(1, ArrayRecord(), ConfigRecord(), grid=None))
    target = sent[1]  # client 1 alone reports an adapted prompt
    before = prompt_of(target)
    delta = torch.randn(K, DIM, generator=torch.Generator().manual_seed(0)) * 0.5  # P~ - P
    others = s.generator.descriptors.detach().clone()
    for rnd in range(1, 6):
        msg = list(s.configure_train(rnd, ArrayRecord(), ConfigRecord(), grid=None))[1]
        adapted = before + delta
        s.aggregate_train(rnd, [reply(msg, adapted - prompt_of(msg))])
    after = prompt_of(list(s.configure_train(6, ArrayRecord(), ConfigRecord(), grid=None))[1])
    moved = after - before
    assert float((moved * delta).sum()) > 0  # toward P~_n, not away (pFedPG's update moves the generated prompt toward the adapted one)
    assert (after - (before + delta)).norm() < delta.norm()
    # the descriptors of clients that did not reply are untouched; client 1's moved
    now = s.generator.descriptors.detach()
    assert torch.equal(now[0], others[0]) and torch.equal(now[2:], others[2:]) and not torch.equal(now[1], others[1])


def test_fedvpt_averages_adapted_prompts():
    s = strategy(FedVPT, clients=2)
    sent = list(s.configure_train(1, ArrayRecord(), ConfigRecord(), grid=None))
    start = prompt_of(sent[0])
    deltas = [torch.ones(K, DIM), -3 * torch.ones(K, DIM)]
    s.aggregate_train(1, [reply(m, d) for m, d in zip(sent, deltas)])
    assert torch.allclose(s.prompt, start - torch.ones(K, DIM))


def _client(cfg: dict, client_id: int):
    from flowerbed.clients.pfedpg import PromptClient

    context = Context(run_id=1, node_id=5, node_config={"partition-id": client_id, "num-partitions": 5},
                      state=RecordDict(), run_config=cfg)
    return PromptClient(context)


def _cfg(checkpoint: str, *overrides: str) -> dict:
    from flowerbed.simulations import config

    return config.load(["experiment=pfedpg-small", f"model.weights={checkpoint}", "train.device=cpu", *overrides])


def test_backbone_stays_frozen_and_only_the_prompt_delta_travels(checkpoint):
    client = _client(_cfg(checkpoint), 2)
    model = client.personal_model()
    backbone = {k: v.clone() for k, v in model.features.backbone.state_dict().items()}
    prompt, head = model.features.prompt.detach().clone(), model.classifier.weight.detach().clone()
    msg = Message(RecordDict({"config": ConfigRecord({"server-round": 1})}), dst_node_id=5, message_type=MessageType.TRAIN)
    client.fit(model, msg)
    assert all(torch.equal(v, model.features.backbone.state_dict()[k]) for k, v in backbone.items())
    assert not torch.equal(prompt, model.features.prompt) and not torch.equal(head, model.classifier.weight)

    sent = Message(RecordDict({"config": ConfigRecord({"server-round": 1}), "arrays": ArrayRecord({"prompt": prompt})}),
                   dst_node_id=5, message_type=MessageType.TRAIN)
    content = client.train(sent)
    assert list(content["arrays"].keys()) == ["delta"] and tuple(content["arrays"]["delta"].shape) == (10, DIM)


def test_domain_shift_and_pretraining_holdout(checkpoint):
    from flowerbed.clients.data import local_data
    from flowerbed.tasks.holdout import pretrain_indices
    from flowerbed.tasks.partitions import build_federation

    cfg = _cfg(checkpoint)
    fed = build_federation(cfg)
    held_out = set(pretrain_indices(len(fed.data.y_train), 0.5).tolist())
    assert all(not held_out & set(c.train.tolist()) for c in fed.clients)
    plain = local_data({**cfg, "partition.domain_shift": False}, {"partition-id": 1}, torch.device("cpu"))
    shifted = local_data(cfg, {"partition-id": 1}, torch.device("cpu"))  # client 1: rotated by 90 degrees
    assert torch.equal(shifted.x_test, torch.rot90(plain.x_test, 1, dims=(2, 3)))
    assert torch.equal(shifted.y_labeled, plain.y_labeled)
    noisy = [local_data(cfg, {"partition-id": 3}, torch.device("cpu")).x_labeled for _ in range(2)]
    clean = local_data({**cfg, "partition.domain_shift": False}, {"partition-id": 3}, torch.device("cpu")).x_labeled
    assert torch.equal(noisy[0], noisy[1])  # client 3's noise: the same on every load (seeded by client and image)
    assert np.isfinite(noisy[0].numpy()).all() and not torch.allclose(noisy[0], clean, atol=1e-3)


def test_end_to_end_bytes_and_resume(tmp_path, checkpoint):
    common = ["experiment=pfedpg-small", f"model.weights={checkpoint}", "train.local_epochs=1", "model.prompts=4"]
    assert flowerbed("run", *common, "rounds=3", f"output.dir={tmp_path / 'straight'}") == 0
    straight = read_metrics(tmp_path / "straight")
    assert [r["round"] for r in straight] == [0, 1, 2, 3]
    last = straight[-1]
    assert "global/acc" not in last and 0 <= last["personal/acc"] <= 1 and len(last["personal/acc_by_client"]) == 5
    floats = 5 * 4 * DIM  # 5 clients x K x d: the prompts, not the model
    assert floats * 4 <= last["comm/bytes_down"] < floats * 4 * 1.2
    assert floats * 4 <= last["comm/bytes_up"] < floats * 4 * 1.2
    assert last["prompt/pairwise_cos"] < 1.0

    resumed = tmp_path / "resumed"
    assert flowerbed("run", *common, "rounds=2", f"output.dir={resumed}") == 0
    assert flowerbed("run", *common, "rounds=3", f"output.dir={resumed}", "resume=true") == 0
    again = read_metrics(resumed)[-1]
    for key in ("personal/acc", "prompt/pairwise_cos", "prompt/delta_norm", "train/loss"):
        assert again[key] == pytest.approx(last[key], rel=1e-5), key


def test_clear_errors(tmp_path, capsys, checkpoint):
    out = f"output.dir={tmp_path / 'x'}"
    assert flowerbed("run", "experiment=pfedpg-small", f"model.weights={tmp_path / 'missing.pt'}", out) == 2
    assert flowerbed("run", "experiment=pfedpg-small", "model=cnn", out) == 2
    other_split = "partition.pretrain_fraction=0.25"
    assert flowerbed("run", "experiment=pfedpg-small", f"model.weights={checkpoint}", other_split, out) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("flowerbed: error")]
    assert len(lines) == 3 and "flowerbed pretrain" in lines[0] and "model.name" in lines[1] and "pretrain_fraction" in lines[2]


def test_pretrain_augmentation_shifts_and_flips_each_image_on_its_own():
    from flowerbed.clients.augment import crop_flip

    x = torch.arange(64 * 3 * 8 * 8, dtype=torch.float32).reshape(64, 3, 8, 8) + 1  # no zeros: padding shows as 0
    out = crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    assert out.shape == x.shape
    flipped = 0
    for a, b in zip(x, out):
        kept = b[b != 0]
        views = [v for v in (a, a.flip(-1)) if torch.isin(kept, v).all()]
        assert views and len(kept) >= 3 * 6 * 6  # at most 2 px lost per side
        flipped += bool(kept[0] > kept[1]) if len(kept) > 1 else 0  # values fall along a row once flipped
    assert 0 < flipped < 64  # some images flipped, some not
    assert len({tuple((o == 0).flatten().tolist()) for o in out}) > 1  # not one crop for the whole batch


def test_cifar_preset_pretrains_and_runs_on_disjoint_classes(tmp_path):
    """The CPU preset's pipeline end to end on random 3x32x32 images (tests never need CIFAR-10)."""
    data = ["experiment=pfedpg-cifar10-disjoint", "dataset=fake-images", "dataset.num_train=500", "dataset.num_test=100",
            "partition.labeled_fraction=0.2", f"model.weights={tmp_path / 'vit.pt'}"]
    assert flowerbed("pretrain", *data, "--epochs", "1", "--augment") == 0
    out = tmp_path / "run"
    assert flowerbed("run", *data, "rounds=1", "train.local_epochs=1", f"output.dir={out}") == 0
    last = read_metrics(out)[-1]
    assert len(last["personal/acc_by_client"]) == 5 and "prompt/pairwise_cos" in last
