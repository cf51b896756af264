"""Hostile input, property-based: random config overrides and random local datasets.

Every input must end in a clean one-line `ConfigError` or in a correct result (a federation whose
clients each hold data, with finite inputs); any other exception is a crash and fails the test.
The counts of inputs tried are printed at the end of the module (`pytest -s`).
"""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowerbed.simulations import config
from flowerbed.tasks.errors import ConfigError

TRIED = {kind: {"inputs": 0, "errors": 0, "accepted": 0} for kind in ("config", "data")}
EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", "60"))  # per property; raise it for a longer hunt
HUNTING = "HOSTILE_EXAMPLES" in os.environ  # a hunt draws new inputs; the suite replays the same ones every time
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=not HUNTING,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    for kind, counts in TRIED.items():
        print(f"\nhostile {kind} inputs tried: {counts['inputs']}; clean ConfigError {counts['errors']}, "
              f"accepted {counts['accepted']}, crashes 0")
        # a property that only ever errors (or only accepts) has stopped exploring half of its claim
        assert not counts["inputs"] or (counts["errors"] and counts["accepted"]), (kind, counts)


def _numeric_keys(group: str) -> list[str]:
    flat = config.to_run_config(config.compose(["experiment=smoke", group]))
    return sorted(k for k, v in flat.items() if isinstance(v, (int, float)))


GROUPS = ["dataset=digits", "dataset=synthetic", "algorithm=fedadam", "algorithm=fedavgm", "partition=pathological"]
KEYS = sorted({(g, k) for g in GROUPS for k in _numeric_keys(g)})
DATA_PREFIXES = ("dataset.", "partition.", "clients.num", "seed")

values = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),  # nan, inf, -inf, 1e+308 ...
    st.sampled_from(["0", "-1", "1e309", "-0.0", "nan", "NaN", "inf", "true", "null", "''", "[1,2]", "{a: 1}",
                     "${seed}", "${nope}", "1/0", "abc", "1_000", "0x10", "'3'", "\"\""]),
    st.text(alphabet="abc019.-e+ _'\"$", max_size=8),
)


def _judge(call, kind: str) -> object | None:
    """The result, or None for a clean ConfigError (one line); anything else propagates (a crash)."""
    try:
        result = call()
    except ConfigError as err:
        assert "\n" not in str(err).strip() and str(err).strip(), repr(err)
        TRIED[kind]["errors"] += 1
        return None
    TRIED[kind]["accepted"] += 1
    return result


@SETTINGS
@given(item=st.sampled_from(KEYS), value=values)
def test_random_overrides_give_a_config_error_or_a_valid_config(item, value):
    TRIED["config"]["inputs"] += 1
    group, key = item
    flat = _judge(lambda: config.load(["experiment=smoke", group, f"{key}={value}"], load_data=False), "config")
    if flat is None:
        return
    for k, v in flat.items():  # what passed validation is a usable number
        assert not (isinstance(v, float) and not math.isfinite(v)), (k, v)
    if key.startswith(DATA_PREFIXES) and flat["clients.num"] <= 200:  # building data is the expensive part
        _judge(lambda: config.validate(flat, load_data=True), "config")


# -- local data (.npz) and partitions -----------------------------------------------------------------
_names = itertools.count()


@st.composite
def local_datasets(draw):
    n = draw(st.integers(0, 60))
    shape = draw(st.sampled_from([(1, 4, 4), (6,), ()]))
    x = draw(st.sampled_from(["normal", "nan", "inf", "huge"]))
    y_kind = draw(st.sampled_from(["ok", "one-class", "sparse", "negative", "float"]))
    return n, shape, x, y_kind


def _write(tmp: Path, n: int, shape: tuple, x_kind: str, y_kind: str, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *shape)).astype(np.float32)
    if n and x_kind in ("nan", "inf"):
        x.flat[rng.integers(x.size)] = np.nan if x_kind == "nan" else np.inf
    if x_kind == "huge":
        x *= 1e30
    y = {"ok": rng.integers(0, 5, n), "one-class": np.zeros(n, np.int64), "sparse": rng.choice([0, 9], n),  # classes 1-8 absent
         "negative": rng.integers(-1, 3, n), "float": rng.random(n)}[y_kind]
    path = tmp / f"d{next(_names)}.npz"
    np.savez(path, x=x, y=y)
    return path


@SETTINGS
@given(data=local_datasets(), clients=st.integers(1, 70), scheme=st.sampled_from(["iid", "dirichlet", "pathological"]),
       labeled=st.sampled_from([0.01, 0.5, 1.0]), seed=st.integers(0, 3))
def test_local_data_and_partitions_give_a_config_error_or_a_sound_federation(tmp_path, data, clients, scheme, labeled, seed):
    from flowerbed.tasks.partitions import build_federation

    TRIED["data"]["inputs"] += 1
    n, shape, x_kind, y_kind = data
    path = _write(tmp_path, n, shape, x_kind, y_kind, seed)
    model = "cnn" if len(shape) == 3 else "logreg"
    overrides = ["experiment=smoke", "dataset=npz", f"dataset.path={path}", f"clients.num={clients}", f"partition={scheme}",
                 f"partition.labeled_fraction={labeled}", f"seed={seed}", f"model={model}"]
    flat = _judge(lambda: config.load(overrides), "data")
    if flat is None:
        return
    assert x_kind in ("normal", "huge") and y_kind in ("ok", "one-class", "sparse")  # bad files never pass
    fed = build_federation(flat)
    seen = np.concatenate([c.train for c in fed.clients])
    assert len(fed.clients) == clients and len(np.unique(seen)) == len(seen)  # disjoint
    assert all(len(c.labeled) >= 1 for c in fed.clients)  # every client can train
    assert np.isfinite(fed.data.x_train).all() and fed.data.num_classes > int(fed.data.y_train.max())


def test_one_client_with_a_handful_of_samples_trains_to_finite_numbers(tmp_path):
    from tests.conftest import run

    path = _write(tmp_path, 12, (6,), "normal", "ok", 0)
    metrics = run(tmp_path / "r", "dataset=npz", f"dataset.path={path}", "clients.num=1", "clients.min_train=1",
                  "partition=iid", "model=logreg")
    assert all(math.isfinite(metrics[-1][k]) for k in ("global/loss", "train/loss"))
