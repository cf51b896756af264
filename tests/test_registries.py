"""Both halves of every algorithm are registered under the same name, and configs agree."""

import tomllib

from flowerbed.clients.registry import CLIENTS
from flowerbed.simulations.config import app_config_defaults, group_options, known_keys, option_defaults, pyproject_path
from flowerbed.strategies.registry import STRATEGIES


def test_client_and_server_registries_hold_the_same_names():
    assert set(CLIENTS) == set(STRATEGIES)


def test_every_algorithm_config_names_a_registered_algorithm():
    assert set(group_options("algorithm")) == set(STRATEGIES)


def test_pyproject_app_config_is_generated_from_the_hydra_defaults():
    declared = tomllib.loads(pyproject_path().read_text())["tool"]["flwr"]["app"]["config"]
    assert declared == app_config_defaults(), "run `python -m flowerbed.simulations.config` after changing simulations/conf/"
    assert set(declared) == known_keys()  # the keys an override may name, read fast from the YAML files


def test_a_key_means_one_default_whichever_option_sets_it():
    """`flwr run . -c "algorithm.name='pfedpg'"` takes every other key from pyproject, which holds one
    default per key: a key whose default differs between options would get another option's value
    there (pFedPG's generator once ran at FRAug's lr, 50 times its own)."""
    seen: dict[str, set] = {}
    for options in option_defaults().values():
        for keys in options.values():
            for key, value in keys.items():
                seen.setdefault(key, set()).add(repr(value))
    differing = {key: values for key, values in seen.items() if len(values) > 1}
    # the one documented exception (README, "The same app with `flwr run`"): central-adaptive's initial norm
    assert differing == {"privacy.clipping_norm": {"1.0", "0.1"}}


def test_strategies_build_from_the_default_config():
    config = app_config_defaults()
    for name, build in STRATEGIES.items():
        strategy = build({**config, "algorithm.name": name})
        assert hasattr(strategy, "configure_train"), name
    # a name that promises one of Flower's strategies builds that one (not FedAvg under another name)
    import flwr.serverapp.strategy as flower

    flower_names = {"fedavg": "FedAvg", "fedprox": "FedProx", "fedavgm": "FedAvgM", "fedadam": "FedAdam", "fedyogi": "FedYogi",
                    "fedtrimmedavg": "FedTrimmedAvg", "fedmedian": "FedMedian", "krum": "Krum"}
    for name, cls in flower_names.items():
        assert isinstance(STRATEGIES[name]({**config, "algorithm.name": name}), getattr(flower, cls)), name


def test_readme_lists_every_option_of_every_config_group():
    """The README's option table is where a user learns what exists: a new option must show up there."""
    readme = (pyproject_path().parent / "README.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in readme.splitlines() if line.startswith("| ")}
    for group in ("dataset", "partition", "model", "algorithm", "engine", "privacy"):
        missing = [name for name in group_options(group) if f"`{name}`" not in rows[group]]
        assert not missing, f"README's {group} row does not name {missing}"
