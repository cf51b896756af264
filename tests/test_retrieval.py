"""Image-text retrieval (tasks/retrieval.py): the data layout, the metrics, bad input, a run that learns."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from flowerbed.tasks import captions
from flowerbed.tasks.retrieval import contrastive_loss, federation, recall_metrics
from flowerbed.tasks.text import encode, vocabulary
from tests.conftest import flowerbed, run
from tests.shapes import COLOURS, make_shapes, tar_of, write_captions


def test_recall_matches_a_hand_computed_case():
    """3 images, 4 captions (image 0 has two). i2t ranks: image 0 finds c0 first (0); image 1's c1
    ties with c3 (a tie counts against it: 1); image 2's c2 is behind c1 and c3 (2). t2i ranks: c0 0,
    c1 0, c2 and c3 both 2 (their images are the least similar of three)."""
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    text = torch.tensor([[0.9, 0.1], [0.6, 0.8], [0.8, -0.6], [-0.6, 0.8]])
    owner = torch.tensor([0, 1, 2, 0])
    m = recall_metrics(image, text, owner, "global")
    expected = {"r1_i2t": 100 / 3, "r5_i2t": 100, "r10_i2t": 100, "r1_t2i": 50, "r5_t2i": 100, "r10_t2i": 100}
    for name, value in expected.items():
        assert math.isclose(m[f"global/{name}"], value, rel_tol=1e-9), name
    assert math.isclose(m["global/rsum"], sum(expected.values()), rel_tol=1e-9)


def test_recall_at_5_counts_only_the_five_nearest():
    """Image 0's only caption is the 6th most similar of 8: found at 10, not at 5 or 1."""
    image, text = torch.eye(8), torch.eye(8)
    text[0, 0] = 0.1  # caption 0's similarity to image 0
    text[1:6, 0] = torch.tensor([0.2, 0.3, 0.4, 0.5, 0.6])  # five other captions closer to image 0
    m = recall_metrics(image, text, torch.arange(8), "g")
    assert m["g/r1_i2t"] == m["g/r5_i2t"] == 100 * 7 / 8 and m["g/r10_i2t"] == 100.0


def test_the_contrastive_loss_prefers_matching_pairs():
    image = torch.nn.functional.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    valid = torch.tensor([[True, True], [True, False], [True, True], [True, False]])
    matched = image[:, None, :].repeat(1, 2, 1)
    shuffled = matched[[1, 2, 3, 0]]
    assert contrastive_loss(image, matched, valid) < contrastive_loss(image, shuffled, valid)


def test_the_tokenizer_needs_no_download_and_marks_unknown_words():
    vocab = vocabulary(["a red circle", "a blue square", "a red square"], 10)
    assert vocab["a"] == 2 and vocab["red"] == 3 and vocab["square"] == 4  # by frequency, then alphabet
    ids = encode(["A RED hexagon!", "square"], vocab, 4)
    assert ids.tolist() == [[2, 3, 1, 0], [4, 0, 0, 0]]


def test_a_folder_and_its_tar_read_the_same_and_captions_stay_with_their_image(tmp_path):
    root = make_shapes(tmp_path / "shapes", 20)
    folder = captions.read(root, (3, 16, 16), "dataset.path")
    packed = captions.read(tar_of(root, tmp_path / "shapes.tar.gz"), (3, 16, 16), "dataset.path")
    assert folder.names == packed.names and folder.captions == packed.captions
    assert np.array_equal(folder.images, packed.images) and folder.images.shape == (20, 3, 16, 16)
    for caps in folder.captions:  # every caption of an image names its one colour
        assert 3 <= len(caps) <= 5 and len({next(c for c in COLOURS if c in cap) for cap in caps}) == 1


def test_the_split_is_by_image(tmp_path):
    root = make_shapes(tmp_path / "shapes", 40)
    cfg = {"seed": 0, "dataset.name": "captions", "dataset.path": str(root), "dataset.image_shape": "3x16x16",
           "dataset.cache_dir": str(tmp_path / "cache"), "partition.name": "iid", "clients.num": 3}
    fed = federation(cfg)
    d = fed.data
    assert len(d.x_train) + len(d.x_test) == 40 and len(d.x_test) == 8
    train = {row.tobytes() for row in d.x_train}
    assert not any(row.tobytes() in train for row in d.x_test)  # no image on both sides
    assert sorted(np.concatenate([c.labeled for c in fed.clients]).tolist()) == list(range(32))
    assert sorted(np.concatenate([c.test for c in fed.clients]).tolist()) == list(range(8))


def _retrieval(path) -> list[str]:
    return ["run", "experiment=smoke", "task.name=retrieval", "dataset=captions", f"dataset.path={path}", "partition=iid"]


@pytest.mark.parametrize("damage", ["missing image", "image without captions", "empty file", "other layout"])
def test_bad_captioned_data_is_one_line_and_exit_2(tmp_path, capsys, damage):
    root = make_shapes(tmp_path / "shapes", 8)
    rows = [tuple(r) for r in csv.reader(open(root / "captions.csv"))][1:]
    if damage == "missing image":
        write_captions(root / "captions.csv", rows + [("ghost.jpg", "a ghost")])
    elif damage == "image without captions":
        (root / "images" / "extra.jpg").write_bytes((root / "images" / rows[0][0]).read_bytes())
    elif damage == "empty file":
        (root / "captions.csv").write_text("")
    else:  # AG News: class, title, description, no header
        write_captions(root / "captions.csv", [("3", "Stocks rise", "Markets gained today")], header=())
    assert flowerbed(*_retrieval(root), f"output.dir={tmp_path / 'run'}", f"dataset.cache_dir={tmp_path / 'cache'}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dataset.path" in err[0]
    assert {"missing image": "ghost.jpg", "image without captions": "extra.jpg", "empty file": "empty",
            "other layout": "image,caption"}[damage] in err[0]


def test_a_partition_by_class_is_refused_for_retrieval(tmp_path, capsys):
    root = make_shapes(tmp_path / "shapes", 8)
    assert flowerbed(*_retrieval(root)[:-1], "partition=dirichlet", f"dataset.cache_dir={tmp_path / 'cache'}") == 2
    assert "partition.name" in capsys.readouterr().err


def _learn(tmp_path, *overrides: str) -> list[dict]:
    root = tmp_path / "shapes"
    if not root.exists():
        make_shapes(root, 100)
    name = "-".join(o.split("=")[1] for o in overrides) or "default"
    return run(tmp_path / name, "task.name=retrieval", "dataset=captions", f"dataset.path={root}", "partition=iid", "rounds=3",
               "train.lr=0.1", f"dataset.cache_dir={tmp_path / 'cache'}", *overrides)


CHANCE = 2 * sum(100 * k / 20 for k in (1, 5, 10))  # 20 test images: R@K about K/20 each way


@pytest.mark.parametrize("text", ["gru", "transformer"])
def test_federated_retrieval_learns(tmp_path, text):
    lines = _learn(tmp_path, f"model.text={text}")
    first, last = lines[0], lines[-1]
    assert first["global/rsum"] < 1.5 * CHANCE < last["global/rsum"]
    assert 0 <= last["global/r1_t2i"] <= last["global/r5_t2i"] <= last["global/r10_t2i"] <= 100
    assert "personal/rsum" in last and "global/acc" not in last


def test_the_batched_engine_gives_the_same_numbers(tmp_path):
    sequential, batched = _learn(tmp_path, "engine=sequential"), _learn(tmp_path, "engine=batched")
    for a, b in zip(sequential, batched):
        assert a["global/rsum"] == b["global/rsum"] and a.get("personal/rsum") == b.get("personal/rsum")
        assert math.isclose(a.get("train/loss", 0.0), b.get("train/loss", 0.0), rel_tol=1e-5)
