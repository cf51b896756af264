"""CreamFL (strategies/creamfl.py + clients/creamfl.py) on a generated image-caption set."""

from __future__ import annotations

import pytest

from tests.conftest import flowerbed, run, untimed
from tests.shapes import make_labeled_shapes, make_news, make_shapes, write_captions
from tests.test_flower_engine import assert_same_numbers

PUBLIC, DIM, CLIENTS = 20, 64, 4


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp("creamfl") / "shapes", 100)


def _creamfl(tmp_path, shapes, *overrides: str) -> list[dict]:
    name = "-".join(o.replace("=", "_").replace(".", "_") for o in overrides) or "default"
    return run(tmp_path / name, "task.name=retrieval", "dataset=captions", f"dataset.path={shapes}", "partition=iid",
               f"partition.public_images={PUBLIC}", "algorithm=creamfl", "model.name=resnet8", "model.text=transformer",
               "train.lr=0.1", f"dataset.cache_dir={tmp_path.parent / 'cache'}", *overrides)


@pytest.fixture(scope="module")
def unimodal(tmp_path_factory):
    """Labeled shapes in CIFAR-10's archive layout and a CSV in AG News's: the uni-modal clients' data."""
    root = tmp_path_factory.mktemp("unimodal")
    return make_labeled_shapes(root / "labeled", 60), make_news(root / "news.csv", 60)


def _mixed(tmp_path, shapes, unimodal, *overrides: str) -> list[dict]:
    """One image-text, one image-only and one text-only client."""
    images, news = unimodal
    return _creamfl(tmp_path, shapes, "clients.num=3", "partition.image_clients=1", "partition.text_clients=1",
                    f"dataset.image_path={images}", f"dataset.text_path={news}", *overrides)


def test_a_mixed_federation_sends_each_clients_modalities_and_distils_them(tmp_path, shapes, unimodal):
    lines = _mixed(tmp_path, shapes, unimodal)
    one = PUBLIC * DIM * 4  # one modality's float32 rows of every public pair
    assert len(lines) == 3
    for line in lines[1:]:
        # image senders: the image-text and the image client; text senders: the image-text and the text client
        assert line["creamfl/img_senders"] == line["creamfl/txt_senders"] == 2
        assert 4 * one <= line["comm/bytes_up"] < 4.2 * one  # two rows from the pair client, one from each uni-modal one
        assert line["creamfl/distill_loss"] > 0
        assert 0 <= line["personal/acc"] <= 1 and len(line["personal/rsum_per_client"]) == 1  # accuracy from uni-modal clients
    alone = _mixed(tmp_path, shapes, unimodal, "algorithm.distill_weight=0")
    global_ = lambda lines: [{k: v for k, v in r.items() if k.startswith("global/")} for r in lines]  # noqa: E731
    assert global_(alone)[0] == global_(lines)[0] and global_(alone)[1:] != global_(lines)[1:]  # distillation moves the server


def test_a_federation_of_uni_modal_clients_only_distils_each_modality_it_has(tmp_path, shapes, unimodal):
    """No image-text client, two image clients: text representations nobody sends, no text term."""
    images, _ = unimodal
    lines = _creamfl(tmp_path, shapes, "clients.num=2", "partition.image_clients=2", f"dataset.image_path={images}")
    assert all(r["creamfl/img_senders"] == 2 and r["creamfl/txt_senders"] == 0 and r["creamfl/distill_loss"] > 0 for r in lines[1:])
    assert "personal/rsum" not in lines[-1] and "personal/acc" in lines[-1]


def test_a_mixed_federation_gives_the_same_numbers_on_the_flower_engine(tmp_path, shapes, unimodal):
    mixed = ("rounds=3", "clients.fraction_train=1.0")
    assert_same_numbers(_mixed(tmp_path, shapes, unimodal, *mixed), _mixed(tmp_path, shapes, unimodal, *mixed, "engine=flower"))


@pytest.mark.parametrize("damage, key", [
    ("no image path", "dataset.image_path"),
    ("text in another layout", "dataset.text_path"),
    ("more text clients than rows", "partition.text_clients"),
    ("more uni-modal clients than clients", "clients.num"),
    ("uni-modal clients without creamfl", "partition.image_clients"),
])
def test_bad_client_types_are_one_line_and_exit_2(tmp_path, shapes, unimodal, capsys, damage, key):
    images, news = unimodal
    other_layout = tmp_path / "captions.csv"
    write_captions(other_layout, [("shape0000.jpg", "a red circle")])
    two_rows = make_news(tmp_path / "two.csv", 2)
    overrides = {
        "no image path": ["partition.image_clients=1", "clients.num=2"],
        "text in another layout": ["partition.text_clients=1", "clients.num=2", f"dataset.text_path={other_layout}"],
        "more text clients than rows": ["partition.text_clients=3", "clients.num=4", f"dataset.text_path={two_rows}"],
        "more uni-modal clients than clients": ["partition.image_clients=2", "partition.text_clients=1", "clients.num=2",
                                                f"dataset.image_path={images}", f"dataset.text_path={news}"],
        "uni-modal clients without creamfl": ["partition.image_clients=1", "clients.num=2", f"dataset.image_path={images}",
                                              "algorithm=fedavg"],
    }[damage]
    args = ["run", "experiment=smoke", "task.name=retrieval", "dataset=captions", f"dataset.path={shapes}", "partition=iid",
            "partition.public_images=20", "algorithm=creamfl", f"output.dir={tmp_path / 'run'}",
            f"dataset.cache_dir={tmp_path.parent / 'cache'}", *overrides]
    assert flowerbed(*args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0], err


def test_representations_travel_not_weights(tmp_path, shapes):
    lines = _creamfl(tmp_path, shapes)
    representations = CLIENTS * 2 * PUBLIC * DIM * 4  # float32 image and text rows of every public pair, per client
    for line in lines[1:]:
        assert representations <= line["comm/bytes_up"] < 1.1 * representations
        assert representations <= line["comm/bytes_down"] < 1.1 * representations
        assert line["creamfl/distill_loss"] > 0 and line["creamfl/public_loss"] > 0
    assert lines[-1]["global/rsum"] > lines[0]["global/rsum"]


def test_the_batched_engine_gives_the_same_numbers(tmp_path, shapes):
    assert untimed(_creamfl(tmp_path, shapes)) == untimed(_creamfl(tmp_path, shapes, "engine=batched"))


def test_without_distillation_the_server_learns_from_the_public_pairs_alone(tmp_path, shapes):
    """distill_weight=0 is the public-only baseline: how the clients train cannot reach the server."""
    alone = _creamfl(tmp_path, shapes, "algorithm.distill_weight=0")
    other_clients = _creamfl(tmp_path, shapes, "algorithm.distill_weight=0", "algorithm.inter_weight=0", "train.local_epochs=1")
    global_ = lambda lines: [{k: v for k, v in r.items() if k.startswith("global/")} for r in lines]  # noqa: E731
    assert global_(alone) == global_(other_clients)
    assert global_(alone) != global_(_creamfl(tmp_path, shapes))  # with distillation the clients do reach it


def test_the_mean_ablation_changes_only_the_aggregation(tmp_path, shapes):
    """Round 1: the same server start and the same client uploads; the distillation targets differ."""
    mean, ensemble = _creamfl(tmp_path, shapes, "algorithm.ensemble=mean"), _creamfl(tmp_path, shapes)
    assert mean[1]["creamfl/server_public_loss"] == ensemble[1]["creamfl/server_public_loss"]
    for key in ("train/loss", "creamfl/public_loss"):
        assert mean[1][key] == ensemble[1][key]
    assert mean[1]["creamfl/distill_loss"] != ensemble[1]["creamfl/distill_loss"]


@pytest.mark.parametrize("overrides, key", [
    (["partition.public_images=0"], "partition.public_images"),
    (["algorithm.ensemble=median"], "algorithm.ensemble"),
    (["algorithm.client_text=lstm"], "algorithm.client_text"),
])
def test_bad_settings_are_one_line_and_exit_2(tmp_path, shapes, capsys, overrides, key):
    args = ["run", "experiment=smoke", "task.name=retrieval", "dataset=captions", f"dataset.path={shapes}", "partition=iid",
            "partition.public_images=20", "algorithm=creamfl", f"output.dir={tmp_path / 'run'}", *overrides]
    assert flowerbed(*args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and key in err[0]


def test_creamfl_needs_the_retrieval_task(tmp_path, capsys):
    assert flowerbed("run", "experiment=smoke", "algorithm=creamfl", "partition.public_images=20", f"output.dir={tmp_path}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "task.name" in err[0]


@pytest.mark.parametrize("kind, sent", [("text", "txt"), ("image", "img")])
def test_a_device_says_its_client_type_and_replies_with_its_modality(tmp_path, shapes, unimodal, kind, sent):
    """A SuperNode's `client-type` and `data-path` (its own AG News CSV or image folder): the text goes
    through the captions' vocabulary (the articles' other words are the unknown id)."""
    import torch
    from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from flowerbed.clients.creamfl import CreamFLClient
    from flowerbed.simulations import config
    from flowerbed.tasks.retrieval import caption_vocabulary
    from flowerbed.tasks.text import UNKNOWN

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0  # a message built outside a running app
    images, news = unimodal
    cfg = config.load(["experiment=smoke", "task.name=retrieval", "dataset=captions", f"dataset.path={shapes}", "partition=iid",
                       f"partition.public_images={PUBLIC}", "algorithm=creamfl", f"dataset.cache_dir={tmp_path / 'cache'}"])
    node = {"client-id": 7, "client-type": kind, "data-path": str(news if kind == "text" else images)}
    client = CreamFLClient(Context(run_id=1, node_id=5, node_config=node, state=RecordDict(), run_config=cfg))
    if kind == "text":
        ids = client.data.x_labeled
        assert ids.dtype == torch.int64 and int(ids.max()) < len(caption_vocabulary(cfg)) + 2 and (ids == UNKNOWN).any()
        assert sorted(set(client.data.y_labeled.tolist())) == [0, 1, 2, 3]
    else:
        assert client.data.x_labeled.shape[1:] == (3, 32, 32) and client.data.num_classes == 3
    unit = lambda: torch.nn.functional.normalize(torch.randn(PUBLIC, DIM), dim=1)  # noqa: E731
    msg = Message(RecordDict({"config": ConfigRecord({"server-round": 1}), "arrays": ArrayRecord({"img": unit(), "txt": unit()})}),
                  dst_node_id=5, message_type=MessageType.TRAIN)
    reply = client.train(msg)["arrays"].to_torch_state_dict()
    assert list(reply) == [sent] and reply[sent].shape == (PUBLIC, DIM)
    assert "personal/acc" in client.evaluate(msg)["metrics"]


def test_a_device_with_an_unknown_client_type_is_one_line(tmp_path, shapes, unimodal):
    from flwr.app import Context, RecordDict

    from flowerbed.clients.creamfl import CreamFLClient
    from flowerbed.simulations import config
    from flowerbed.tasks.errors import ConfigError

    cfg = config.load(["experiment=smoke", "task.name=retrieval", "dataset=captions", f"dataset.path={shapes}", "partition=iid",
                       f"partition.public_images={PUBLIC}", "algorithm=creamfl", f"dataset.cache_dir={tmp_path / 'cache'}"])
    node = {"client-id": 7, "client-type": "audio", "data-path": str(unimodal[1])}
    with pytest.raises(ConfigError, match="client-type"):
        CreamFLClient(Context(run_id=1, node_id=5, node_config=node, state=RecordDict(), run_config=cfg))


def test_deploy_export_writes_each_client_types_own_rows(tmp_path, shapes, unimodal):
    """`flowerbed deploy export` of a mixed federation: a text node given its .npz and client-type=text
    trains on the rows its simulated twin holds."""
    import torch
    from flwr.app import Context, RecordDict

    from flowerbed.clients.creamfl import CreamFLClient
    from flowerbed.deploy.export import export_partitions
    from flowerbed.simulations import config

    images, news = unimodal
    cfg = config.load(["experiment=smoke", "task.name=retrieval", "dataset=captions", f"dataset.path={shapes}", "partition=iid",
                       f"partition.public_images={PUBLIC}", "algorithm=creamfl", f"dataset.cache_dir={tmp_path / 'cache'}",
                       "clients.num=3", "partition.image_clients=1", "partition.text_clients=1",
                       f"dataset.image_path={images}", f"dataset.text_path={news}"])
    files = export_partitions(cfg, tmp_path / "export")

    def data(node):
        return CreamFLClient(Context(run_id=1, node_id=5, node_config=node, state=RecordDict(), run_config=cfg)).data

    simulated, deployed = data({"partition-id": 2}), data({"client-id": 2, "client-type": "text", "data-path": str(files[2])})
    assert torch.equal(simulated.x_labeled, deployed.x_labeled) and torch.equal(simulated.y_test, deployed.y_test)
    assert simulated.x_labeled.dtype == torch.int64 and deployed.num_classes == 4
