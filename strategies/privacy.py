"""Differential privacy on the server: Flower's DP strategy wrappers, and an accountant.

`privacy=central` and `privacy=central-adaptive` use Flower's
`DifferentialPrivacy{Server,Client}Side{Fixed,Adaptive}Clipping` as they are. The wrapper does
not sit around the algorithm's whole strategy but around a plain, unweighted FedAvg that computes
the private model, the same composition as robust aggregation (strategies/robust.py): the wrapper
clips the sampled clients' updates (on the server, or checks the client's `fixedclipping_mod`
did), averages them and adds Gaussian noise of std z * C / m; every reply then carries that
private model into the algorithm's own `aggregate_train`. Two reasons:
- the noise calibration z * C / m holds for the unweighted mean of m updates. FedAvg weighted by
  `num-examples` lets one client move the mean by more than C / m;
- a server optimizer (FedAdam, FedYogi, FedAvgM's momentum) then steps toward the private model:
  post-processing, so the guarantee holds. Wrapped around FedAdam itself, the noise would land
  after the optimizer, whose state has seen the clean mean.
A sampled client whose update does not arrive, or is rejected (non-finite, too large), counts as
a zero update: the fixed-denominator estimator of McMahan et al. (2018). The noise stays
calibrated for m, and every round releases, whatever the clients' data did (Flower's wrapper
would skip the round, a decision that itself depends on the data).

`privacy=local`: the clients' `LocalDpMod` does everything (clients/privacy.py); the server only
accounts.

Accounting uses Flower's `RdpAccountant` (Google's dp-accounting, RDP) for the run's sampling:
every client every round is the Gaussian mechanism with noise multiplier z under add/remove-one-
client; m of N clients drawn without replacement is the sampled Gaussian under replace-one-client,
whose sensitivity is 2C, so the accountant sees z / 2. Local DP: each client's own release is the
Gaussian mechanism on its clipped update (replace-one: sensitivity 2C, z / 2), composed over the
rounds it took part in, with no amplification (the server knows who took part); the run reports
the most-sampled client's epsilon.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import strategy as flwr_strategy
from flwr.serverapp.grid import Grid

from flowerbed.strategies.robust import carrying, with_content
from flowerbed.strategies.sampling import StableClients, sample_size
from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.noise import numpy_seeded

NOISE_STREAM = 0x5EC  # keeps the server's noise stream apart from any other seeded by (seed, round)


@dataclass(frozen=True)
class Settings:
    """The `privacy.*` keys of a run config, checked."""

    mode: str
    clipping: str  # server | client
    clipping_norm: float
    noise_multiplier: float
    delta: float | None  # None: 1 / training samples, fixed once the federation is known
    target_epsilon: float | None
    target_quantile: float
    clip_lr: float
    clipped_count_stddev: float | None
    secagg: bool

    @classmethod
    def from_config(cls, cfg: dict) -> Settings:
        def auto(key: str, default):
            value = cfg.get(key, default)
            return None if value in ("auto", "none") else float(value)

        return cls(
            mode=str(cfg.get("privacy.name", "none")), clipping=str(cfg.get("privacy.clipping", "server")),
            clipping_norm=float(cfg.get("privacy.clipping_norm", 1.0)),
            noise_multiplier=float(cfg.get("privacy.noise_multiplier", 1.0)),
            delta=auto("privacy.delta", "auto"), target_epsilon=auto("privacy.target_epsilon", "none"),
            target_quantile=float(cfg.get("privacy.target_quantile", 0.5)), clip_lr=float(cfg.get("privacy.clip_lr", 0.2)),
            clipped_count_stddev=auto("privacy.clipped_count_stddev", "auto"), secagg=bool(cfg.get("privacy.secagg", False)),
        )


class Accountant:
    """Epsilon after k identical releases, from Flower's `RdpAccountant` (dp-accounting's RDP).

    Keeps only numbers (the accountant itself holds modules and is rebuilt per query), so it
    pickles into the server checkpoint; each k is computed once.
    """

    def __init__(self, noise_multiplier: float, sample_size: int, population: int, amplified: bool) -> None:
        self.noise_multiplier, self.sample_size, self.population = noise_multiplier, sample_size, population
        self.amplified = amplified
        self.delta = 0.0  # set by `bind` once the federation's size is known
        self._epsilon: dict[int, float] = {}

    def epsilon(self, releases: int) -> float:
        if releases == 0:
            return 0.0
        if self.noise_multiplier == 0:
            return math.inf
        if releases not in self._epsilon:
            self._epsilon[releases] = self._compute(releases)
        return self._epsilon[releases]

    def _compute(self, releases: int) -> float:
        from flwr.serverapp import (GaussianPrivacyEvent, NeighboringRelation, PrivacyConfig, RdpAccountant,
                                    SamplingMethod)

        if self.amplified:
            model = SamplingMethod.WITHOUT_REPLACEMENT, NeighboringRelation.REPLACE_ONE
        else:
            model = SamplingMethod.NO_AMPLIFICATION, NeighboringRelation.ADD_OR_REMOVE_ONE
        config = PrivacyConfig(target_delta=self.delta, population_size=self.population, sampling_method=model[0],
                               neighboring_relation=model[1])
        accountant = RdpAccountant(config)
        accountant.compose(GaussianPrivacyEvent(self.noise_multiplier, self.sample_size, self.population), releases)
        return accountant.get_privacy_spent().epsilon


class _Mean(flwr_strategy.FedAvg):
    """The FedAvg inside Flower's DP wrapper: it only averages what it is given (the run's strategy
    samples and sends)."""

    def configure_train(self, server_round, arrays, config, grid):
        return []


def _uniform_copies(replies: list[Message], sent: ArrayRecord, sample_size: int) -> list[Message]:
    """Each reply's arrays with weight 1 (and the client mod's norm bit, for adaptive clipping), and a
    zero update (the model sent, not clipped) for each sampled client without a usable reply."""
    from flwr.supercore.differential_privacy import KEY_NORM_BIT

    key = next(iter(replies[0].content.array_records))
    bit = any(KEY_NORM_BIT in r for msg in replies for r in msg.content.metric_records.values())
    zero = RecordDict({key: _nudged(sent), "metrics": MetricRecord({"num-examples": 1, **({KEY_NORM_BIT: 0} if bit else {})})})
    copies = [with_content(replies[0], zero) for _ in range(sample_size - len(replies))]
    for msg in replies:
        content = RecordDict({k: ArrayRecord(dict(v.items())) if not _same(v, sent) else _nudged(sent)
                              for k, v in msg.content.array_records.items()})
        metrics = MetricRecord({"num-examples": 1})
        for record in msg.content.metric_records.values():
            if KEY_NORM_BIT in record:
                metrics[KEY_NORM_BIT] = record[KEY_NORM_BIT]
        content["metrics"] = metrics
        copies.append(with_content(msg, content))
    return copies


def _same(arrays: ArrayRecord, sent: ArrayRecord) -> bool:
    return list(arrays.keys()) == list(sent.keys()) and all(arrays[k].data == sent[k].data for k in sent.keys())


def _nudged(sent: ArrayRecord) -> ArrayRecord:
    """The model sent, one weight moved to the next float: an update of norm ~1e-8 rather than 0,
    because Flower's clipping divides by the update's norm and an exactly-zero update raises
    ZeroDivisionError (flwr 1.42)."""
    out = ArrayRecord(dict(sent.items()))
    for k, array in sent.items():
        values = array.numpy()
        if values.dtype.kind == "f" and values.size:
            values = values.copy()
            values.flat[0] = np.nextafter(values.flat[0], values.dtype.type(np.inf))
            out[k] = Array(values)
            break
    return out


class Privacy:
    """What the server does for a privacy mode: prepare a round, privatize its replies, account."""

    def __init__(self, settings: Settings, seed: int, sample_size: int, population: int) -> None:
        self.settings, self.seed = settings, seed
        self.sample_size, self.population = sample_size, population
        self.releases = 0
        amplified = sample_size < population
        z = settings.noise_multiplier
        self.accountant = Accountant(z / 2 if amplified else z, sample_size, population, amplified)

    def bind(self, client_samples: list[int]) -> None:
        """What needs the federation: delta (the configured one, or 1 / training samples) and the
        largest weight a client gives SecAgg+ (1 under central DP: the mean is unweighted)."""
        self.accountant.delta = self.settings.delta or 1.0 / max(sum(client_samples), 2)
        self.max_weight = 1.0 if self.settings.mode.startswith("central") else float(max(client_samples, default=1) or 1)

    def configure(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid, clients: list[int]) -> None:
        """Before the round's train messages are built (`config` goes into them)."""

    def privatize(self, server_round: int, replies: list[Message]) -> list[Message] | None:
        """The replies the algorithm aggregates (at least one); None releases nothing this round."""
        return replies

    def spent(self) -> float:
        return self.accountant.epsilon(self.releases)

    def would_exceed(self) -> bool:
        """Whether the next round's release would spend more than `privacy.target_epsilon`."""
        target = self.settings.target_epsilon
        return target is not None and self.accountant.epsilon(self.releases + 1) > target

    def metrics(self) -> dict:
        return {"privacy/epsilon": self.spent()}

    def summary(self) -> dict:
        return {"privacy/mode": self.settings.mode, "privacy/epsilon": self.spent(), "privacy/delta": self.accountant.delta,
                "privacy/noise_multiplier": self.settings.noise_multiplier, "privacy/releases": self.releases,
                "privacy/secagg": self.settings.secagg}


class CentralPrivacy(Privacy):
    """Flower's DP wrapper around an unweighted FedAvg computes the private model (module doc)."""

    def __init__(self, settings: Settings, seed: int, sample_size: int, population: int) -> None:
        super().__init__(settings, seed, sample_size, population)
        self.sent, self.zero_updates = ArrayRecord(), 0
        s, server = settings, settings.clipping == "server"
        try:
            if s.mode == "central":
                fixed = (flwr_strategy.DifferentialPrivacyServerSideFixedClipping if server
                         else flwr_strategy.DifferentialPrivacyClientSideFixedClipping)
                self.wrapper = fixed(_Mean(), s.noise_multiplier, s.clipping_norm, sample_size)
            else:
                adaptive = (flwr_strategy.DifferentialPrivacyServerSideAdaptiveClipping if server
                            else flwr_strategy.DifferentialPrivacyClientSideAdaptiveClipping)
                self.wrapper = adaptive(_Mean(), s.noise_multiplier, sample_size, initial_clipping_norm=s.clipping_norm,
                                        target_clipped_quantile=s.target_quantile, clip_norm_lr=s.clip_lr,
                                        clipped_count_stddev=s.clipped_count_stddev)
        except ValueError as err:  # Flower's own check, e.g. adaptive noise vs the clipped-count noise
            stddev = s.clipped_count_stddev if s.clipped_count_stddev is not None else sample_size / 20
            raise ConfigError.invalid("privacy.noise_multiplier", s.noise_multiplier,
                                      f"below 2 * privacy.clipped_count_stddev = {2 * stddev:g} for central-adaptive "
                                      f"with {sample_size} sampled clients (raise privacy.clipped_count_stddev)") from err

    def configure(self, server_round, arrays, config, grid, clients) -> None:
        # server-side: remembers the global model to clip against; client-side: puts the norm into `config`
        self.wrapper.configure_train(server_round, arrays, config, grid)
        self.sent = arrays  # a missing client's zero update

    def privatize(self, server_round: int, replies: list[Message]) -> list[Message] | None:
        self.zero_updates = self.sample_size - len(replies)
        copies = _uniform_copies(replies, self.sent, self.sample_size)
        with numpy_seeded(self.seed, server_round, NOISE_STREAM):
            arrays, _ = self.wrapper.aggregate_train(server_round, copies)
        self.sent = ArrayRecord()  # not worth a place in the checkpoint
        if hasattr(self.wrapper, "current_arrays"):
            self.wrapper.current_arrays = ArrayRecord()
        if arrays is None:
            return None
        self.releases += 1
        return carrying(replies, arrays)

    def metrics(self) -> dict:
        out = {**super().metrics(), "privacy/zero_updates": self.zero_updates}
        if self.settings.mode == "central-adaptive":
            out["privacy/clipping_norm"] = float(self.wrapper.clipping_norm)
        return out


class LocalPrivacy(Privacy):
    """The clients noise their own updates; the server counts who released how often."""

    def __init__(self, settings: Settings, seed: int, sample_size: int, population: int) -> None:
        super().__init__(settings, seed, sample_size, population)
        self.accountant = Accountant(settings.noise_multiplier / 2, 1, 1, amplified=False)
        self.participations: dict[int, int] = {}

    def configure(self, server_round, arrays, config, grid, clients) -> None:
        for client in clients:  # a sampled client releases its update (counted even if the reply is lost)
            self.participations[client] = self.participations.get(client, 0) + 1
        self.releases = max(self.participations.values(), default=0)


class SecureAggregationOnly(Privacy):
    """`privacy=none privacy.secagg=true`: no noise, nothing to account."""

    def would_exceed(self) -> bool:
        return False

    def metrics(self) -> dict:
        return {}

    def summary(self) -> dict:
        return {"privacy/mode": "none", "privacy/secagg": True}


# -- which algorithms it can serve ---------------------------------------------------------------
def build(cfg: dict, strategy) -> Privacy | None:
    """The server's privacy component for this run config, or None; ConfigError if it cannot serve it."""
    settings = Settings.from_config(cfg)
    if settings.mode == "none" and settings.target_epsilon is not None:
        raise ConfigError.invalid("privacy.target_epsilon", settings.target_epsilon,
                                  "none with privacy=none (no budget is spent)")
    if settings.mode == "none" and not settings.secagg:
        return None
    check_algorithm(cfg, strategy, settings)
    if settings.secagg and settings.mode.startswith("central") and settings.clipping == "server":
        raise ConfigError.invalid("privacy.clipping", "server", "client with privacy.secagg=true (under secure "
                                  "aggregation the server never sees an update to clip)")
    n = int(cfg["clients.num"])
    m = sample_size(n, strategy.fraction_train, strategy.min_train_nodes)
    kinds = {"central": CentralPrivacy, "central-adaptive": CentralPrivacy, "local": LocalPrivacy}
    kind = kinds.get(settings.mode, SecureAggregationOnly)
    return kind(settings, int(cfg["seed"]), m, n)


def check_algorithm(cfg: dict, strategy, settings: Settings) -> None:
    """Privacy needs a global model that the server averages (one line naming what is wrong)."""
    name, key = cfg["algorithm.name"], "privacy.name" if settings.mode != "none" else "privacy.secagg"
    value = settings.mode if settings.mode != "none" else True
    if not getattr(strategy, "has_global_model", True):
        raise ConfigError.invalid(key, value, f"none for {name}: it has no global model to protect (its server keeps "
                                              "a prompt generator or nothing; the clients' state stays personal)")
    averaging = isinstance(strategy, StableClients) and not isinstance(
        strategy, (flwr_strategy.FedTrimmedAvg, flwr_strategy.FedMedian, flwr_strategy.Krum))
    if not averaging:
        raise ConfigError.invalid(key, value, f"none for {name}: its server does not average the updates, which the "
                                              "noise calibration (and secure aggregation) assume")
    if settings.secagg and getattr(strategy, "send_batchnorm", False):
        raise ConfigError.invalid("privacy.secagg", True, f"false with model.init under {name} (secure aggregation's messages "
                                  "carry the arrays alone, not the starting BatchNorm layers the clients start from)")
    if getattr(strategy, "aggregation", None) is not None:
        raise ConfigError.invalid("algorithm.aggregation", cfg.get("algorithm.aggregation"),
                                  f"mean with {key}={value} (a robust statistic is not the sum the noise is calibrated for)")


def check_model(cfg: dict, state: dict) -> None:
    """Flower's clipping scales every array in place, which integer buffers cannot take."""
    if str(cfg.get("privacy.name", "none")) == "none":
        return
    integer = [k for k, v in state.items() if not v.is_floating_point()]
    if integer:
        raise ConfigError.invalid("model.name", cfg["model.name"], f"a model without integer buffers for privacy="
                                  f"{cfg['privacy.name']} ({integer[0]}: Flower's clipping scales every array); e.g. cnn or mlp")
