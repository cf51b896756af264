"""Partitions are deterministic in the seed and have the shapes their names promise."""

import numpy as np
import pytest

from flowerbed.simulations.config import load
from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.partitions import build_federation, long_tail_pool, shot_groups


def federation(*overrides):
    return build_federation(load(["experiment=smoke", *overrides], load_data=False))


def test_same_seed_same_partition_other_seed_other_partition():
    a, b = federation("seed=3"), federation("seed=3")
    c = federation("seed=4")
    assert all(np.array_equal(x.train, y.train) for x, y in zip(a.clients, b.clients))
    assert not all(np.array_equal(x.train, y.train) for x, y in zip(a.clients, c.clients))


def test_clients_hold_disjoint_samples_covering_the_training_set():
    fed = federation("partition=iid", "clients.num=5")
    everything = np.concatenate([c.train for c in fed.clients])
    assert len(everything) == len(np.unique(everything)) == len(fed.data.y_train)


def test_iid_gives_every_client_every_class_even_when_the_data_is_stored_class_by_class():
    """An image folder's training set comes class by class; an unshuffled IID split would hand each
    client one or two classes."""
    from flowerbed.tasks.partitions import _flwr_partitions

    labels = np.repeat(np.arange(10), 100)  # sorted, as train/<class>/ folders give them
    parts = _flwr_partitions(labels, {"name": "iid"}, 5, seed=0)
    counts = np.stack([np.bincount(labels[p], minlength=10) for p in parts])
    assert counts.min() >= 5  # expected 20 each; stored order would give 0 for 8 of 10 classes
    assert sorted(np.concatenate(parts).tolist()) == list(range(1000))


def test_small_dirichlet_alpha_concentrates_labels():
    def top_share(alpha):
        counts = federation(f"partition.alpha={alpha}", "clients.num=10").label_counts()
        return float(np.mean(counts.max(1) / counts.sum(1)))

    assert top_share(0.05) > top_share(100.0) + 0.3


def test_pathological_gives_k_classes_per_client():
    counts = federation("partition=pathological", "partition.classes_per_client=2", "clients.num=5").label_counts()
    assert ((counts > 0).sum(1) <= 2).all()


def test_disjoint_gives_each_client_its_own_classes_and_all_their_samples():
    shared = federation("partition=pathological", "partition.classes_per_client=2", "clients.num=5").label_counts()
    assert ((shared > 0).sum(0) > 1).any()  # Flower's pathological split lets clients share a class
    fed = federation("partition=pathological", "partition.classes_per_client=2", "partition.disjoint=true", "clients.num=5")
    counts = fed.label_counts()
    assert ((counts > 0).sum(1) == 2).all() and ((counts > 0).sum(0) == 1).all()  # 2 classes each, each class once
    assert counts.sum() == len(fed.data.y_train)  # 5 x 2 = 10 classes: every sample is used
    tests = np.stack([np.bincount(fed.data.y_test[c.test], minlength=10) for c in fed.clients])
    assert ((tests > 0) == (counts > 0)).all()  # local test sets hold exactly the client's classes
    other = federation("partition=pathological", "partition.classes_per_client=2", "partition.disjoint=true",
                       "clients.num=5", "seed=1").label_counts()
    assert not np.array_equal(other > 0, counts > 0)
    with pytest.raises(ConfigError, match="clients.num x partition.classes_per_client"):
        federation("partition=pathological", "partition.classes_per_client=2", "partition.disjoint=true", "clients.num=6")


def test_long_tail_profile_is_exponential_with_class_0_as_head():
    y = np.repeat(np.arange(10), 100)
    kept = np.bincount(y[long_tail_pool(y, 10, 20.0, seed=0)], minlength=10)
    assert kept[0] == 100 and kept[-1] == 5
    assert (np.diff(kept) <= 0).all()


def test_shot_groups_split_by_cumulative_share():
    # shares 70/20/6/3/1%: classes 0-1 are needed to reach 75%, class 2 to reach 95%
    groups = shot_groups(np.array([700, 200, 60, 30, 10]))
    assert groups["many"].tolist() == [0, 1] and groups["medium"].tolist() == [2] and groups["few"].tolist() == [3, 4]


def test_labeled_fraction_splits_each_client():
    fed = federation("partition.labeled_fraction=0.2", "clients.num=4")
    for c in fed.clients:
        n = len(c.labeled) + len(c.unlabeled)
        assert len(c.labeled) == max(1, round(0.2 * n))
        assert not set(c.labeled) & set(c.unlabeled)


def test_local_test_set_mirrors_the_training_label_distribution():
    fed = federation("partition.alpha=0.1", "clients.num=4")
    for c in fed.clients:
        train = np.bincount(fed.data.y_train[c.train], minlength=10) / len(c.train)
        test = np.bincount(fed.data.y_test[c.test], minlength=10) / max(len(c.test), 1)
        assert set(np.flatnonzero(test)) <= set(np.flatnonzero(train))
        assert np.abs(train - test).max() < 0.1


def test_more_clients_than_samples_is_a_config_error():
    with pytest.raises(ConfigError, match="clients.num"):
        federation("partition=iid", "clients.num=5000")


def _cifar10_sized_labels(tmp_path, pretrain_fraction: float = 0.0):
    """A federation over an .npz with CIFAR-10's labels (5,000 training images per class after the
    stratified 1/6 test split) and 1-pixel images: the partition only looks at labels."""
    y = np.repeat(np.arange(10), 6000)
    np.savez(tmp_path / "labels.npz", x=np.zeros((len(y), 1), np.float32), y=y)
    return federation("dataset=npz", f"dataset.path={tmp_path / 'labels.npz'}", f"dataset.test_fraction={1 / 6}",
                      "partition.imbalance_factor=100", "partition.alpha=0.5", "clients.num=40",
                      f"partition.pretrain_fraction={pretrain_fraction}")


def test_cifar10_lt_with_imbalance_factor_100_has_the_papers_class_counts(tmp_path):
    fed = _cifar10_sized_labels(tmp_path)
    assert np.bincount(fed.data.y_train).tolist() == [5000] * 10
    expected = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]  # int(5000 * 100^(-c/9))
    assert fed.class_counts.tolist() == expected and sum(expected) == 12406
    assert fed.label_counts().sum(0).tolist() == expected  # every kept sample reaches a client


def test_long_tail_profile_is_drawn_from_what_pretraining_left(tmp_path):
    from flowerbed.tasks.holdout import pretrain_indices

    fed = _cifar10_sized_labels(tmp_path, pretrain_fraction=0.5)
    held_out = pretrain_indices(len(fed.data.y_train), 0.5)
    used = np.concatenate([c.train for c in fed.clients])
    assert not np.isin(used, held_out).any()
    left = np.bincount(np.delete(fed.data.y_train, held_out), minlength=10)
    head = left.max()
    assert fed.class_counts.tolist() == [min(int(head * 100 ** (-c / 9)), left[c]) for c in range(10)]
    assert fed.class_counts[0] == left[0] and fed.class_counts[-1] == int(head / 100)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "pathological"])
def test_partitions_in_one_pass_are_flwr_datasets_partitions(scheme):
    """The shortcut past `load_partition` per client (minutes at 100,000 clients) gives its rows."""
    from datasets import Dataset

    import flwr_datasets.partitioner as fp

    from flowerbed.tasks.partitions import _flwr_partitions

    labels = np.random.default_rng(0).integers(0, 10, 997)
    fast = _flwr_partitions(labels, {"name": scheme, "alpha": 0.5, "classes_per_client": 2}, 13, seed=3)
    if scheme == "iid":
        part = lambda: fp.IidPartitioner(13)  # noqa: E731
    elif scheme == "dirichlet":
        part = lambda: fp.DirichletPartitioner(  # noqa: E731
            num_partitions=13, partition_by="label", alpha=0.5, min_partition_size=2, self_balancing=False, shuffle=True, seed=3)
    else:
        part = lambda: fp.PathologicalPartitioner(  # noqa: E731
            num_partitions=13, partition_by="label", num_classes_per_partition=2, class_assignment_mode="random", shuffle=True, seed=3)
    reference = part()
    rows = np.random.default_rng([3, 4]).permutation(len(labels)) if scheme == "iid" else np.arange(len(labels))
    reference.dataset = Dataset.from_dict({"label": labels[rows], "pos": rows})
    expected = [np.asarray(reference.load_partition(k)["pos"]) for k in range(13)]
    assert len(fast) == 13 and all(np.array_equal(a, b) for a, b in zip(fast, expected))


def test_synthetic_is_fedprox_synthetic_drawn_as_before_and_natural_users_are_its_groups():
    """The generator draws each user's samples with one factorisation for all users instead of one
    `multivariate_normal` per user: the very same numbers as the per-user form below."""
    from flowerbed.tasks.datasets import load_synthetic

    users, dim, classes = 40, 60, 10
    rng = np.random.default_rng(0)
    sizes = (rng.lognormal(4, 2, users).astype(int) + 50).clip(max=1000)
    cov = np.diag(np.arange(1, dim + 1, dtype=np.float64) ** -1.2)
    xs, ys, gs = [], [], []
    for k, n in enumerate(sizes):
        u, b_mean = rng.normal(0, 1.0), rng.normal(0, 1.0)
        w, b = rng.normal(u, 1, (classes, dim)), rng.normal(u, 1, classes)
        v = rng.normal(b_mean, 1, dim)
        xs.append(rng.multivariate_normal(v, cov, n))
        ys.append(np.argmax(xs[-1] @ w.T + b, axis=1))
        gs.append(np.full(n, k))
    x, y, g = np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)
    is_test = np.zeros(len(y), bool)
    for k in range(users):
        idx = np.flatnonzero(g == k)
        is_test[rng.choice(idx, len(idx) // 5, replace=False)] = True
    data = load_synthetic({"alpha": 1.0, "beta": 1.0, "num_users": users, "seed": 0})
    assert np.array_equal(data.x_train, x[~is_test].astype(np.float32))
    assert np.array_equal(data.x_test, x[is_test].astype(np.float32))
    assert np.array_equal(data.y_train, y[~is_test]) and np.array_equal(data.groups, g[~is_test])
    fed = federation("dataset=synthetic", "partition=natural", f"clients.num={users}", "model=logreg")
    for k, client in enumerate(fed.clients):
        assert np.array_equal(np.sort(client.train), np.flatnonzero(data.groups == k))
