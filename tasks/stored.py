"""Index arrays that a library computes slowly to import, kept on disk and named by their inputs.

A small run's start-up was mostly imports: scikit-learn (1.5 s) for the stratified train/test split
of the built-in datasets, flwr-datasets with Hugging Face `datasets` (2.5 s) for the partitions. Both
results are a few index arrays, a deterministic function of what they are computed from. Kept here,
the first run on a dataset and partition pays the imports and every later one (another algorithm,
another engine, the next command) reads a file. A file is named by a hash of everything its result
depends on, the library versions included, so a changed input never reads an old result.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


def cache_dir(cfg: dict) -> Path:
    """flowerbed's cache folder: `dataset.cache_dir`, else $FLOWERBED_CACHE, else ~/.cache/flowerbed."""
    root = cfg.get("cache_dir") or os.environ.get("FLOWERBED_CACHE") or "~/.cache/flowerbed"
    return Path(root).expanduser()


def stored(kind: str, inputs: list, arrays: Sequence[np.ndarray], compute: Callable[[], dict[str, np.ndarray]],
           libraries: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """`compute()`'s arrays, read from `cache_dir/<kind>/<hash>.npz` when an earlier call stored them.

    `inputs` (JSON-able settings), `arrays` (compared by their bytes) and the installed versions of
    `libraries` (distribution names) name the file. An unreadable file is computed again; a folder
    that cannot be written only costs the next call the same work.
    """
    from importlib import metadata

    versions = {name: metadata.version(name) for name in libraries}
    key = hashlib.sha256(json.dumps([kind, inputs, versions], sort_keys=True, default=str).encode())
    for array in arrays:
        key.update(f"{array.dtype}{array.shape}".encode())
        key.update(np.ascontiguousarray(array).tobytes())
    path = cache_dir({}) / kind / f"{key.hexdigest()[:32]}.npz"
    try:
        with np.load(path) as found:
            return {name: found[name] for name in found.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # not there yet, or cut short
        pass
    result = compute()
    try:
        write_atomic(path, result)
    except OSError:
        pass
    return result


def write_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """`np.savez` to `path` under a temporary name, then renamed: processes loading at once never
    see half a file (and concurrent writers of the same result write the same bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
