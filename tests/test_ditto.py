"""Ditto: its global model is FedAvg's; the personal models are its own, scored on the local test sets."""

from flowerbed.simulations import config
from flowerbed.tasks.models import build_model
from flowerbed.tasks.partitions import build_federation
from tests.conftest import client_state, run, untimed


def test_the_global_model_is_fedavgs_and_the_personal_models_are_scored(tmp_path):
    fedavg = untimed(run(tmp_path / "fedavg", "algorithm=fedavg", "rounds=3"))
    ditto = untimed(run(tmp_path / "ditto", "algorithm=ditto", "rounds=3"))
    for a, b in zip(fedavg, ditto):
        shared = {k: v for k, v in a.items() if not k.startswith("personal/")}
        assert shared == {k: v for k, v in b.items() if k in shared}  # global/*, train/loss, bytes: bit for bit
    assert all("ditto/personal_loss" in r for r in ditto[1:])
    assert ditto[-1]["personal/acc"] != fedavg[-1]["personal/acc"]  # evaluated with v_k, not w
    personal = client_state(tmp_path / "ditto", 0, 3, "ditto/personal")
    assert set(personal) >= {"classifier.weight", "classifier.bias"}


def test_lambda_pulls_the_personal_model_toward_the_global_one(tmp_path):
    """After one round v_k started from w^0 and trained with the pull toward it: the larger lambda,
    the closer it stays (at lambda 0 it is a plain local model)."""
    d = build_federation(config.load(["experiment=smoke"])).data
    start = build_model("cnn", d.input_shape, d.num_classes, 0).state_dict()

    def distance(lam: float) -> float:
        run(tmp_path / str(lam), "algorithm=ditto", f"algorithm.ditto_lambda={lam}", "rounds=1")
        personal = client_state(tmp_path / str(lam), 0, 1, "ditto/personal")
        return sum(float(((personal[k] - start[k]) ** 2).sum()) for k in start if start[k].is_floating_point()) ** 0.5

    far, near = distance(0.0), distance(5.0)
    assert 0 < near < 0.8 * far
