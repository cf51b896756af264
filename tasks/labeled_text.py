"""Labeled text in the layout AG News ships: a CSV (optionally .gz) of `class,title,description`.

No header; `class` is an integer from 1; title and description are quoted where they hold commas.
This is a text-only client's data in a multimodal federation (CreamFL): a label per article for
its local task (class = the label minus 1), and the title and description joined as its text.
A file in another layout (a header, a row of other width, a class that is not a positive integer)
is one `ConfigError` line naming the file and the first bad row.
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flowerbed.tasks.errors import ConfigError

LAYOUT = "CSV rows class,title,description without a header, class an integer from 1 (AG News's layout; .csv or .csv.gz)"


@dataclass(frozen=True)
class LabeledText:
    texts: tuple[str, ...]
    labels: np.ndarray  # int64, from 0
    num_classes: int


def read(path: str | Path, key: str) -> LabeledText:
    where = Path(str(path)).expanduser()
    if not where.is_file():
        raise ConfigError.invalid(key, str(where), f"an existing file: {LAYOUT}")
    try:
        raw = where.read_bytes()
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        rows = [r for r in csv.reader(io.StringIO(data.decode("utf-8-sig"))) if any(cell.strip() for cell in r)]
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as err:
        raise ConfigError.invalid(key, str(where), f"a readable UTF-8 file: {LAYOUT} ({type(err).__name__})") from err
    if not rows:
        raise ConfigError.invalid(key, str(where), f"a non-empty file: {LAYOUT}")
    labels, texts = [], []
    for line, row in enumerate(rows, start=1):
        if len(row) != 3 or not row[0].strip().isdigit() or int(row[0]) < 1:
            raise ConfigError(f"{key}={str(where)!r}: line {line} is {','.join(row)[:80]!r}; expected {LAYOUT}")
        labels.append(int(row[0]) - 1)
        texts.append(f"{row[1].strip()} {row[2].strip()}".strip())
    y = np.asarray(labels, np.int64)
    return LabeledText(tuple(texts), y, int(y.max()) + 1)
