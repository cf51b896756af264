"""Hydra config -> validated flat run_config, the only thing the apps read.

Bad input is caught here, before any work: each problem becomes a `ConfigError` whose one-line
message names the key, the value and what is allowed.
"""

from __future__ import annotations

import functools
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

from flowerbed.tasks.errors import ConfigError, did_you_mean

CONF_DIR = Path(__file__).parent / "conf"
GROUPS = ("dataset", "partition", "model", "algorithm", "engine", "privacy", "experiment")
Scalar = bool | int | float | str


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def compose(overrides: list[str]):
    """The Hydra config for these command-line overrides (`key=value`, `group=option`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        if key in GROUPS and value not in group_options(key) and not (key == "experiment" and value == "null"):
            raise ConfigError.invalid(key, value, "one of " + ", ".join(group_options(key)), group_options(key))
        if "=" not in item:
            raise ConfigError(f"{item!r} is not an override: write key=value (e.g. algorithm=fedprox partition.alpha=0.1)")
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            return hydra_compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        _check_single_run(overrides)  # Hydra's own words for these name no key: say which override, and what was meant
        raise ConfigError(_first_line(err)) from err


def parse_overrides(overrides: list[str]) -> list:
    """Hydra's parse of each override; one that does not parse is one line naming it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser, parsed = OverridesParser.create(), []
    for item in overrides:
        try:
            parsed.append(parser.parse_override(item))
        except HydraException as err:
            raise ConfigError(f"{item!r} is not an override Hydra can read: {_first_line(err)}") from err
    return parsed


def _check_single_run(overrides: list[str]) -> None:
    """A comma list (`seed=0,1`) has no place in one run: Hydra calls it only "ambiguous" where
    `flowerbed sweep` is what was meant. (A key given twice is fine: the last value wins, which
    callers use to change one key of a shared list.)"""
    for item, override in zip(overrides, parse_overrides(overrides)):
        if override.is_sweep_override():
            raise ConfigError(f"{item} is a list of values: `flowerbed sweep {item}` runs one simulation per value")


def _first_line(err: Exception) -> str:
    """Hydra's message in one line; an unknown key (`Could not override 'algoritm'`) with the nearest known one."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    match = re.search(r"Key '([^']+)' is not in struct|Could not override '([^']+)'", str(err))
    if match:
        return unknown_key(match.group(1) or match.group(2))
    return text


def unknown_key(key: str) -> str:
    """`algoritm is not a configuration key; did you mean algorithm?`, or, for a key that only other
    options of its group have, which ones (`dataset.path` with `dataset=digits`)."""
    group = key.split(".", 1)[0]
    owners = [p.stem for p in sorted((CONF_DIR / group).glob("*.yaml")) if key in _yaml_keys(p, f"{group}.")] if group in GROUPS else []
    if owners:
        return f"{key} is not a key of the chosen {group}; {group}={', '.join(owners)} {'has' if len(owners) == 1 else 'have'} it"
    hint = did_you_mean(key, sorted(known_keys() | set(GROUPS)))
    return f"{key} is not a configuration key{hint or ' (every key: simulations/conf/config.yaml and its groups)'}"


@functools.lru_cache(maxsize=1)
def known_keys() -> frozenset[str]:
    """Every dotted key a run config may hold: config.yaml's and each group option's.

    Read from the YAML files rather than composed (composing every option takes seconds), so that
    an unknown key is told apart at once; a test checks this is the set pyproject declares.
    """
    found = set(_yaml_keys(CONF_DIR / "config.yaml", ""))
    for group in GROUPS:
        for path in (CONF_DIR / group).glob("*.yaml"):
            is_global = "@package _global_" in path.read_text().split("\n", 1)[0]
            found |= _yaml_keys(path, "" if is_global else f"{group}.")
    return frozenset(found)


@functools.lru_cache(maxsize=None)
def _yaml_keys(path: Path, prefix: str) -> frozenset[str]:
    import yaml

    tree = yaml.safe_load(path.read_text()) or {}
    tree.pop("defaults", None)
    return frozenset(flatten(tree, prefix))


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def to_run_config(cfg) -> dict[str, Scalar]:
    """Resolve interpolations and flatten to dotted keys with scalar values."""
    from omegaconf import OmegaConf

    try:
        tree = OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:  # an interpolation to a missing key
        raise ConfigError(_first_line(err)) from err
    _check_values(tree)
    flat = flatten(tree)
    for key in flat:  # `+train.lrr=0.1` or `clients=3` get through Hydra; nothing would ever read them
        if key not in known_keys():
            raise ConfigError(unknown_key(key))
    return flat


def _check_values(tree: dict) -> None:
    """Every setting is one scalar: `seed` at the top, `clients.num` in a group. A list, a null or a
    dict in a setting's place (`clients.num={a: 1}`) would otherwise vanish or rename it when flattened."""
    for name, value in tree.items():
        grouped = isinstance(value, dict) and name not in _root_settings()
        for key, item in ({f"{name}.{k}": v for k, v in value.items()} if grouped else {name: value}).items():
            if item is None or isinstance(item, (list, dict)):
                raise ConfigError.invalid(key, item, "a single number, string or boolean")


@functools.lru_cache(maxsize=1)
def _root_settings() -> frozenset[str]:
    """Names at the top of the default config that hold a value, not a group (seed, rounds, ...)."""
    from omegaconf import OmegaConf

    return frozenset(k for k, v in OmegaConf.to_container(compose([])).items() if not isinstance(v, dict))


# -- value checks -------------------------------------------------------------------------------
def _num(kind: type, low: float | None = None, high: float | None = None, low_open=False, high_open=False) -> Callable:
    def check(value) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and not isinstance(value, int)):
            return False
        if not math.isfinite(value):  # `nan` and `inf` parse as floats; none of our numbers may be one
            return False
        if low is not None and (value <= low if low_open else value < low):
            return False
        return not (high is not None and (value >= high if high_open else value > high))

    noun = "an integer" if kind is int else "a number"
    if low is not None and high is not None:
        allowed = f"{noun} in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        allowed = f"{noun} {'>' if low_open else '>='} {low}"
    else:
        allowed = noun
    check.allowed = allowed  # type: ignore[attr-defined]
    return check


def _one_of(*options: str) -> Callable:
    def check(value) -> bool:
        return isinstance(value, str) and value in options

    check.allowed = "one of " + ", ".join(options)  # type: ignore[attr-defined]
    check.options = options  # type: ignore[attr-defined]
    return check


def _or_word(word: str, check: Callable) -> Callable:
    """`word` (a setting's automatic or absent value) or what `check` allows."""

    def either(value) -> bool:
        return value == word or check(value)

    either.allowed = f"{word} or {check.allowed}"  # type: ignore[attr-defined]
    return either


def _bool() -> Callable:
    def check(value) -> bool:
        return isinstance(value, bool)

    check.allowed = "true or false"  # type: ignore[attr-defined]
    return check


CHECKS: dict[str, Callable] = {
    "seed": _num(int, 0),
    "rounds": _num(int, 1),
    "clients.num": _num(int, 1),
    "clients.fraction_train": _num(float, 0, 1, low_open=True),
    "clients.fraction_evaluate": _num(float, 0, 1),
    "clients.min_train": _num(int, 1),
    "clients.timeout": _num(float, 0, low_open=True),
    "train.local_epochs": _num(int, 0),
    "train.local_steps": _num(int, 0),
    "train.batch_size": _num(int, 1),
    "train.lr": _num(float, 0, low_open=True),
    "train.momentum": _num(float, 0, 1, high_open=True),
    "train.weight_decay": _num(float, 0),
    "train.num_threads": _num(int, 1),
    "evaluate.every": _num(int, 1),
    "partition.alpha": _num(float, 0, low_open=True),
    "partition.min_size": _num(int, 0),
    "partition.classes_per_client": _num(int, 1),
    "partition.imbalance_factor": _num(float, 1),
    "partition.labeled_fraction": _num(float, 0, 1, low_open=True),
    "partition.pretrain_fraction": _num(float, 0, 1, high_open=True),
    "partition.samples_per_client": _num(int, 0),
    "model.prompts": _num(int, 1),
    "model.text_dim": _num(int, 1),
    "model.embed_dim": _num(int, 1),
    "dataset.captions_per_image": _num(int, 1),
    "dataset.max_words": _num(int, 1),
    "dataset.vocab_size": _num(int, 3),
    "partition.public_images": _num(int, 0),
    "partition.image_clients": _num(int, 0),
    "partition.text_clients": _num(int, 0),
    "partition.unimodal_alpha": _num(float, 0, low_open=True),
    "dataset.image_samples": _num(int, 0),
    "dataset.text_samples": _num(int, 0),
    "algorithm.inter_weight": _num(float, 0),
    "algorithm.intra_weight": _num(float, 0),
    "algorithm.distill_weight": _num(float, 0),
    "algorithm.generator_lr": _num(float, 0, low_open=True),
    "algorithm.prompt_generator_lr": _num(float, 0, low_open=True),
    "algorithm.proximal_mu": _num(float, 0),
    "algorithm.dyn_alpha": _num(float, 0),
    "algorithm.contrastive_mu": _num(float, 0),
    "algorithm.ditto_lambda": _num(float, 0),
    "algorithm.temperature": _num(float, 0, low_open=True),
    "algorithm.trim_beta": _num(float, 0, 0.5, high_open=True),
    "algorithm.num_malicious": _num(int, 0),
    "algorithm.etf_sparsity": _num(float, 0, 1, high_open=True),
    "algorithm.etf_norm": _or_word("auto", _num(float, 0, low_open=True)),
    "algorithm.etf_steps": _num(int, 0),
    "algorithm.etf_lr": _num(float, 0, low_open=True),
    "algorithm.head_epochs": _num(int, 0),
    "algorithm.finetune_epochs": _num(int, 0),
    "algorithm.tau_l": _num(int, 1),
    "algorithm.tau_u": _num(int, 0),
    "algorithm.beta": _num(float, 0, 1, high_open=True),
    "algorithm.lambda0": _num(float, 0),
    "algorithm.threshold": _num(float, 0, 1, high_open=True),
    "algorithm.lambda_u": _num(float, 0),
    "algorithm.calibration_tau": _num(float, 0),
    "algorithm.uda_temperature": _num(float, 0, low_open=True),
    "algorithm.uda_threshold": _num(float, 0, 1, high_open=True),
    "algorithm.virtual_per_class": _num(int, 1),
    "algorithm.calibration_epochs": _num(int, 0),
    "algorithm.calibration_lr": _num(float, 0, low_open=True),
    "engine.num_cpus": _num(float, 0, low_open=True),
    "clients.max_update_norm": _num(float, 0),
    "clients.max_failed_rounds": _num(int, 1),
    "clients.deadline_s": _num(float, 0),
    "clients.over_select": _num(float, 0),
    "devices.profile": _one_of("none", "classes", "trace"),
    "devices.reference_speed": _num(float, 0, low_open=True),
    "devices.availability": _one_of("always", "classes"),
    "devices.session_s": _num(float, 0, low_open=True),
    "algorithm.buffer_size": _num(int, 1),
    "algorithm.concurrency": _num(int, 0),
    "algorithm.mixing": _num(float, 0, 1, low_open=True),
    "algorithm.staleness_exponent": _num(float, 0),
    "faults.raise_fraction": _num(float, 0, 1),
    "faults.timeout_fraction": _num(float, 0, 1),
    "faults.dropout_fraction": _num(float, 0, 1),
    "faults.poison_fraction": _num(float, 0, 1),
    "faults.poison": _one_of("huge", "nonfinite"),
    "algorithm.eta": _num(float, 0, low_open=True),
    "algorithm.eta_l": _num(float, 0, low_open=True),
    "algorithm.tau": _num(float, 0, low_open=True),
    "algorithm.beta_1": _num(float, 0, 1, high_open=True),
    "algorithm.beta_2": _num(float, 0, 1, high_open=True),
    "algorithm.server_lr": _num(float, 0, low_open=True),
    "algorithm.server_momentum": _num(float, 0, 1, high_open=True),
    "algorithm.residual": _bool(),
    "partition.disjoint": _bool(),
    "algorithm.rtnet_lr": _num(float, 0, low_open=True),
    "algorithm.lambda_generator": _num(float, 0),
    "algorithm.lambda_rtnet": _num(float, 0),
    "algorithm.generator_distance": _one_of("l2", "mmd"),
    "algorithm.rtnet_distance": _one_of("l2", "mmd"),
    "algorithm.aug_gamma": _num(float, 0),
    "algorithm.feature_interpolation": _bool(),
    "algorithm.class_mean_momentum": _num(float, 0, 1),
    "algorithm.latent_dim": _num(int, 0),
    "engine.compile": _bool(),
    "dataset.domains": _bool(),
    "dataset.alpha": _num(float, 0),
    "dataset.beta": _num(float, 0),
    "dataset.num_classes": _num(int, 2),
    "dataset.num_train": _num(int, 1),
    "dataset.num_test": _num(int, 1),
    "dataset.num_users": _num(int, 1),
    "dataset.seed": _num(int, 0),
    "dataset.test_fraction": _num(float, 0, 1, low_open=True, high_open=True),
    "engine.num_gpus": _num(float, 0),
    "privacy.clipping": _one_of("server", "client"),
    "privacy.clipping_norm": _num(float, 0, low_open=True),
    "privacy.noise_multiplier": _num(float, 0),
    "privacy.delta": _or_word("auto", _num(float, 0, 1, low_open=True, high_open=True)),
    "privacy.target_epsilon": _or_word("none", _num(float, 0, low_open=True)),
    "privacy.target_quantile": _num(float, 0, 1),
    "privacy.clip_lr": _num(float, 0, low_open=True),
    "privacy.clipped_count_stddev": _or_word("auto", _num(float, 0)),
    "privacy.secagg": _bool(),
}


def _owned_choices() -> dict[str, Callable]:
    """Checks for the keys whose choices the module that reads them lists, so that a new choice is
    added in one place (imported here, not at the top: client and strategy modules bring torch)."""
    from flowerbed.clients.fedlabel import CONFIDENCES, SELECTIONS
    from flowerbed.strategies.robust import AGGREGATIONS
    from flowerbed.tasks.registry import TASKS
    from flowerbed.strategies.creamfl import ENSEMBLES
    from flowerbed.tasks.models import MODELS
    from flowerbed.tasks.text import TEXT_ENCODERS

    return {"algorithm.selection": _one_of(*SELECTIONS), "algorithm.confidence": _one_of(*CONFIDENCES),
            "algorithm.aggregation": _one_of(*AGGREGATIONS), "task.name": _one_of(*TASKS), "model.text": _one_of(*TEXT_ENCODERS),
            "algorithm.ensemble": _one_of(*ENSEMBLES), "algorithm.client_text": _one_of(*TEXT_ENCODERS),
            "algorithm.client_model": _one_of(*MODELS), "algorithm.image_model": _one_of(*MODELS),
            "algorithm.text_model": _one_of(*TEXT_ENCODERS)}


def validate(flat: dict[str, Scalar], load_data: bool = True) -> None:
    """Raise `ConfigError` for the first bad value; optionally build the federation too."""
    from flowerbed.clients import faults
    from flowerbed.clients.registry import CLIENTS, client_class
    from flowerbed.strategies.registry import STRATEGIES, strategy_builder

    for key, check in {**CHECKS, **_owned_choices()}.items():
        if key in flat and not check(flat[key]):
            raise ConfigError.invalid(key, flat[key], check.allowed, getattr(check, "options", ()))
    for key in ("resume", "overwrite", "logging.tensorboard", "logging.mlflow", "logging.wandb", "evaluate.central"):
        if not isinstance(flat.get(key), bool):
            raise ConfigError.invalid(key, flat.get(key), "true or false")
    if flat["resume"] and flat["overwrite"]:
        raise ConfigError("resume=true and overwrite=true contradict each other: resume continues the run in output.dir, "
                          "overwrite replaces it; give one")
    if not str(flat["output.dir"]).strip():  # "" is the working directory: the run's files would land among the user's
        raise ConfigError.invalid("output.dir", flat["output.dir"], "a folder (default runs/<algorithm>-<dataset>-<partition>-seed<seed>)")
    if not isinstance(flat.get("partition.domain_shift", False), bool):
        raise ConfigError.invalid("partition.domain_shift", flat["partition.domain_shift"], "true or false")
    _check_domains(flat)
    shares = sum(float(flat.get(f"faults.{k}_fraction", 0.0)) for k in faults.KINDS)
    if shares > 1:
        raise ConfigError.invalid("faults.*_fraction", round(shares, 6), "shares that add up to at most 1")
    if shares > 0 and flat.get("engine.name") == "batched":
        raise ConfigError.invalid("engine.name", "batched", "sequential or flower with faults.* (faults act in the ClientApp)")
    name = flat["algorithm.name"]
    if name in STRATEGIES and name not in CLIENTS:
        raise ConfigError.invalid("algorithm.name", name, "one of " + ", ".join(sorted(CLIENTS)), CLIENTS)
    strategy_builder(name), client_class(name)  # your own (module:function, entry point) or one line
    _check_task(flat, name)
    _check_own_pieces(flat)
    _check_augment(flat, name)
    _check_devices(flat)
    if name == "creamfl":
        from flowerbed.strategies.creamfl import check

        check(flat)
    for key in ("partition.image_clients", "partition.text_clients"):  # uni-modal clients learn only through representations
        if int(flat.get(key, 0)) > 0 and name != "creamfl":
            raise ConfigError.invalid(key, flat[key], f"0 for algorithm.name={name} (uni-modal clients need algorithm.name=creamfl)")
    if flat["train.local_epochs"] == 0 and flat["train.local_steps"] == 0:
        raise ConfigError.invalid("train.local_steps", 0, "> 0 when train.local_epochs is 0")
    device = str(flat["train.device"])
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ConfigError.invalid("train.device", device, "auto, cpu, cuda or cuda:N", ("auto", "cpu", "cuda"))
    _check_privacy_off(flat)
    if any(flat.get(key, off) != off for key, off in (("privacy.name", "none"), ("privacy.secagg", False),
                                                    ("privacy.target_epsilon", "none"))):
        from flowerbed.strategies.registry import build_strategy

        build_strategy(flat)  # the privacy mode must fit the algorithm (strategies/privacy.py)
    _check_prompt_model(flat, name)
    if load_data:
        validate_data(flat)


def _check_own_pieces(flat: dict) -> None:
    """`model.name` and `dataset.name` name a built-in, a `package.module:function` that imports, or an
    entry point (tasks/plugins.py): checked before the data is read."""
    from flowerbed.tasks import plugins
    from flowerbed.tasks.datasets import LOADERS
    from flowerbed.tasks.models import model_builder
    from flowerbed.tasks.registry import task_of

    if task_of(flat).name != "detection":  # a detector is checked with the detection settings (_check_task)
        model_builder(str(flat["model.name"]))
    if task_of(flat).name == "classification":  # another task reads its own datasets (retrieval: dataset=captions)
        plugins.find("dataset.name", flat["dataset.name"], LOADERS)


def _check_devices(flat: dict) -> None:
    """Device classes and traces are read here, so a bad one stops the run before anything is written."""
    from flowerbed.tasks.devices import build_profiles

    build_profiles(flat, int(flat["clients.num"]))
    if flat.get("devices.profile", "none") == "none":
        for key in ("clients.deadline_s", "clients.over_select"):
            if float(flat.get(key, 0.0)) > 0:
                raise ConfigError.invalid(key, flat[key], "0 without a virtual clock: set devices.profile=classes or trace")
    if flat.get("devices.profile", "none") != "none" and flat.get("privacy.secagg"):
        raise ConfigError.invalid("privacy.secagg", True, "false with devices.profile (the virtual clock times single replies)")
    buffer = int(flat.get("algorithm.buffer_size", 1))
    if flat["algorithm.name"] == "fedbuff" and buffer > int(flat["clients.num"]):
        raise ConfigError.invalid("algorithm.buffer_size", buffer, f"at most clients.num={flat['clients.num']} updates")
    if flat["algorithm.name"] in ("fedbuff", "fedasync") and (flat.get("privacy.name", "none") != "none" or flat.get("privacy.secagg")):
        raise ConfigError.invalid("privacy.name", flat.get("privacy.name"), f"none with algorithm.name={flat['algorithm.name']} "
                                  "(privacy accounts per synchronous round)")
    if flat["algorithm.name"] in ("fedbuff", "fedasync") and flat.get("algorithm.aggregation", "mean") != "mean":
        raise ConfigError.invalid("algorithm.aggregation", flat["algorithm.aggregation"],
                                  f"mean with algorithm.name={flat['algorithm.name']} (updates are applied one at a time)")


DP_KEYS = ("clipping", "clipping_norm", "noise_multiplier", "delta", "target_quantile", "clip_lr", "clipped_count_stddev")


@functools.lru_cache(maxsize=1)
def _defaults() -> dict[str, Scalar]:
    return to_run_config(compose([]))


def _check_privacy_off(flat: dict) -> None:
    """A noise or clipping setting under privacy=none would leave the user believing DP is on."""
    if flat.get("privacy.name") != "none":
        return
    for key in (f"privacy.{k}" for k in DP_KEYS):
        if key in flat and flat[key] != _defaults()[key]:
            raise ConfigError(f"{key}={flat[key]!r} has no effect with privacy=none: choose the mode too, "
                              "privacy=central, central-adaptive or local")


def _check_augment(flat: dict, name: str) -> None:
    """`train.augment`: a view of clients/augment.py, read by FedAvg's loop only (other client halves
    train on views of their own)."""
    from flowerbed.clients.augment import VIEWS
    from flowerbed.clients.fedavg import FedAvgClient
    from flowerbed.clients.registry import CLIENTS, client_class

    view, check = flat.get("train.augment", "none"), _one_of(*VIEWS)
    if not check(view):
        raise ConfigError.invalid("train.augment", view, check.allowed, check.options)
    if view != "none" and not issubclass(client_class(name), FedAvgClient):
        users = ", ".join(sorted(n for n, c in CLIENTS.items() if issubclass(c, FedAvgClient)))
        raise ConfigError.invalid("train.augment", view, f"none with algorithm.name={name} "
                                  f"(it trains on views of its own; train.augment serves {users})")


def _check_prompt_model(flat: dict, name: str) -> None:
    """The prompt methods train prompt tokens of a frozen ViT: any other model is refused here, before
    a run folder exists (their strategy says the same at round 1, for callers that skip this)."""
    from flowerbed.clients.pfedpg import PromptClient
    from flowerbed.clients.registry import client_class

    model = str(flat["model.name"])
    if issubclass(client_class(name), PromptClient) and not model.startswith("prompted-"):
        options = [o for o in group_options("model") if o.startswith("prompted-")]
        raise ConfigError.invalid("model.name", model, f"{' or '.join(options)} for the prompt methods", options)


def _check_task(flat: dict, name: str) -> None:
    """Detection data, detectors and detection algorithms go together (tasks/detection.py)."""
    from flowerbed.strategies.fedsto import VARIANTS
    from flowerbed.tasks.detection import DATASETS
    from flowerbed.tasks.detectors import DETECTORS

    detection = flat.get("task.name", "classification") == "detection"
    model, dataset = str(flat.get("model.name")), str(flat.get("dataset.name"))
    if not detection and model in DETECTORS:
        raise ConfigError.invalid("model.name", model, f"a classifier for task.name={flat.get('task.name', 'classification')} "
                                  f"and dataset.name={dataset} (detectors need task.name=detection and dataset voc or weather-shapes)")
    if not detection and (dataset in DATASETS or name in VARIANTS):
        key, value = ("dataset.name", dataset) if dataset in DATASETS else ("algorithm.name", name)
        raise ConfigError.invalid(key, value, "a classification one for task.name=classification (set task.name=detection)")
    if detection:
        if dataset not in DATASETS:
            raise ConfigError.invalid("dataset.name", dataset, "a detection dataset for task.name=detection: " + ", ".join(DATASETS))
        if model not in DETECTORS:
            raise ConfigError.invalid("model.name", model, "a detector for task.name=detection: " + ", ".join(DETECTORS), DETECTORS)
        if name not in VARIANTS:
            raise ConfigError.invalid("algorithm.name", name, "one for task.name=detection: " + ", ".join(VARIANTS), VARIANTS)
        if flat.get("engine.name") == "batched":
            raise ConfigError.invalid("engine.name", "batched", "sequential or flower for task.name=detection")
        if flat.get("partition.name") != "domain":
            raise ConfigError.invalid("partition.name", flat.get("partition.name"), "domain for task.name=detection (partition=domain)")


def _check_domains(flat: dict) -> None:
    """`partition.domains`: known transform names; the pixel-space ones only on images of known scale."""
    from flowerbed.tasks import domains
    from flowerbed.tasks.local_data import IMAGE_FORMS

    value = flat.get("partition.domains", "")
    if not isinstance(value, str):
        raise ConfigError.invalid("partition.domains", value, "transform names joined by + (tasks/domains.py)")
    names = domains.parse(value)
    if not names or domains.unknown(names):
        raise ConfigError.invalid("partition.domains", value, "names joined by + from " + ", ".join(domains.DOMAINS + domains.CORRUPTIONS))
    pixels = [n for n in names if n in domains.CORRUPTIONS]
    if pixels and flat.get("partition.domain_shift") and flat.get("dataset.name") not in IMAGE_FORMS:
        raise ConfigError.invalid("partition.domains", value, f"transforms without {pixels[0]} (pixel-space corruptions need images of "
                                  f"known scale: dataset {', '.join(IMAGE_FORMS)})")


def validate_data(flat: dict[str, Scalar]) -> None:
    """Build the federation and the model once: what only the data can tell (classes, sizes, files)."""
    from flowerbed.strategies.registry import LOCAL_BATCHNORM
    from flowerbed.tasks.models import MODELS, batchnorm_keys, check_fits
    from flowerbed.tasks.registry import task_of

    task = task_of(flat)
    fed = task.federation(flat)
    if task.name == "retrieval":
        from flowerbed.tasks.client_types import check

        check(flat)  # CreamFL's image-only and text-only clients' data
    model = task.build_model(flat, fed.data)
    if task.name == "classification" and flat["model.name"] not in MODELS:  # your own (tasks/plugins.py): does it take these samples?
        check_fits(model, str(flat["model.name"]), fed.data.input_shape, fed.data.num_classes)
    name = flat["algorithm.name"]
    if name in LOCAL_BATCHNORM and not batchnorm_keys(model.state_dict()):
        raise ConfigError.invalid("model.name", flat["model.name"], f"a model with BatchNorm layers for algorithm.name={name} "
                                  "(cnn_bn, resnet8, resnet18, resnet34)")
    if flat.get("model.init"):
        from flowerbed.server.results import initial_weights

        initial_weights(str(flat["model.init"]), model, flat)
    from flowerbed.strategies import privacy

    privacy.check_model(flat, model.state_dict())
    _check_deadline(flat, fed, model)


def _check_deadline(flat: dict, fed, model) -> None:
    """A deadline that no client meets with this model and data would drop every reply of every round."""
    from flowerbed.server.clock import VirtualClock
    from flowerbed.tasks.devices import build_profiles
    from flowerbed.tasks.records import tensor_record, wire_bytes

    profiles = build_profiles(flat, len(fed.clients))
    if profiles is not None:
        model_bytes = wire_bytes(tensor_record(model.state_dict()))
        VirtualClock(flat, profiles).check_deadline(model_bytes, [len(c.labeled) for c in fed.clients])


def check_here(flat: dict[str, Scalar]) -> None:
    """What only the machine that runs the simulation can check: its output folder, its device and
    the packages of the metric sinks that are on.

    Not part of `validate`: `flowerbed deploy export` prepares run configs for other machines
    (a laptop exports `train.device=cuda` for Jetson devices).
    """
    import torch

    from flowerbed.server.loggers import check_sinks
    from flowerbed.server.results import RunDirectory

    RunDirectory(str(flat["output.dir"])).check_writable("output.dir")
    check_sinks(flat)
    cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    check_device(str(flat["train.device"]), cuda_devices, str(flat["engine.name"]), float(flat.get("engine.num_gpus", 0.0)))


def check_device(device: str, cuda_devices: int, engine: str = "sequential", num_gpus: float = 0.0) -> None:
    """`cuda` needs a CUDA device and `cuda:N` the N+1-th; otherwise every client would fail, round after round.

    On the `flower` engine Ray decides what a ClientApp sees: with `engine.num_gpus=0` it hides every
    GPU (CUDA_VISIBLE_DEVICES=""), and with a share it shows the one GPU it assigned, as cuda:0.
    """
    if engine == "flower" and num_gpus > 0 and cuda_devices == 0 and not ray_cluster_running():
        raise ConfigError.invalid("engine.num_gpus", num_gpus, "0: this machine has no CUDA device (torch.cuda.is_available() is "
                                  "False) and no Ray cluster is running, so Ray could place no ClientApp that asks for a GPU")
    if not device.startswith("cuda"):
        return
    index = int(device.partition(":")[2] or 0)
    if cuda_devices == 0:
        raise ConfigError.invalid("train.device", device, "auto or cpu: this machine has no CUDA device (torch.cuda.is_available() is False)")
    if index >= cuda_devices:
        raise ConfigError.invalid("train.device", device, f"cuda:0 to cuda:{cuda_devices - 1} (this machine has {cuda_devices} CUDA device"
                                  f"{'s' if cuda_devices > 1 else ''})")
    if engine == "flower" and num_gpus == 0:
        raise ConfigError.invalid("engine.num_gpus", num_gpus, f"> 0 with train.device={device} on engine=flower: "
                                  "Ray hides every GPU from ClientApps that ask for none (e.g. engine.num_gpus=0.25)")
    if engine == "flower" and index > 0:
        raise ConfigError.invalid("train.device", device, "cuda on engine=flower: Ray shows each ClientApp the GPU it assigned, "
                                  "as cuda:0 (choose GPUs with CUDA_VISIBLE_DEVICES)")


def ray_cluster_running() -> bool:
    """Whether Flower's simulation would attach to a Ray cluster (README, "Several GPUs, or a Ray
    cluster"): its GPUs may be on other machines than this one."""
    return bool(os.environ.get("RAY_ADDRESS")) or Path(tempfile.gettempdir(), "ray", "ray_current_cluster").exists()


def load(overrides: list[str], load_data: bool = True, here: bool = False) -> dict[str, Scalar]:
    """The validated flat config; `here=True` also checks this machine (output folder, device) for a
    run it is about to start, before the data is loaded."""
    flat = to_run_config(compose(overrides))
    validate(flat, load_data=False)
    if here:
        check_here(flat)
    if load_data:
        validate_data(flat)
    return flat


def from_run_config(run_config: dict[str, Scalar]) -> dict[str, Scalar]:
    """The flat config of a `flwr run`, validated as `flowerbed run` validates its own.

    Flower hands the ServerApp every key pyproject declares (the union over all group options), with
    the `-c` overrides applied. The chosen options (`<group>.name`) are composed as `flowerbed run`
    composes them and each of their keys takes the run config's value; a key the chosen options do
    not have must keep pyproject's default (`-c "algorithm.proximal_mu=0.1"` under fedavg is the line
    `flowerbed run` says). An output.dir left at pyproject's default follows the chosen options and
    seed (runs/<algorithm>-<dataset>-<partition>-seed<seed>), as under `flowerbed run`.
    """
    from omegaconf import OmegaConf

    defaults = declared_defaults()
    choices = []
    for group in GROUPS[:-1]:
        option = run_config.get(f"{group}.name", defaults[f"{group}.name"])
        if option not in group_options(group):
            raise ConfigError.invalid(f"{group}.name", option, "one of " + ", ".join(group_options(group)), group_options(group))
        choices.append(f"{group}={option}")
    cfg = compose(choices)
    own = set(flatten(OmegaConf.to_container(cfg, resolve=False)))
    for key, value in sorted(run_config.items()):
        if key == "output.dir" and value == defaults.get(key):
            continue
        if key in own:
            OmegaConf.update(cfg, key, value, merge=False)
        elif key not in defaults or value != defaults[key]:
            raise ConfigError(unknown_key(key))
    flat = to_run_config(cfg)
    validate(flat)
    return flat


# -- [tool.flwr.app.config] ---------------------------------------------------------------------
def app_config_defaults() -> dict[str, Scalar]:
    """The Hydra defaults plus every key any group option adds (its first option's value).

    `flwr run . -c "algorithm.name=fedprox"` may only override keys that pyproject declares,
    so the declared set is the union over all options.
    """
    return dict(_app_config_defaults())


@functools.cache
def _app_config_defaults() -> tuple[tuple[str, Scalar], ...]:
    flat = to_run_config(compose([]))
    for options in option_defaults().values():
        for keys in options.values():
            for key, value in keys.items():
                flat.setdefault(key, value)
    return tuple(sorted(flat.items()))


@functools.cache
def option_defaults() -> dict[str, dict[str, dict[str, Scalar]]]:
    """group -> option -> the `group.*` keys that option sets (not `group.name`), in the files' order.
    Composed once per process (some 50 compositions, about 3 s); the files do not change under it.
    Read-only: callers share it."""
    return {group: {option: {key: value for key, value in to_run_config(compose([f"{group}={option}"])).items()
                             if key.startswith(group + ".") and key != f"{group}.name"}
                    for option in group_options(group)}
            for group in GROUPS[:-1]}


def declared_defaults() -> dict[str, Scalar]:
    """pyproject's [tool.flwr.app.config] (what Flower fills a run config from), read from the file
    when it is there (a checkout, a FAB: instant) rather than composed (`app_config_defaults`, seconds)."""
    import tomllib

    try:
        return tomllib.loads(pyproject_path().read_text())["tool"]["flwr"]["app"]["config"]
    except (OSError, KeyError, tomllib.TOMLDecodeError):  # an installed wheel carries no pyproject.toml
        return app_config_defaults()


BEGIN, END = "# BEGIN generated by `python -m flowerbed.simulations.config`", "# END generated"


def app_config_toml() -> str:
    from flowerbed.deploy.export import toml_value

    lines = [BEGIN, "[tool.flwr.app.config]"]
    for key, value in app_config_defaults().items():
        lines.append(f'"{key}" = {toml_value(value)}')
    return "\n".join(lines + [END])


def pyproject_path() -> Path:
    """The checkout's pyproject.toml (an installed flowerbed has none: writing it is a developer's step)."""
    return Path(__file__).resolve().parents[1] / "pyproject.toml"


def write_pyproject() -> None:
    if not pyproject_path().is_file():
        raise ConfigError(f"no pyproject.toml at {pyproject_path()}: this writes a checkout's app config; "
                          "run it from a checkout (an installed flowerbed writes its app with `flowerbed deploy app DIR`)")
    text = pyproject_path().read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    pyproject_path().write_text(text[:start] + app_config_toml() + text[end:])


if __name__ == "__main__":
    try:
        write_pyproject()
    except ConfigError as err:
        import sys

        print(f"flowerbed: error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"updated [tool.flwr.app.config] in {pyproject_path()}")
