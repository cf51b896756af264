"""Client partitions: deterministic functions of the seed.

A `Federation` is what every client and the server agree on: which training samples each client
holds (split into labeled and unlabeled), each client's local test set (mirroring its training
label distribution, for personalized accuracy), and the global class profile (for
many/medium/few-shot accuracy under a long-tailed profile).
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass

import numpy as np

from flowerbed.tasks.config_key import data_key
from flowerbed.tasks.datasets import ArrayDataset, load_dataset
from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.holdout import pretrain_indices
from flowerbed.tasks.stored import stored

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

SCHEMES = ("iid", "dirichlet", "pathological", "natural")


@dataclass(frozen=True)
class ClientData:
    """Indices into the dataset's training and test arrays."""

    labeled: np.ndarray
    unlabeled: np.ndarray
    test: np.ndarray

    @property
    def train(self) -> np.ndarray:
        return np.concatenate([self.labeled, self.unlabeled])


@dataclass(frozen=True)
class Federation:
    data: ArrayDataset
    clients: list[ClientData]
    class_counts: np.ndarray  # global training samples per class, after the long-tail profile
    shot_groups: dict[str, np.ndarray]  # "many"/"medium"/"few" -> class ids (empty if balanced)

    def label_counts(self) -> np.ndarray:
        """(clients, classes) training-sample counts, labeled and unlabeled together."""
        c = self.data.num_classes
        return np.stack([np.bincount(self.data.y_train[k.train], minlength=c) for k in self.clients])


def long_tail_pool(y: np.ndarray, num_classes: int, imbalance: float, seed: int, pool: np.ndarray | None = None) -> np.ndarray:
    """Indices (of `pool`, default all of `y`) that follow the long-tailed CIFAR profile of the LT
    papers, n_c = int(n_max * IF^(-c/(C-1))) with n_max the largest class in the pool; class 0 is the
    head. CIFAR-10 with IF 100: 5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50 (12,406 images)."""
    rng = np.random.default_rng([seed, 1])
    pool = np.arange(len(y)) if pool is None else np.sort(pool)
    counts = np.bincount(y[pool], minlength=num_classes)
    head = counts.max()
    keep = []
    for c in range(num_classes):
        n_c = int(head * imbalance ** (-c / max(num_classes - 1, 1)))
        idx = pool[y[pool] == c]
        keep.append(rng.permutation(idx)[: max(1, min(n_c, len(idx)))])
    return np.sort(np.concatenate(keep))


def shot_groups(class_counts: np.ndarray, many: float = 0.75, medium: float = 0.95) -> dict[str, np.ndarray]:
    """Head/medium/tail classes by cumulative share of training samples (75% / 95%)."""
    order = np.argsort(-class_counts, kind="stable")
    share = np.cumsum(class_counts[order]) / class_counts.sum()
    before = np.concatenate([[0.0], share[:-1]])  # share covered before each class
    return {
        "many": np.sort(order[before < many]),
        "medium": np.sort(order[(before >= many) & (before < medium)]),
        "few": np.sort(order[before >= medium]),
    }


def _stored_partitions(labels: np.ndarray, cfg: dict, num_clients: int, seed: int) -> list[np.ndarray]:
    """`_flwr_partitions`, kept on disk (tasks/stored.py: importing flwr-datasets and Hugging Face
    `datasets` costs 2.5 s of a run's start-up, more than the rest of a small run's set-up)."""
    settings = [cfg.get(k) for k in ("name", "alpha", "min_size", "classes_per_client")]
    rows = stored("partitions", [settings, num_clients, seed], [labels],
                  lambda: {f"client{k}": pos for k, pos in enumerate(_flwr_partitions(labels, cfg, num_clients, seed))},
                  libraries=["flwr-datasets", "datasets"])
    return [rows[f"client{k}"] for k in range(num_clients)]


def dirichlet_partitions(labels: np.ndarray, alpha: float, min_size: int, num_clients: int, seed: int) -> list[np.ndarray]:
    """Positions 0..len(labels)-1 split over clients by a Dirichlet over classes (`partition=dirichlet`'s
    partitioner, kept on disk): for data that is not the run's dataset (CreamFL's uni-modal clients)."""
    return _stored_partitions(labels, {"name": "dirichlet", "alpha": alpha, "min_size": min_size}, num_clients, seed)


def _flwr_partitions(labels: np.ndarray, cfg: dict, num_clients: int, seed: int) -> list[np.ndarray]:
    """Split positions 0..len(labels)-1 with a flwr-datasets partitioner."""
    from datasets import Dataset
    from flwr_datasets import partitioner as fp

    scheme = cfg["name"]
    rows = np.arange(len(labels))
    if scheme == "iid":  # IidPartitioner shards rows in stored order (an image folder's is class by class):
        rows = np.random.default_rng([seed, 4]).permutation(len(labels))  # shuffle first, as FederatedDataset does
        part = fp.IidPartitioner(num_partitions=num_clients)
    elif scheme == "dirichlet":
        part = fp.DirichletPartitioner(
            num_partitions=num_clients,
            partition_by="label",
            alpha=float(cfg["alpha"]),
            min_partition_size=int(cfg.get("min_size", 2)),
            self_balancing=False,
            shuffle=True,
            seed=seed,
        )
    else:  # pathological
        part = fp.PathologicalPartitioner(
            num_partitions=num_clients,
            partition_by="label",
            num_classes_per_partition=int(cfg["classes_per_client"]),
            class_assignment_mode="random",
            shuffle=True,
            seed=seed,
        )
    part.dataset = Dataset.from_dict({"label": labels[rows], "pos": rows})
    try:
        with warnings.catch_warnings():  # each retry of a Dirichlet draw below partition.min_size warns (10 before it gives up);
            warnings.filterwarnings("ignore", message="The specified min_partition_size", category=UserWarning)  # the outcome is ours to say
            return _positions(part, num_clients)
    except ValueError as err:  # e.g. Dirichlet cannot reach the minimum size
        if scheme == "dirichlet" and "attempts" in str(err):
            raise ConfigError(f"partition.alpha={cfg['alpha']} gave some of the {num_clients} clients fewer than partition.min_size="
                              f"{int(cfg.get('min_size', 2))} samples in every draw Flower Datasets tried: raise the alpha, "
                              "lower min_size or use fewer clients") from err
        raise ConfigError(f"partition.name={scheme!r} failed for {num_clients} clients: {err}".splitlines()[0]) from err


def _positions(part, num_clients: int) -> list[np.ndarray]:
    """Every partition's rows, as `part.load_partition(k)["pos"]` gives them, in one pass.

    `load_partition` builds a Hugging Face dataset per call (2-7 ms), minutes for 100,000 clients.
    The Dirichlet and pathological partitioners compute every partition's indices on the first call
    and keep them; IidPartitioner's partitions are the contiguous `Dataset.shard`s, i.e.
    `np.array_split` of the (shuffled) rows. tests/test_partitions.py holds both shortcuts to `load_partition`.
    """
    from flwr_datasets import partitioner as fp

    if type(part) is fp.IidPartitioner:
        # a slice, not `["pos"]`: datasets 4 returns a lazy column there, which NumPy reads row by row (25 s for 200k)
        return np.array_split(np.asarray(part.dataset.with_format("numpy")[:]["pos"], dtype=np.int64), num_clients)
    first = np.asarray(part.load_partition(0)["pos"], dtype=np.int64)  # computes (and checks) the whole assignment
    known = getattr(part, "_partition_id_to_indices", None)
    if isinstance(known, dict) and len(known) == num_clients and np.array_equal(np.asarray(known[0], dtype=np.int64), first):
        return [np.asarray(known[k], dtype=np.int64) for k in range(num_clients)]
    return [first] + [np.asarray(part.load_partition(k)["pos"], dtype=np.int64) for k in range(1, num_clients)]


def _disjoint_partitions(labels: np.ndarray, num_classes: int, num_clients: int, per_client: int, seed: int) -> list[np.ndarray]:
    """Each client all samples of its own `per_client` classes; no class is shared (ViT-FL's split).

    Flower's PathologicalPartitioner may give two clients the same class and split its samples;
    the disjoint label space of pFedPG's CIFAR tables (after ViT-FL) needs every class on at most
    one client. Classes are dealt from a seeded permutation; classes left over stay unused.
    """
    if num_clients * per_client > num_classes:
        raise ConfigError(f"partition.disjoint=true needs clients.num x partition.classes_per_client <= {num_classes} classes "
                          f"(got {num_clients} x {per_client})")
    order = np.random.default_rng([seed, 3]).permutation(num_classes)
    return [np.flatnonzero(np.isin(labels, order[k * per_client:(k + 1) * per_client])) for k in range(num_clients)]


def _natural_partitions(data: ArrayDataset, pool: np.ndarray, num_clients: int) -> list[np.ndarray]:
    if data.groups is None:
        raise ConfigError.invalid("partition.name", "natural", "only for datasets with natural clients (synthetic, imagefolder with dataset.domains=true, "
                                  "or your own loader's FederatedDataset or partitioner)")
    groups = data.groups[pool]
    if groups.max() + 1 != num_clients:
        raise ConfigError.invalid("clients.num", num_clients, f"must equal the dataset's {groups.max() + 1} users")
    # np.flatnonzero(groups == k) for every k, in one sort instead of one pass over the data per user
    order = np.argsort(groups, kind="stable")
    return np.split(order, np.cumsum(np.bincount(groups, minlength=num_clients))[:-1])


def local_test_set(train_counts: np.ndarray, y_test: np.ndarray, total_train: int, rng,
                   pools: list[np.ndarray] | None = None) -> np.ndarray:
    """Test indices mirroring a client's label distribution: int(n_kc / N_train * N_test) per class.

    Classes whose test pool is too small are drawn with replacement (duplicates), as for CIFAR-100.
    `pools[c]` (the test indices of class c) may be given, to find them once for every client.
    """
    picked = []
    for c, n_kc in enumerate(train_counts):
        m = int(n_kc / total_train * len(y_test))
        pool = pools[c] if pools is not None else np.flatnonzero(y_test == c)
        if m and len(pool):
            picked.append(rng.choice(pool, m, replace=m > len(pool)))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def build_federation(run_config: dict) -> Federation:
    """The federation a run config describes (cached per process: clients share it)."""
    return _build(data_key(run_config))


def section(config: dict, prefix: str) -> dict:
    """`{"dataset.name": "digits"}` -> `{"name": "digits"}` for prefix "dataset"."""
    head = prefix + "."
    return {k[len(head):]: v for k, v in config.items() if k.startswith(head)}


@functools.lru_cache(maxsize=4)
def _build(keys: tuple) -> Federation:
    config = dict(keys)
    seed, num_clients = int(config["seed"]), int(config["clients.num"])
    data = load_dataset(section(config, "dataset"))
    part = section(config, "partition")
    if part.get("name") not in SCHEMES:
        raise ConfigError.invalid("partition.name", part.get("name"), "one of " + ", ".join(SCHEMES))

    imbalance = float(part.get("imbalance_factor", 1.0))
    pool = np.arange(len(data.y_train))
    held_out = pretrain_indices(len(pool), float(part.get("pretrain_fraction", 0.0)))  # pretraining's share
    if len(held_out):  # (setdiff1d sorts the whole pool even when there is nothing to take out)
        pool = np.setdiff1d(pool, held_out)
    if imbalance > 1.0:  # the long-tailed profile is drawn from what pretraining left
        pool = long_tail_pool(data.y_train, data.num_classes, imbalance, seed, pool)
    if num_clients > len(pool):
        raise ConfigError.invalid("clients.num", num_clients, f"at most the {len(pool)} training samples")

    per_client = int(part.get("classes_per_client", 1))
    if part["name"] == "pathological" and per_client > data.num_classes:  # before flwr-datasets says it in its own words
        raise ConfigError.invalid("partition.classes_per_client", per_client, f"at most the {data.num_classes} classes")

    if part["name"] == "natural":
        positions = _natural_partitions(data, pool, num_clients)
    elif part["name"] == "pathological" and part.get("disjoint", False):
        positions = _disjoint_partitions(data.y_train[pool], data.num_classes, num_clients, int(part["classes_per_client"]), seed)
    else:
        positions = _stored_partitions(data.y_train[pool], part, num_clients, seed)
    empty = [k for k, pos in enumerate(positions) if len(pos) == 0]
    if empty:
        raise ConfigError(f"partition.name={part['name']!r} left client {empty[0]} with no data; use fewer clients or another partition")

    labeled_fraction = float(part.get("labeled_fraction", 1.0))
    cap = int(part.get("samples_per_client", 0))
    class_counts = np.bincount(data.y_train[pool], minlength=data.num_classes)
    clients = []
    pools = [np.flatnonzero(data.y_test == c) for c in range(data.num_classes)]
    for k, pos in enumerate(positions):
        rng = np.random.default_rng([seed, 2, k])
        idx = rng.permutation(pool[pos])
        counts = np.bincount(data.y_train[idx], minlength=data.num_classes)
        test = local_test_set(counts, data.y_test, len(pool), rng, pools)
        if part["name"] == "natural" and data.test_groups is not None:  # e.g. a domain's own test split
            test = np.flatnonzero(data.test_groups == k)
        if cap:  # a training budget: the first `cap` of the client's shuffled samples; its test set keeps its share
            idx = idx[:cap]
        n_labeled = max(1, round(labeled_fraction * len(idx)))
        clients.append(ClientData(np.sort(idx[:n_labeled]), np.sort(idx[n_labeled:]), test))
    groups = shot_groups(class_counts) if imbalance > 1.0 else {}
    return Federation(data, clients, class_counts, groups)
