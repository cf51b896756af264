"""CreamFL (strategies/creamfl.py + clients/creamfl.py) on a generated image-caption set."""

from __future__ import annotations

import pytest

from tests.conftest import flowerbed, run, untimed
from tests.shapes import make_shapes

PUBLIC, DIM, CLIENTS = 20, 64, 4


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp("creamfl") / "shapes", 100)


def _creamfl(tmp_path, shapes, *overrides: str) -> list[dict]:
    name = "-".join(o.replace("=", "_").replace(".", "_") for o in overrides) or "default"
    return run(tmp_path / name, "task.name=retrieval", "dataset=captions", f"dataset.path={shapes}", "partition=iid",
               f"partition.public_images={PUBLIC}", "algorithm=creamfl", "model.name=resnet8", "model.text=transformer",
               "train.lr=0.1", f"dataset.cache_dir={tmp_path.parent / 'cache'}", *overrides)


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
