"""FedLabel: confidence-based selection, threshold, consistency weight, r_k, views, end to end."""

from __future__ import annotations

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

from flowerbed.clients import fedlabel
from flowerbed.clients.augment import strong_view, weak_view
from flowerbed.clients.fedlabel import PseudoLabels, combine, confidence, consistency_weight, select_pseudo_labels
from tests.conftest import flowerbed, run

# rows: softmax vectors over 3 classes
PEAKED_0 = [0.90, 0.05, 0.05]  # high variance, says class 0
FLAT_1 = [0.30, 0.40, 0.30]  # low variance, says class 1
MID_0 = [0.60, 0.20, 0.20]  # medium variance, says class 0
LOW_0 = [0.40, 0.30, 0.30]  # under beta=0.5, says class 0


def probs(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows)


@pytest.fixture(autouse=True)
def task_identity():
    """Messages built outside a running app need Flower's task identity (as in test_sampling)."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 0


def test_selection_picks_the_higher_variance_model_per_sample():
    p_global = probs(PEAKED_0, FLAT_1)
    p_local = probs(FLAT_1, PEAKED_0)
    pl = select_pseudo_labels(p_global, p_local, beta=0.1, lambda0=1.0)
    assert pl.from_local.tolist() == [False, True]
    assert pl.labels.tolist() == [0, 0]  # both from the peaked (more confident) vector
    assert torch.allclose(pl.teacher, probs(FLAT_1, FLAT_1))  # the discarded outputs


def test_forced_selection_ignores_confidence():
    p_global, p_local = probs(PEAKED_0), probs(FLAT_1)
    assert select_pseudo_labels(p_global, p_local, 0.1, 1.0, selection="local").labels.tolist() == [1]
    assert select_pseudo_labels(p_global, p_local, 0.1, 1.0, selection="global").labels.tolist() == [0]
    with pytest.raises(ValueError):
        select_pseudo_labels(p_global, p_local, 0.1, 1.0, selection="neither")


def test_threshold_drops_samples_whose_selected_top_probability_is_not_above_beta():
    p_global = probs(LOW_0, MID_0, PEAKED_0)
    p_local = probs(FLAT_1, FLAT_1, FLAT_1)
    assert select_pseudo_labels(p_global, p_local, beta=0.5, lambda0=1.0).accepted.tolist() == [False, True, True]
    assert select_pseudo_labels(p_global, p_local, beta=0.6, lambda0=1.0).accepted.tolist() == [False, False, True]
    # a dropped sample gets no consistency term either
    assert select_pseudo_labels(probs(LOW_0), probs(LOW_0), beta=0.5, lambda0=1.0).kl_weight.tolist() == [0.0]


def test_kl_weight_is_zero_where_models_disagree_and_the_confidence_ratio_where_they_agree():
    p_global = probs(PEAKED_0, PEAKED_0)
    p_local = probs(FLAT_1, MID_0)  # disagrees with the global label, then agrees
    pl = select_pseudo_labels(p_global, p_local, beta=0.5, lambda0=2.0)
    ratio = confidence(probs(MID_0)) / confidence(probs(PEAKED_0))
    assert pl.kl_weight[0] == 0.0
    assert torch.isclose(pl.kl_weight[1], 2.0 * ratio[0])
    assert 0 < pl.kl_weight[1] < 2.0
    assert consistency_weight(torch.tensor([0.1]), torch.tensor([0.3]), torch.tensor([True]), 1.0).item() == 1.0  # capped


def test_confidence_scores():
    uniform, one_hot = [0.25] * 4, [1.0, 0.0, 0.0, 0.0]
    var = confidence(probs(uniform, one_hot))
    assert var[0] == 0 and torch.isclose(var[1], torch.tensor(0.1875))
    ent = confidence(probs(uniform, one_hot), "entropy")
    assert torch.allclose(ent, torch.tensor([0.0, 1.0]), atol=1e-6)


def test_reply_is_the_global_model_plus_both_deltas():
    g, w_l, w_u = {"w": torch.tensor([1.0, 1.0])}, {"w": torch.tensor([2.0, 1.0])}, {"w": torch.tensor([1.0, 0.5])}
    assert combine(g, w_l, w_u)["w"].tolist() == [2.0, 0.5]


@pytest.mark.parametrize("shape", [(16, 1, 8, 8), (64, 3, 32, 32)])
def test_views_are_seeded_and_keep_shape(shape):
    x = torch.randn(*shape)
    for view in (weak_view, strong_view):
        a, b = view(x, torch.Generator().manual_seed(3)), view(x, torch.Generator().manual_seed(3))
        assert a.shape == x.shape and torch.equal(a, b)
        assert not torch.allclose(a, x) and not torch.equal(a, view(x, torch.Generator().manual_seed(4)))
        assert a.amin() >= x.amin() - 1e-5 and a.amax() <= x.amax() + 1e-5  # no values outside the images' range


def test_colour_images_draw_torchvision_s_fourteen_ops_and_grey_images_nine(monkeypatch):
    from flowerbed.clients import augment

    def unchanged(images: torch.Tensor) -> float:  # the share that drew identity: every other op moves noise images
        out = strong_view(images, torch.Generator().manual_seed(1))
        return float(((out - images).abs().amax(dim=(1, 2, 3)) < 1e-5).float().mean())

    assert unchanged(torch.randn(9000, 3, 8, 8)) == pytest.approx(1 / 14, abs=0.015)
    monkeypatch.setattr(augment, "_colour_ops", lambda *a: pytest.fail("a colour op on grey images"))
    assert unchanged(torch.randn(9000, 1, 8, 8)) == pytest.approx(1 / 9, abs=0.015)
    monkeypatch.undo()

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 3, 8, 8)
    ops = torch.randint(0, len(augment.OPS) + len(augment.COLOUR_OPS), (len(x),), generator=torch.Generator().manual_seed(0))
    out = strong_view(x, gen)
    identity = ops == 0  # the first draw is the op; identity leaves the image as it was
    assert torch.allclose(out[identity], x[identity], atol=1e-5) and not torch.allclose(out[~identity], x[~identity])
    equalize = ops == len(augment.OPS) + augment.COLOUR_OPS.index("equalize")
    assert equalize.any() and not torch.allclose(out[equalize], x[equalize], atol=1e-3)


def _client(*overrides: str):
    from flowerbed.simulations import config

    cfg = config.load(["experiment=smoke", "algorithm=fedlabel", "partition.labeled_fraction=0.3", "train.device=cpu", *overrides])
    context = Context(run_id=1, node_id=5, node_config={"partition-id": 1, "num-partitions": 4}, state=RecordDict(), run_config=cfg)
    return fedlabel.FedLabelClient(context)


def test_r_k_counts_labeled_plus_accepted_samples(monkeypatch):
    client = _client()
    n_l, n_u = len(client.data.y_labeled), len(client.data.y_unlabeled)
    assert n_l > 0 and n_u > 5
    real = fedlabel.select_pseudo_labels

    def accept_first_five(*args, **kwargs) -> PseudoLabels:
        pl = real(*args, **kwargs)
        accepted = torch.zeros(n_u, dtype=torch.bool)
        accepted[:5] = True
        return PseudoLabels(pl.labels, accepted, pl.from_local, pl.teacher, pl.kl_weight * accepted)

    monkeypatch.setattr(fedlabel, "select_pseudo_labels", accept_first_five)
    model = client.new_model()
    msg = Message(RecordDict({"config": ConfigRecord({"server-round": 1}), "arrays": ArrayRecord(model.state_dict())}),
                  dst_node_id=5, message_type=MessageType.TRAIN)
    reply = client.train(msg)
    assert reply["metrics"]["num-examples"] == n_l + 5
    assert reply["metrics"]["fedlabel/coverage"] == pytest.approx(5 / n_u)


def test_nothing_accepted_means_no_unlabeled_update_and_r_k_is_the_labeled_count():
    client = _client("algorithm.beta=0.999")  # an untrained model is never this sure
    model = client.new_model()
    msg = Message(RecordDict({"config": ConfigRecord({"server-round": 1}), "arrays": ArrayRecord(model.state_dict())}),
                  dst_node_id=5, message_type=MessageType.TRAIN)
    metrics = client.train(msg)["metrics"]
    assert metrics["num-examples"] == len(client.data.y_labeled)
    assert metrics["fedlabel/coverage"] == 0.0 and metrics["fedlabel/unlabeled_loss"] == 0.0


def test_fedlabel_and_fixmatch_run_end_to_end(tmp_path):
    metrics = run(tmp_path / "fedlabel", "algorithm=fedlabel", "partition.labeled_fraction=0.3", "rounds=3", "algorithm.beta=0.2")
    last = metrics[-1]
    for key in ("fedlabel/pseudo_acc", "fedlabel/coverage", "fedlabel/local_share", "global/acc"):
        assert key in last, key
    assert 0 < last["fedlabel/coverage"] <= 1 and 0 <= last["fedlabel/local_share"] <= 1
    assert last["global/acc"] > metrics[0]["global/acc"]
    fixmatch = run(tmp_path / "fixmatch", "algorithm=fixmatch", "partition.labeled_fraction=0.3", "rounds=3", "algorithm.threshold=0.2")
    assert 0 < fixmatch[-1]["fixmatch/coverage"] <= 1 and fixmatch[-1]["global/acc"] > fixmatch[0]["global/acc"]


@pytest.mark.parametrize("override,message", [
    ("algorithm.selection=neither", "algorithm.selection='neither' is not valid: one of both, local, global"),
    ("algorithm.confidence=margin", "algorithm.confidence='margin' is not valid: one of variance, entropy"),
    ("algorithm.beta=1.5", "algorithm.beta=1.5 is not valid: a number in [0, 1)"),
    ("algorithm.tau_l=0", "algorithm.tau_l=0 is not valid: an integer >= 1"),
])
def test_bad_fedlabel_options_give_one_line(override, message, capsys, tmp_path):
    assert flowerbed("run", "algorithm=fedlabel", override, f"output.dir={tmp_path}/r") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
