"""Every server half, by name: the one place that lists them (the client side mirrors it).

A builder takes the flat run config and returns a ready strategy.
"""

from __future__ import annotations

from typing import Callable

from flwr.serverapp.strategy import Strategy

from flowerbed.strategies import ccvr, creamfl, fedasync, fedbn, fedbuff, feddyn, fedlabel, fedlc, fedloge, fednova, fedrod, fedsto
from flowerbed.strategies import flower, fraug, pfedpg, privacy, robust, scaffold, uda
from flowerbed.strategies.sampling import mean_over_clients
from flowerbed.tasks import plugins
from flowerbed.tasks.errors import ConfigError


def common(cfg: dict) -> dict:
    """The FedAvg knobs every Flower strategy takes, from the `clients.*` keys."""
    n = int(cfg["clients.num"])
    return {
        "fraction_train": float(cfg["clients.fraction_train"]),
        "fraction_evaluate": float(cfg["clients.fraction_evaluate"]),
        "min_train_nodes": min(int(cfg["clients.min_train"]), n),
        "min_evaluate_nodes": min(int(cfg["clients.min_train"]), n),
        "min_available_nodes": min(int(cfg["clients.min_train"]), n),
        "evaluate_metrics_aggr_fn": mean_over_clients,
    }


def _opt(cfg: dict) -> dict:
    keys = ("eta", "eta_l", "beta_1", "beta_2", "tau")
    return {k: float(cfg[f"algorithm.{k}"]) for k in keys}


STRATEGIES: dict[str, Callable[[dict], Strategy]] = {
    "fedavg": lambda c: flower.FedAvg(**common(c)),
    "creamfl": lambda c: creamfl.CreamFL(c, **common(c)),
    "fedlabel": lambda c: fedlabel.FedLabel(**common(c)),
    "fixmatch": lambda c: flower.FedAvg(**common(c)),
    "uda": lambda c: uda.UDA(**common(c)),
    "fedprox": lambda c: flower.FedProx(proximal_mu=float(c["algorithm.proximal_mu"]), **common(c)),
    "fedloge": lambda c: fedloge.FedLoGe(**fedloge.options(c), **common(c)),
    "fedrep": lambda c: flower.FedAvg(**common(c)),  # the personal head is the client's business
    "fedbabu": lambda c: flower.FedAvg(**common(c)),
    "fedrod": lambda c: fedrod.FedRoD(**common(c)),  # the personal head is the client's business
    "fedlc": lambda c: fedlc.FedLC(**common(c)),
    "ccvr": lambda c: ccvr.CCVR(**ccvr.options(c), **common(c)),
    "fedavgm": lambda c: flower.FedAvgM(
        server_learning_rate=float(c["algorithm.server_lr"]), server_momentum=float(c["algorithm.server_momentum"]), **common(c)
    ),
    "fedadam": lambda c: flower.FedAdam(**_opt(c), **common(c)),
    "fedyogi": lambda c: flower.FedYogi(**_opt(c), **common(c)),
    "fedtrimmedavg": lambda c: flower.FedTrimmedAvg(beta=float(c["algorithm.trim_beta"]), **common(c)),
    "fedmedian": lambda c: flower.FedMedian(**common(c)),
    "krum": lambda c: flower.Krum(num_malicious_nodes=int(c["algorithm.num_malicious"]), **common(c)),
    "pfedpg": lambda c: pfedpg.PFedPG(**pfedpg.options(c), **pfedpg.generator_options(c), **common(c)),
    "pbase-only": lambda c: pfedpg.PBaseOnly(**pfedpg.options(c), **pfedpg.generator_options(c), **common(c)),
    "fedvpt": lambda c: pfedpg.FedVPT(**pfedpg.options(c), **common(c)),
    "singleset-vpt": lambda c: pfedpg.SingleSetVPT(**pfedpg.options(c), **common(c)),
    "fedbn": lambda c: fedbn.FedBN(**fedbn.options(c), **common(c)),
    "fednova": lambda c: fednova.FedNova(**common(c)),
    "feddyn": lambda c: feddyn.FedDyn(float(c["algorithm.dyn_alpha"]), **common(c)),
    "ditto": lambda c: flower.FedAvg(**common(c)),  # the global model is FedAvg's; personal models stay on clients
    "moon": lambda c: flower.FedAvg(**common(c)),  # the contrastive term is the client's business
    "scaffold": lambda c: scaffold.Scaffold(float(c["algorithm.server_lr"]), **common(c)),
    "fraug": lambda c: fraug.FRAug(**fraug.options(c), **fedbn.options(c), **common(c)),
    "fraug-no-rtnet": lambda c: fraug.FRAug(**fraug.options(c), **fedbn.options(c), **common(c)),
    "fraug-no-generator": lambda c: fedbn.FedBN(**fedbn.options(c), **common(c)),  # nothing but the model travels
    # asynchronous: server/asynchronous.py drives them, their clients train like FedAvg's
    "fedbuff": lambda c: fedbuff.FedBuff(**fedbuff.options(c), **common(c)),
    "fedasync": lambda c: fedasync.FedAsync(**fedasync.options(c), **common(c)),
    **{name: (lambda c: fedsto.FedSTO(**fedsto.options(c), **common(c))) for name in fedsto.VARIANTS},
}
# Algorithms whose clients keep the BatchNorm layers: a model without any is refused up front.
LOCAL_BATCHNORM = ("fedbn", "fraug", "fraug-no-rtnet", "fraug-no-generator")


def strategy_builder(name: object) -> Callable[[dict], Strategy]:
    """The server half `algorithm.name` names: one of STRATEGIES, or your own (tasks/plugins.py)."""
    return plugins.algorithm_half(name, STRATEGIES, "strategy")


def build_strategy(cfg: dict) -> Strategy:
    strategy = strategy_builder(cfg["algorithm.name"])(cfg)
    strategy.seed = int(cfg["seed"])
    strategy.client_of_node = None  # flowerbed's loop sets it; under Flower's Strategy.start, read from the grid
    strategy.round_stats = {}
    strategy.max_update_norm = float(cfg.get("clients.max_update_norm", 0.0))
    strategy.over_select = float(cfg.get("clients.over_select", 0.0))
    strategy.aggregation = robust.aggregator(cfg)
    if strategy.aggregation is not None and not getattr(strategy, "has_global_model", True):
        raise ConfigError.invalid("algorithm.aggregation", cfg["algorithm.aggregation"], f"mean for {cfg['algorithm.name']} (no global weights)")
    strategy.privacy = privacy.build(cfg, strategy)
    return strategy
