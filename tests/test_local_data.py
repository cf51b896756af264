"""A device's own data (`--node-config data-path=...`): image folders and .npz files as the ClientApp reads them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.local_data import load_local

DIGITS = {"dataset.name": "digits"}


def _write_digit_folders(root, images: np.ndarray, labels: np.ndarray, names: list[str]) -> None:
    """sklearn's digits as 8-bit grey PNGs in class folders named `names[label]`."""
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(image * 255 / 16).astype(np.uint8), mode="L").save(folder / f"{i:04d}.png")


def test_an_image_folder_reads_as_the_run_dataset(tmp_path):
    """Digits saved as PNG class folders come back with the digits dataset's shape, labels and scaling."""
    digits = load_digits()
    images, labels = digits.images[:60], digits.target[:60]
    _write_digit_folders(tmp_path / "train", images[:40], labels[:40], [str(c) for c in range(10)])
    _write_digit_folders(tmp_path / "test", images[40:], labels[40:], [str(c) for c in range(10)])
    a = load_local(str(tmp_path), DIGITS, {})
    assert a.x_labeled.shape == (40, 1, 8, 8) and a.x_test.shape == (20, 1, 8, 8) and a.num_classes == 10
    # files are read class by class: compare as (label, image) multisets
    order = np.lexsort((np.arange(40), labels[:40]))
    assert (a.y_labeled == labels[:40][order]).all()
    expected = (images[:40][order][:, None] / 16.0 - 0.5) / 0.5
    assert np.abs(a.x_labeled - expected).max() <= 1.0 / 255 + 1e-6  # 8-bit rounding only
    assert len(a.y_unlabeled) == 0


def test_named_class_folders_follow_the_classes_option_and_hold_out_a_fixed_test_share(tmp_path):
    digits = load_digits()
    keep = digits.target < 3
    images, labels = digits.images[keep][:50], digits.target[keep][:50]
    _write_digit_folders(tmp_path, images, labels, ["zero", "one", "two"])
    options = {"classes": "two,zero,one", "test-fraction": "0.2"}
    a = load_local(str(tmp_path), DIGITS, options)
    assert len(a.y_test) == 10 and len(a.y_labeled) == 40
    assert set(np.concatenate([a.y_labeled, a.y_test])) == {0, 1, 2}
    counts = np.bincount(np.concatenate([a.y_labeled, a.y_test]), minlength=3)
    assert counts.tolist() == [int((labels == 2).sum()), int((labels == 0).sum()), int((labels == 1).sum())]
    again = load_local(str(tmp_path), DIGITS, options)  # a restarted device holds out the same samples
    assert np.array_equal(a.x_test, again.x_test)
    with pytest.raises(ConfigError, match="class folder 'two' is not in classes"):
        load_local(str(tmp_path), DIGITS, {"classes": "zero,one"})


def test_bad_device_data_is_one_config_error_naming_data_path(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ConfigError, match="cannot read image"):
        load_local(str(tmp_path), DIGITS, {})
    np.savez(tmp_path / "labels.npz", x=np.zeros((4, 1, 8, 8)), y=np.array([0, 1, 2, 12]))
    with pytest.raises(ConfigError, match="labels outside 0..9"):
        load_local(str(tmp_path / "labels.npz"), DIGITS, {})
    np.savez(tmp_path / "nan.npz", x=np.full((4, 1, 8, 8), np.nan), y=np.zeros(4))
    with pytest.raises(ConfigError, match="NaN/Inf"):
        load_local(str(tmp_path / "nan.npz"), DIGITS, {})
    with pytest.raises(ConfigError, match="image-shape"):
        load_local(str(tmp_path), {"dataset.name": "synthetic"}, {})
    np.savez(tmp_path / "no-y.npz", x=np.zeros((4, 1, 8, 8)))
    with pytest.raises(ConfigError) as err:  # one message, not "a readable .npz (ConfigError: ...)" around it
        load_local(str(tmp_path / "no-y.npz"), DIGITS, {})
    assert str(err.value).endswith("is not valid: an .npz with arrays x and y (it has x)") and "ConfigError" not in str(err.value)
