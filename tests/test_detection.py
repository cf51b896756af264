"""Detection task: the VOC reader, the generated weather set, mAP, detectors' part split, partitions."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from flowerbed.tasks import detection, voc, weather_shapes
from flowerbed.tasks.detectors import DETECTORS, PARTS, build_detector, load_backbone, part_names
from flowerbed.tasks.errors import ConfigError


@pytest.fixture(scope="module")
def tiny() -> voc.DetectionArrays:
    return weather_shapes.generate(3, 64, ("identity", "fog", "contrast"), seed=1)


def _det(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32), "scores": torch.tensor(scores), "labels": torch.tensor(labels)}


def test_map_matches_a_hand_computed_case():
    # Two ground-truth boxes of class 0; detections by score: exact hit on A (0.9), a miss (0.8),
    # a hit on B with IoU 0.72 (0.7). At IoU <= 0.70 (5 COCO thresholds) precision is 1, 1/2, 2/3 at
    # recall 1/2, 1/2, 1: the 101-point envelope is 1 up to recall 0.50 (51 points) and 2/3 above
    # (50 points): AP = (51 + 50 * 2/3) / 101. At IoU >= 0.75 (5 thresholds) B is never found: 51/101.
    y = torch.tensor([[[0, 0, 0, 10, 10], [0, 20, 20, 30, 30]]], dtype=torch.float32)
    found = [_det([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 27.2]], [0.9, 0.8, 0.7], [0, 0, 0])]
    metrics = detection.mean_average_precision(found, y, num_classes=2)
    ap_low, ap_high = (51 + 50 * 2 / 3) / 101, 51 / 101
    assert metrics["global/map50"] == pytest.approx(ap_low, abs=1e-6)
    assert metrics["global/map"] == pytest.approx((ap_low + ap_high) / 2, abs=1e-6)
    assert metrics["global/map50_per_class"] == pytest.approx([ap_low, 0.0], abs=1e-6)


def test_map_per_domain_scores_each_domain_alone():
    y = torch.tensor([[[0, 0, 0, 10, 10]], [[1, 5, 5, 20, 20]]], dtype=torch.float32)
    found = [_det([[0, 0, 10, 10]], [0.9], [0]), _det([[40, 40, 50, 50]], [0.9], [1])]
    metrics = detection.mean_average_precision(found, y, 2, np.array([0, 1]), ("sun", "fog"))
    assert metrics["global/map50/sun"] == pytest.approx(1.0)
    assert metrics["global/map50/fog"] == pytest.approx(0.0)
    assert metrics["global/map50"] == pytest.approx(0.5)


def test_generated_set_has_known_boxes_and_a_domain_each(tiny):
    assert tiny.images.shape == (9, 3, 64, 64) and tiny.images.dtype == np.uint8
    assert tiny.domain_names == ("identity", "fog", "contrast") and list(tiny.domains) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    real = tiny.targets[tiny.targets[:, :, 0] != voc.PAD]
    assert len(real) >= 9 and (real[:, 1] < real[:, 3]).all() and (real[:, 4] <= 64).all()
    again = weather_shapes.generate(3, 64, ("identity", "fog", "contrast"), seed=1)
    assert np.array_equal(again.images, tiny.images)
    # the same layout under another weather: boxes equal, pixels not
    assert not np.array_equal(tiny.images[0], tiny.images[3])


def _check_read(arrays: voc.DetectionArrays, read: voc.DetectionArrays) -> None:
    assert read.class_names == weather_shapes.CLASSES[: len(read.class_names)] or set(read.class_names) <= set(weather_shapes.CLASSES)
    assert read.domain_names == tuple(sorted(arrays.domain_names))
    order = [arrays.names.index(n) for n in read.names]
    for i, j in enumerate(order):
        mine = arrays.targets[j][arrays.targets[j][:, 0] != voc.PAD]
        theirs = read.targets[i][read.targets[i][:, 0] != voc.PAD]
        names_mine = [arrays.class_names[int(c)] for c in mine[:, 0]]
        names_theirs = [read.class_names[int(c)] for c in theirs[:, 0]]
        assert names_mine == names_theirs
        assert np.allclose(mine[:, 1:], theirs[:, 1:], atol=0.06)
        assert read.domain_names[read.domains[i]] == arrays.domain_names[arrays.domains[j]]


def test_voc_reader_reads_a_folder_and_a_tar(tiny, tmp_path):
    voc.write_voc(tmp_path / "mine", tiny)
    _check_read(tiny, voc.load_voc(tmp_path / "mine", 64))
    archive = tmp_path / "mine.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "mine", arcname="export")  # one enclosing top folder
    _check_read(tiny, voc.load_voc(archive, 64))


def test_voc_reader_takes_domains_from_subfolders_and_scales_boxes(tmp_path):
    from PIL import Image

    for domain in ("rain", "snow"):
        (tmp_path / "images" / domain).mkdir(parents=True)
        (tmp_path / "annotations" / domain).mkdir(parents=True)
        Image.new("RGB", (200, 100)).save(tmp_path / "images" / domain / "a.jpg")
        (tmp_path / "annotations" / domain / "a.xml").write_text(
            "<annotation><object><name>car</name><bndbox><xmin>20</xmin><ymin>10</ymin><xmax>120</xmax><ymax>60</ymax>"
            "</bndbox></object></annotation>")
    read = voc.load_voc(tmp_path, 50)
    assert read.domain_names == ("rain", "snow") and read.class_names == ("car",)
    assert np.allclose(read.targets[0, 0], [0, 5, 5, 30, 30])


def _one_image(tmp_path, xml_objects: str, with_xml: bool = True, size=(40, 30)):
    from PIL import Image

    (tmp_path / "images").mkdir(parents=True)
    (tmp_path / "annotations").mkdir()
    Image.new("RGB", size).save(tmp_path / "images" / "sun-1.jpg")
    if with_xml:
        (tmp_path / "annotations" / "sun-1.xml").write_text(f"<annotation>{xml_objects}</annotation>")
    return tmp_path


def _obj(name, x1, y1, x2, y2):
    return f"<object><name>{name}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"


@pytest.mark.parametrize("objects, words", [
    (_obj("car", 0, 0, 50, 10), "outside its 40x30 image"),
    (_obj("car", 10, 5, 10, 20), "xmin >= xmax"),
    (_obj("car", -1, 5, 10, 20), "outside"),
])
def test_bad_boxes_are_one_line(tmp_path, objects, words):
    with pytest.raises(ConfigError, match=words) as err:
        voc.load_voc(_one_image(tmp_path, objects), 32)
    assert "\n" not in str(err.value) and "sun-1" in str(err.value)


def test_missing_annotation_and_foreign_class_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="without an annotation"):
        voc.load_voc(_one_image(tmp_path / "a", "", with_xml=False), 32)
    assert not voc.load_voc(tmp_path / "a", 32, require_labels=False).labeled[0]
    with pytest.raises(ConfigError, match="dataset.classes.*'bus' is outside"):
        voc.load_voc(_one_image(tmp_path / "b", _obj("car", 1, 1, 5, 5) + _obj("bus", 1, 1, 5, 5)), 32, classes="car,person")
    merged = voc.load_voc(tmp_path / "b", 32, classes="vehicle=car+bus")
    assert merged.class_names == ("vehicle",) and list(merged.targets[0, :, 0]) == [0, 0]


def test_a_detector_for_a_classification_dataset_is_refused():
    with pytest.raises(ConfigError, match="model.name='ssdlite'"):
        detection.check_detection_model({"model.name": "ssdlite", "dataset.name": "cifar10"})
    with pytest.raises(ConfigError, match="dataset.name='cifar10'.*detection dataset"):
        detection.load_arrays({"dataset.name": "cifar10"})


@pytest.mark.parametrize("name", list(DETECTORS))
def test_backbone_neck_head_cover_every_parameter_once(name):
    model = build_detector(name, 3, 64, seed=0)
    parts = part_names(name, model)
    keys = [k for part in PARTS for k in parts[part]]
    assert sorted(keys) == sorted(model.state_dict()) and len(keys) == len(set(keys))
    params = {n for n, _ in model.named_parameters()}
    assert all(any(k in params for k in parts[part]) for part in PARTS)  # each part holds parameters


_ROOT = Path(__file__).resolve().parents[1]
LITE0 = next((p for p in (r / "shared" / "weights" / "tf_efficientnet_lite0.imagenet.safetensors" for r in (_ROOT, *_ROOT.parents[:2]))
              if p.is_file()), Path("absent"))  # the shared weights beside a checkout (a worktree sits one level deeper)


@pytest.mark.skipif(not LITE0.is_file(), reason="the shared EfficientNet-Lite0 weights are not on this machine")
def test_lite0_backbone_loads_the_imagenet_file():
    from safetensors.torch import load_file

    model = detection.build_model({"model.name": "fcos-lite0", "model.weights": str(LITE0), "seed": 0, "dataset.image_size": 64}, 3)
    saved = load_file(str(LITE0))
    body = model.backbone.body.state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in body.items())
    assert not torch.equal(body["conv_stem.weight"], build_detector("fcos-lite0", 3, 64, seed=0).backbone.body.state_dict()["conv_stem.weight"])


def test_a_backbone_file_is_checked(tmp_path):
    model = build_detector("fcos-lite0", 3, 64, seed=0)
    with pytest.raises(ConfigError, match="model.weights=.*existing tf_efficientnet_lite0"):
        load_backbone(model, "fcos-lite0", str(tmp_path / "absent.safetensors"))
    with pytest.raises(ConfigError, match="empty for model.name=ssdlite"):
        load_backbone(build_detector("ssdlite", 3, 64, seed=0), "ssdlite", str(tmp_path / "absent.safetensors"))


def test_partition_by_domain(tiny):
    cfg = {"seed": 0, "clients.num": 4, "dataset.test_fraction": 0.34, "partition.server_domain": "fog"}
    fed = detection.split_by_domain(tiny, cfg)
    groups, names = fed.data.groups, fed.data.group_names
    assert set(groups[fed.server]) == {names.index("fog")} and len(fed.server) == 2
    assert sorted(set(fed.data.test_groups)) == [0, 1, 2]  # a test split of every domain
    seen = np.concatenate([c.unlabeled for c in fed.clients])
    assert len(seen) == len(set(seen)) and names.index("fog") not in set(groups[seen])
    assert [names[groups[c.unlabeled][0]] for c in fed.clients if len(c.unlabeled)][:2] == ["identity", "contrast"]
    assert all(len(c.labeled) == 0 for c in fed.clients)


def test_detector_trains_and_detects_on_tiny_images(tiny):
    model = build_detector("ssdlite", 3, 64, seed=0)
    x, y = torch.from_numpy(tiny.images[:2]), torch.from_numpy(tiny.targets[:2])
    loss = detection.detection_loss(model, x, y)
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    found = detection.detect(model, x)
    assert model.training and len(found) == 2 and found[0]["boxes"].shape[1] == 4
    rows = detection.rows_of(found, min_score=2.0)  # nothing scores above 1
    assert rows.shape[0] == 2 and (rows[:, :, 0] == voc.PAD).all()


DETECTION = ["task.name=detection", "dataset=weather-shapes", "partition=domain", "model=ssdlite", "algorithm=fedsto"]


@pytest.mark.parametrize("overrides, message", [
    (["model=ssdlite"], "model.name='ssdlite' is not valid: a classifier for task.name=classification"),
    (["task.name=detection", "partition=domain", "model=ssdlite", "algorithm=fedsto"],
     "dataset.name='digits' is not valid: a detection dataset for task.name=detection"),
    ([*DETECTION[:-2], "model=cnn", "algorithm=fedsto"], "model.name='cnn' is not valid: a detector"),
    ([*DETECTION[:-1], "algorithm=fedavg"], "algorithm.name='fedavg' is not valid: one for task.name=detection"),
    ([*DETECTION, "partition.server_domain=snow", "dataset.images_per_domain=2", "dataset.image_size=32"],
     "partition.server_domain='snow' is not valid: one of the data's domains"),
    (["task.name=detection", "dataset=voc", "partition=domain", "model=ssdlite", "algorithm=fedsto", "dataset.path=/nonexistent/voc"],
     "dataset.path='/nonexistent/voc' is not valid"),
])
def test_bad_detection_settings_are_one_line_and_exit_2(overrides, message, capsys, tmp_path):
    from tests.conftest import flowerbed

    assert flowerbed("run", *overrides, f"output.dir={tmp_path}/r") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
