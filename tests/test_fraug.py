"""FedBN and FRAug: BatchNorm and the RTNet never leave a client, the generator is shared, local
state survives a resume and restarted SuperNodes, and feature-shift federations are what they say."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from flowerbed.clients.fedbn import FedBNClient
from flowerbed.clients.fraug import MEANS_KEY, RTNET_KEY, Augmentation, FRAugClient, RTNet, mmd, ramp
from flowerbed.strategies.registry import STRATEGIES
from flowerbed.tasks import domains
from flowerbed.tasks.fraug import build_generator
from flowerbed.tasks.models import batchnorm_keys
from flowerbed.tasks.records import wire_bytes
from tests.conftest import flowerbed, run, untimed
from tests.test_deploy import RestartingNodes, _device_run, close

BN = ("model=cnn_bn", "partition=iid", "partition.domain_shift=true", "train.local_epochs=0", "train.local_steps=4")


@pytest.fixture(autouse=True)
def task_identity():
    """Messages built outside a running app need Flower's task identity (as in test_fedloge)."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0


def _client(algorithm: str):
    from flowerbed.simulations import config

    cfg = config.load(["experiment=fraug-digits", f"algorithm={algorithm}", "train.device=cpu", "train.local_steps=3"])
    context = Context(run_id=1, node_id=5, node_config={"partition-id": 2, "num-partitions": 6}, state=RecordDict(), run_config=cfg)
    client = (FRAugClient if algorithm.startswith("fraug") else FedBNClient)(context)
    return client, STRATEGIES[algorithm](cfg)


def _message(strategy, arrays: ArrayRecord, server_round: int, kind: str = MessageType.TRAIN) -> Message:
    sent = strategy.with_generator(arrays) if hasattr(strategy, "with_generator") else arrays
    sent = strategy.shared(sent) if kind == MessageType.TRAIN else strategy.evaluated(sent)
    return Message(RecordDict({"config": ConfigRecord({"server-round": server_round}), "arrays": sent}), dst_node_id=5, message_type=kind)


@pytest.mark.parametrize("algorithm", ["fedbn", "fraug"])
def test_batchnorm_and_rtnet_stay_on_the_client_and_the_generator_travels(algorithm):
    client, strategy = _client(algorithm)
    model = client.new_model()
    local = set(batchnorm_keys(model.state_dict()))
    assert local and all(k not in strategy.shared(ArrayRecord(model.state_dict())) for k in local)
    reply = client.train(_message(strategy, ArrayRecord(model.state_dict()), 1))["arrays"]
    assert not local & set(reply.keys())  # BatchNorm never in a reply
    kept = client.context.state["fedbn/bn"].to_torch_state_dict()
    assert set(kept) == local and not torch.equal(kept["features.1.running_mean"], model.state_dict()["features.1.running_mean"])
    generator = {k for k in reply.keys() if k.startswith("generator.")}
    if algorithm == "fraug":
        assert any(k.endswith("running_mean") for k in generator)  # G travels whole, its BatchNorm included
        assert RTNET_KEY in client.context.state and MEANS_KEY in client.context.state
        rtnet = set(client.context.state[RTNET_KEY].keys())
        assert rtnet and not {"rtnet." + k for k in rtnet} & set(reply.keys())
    else:
        assert not generator
    # the next round starts from this client's own BatchNorm, whatever the server holds
    again = client.model_from(_message(strategy, ArrayRecord(model.state_dict()), 2, MessageType.EVALUATE))
    assert torch.equal(again.state_dict()["features.1.running_mean"], kept["features.1.running_mean"])


def test_fraug_schedule_and_mmd():
    assert ramp(0.002, 1, 100) == pytest.approx(np.exp(-0.2))  # weight min(0.5, .) = 0.5 from round 1
    assert ramp(0.075, 1, 40) == pytest.approx(np.exp(-3.0)) and ramp(0.075, 40, 40) == pytest.approx(np.exp(-0.075))
    a = torch.randn(32, 8, generator=torch.Generator().manual_seed(0))
    assert abs(float(mmd(a, a))) < 1e-6 and float(mmd(a, a + 3.0)) > 0.1


def test_feature_interpolation_moves_augmented_embeddings_to_their_references():
    """mix 0: the head sees the references themselves (the real embedding, the class mean); mix 1: G's."""
    torch.manual_seed(0)
    head, g_net, rt = torch.nn.Linear(8, 3), build_generator(8, 3, 0, 4), RTNet(8, 3, 4)
    cfg = {"algorithm.class_mean_momentum": 0.3, "algorithm.lambda_generator": 1.0, "algorithm.lambda_rtnet": 1.0,
           "algorithm.generator_distance": "l2", "algorithm.rtnet_distance": "mmd", "algorithm.generator_lr": 0.05,
           "algorithm.rtnet_lr": 0.05, "train.lr": 0.01, "train.momentum": 0.0, "train.weight_decay": 0.0}
    h, y, u, means = torch.randn(6, 8), torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([2, 1, 0, 2, 1, 0]), torch.randn(3, 8)
    losses = {}
    for mix in (0.0, 1.0):
        aug = Augmentation(cfg, head, means, g_net, rt, torch.Generator().manual_seed(1), mix=mix)
        losses[mix] = float(aug.augmented_ce(h, y, u))
    ce = torch.nn.functional.cross_entropy
    assert losses[0.0] == pytest.approx(float((ce(head(h), y) + ce(head(means[u]), u)) / 2), rel=1e-6)
    assert abs(losses[1.0] - losses[0.0]) > 1e-3


def test_a_model_without_batchnorm_is_refused_before_any_work(tmp_path, capsys):
    for algorithm in ("fedbn", "fraug"):
        assert flowerbed("run", f"algorithm={algorithm}", "model=cnn", f"output.dir={tmp_path / algorithm}") == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all("model.name='cnn' is not valid: a model with BatchNorm layers" in line for line in lines)
    assert not (tmp_path / "fedbn").exists() and not (tmp_path / "fraug").exists()


def test_fraug_without_generator_trains_exactly_as_fedbn(tmp_path):
    fedbn = run(tmp_path / "fedbn", "algorithm=fedbn", *BN)
    ablation = run(tmp_path / "ablation", "algorithm=fraug-no-generator", *BN)
    fraug = run(tmp_path / "fraug", "algorithm=fraug", *BN)
    assert untimed(fedbn) == untimed(ablation)
    assert fraug[-1]["personal/acc"] != fedbn[-1]["personal/acc"]
    assert "global/acc" not in fedbn[-1]  # no global model: BatchNorm is nobody's
    # FedBN sends the model without BatchNorm; FRAug sends G next to it, both ways
    assert fedbn[-1]["comm/bytes_up"] == fedbn[-1]["comm/bytes_down"] < fraug[-1]["comm/bytes_up"] == fraug[-1]["comm/bytes_down"]


@pytest.mark.parametrize("algorithm", ["fedbn", "fraug"])
def test_local_state_survives_a_resume(tmp_path, algorithm):
    straight = run(tmp_path / "straight", f"algorithm={algorithm}", *BN, "rounds=3")
    run(tmp_path / "cut", f"algorithm={algorithm}", *BN, "rounds=2")
    resumed = run(tmp_path / "cut", f"algorithm={algorithm}", *BN, "rounds=3", "resume=true")
    assert untimed(resumed) == untimed(straight)


@pytest.mark.parametrize("algorithm", ["fedbn", "fraug"])
def test_local_state_survives_supernode_restarts(tmp_path, algorithm):
    """Exported data files and node-local state-dirs, every node restarted before every round:
    the sequential engine's numbers (BatchNorm, and FRAug's RTNet and class means, come back from disk)."""
    overrides = [f"algorithm={algorithm}", *BN, "clients.num=3", "rounds=3", "seed=0", "clients.timeout=120"]
    sequential, restarted, grid = _device_run(tmp_path, RestartingNodes, overrides)
    assert grid.restarts == 2 * 3 and len(sequential) == len(restarted) == 4
    for a, b in zip(sequential, restarted):
        assert close(a, b) == [], a["round"]
    saved = torch.load(next((tmp_path / "state" / "node-1" / "1").glob("round-*.pt")), weights_only=False)
    assert "fedbn/bn" in saved and (algorithm != "fraug" or {RTNET_KEY, MEANS_KEY} <= set(saved))


def test_restarted_fraug_nodes_without_their_state_dir_lose_their_state(tmp_path, monkeypatch):
    """The control for the test above: without the restore from state-dir the same restarts give
    other personalized numbers, so the state there is really needed."""
    from flowerbed.clients import state

    monkeypatch.setattr(state, "restore", lambda *args: None)
    overrides = ["algorithm=fraug", *BN, "clients.num=3", "rounds=3", "seed=0", "clients.timeout=120"]
    sequential, restarted, _ = _device_run(tmp_path, RestartingNodes, overrides)
    assert close(sequential[1], restarted[1]) == []  # round 1: no restart yet
    assert any(k.startswith("personal/") for k in close(sequential[-1], restarted[-1]))


def test_corruption_domains_are_per_client_and_deterministic(tmp_path):
    from flowerbed.clients.data import local_data
    from flowerbed.simulations import config
    from flowerbed.tasks.partitions import build_federation

    names = "gaussian_noise+gaussian_blur+contrast+jpeg+fog+pixelate"
    cfg = config.load(["experiment=fraug-digits", "partition.domains=" + names, "partition.samples_per_client=50", "train.device=cpu"])
    assert domains.parse(names) == domains.CORRUPTIONS[:6] and domains.domain_of(9, domains.parse(names)) == "jpeg"
    fed = build_federation(cfg)
    assert all(len(c.labeled) == 50 for c in fed.clients) and all(len(c.test) > 50 for c in fed.clients)
    clean = [local_data({**cfg, "partition.domain_shift": False}, {"partition-id": k}, torch.device("cpu")) for k in range(6)]
    seen = [local_data(cfg, {"partition-id": k}, torch.device("cpu")) for k in range(6)]
    for k, (a, b) in enumerate(zip(clean, seen)):
        assert torch.equal(a.y_labeled, b.y_labeled) and a.x_test.shape == b.x_test.shape, k
        assert not torch.equal(a.x_labeled, b.x_labeled), k  # every family changes the images
        assert float(b.x_labeled.min()) >= -1.0 - 1e-5 and float(b.x_labeled.max()) <= 1.0 + 1e-5  # still pixels in [0, 1]
    noise = domains.shift(clean[0].x_test.numpy(), 0, domains.parse(names), ((0.5,), (0.5,)))
    assert np.array_equal(noise, seen[0].x_test.numpy())  # deterministic per client


def test_bad_domain_settings_are_one_line(tmp_path, capsys):
    out = f"output.dir={tmp_path / 'r'}"
    assert flowerbed("run", "partition.domains=snow", out) == 2
    assert flowerbed("run", "dataset=synthetic", "model=mlp", "partition.domain_shift=true", "partition.domains=jpeg", out) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "partition.domains='snow' is not valid" in lines[0] and "pixel-space" in lines[1]



def test_natural_domains_one_image_folder_per_client(tmp_path):
    """`dataset=imagefolder dataset.domains=true partition=natural`: client k trains on the k-th domain
    folder and is scored on that domain's own test split."""
    from flowerbed.clients.data import local_data
    from flowerbed.simulations import config
    from tests.test_imagefolder import write_folder

    write_folder(tmp_path / "domains" / "photo", {"train": 3, "test": 2}, size=(8, 8))
    write_folder(tmp_path / "domains" / "sketch", {"train": 5, "test": 1}, size=(8, 8))
    common = ["dataset=imagefolder", f"dataset.path={tmp_path / 'domains'}", "dataset.domains=true", f"dataset.cache_dir={tmp_path / 'cache'}",
              "partition=natural", "clients.num=2", "model=cnn_bn", "algorithm=fedbn", "train.local_steps=2", "train.local_epochs=0"]
    cfg = config.load([*common, "train.device=cpu"])
    sizes = [(len(d.y_labeled), len(d.y_test)) for d in (local_data(cfg, {"partition-id": k}, torch.device("cpu")) for k in range(2))]
    assert sizes == [(9, 6), (15, 3)]  # 3 classes: photo 3 train / 2 test each, sketch 5 / 1
    last = run(tmp_path / "run", *common, "rounds=1")[-1]
    assert len(last["personal/acc_per_client"]) == 2 and 0 <= last["personal/acc"] <= 1  # each domain scored on its own split


def _pretrained_cnn_bn(tmp_path):
    """A cnn_bn that `flowerbed pretrain` trained on the held-out half of digits (2 epochs)."""
    from flowerbed.simulations import config
    from flowerbed.simulations.pretrain import pretrain

    stats = pretrain(config.load(["model=cnn_bn", "partition.pretrain_fraction=0.5"], load_data=False), epochs=2,
                     out=str(tmp_path / "cnn_bn.pt"))
    assert stats["model"] == "cnn_bn" and stats["test_acc"] > 0.5  # it learned from the held-out half
    return tmp_path / "cnn_bn.pt"


def test_clients_start_from_the_batchnorm_of_model_init_until_they_have_their_own(tmp_path):
    from flowerbed.simulations import config

    path = _pretrained_cnn_bn(tmp_path)
    pretrained = torch.load(path, weights_only=True)["model"]
    cfg = config.load([*BN, "algorithm=fedbn", f"model.init={path}", "partition.pretrain_fraction=0.5"])
    strategy = STRATEGIES["fedbn"](cfg)
    assert strategy.send_batchnorm and not STRATEGIES["fedbn"](config.load([*BN, "algorithm=fedbn"])).send_batchnorm
    client = FedBNClient(Context(run_id=1, node_id=5, node_config={"partition-id": 1, "num-partitions": 10}, state=RecordDict(),
                                 run_config=cfg))
    arrays = ArrayRecord(pretrained)
    first = strategy.with_batchnorm([_message(strategy, arrays, 1)], arrays)[0]
    assert set(first.content["batchnorm"].keys()) == set(batchnorm_keys(pretrained))
    mean = "features.1.running_mean"
    assert torch.equal(client.model_from(first).state_dict()[mean], pretrained[mean])  # the pretrained statistics
    client.train(first)
    own = client.context.state["fedbn/bn"].to_torch_state_dict()[mean]
    assert not torch.equal(own, pretrained[mean])
    again = strategy.with_batchnorm([_message(strategy, arrays, 2)], arrays)[0]
    assert torch.equal(client.model_from(again).state_dict()[mean], own)  # its own from then on


def test_a_run_starts_from_a_pretrained_model_and_refuses_one_pretrained_on_its_samples(tmp_path, capsys):
    path = _pretrained_cnn_bn(tmp_path)
    common = [*BN, "algorithm=fedbn", "rounds=1", "partition.pretrain_fraction=0.5"]
    plain = run(tmp_path / "plain", *common)
    started = run(tmp_path / "started", *common, f"model.init={path}")
    state = torch.load(path, weights_only=True)["model"]
    record = ArrayRecord({k: state[k] for k in batchnorm_keys(state)})
    # each of the round's 4 train messages carries the BatchNorm record, and nothing else is added
    assert started[-1]["comm/bytes_down"] - plain[-1]["comm/bytes_down"] == 4 * wire_bytes(record)
    assert started[-1]["comm/bytes_up"] == plain[-1]["comm/bytes_up"]  # replies stay without BatchNorm
    assert started[-1]["personal/acc"] > plain[-1]["personal/acc"] + 0.2  # one round from a pretrained model
    capsys.readouterr()
    assert flowerbed("run", *BN, "algorithm=fedbn", f"model.init={path}", f"output.dir={tmp_path / 'leaky'}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.init=" in err[0] and "pretrain_fraction=0.5; this run has digits and 0.0" in err[0]
    assert not (tmp_path / "leaky").exists()
    # secure aggregation's messages could not carry the starting BatchNorm layers
    assert flowerbed("run", *common, f"model.init={path}", "privacy.secagg=true", f"output.dir={tmp_path / 'secure'}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "privacy.secagg=True is not valid: false with model.init under fedbn" in err[0]
