"""Image-folder datasets (`dataset=imagefolder`, `dataset=cifar10 dataset.path=...`) on tiny folders
and archives written here; one optional test reads the shared CIFAR-10 archive if it is present."""

from __future__ import annotations

import os
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flowerbed.tasks import imagefolder
from flowerbed.tasks.datasets import HUB_DATASETS, load_image_folder, load_hub
from flowerbed.tasks.errors import ConfigError
from tests.conftest import flowerbed

CLASSES = ("cat", "dog", "frog")
# the development machines' copy (../shared/data next to the checkout, or two up from a worktree)
SHARED_CIFAR10 = next((p for p in (Path(__file__).resolve().parents[n] / "shared/data/cifar10-jpeg.tar.gz" for n in (2, 3))
                       if p.exists()), Path("cifar10-jpeg.tar.gz"))


def pixels(label: int, i: int, size=(6, 4)) -> np.ndarray:
    """A distinct RGB image (H, W, 3) for every (label, i): lossless through PNG."""
    rng = np.random.default_rng([label, i])
    return rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def write_folder(root: Path, counts: dict[str, int], classes=CLASSES, size=(6, 4), suffix=".png") -> dict[str, np.ndarray]:
    """`root/<split>/<class>/NN.png` for each split in `counts`; returns split -> uint8 (n, 3, H, W) in reading order."""
    out = {}
    for split, n in counts.items():
        images = []
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                image = pixels(label, i + (1000 if split == "test" else 0), size)
                Image.fromarray(image).save(folder / f"{i:02d}{suffix}")
                images.append(image.transpose(2, 0, 1))
        out[split] = np.stack(images)
    return out


def tar_of(folder: Path, path: Path, top: str | None = "mydata") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for child in sorted(folder.iterdir()):
            tar.add(child, arcname=f"{top}/{child.name}" if top else child.name)
    return path


def test_train_test_folder_and_its_tar_give_the_same_dataset(tmp_path):
    """Folder names become class names in sorted order; pixels survive; the archive's top folder is skipped."""
    expected = write_folder(tmp_path / "d", {"train": 4, "test": 2})
    (tmp_path / "d" / "README.txt").write_text("not an image: ignored")
    cfg = {"path": str(tmp_path / "d"), "cache_dir": str(tmp_path / "cache")}
    raw = imagefolder.load_cached(cfg["path"], None, tmp_path / "cache", "dataset.path", "dataset.image_shape")
    assert raw.classes == CLASSES
    assert np.array_equal(raw.x_train, expected["train"]) and np.array_equal(raw.x_test, expected["test"])
    assert raw.y_train.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and raw.y_test.tolist() == [0, 0, 1, 1, 2, 2]

    data = load_image_folder(cfg)
    assert data.class_names == CLASSES and data.num_classes == 3 and data.input_shape == (3, 4, 6)
    # standardised with the training split's per-channel mean and std
    assert np.allclose(data.x_train.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    assert np.allclose(data.x_train.std(axis=(0, 2, 3)), 1, atol=1e-4)

    archive = tar_of(tmp_path / "d", tmp_path / "d.tar.gz")
    packed = load_image_folder({**cfg, "path": str(archive)})
    assert packed.class_names == CLASSES
    for a, b in ((data.x_train, packed.x_train), (data.y_train, packed.y_train), (data.x_test, packed.x_test)):
        assert np.array_equal(a, b)


def test_one_pool_is_split_stratified_with_a_fixed_seed_and_resized(tmp_path):
    write_folder(tmp_path, {"all": 5}, classes=("10", "2", "b"), size=(5, 7))
    cfg = {"path": str(tmp_path / "all"), "cache_dir": str(tmp_path / "cache"), "test_fraction": 0.4, "image_shape": "1x8x8"}
    data = load_image_folder(cfg)
    assert data.class_names == ("10", "2", "b")  # sorted as text: not every name is a number
    assert data.x_train.shape == (9, 1, 8, 8) and data.x_test.shape == (6, 1, 8, 8)
    assert np.bincount(data.y_test).tolist() == [2, 2, 2]  # stratified
    again = load_image_folder(cfg)
    assert np.array_equal(data.x_test, again.x_test)
    write_folder(tmp_path / "n", {"all": 2}, classes=("10", "2", "9"))
    assert imagefolder.read(tmp_path / "n", None, "k", "s").classes == ("2", "9", "10")  # numbers sort as numbers


def test_decoded_arrays_are_cached_by_content_and_reused(tmp_path):
    root = tmp_path / "d"
    write_folder(root, {"train": 2, "test": 1})
    cache = tmp_path / "cache"
    first = imagefolder.load_cached(root, None, cache, "dataset.path", "dataset.image_shape")
    files = sorted((cache / "imagefolder").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"  # no temporary left behind
    stamp = files[0].stat().st_mtime_ns
    again = imagefolder.load_cached(root, None, cache, "dataset.path", "dataset.image_shape")
    assert files[0].stat().st_mtime_ns == stamp and np.array_equal(first.x_train, again.x_train)
    assert again.classes == CLASSES
    # a changed image is a different folder: decoded again into a new cache entry
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(root / "train" / "cat" / "00.png")
    os.utime(root / "train" / "cat" / "00.png", ns=(1, 1))
    changed = imagefolder.load_cached(root, None, cache, "dataset.path", "dataset.image_shape")
    assert len(list((cache / "imagefolder").iterdir())) == 2 and changed.x_train[0].max() == 0


def test_cifar10_from_a_path_reads_ten_class_folders_with_the_hub_normalisation(tmp_path):
    classes = HUB_DATASETS["cifar10"].class_names
    write_folder(tmp_path / "c", {"train": 2, "test": 1}, classes=classes, size=(16, 16), suffix=".jpg")
    data = load_hub("cifar10", {"path": str(tmp_path / "c"), "cache_dir": str(tmp_path / "cache")})
    assert data.class_names == classes and data.input_shape == (3, 32, 32) and len(data.y_train) == 20
    raw = imagefolder.load_cached(tmp_path / "c", (3, 32, 32), tmp_path / "cache", "dataset.path", "dataset.image_shape")
    spec = HUB_DATASETS["cifar10"]
    expected = (raw.x_test[:, 1].astype(np.float32) / 255 - spec.mean[1]) / spec.std[1]
    assert np.allclose(data.x_test[:, 1], expected, atol=1e-6)
    write_folder(tmp_path / "three", {"train": 1, "test": 1})
    with pytest.raises(ConfigError, match="10 class folders for cifar10"):
        load_hub("cifar10", {"path": str(tmp_path / "three"), "cache_dir": str(tmp_path / "cache")})


def _bad_inputs(root: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (overrides, expected message), each a folder or archive written under `root`."""
    cases: dict[str, tuple[list[str], str]] = {"missing": ([f"dataset.path={root}/nowhere"], "an existing folder")}
    write_folder(root / "empty-class", {"train": 1, "test": 1})
    (root / "empty-class" / "test" / "eel").mkdir()
    (root / "empty-class" / "train" / "eel").mkdir()
    (root / "empty-class" / "train" / "eel" / "notes.txt").write_text("no image here")
    cases["empty-class"] = ([f"dataset.path={root}/empty-class"], "class folder 'train/eel' holds no images")
    write_folder(root / "broken", {"train": 1, "test": 1})
    (root / "broken" / "train" / "dog" / "01.png").write_bytes(b"not a png")
    cases["broken"] = ([f"dataset.path={root}/broken"], "cannot read image 'train/dog/01.png'")
    flat = root / "flat"
    flat.mkdir()
    for i in range(3):
        Image.fromarray(pixels(0, i)).save(flat / f"{i}.png")
    cases["layout"] = ([f"dataset.path={tar_of(flat, root / 'flat.tar', top=None)}"], "not the ImageFolder layout")
    write_folder(root / "sizes", {"train": 1, "test": 1})
    Image.fromarray(pixels(0, 0, size=(8, 8))).save(root / "sizes" / "test" / "frog" / "01.png")
    cases["sizes"] = ([f"dataset.path={root}/sizes"], "images differ in size")
    write_folder(root / "classes", {"train": 1})
    write_folder(root / "classes", {"test": 1}, classes=("cat", "dog", "newt"))
    cases["classes"] = ([f"dataset.path={root}/classes"], "only in train/: frog; only in test/: newt")
    (root / "junk.tar.gz").write_bytes(b"\x1f\x8b garbage")
    cases["not-a-tar"] = ([f"dataset.path={root}/junk.tar.gz"], "a folder or a readable .tar/.tar.gz")
    return cases


def test_bad_image_folders_are_one_line_exit_2_and_nothing_written(tmp_path, capsys):
    cache, out = tmp_path / "cache", tmp_path / "run"
    for name, (overrides, message) in _bad_inputs(tmp_path / "data").items():
        code = flowerbed("run", "dataset=imagefolder", *overrides, f"dataset.cache_dir={cache}", f"output.dir={out}")
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1, (name, err)
        assert not cache.exists() and not out.exists(), name


@pytest.mark.skipif(not SHARED_CIFAR10.exists() or not os.environ.get("FLOWERBED_SLOW_TESTS"),
                    reason="needs the shared CIFAR-10 archive (not on users' machines) and FLOWERBED_SLOW_TESTS=1: "
                           "decodes 60,000 JPEGs, about a minute on 2 busy cores")
def test_the_shared_cifar10_archive_loads_and_is_cached(tmp_path):
    cfg = {"path": str(SHARED_CIFAR10), "cache_dir": str(tmp_path)}
    data = load_hub("cifar10", cfg)
    assert data.class_names == HUB_DATASETS["cifar10"].class_names
    assert np.bincount(data.y_train).tolist() == [5000] * 10 and np.bincount(data.y_test).tolist() == [1000] * 10
    cached = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.npz")}
    assert len(cached) == 1  # the decoded arrays, once
    start = time.perf_counter()
    again = load_hub("cifar10", cfg)
    print(f"second load: {time.perf_counter() - start:.2f} s")  # benchmark output, not an assert
    assert np.array_equal(again.y_train, data.y_train)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.npz")} == cached  # read, not decoded and written again


def test_reports_name_the_classes_of_an_image_folder(tmp_path):
    """The per-class figure of a long-tailed run on an image folder is labelled with its folder names."""
    import json

    import yaml

    from flowerbed.simulations.report import find_runs, per_class, write_report

    write_folder(tmp_path / "d", {"train": 6, "test": 2})
    run = tmp_path / "run"
    run.mkdir()
    config = {"algorithm.name": "fedavg", "seed": 0, "clients.num": 2, "dataset.name": "imagefolder",
              "dataset.path": str(tmp_path / "d"), "dataset.cache_dir": str(tmp_path / "cache"), "dataset.image_shape": "",
              "dataset.test_fraction": 0.2, "partition.name": "iid", "partition.imbalance_factor": 3.0}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "metrics.jsonl").write_text(json.dumps({"round": 1, "global/acc": 0.5, "global/acc_per_class": [0.9, 0.5, 0.1]}) + "\n")
    (run / "summary.json").write_text(json.dumps({"rounds": 1, "final/global/acc": 0.5}))
    [(counts, lines, names)] = per_class(find_runs([run]), []).values()
    assert names == CLASSES and counts.tolist() == [6, 3, 2]
    assert [line.tolist() for line in lines.values()] == [[0.9, 0.5, 0.1]]
    report = write_report([run], tmp_path / "report")
    assert (tmp_path / "report" / "per_class.png").stat().st_size > 0 and "per_class.png" in report.read_text()


def _load_in_child(args) -> tuple[str, ...]:
    root, cache = args
    return imagefolder.load_cached(root, None, cache, "dataset.path", "dataset.image_shape").classes


def test_processes_loading_at_once_share_one_complete_cache_file(tmp_path):
    import multiprocessing

    write_folder(tmp_path / "d", {"train": 3, "test": 1})
    archive = tar_of(tmp_path / "d", tmp_path / "d.tar")
    # spawn, not fork: a fork copies whatever lock another thread of this process (torch's pools, an
    # earlier test's checkpoint writer) holds at that moment, and a child could wait on it forever
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        results = pool.map(_load_in_child, [(archive, tmp_path / "cache")] * 3)
    assert results == [CLASSES] * 3
    assert [p.suffix for p in (tmp_path / "cache" / "imagefolder").iterdir()] == [".npz"]  # no temporaries left
    assert _load_in_child((archive, tmp_path / "cache")) == CLASSES


def test_a_pretrained_backbone_is_refused_for_another_order_of_the_same_images(tmp_path):
    """pretrain_indices are positions: the same images in another order are other held-out samples."""
    from flowerbed.simulations import config
    from flowerbed.simulations.pretrain import pretrain

    write_folder(tmp_path / "a", {"all": 8}, size=(8, 8))
    (tmp_path / "b").mkdir()
    for folder in (tmp_path / "a" / "all").iterdir():  # the same files, named in reverse order
        files = sorted(folder.iterdir())
        (tmp_path / "b" / folder.name).mkdir()
        for file, new in zip(files, reversed(files)):
            (tmp_path / "b" / folder.name / f"x{new.name}").write_bytes(file.read_bytes())
    common = ["dataset=imagefolder", f"dataset.cache_dir={tmp_path / 'cache'}", "partition.pretrain_fraction=0.5",
              "model=tiny-vit", f"model.weights={tmp_path / 'vit.pt'}", "clients.num=2", "partition=iid"]
    pretrain(config.load([*common, f"dataset.path={tmp_path / 'a' / 'all'}"], load_data=False), epochs=1)
    assert config.load([*common, f"dataset.path={tmp_path / 'a' / 'all'}"])  # the same copy: accepted
    with pytest.raises(ConfigError, match="pretrained on other imagefolder samples"):
        config.load([*common, f"dataset.path={tmp_path / 'b'}"])
