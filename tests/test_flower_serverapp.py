"""flowerbed's strategies in a user's own Flower ServerApp: Flower's `Strategy.start`, flowerbed's ClientApp.

The ServerApp is written here as Flower's quickstart writes one (`@app.main()`, a strategy,
`strategy.start(grid=..., initial_arrays=..., num_rounds=..., evaluate_fn=...)`); it runs on
flowerbed's in-process Grid, which runs any ServerApp object against the real ClientApp.
"""

from __future__ import annotations

import pytest
import torch
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from flowerbed.clients.app import app as client_app
from flowerbed.server.evaluation import evaluate_fn
from flowerbed.simulations import config
from flowerbed.simulations.engines.inprocess import run_in_process
from flowerbed.strategies import fedloge, flower
from flowerbed.strategies.registry import build_strategy
from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.models import build_model
from flowerbed.tasks.partitions import build_federation

SMALL = ["experiment=smoke", "train.local_steps=5", "train.local_epochs=0", "clients.fraction_evaluate=1.0"]


def quickstart(make_strategy, results: list, evaluate: bool = True) -> ServerApp:
    """Flower's quickstart ServerApp, with a flowerbed strategy and model."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = dict(context.run_config)  # flowerbed's ClientApp reads the same keys
        data = build_federation(cfg).data
        model = build_model(str(cfg["model.name"]), data.input_shape, data.num_classes, int(cfg["seed"]))
        strategy = make_strategy(cfg)
        result = strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=2,
                                evaluate_fn=evaluate_fn(cfg) if evaluate else None)
        results.append((strategy, model.state_dict(), result))

    return app


def start(make_strategy, *overrides: str, evaluate: bool = True):
    cfg = config.load([*SMALL, *overrides])
    results: list = []
    run_in_process(quickstart(make_strategy, results, evaluate), client_app, cfg, int(cfg["clients.num"]))
    return results[0]


def moved(initial: dict, arrays: ArrayRecord) -> bool:
    return any(not torch.equal(initial[k], torch.from_numpy(arrays[k].numpy())) for k in initial if initial[k].is_floating_point())


def test_fedloge_under_flower_start_scores_generic_raw_universal_and_personal_heads():
    """FedLoGe built as a user would, without flowerbed's loop: both rounds train, Flower's evaluate_fn
    scores FedLoGe's three global models, the clients their personal heads."""
    strategy, initial, result = start(lambda cfg: fedloge.FedLoGe(**fedloge.options(cfg), fraction_train=1.0),
                                      "algorithm=fedloge", "algorithm.etf_steps=20")
    assert sorted(result.train_metrics_clientapp) == [1, 2]
    assert moved(initial, result.arrays)
    central = result.evaluate_metrics_serverapp
    assert sorted(central) == [0, 1, 2]
    for prefix in ("global", "global_raw", "global_universal"):
        assert 0.0 <= central[2][f"{prefix}/acc"] <= 1.0
    assert central[2]["global/acc"] != central[0]["global/acc"]
    assert central[2]["global/loss"] < central[0]["global/loss"]
    assert central[2]["global/acc"] != central[2]["global_raw/acc"] or central[2]["global/loss"] != central[2]["global_raw/loss"]
    personal = result.evaluate_metrics_clientapp
    assert sorted(personal) == [1, 2] and 0.0 < personal[2]["personal/acc"] <= 1.0
    assert sorted(strategy.client_of_node) == sorted(strategy.client_of_node.values())  # each node its own client


def test_flower_path_and_loop_path_score_fedloge_alike():
    """`central_evaluate_fn` (Flower's evaluate_fn) gives what the loop's one-pass `central_evaluation` gives."""
    from flowerbed.server.evaluation import CentralEvaluator

    cfg = config.load([*SMALL, "algorithm=fedloge", "algorithm.etf_steps=20"])
    data = build_federation(cfg).data
    model = build_model(str(cfg["model.name"]), data.input_shape, data.num_classes, 0)
    with torch.no_grad():
        model.classifier.weight.mul_(torch.linspace(0.2, 3.0, data.num_classes)[:, None])  # rows of unequal norm
    arrays = ArrayRecord(model.state_dict())
    strategy = fedloge.FedLoGe(**fedloge.options(cfg))
    loop = strategy.central_evaluation(CentralEvaluator(cfg, build_federation(cfg), torch.device("cpu")))(arrays)
    flwr = strategy.central_evaluate_fn(evaluate_fn(cfg))(1, arrays)
    assert sorted(flwr) == sorted(loop)
    for key, value in loop.items():
        assert flwr[key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.parametrize("overrides", [("algorithm.aggregation=median",), ("privacy=central", "privacy.noise_multiplier=0.01")],
                         ids=["robust-median", "central-dp"])
def test_registry_strategy_runs_its_rounds_under_flower_start(overrides):
    """`build_strategy(cfg).start(...)` used to finish in 0.00 s with the initial model: no node was
    ever sampled. Now each round trains every client and the robust or private model moves."""
    strategy, initial, result = start(build_strategy, "clients.fraction_train=1.0", *overrides)
    assert sorted(result.train_metrics_clientapp) == [1, 2]
    assert result.train_metrics_clientapp[2]["train/loss"] > 0
    assert moved(initial, result.arrays)
    assert result.evaluate_metrics_serverapp[2]["global/loss"] < result.evaluate_metrics_serverapp[0]["global/loss"]
    assert strategy.round_stats == {"failures": 0, "rejected": 0, "rejected_norm": 0, "short": 0}
    if strategy.privacy is not None:
        assert strategy.privacy.releases == 2  # Flower's DP wrapper released a noised model each round
    else:
        assert strategy.aggregation is not None


def test_start_without_initial_arrays_fails_at_once_in_one_line():
    with pytest.raises(ConfigError) as err:
        flower.FedAvg().start(grid=None, initial_arrays=ArrayRecord(), num_rounds=2)
    assert str(err.value) == ("FedAvg.start(initial_arrays=...) needs the global model's weights, e.g. "
                              "ArrayRecord(model.state_dict()); got ArrayRecord with 0 arrays")


def test_start_refuses_what_only_flowerbed_loop_enforces():
    cfg = config.load([*SMALL, "privacy=central", "privacy.target_epsilon=5"], load_data=False)
    with pytest.raises(ConfigError, match=r"^privacy.target_epsilon=5 needs flowerbed's round loop"):
        build_strategy(cfg).start(grid=None, initial_arrays=ArrayRecord({"w": torch.zeros(2)}))
