"""AG News-layout text (tasks/labeled_text.py): the shared file's layout, and bad layouts in one line."""

from __future__ import annotations

import gzip

import pytest

from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.labeled_text import read


def test_rows_become_labels_from_0_and_title_plus_description(tmp_path):
    text = '3,"Wall St. rises","Stocks, bonds gain"\n1,"Talks","A summit, at last"\n'
    path = tmp_path / "news.csv.gz"
    path.write_bytes(gzip.compress(text.encode()))
    data = read(path, "dataset.text_path")
    assert data.labels.tolist() == [2, 0] and data.num_classes == 3
    assert data.texts == ("Wall St. rises Stocks, bonds gain", "Talks A summit, at last")


@pytest.mark.parametrize("content, found", [
    ("image,caption\na.jpg,a dog\n", "image,caption"),  # a caption file
    ("1,only a title\n", "1,only a title"),
    ("0,t,d\n", "0,t,d"),
    ("", "non-empty"),
])
def test_another_layout_is_one_line(tmp_path, content, found):
    path = tmp_path / "text.csv"
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        read(path, "dataset.text_path")
    assert "dataset.text_path" in str(err.value) and found in str(err.value) and "\n" not in str(err.value)
