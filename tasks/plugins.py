"""The user's own model, dataset or algorithm, named in the config, without editing flowerbed.

A value of `model.name`, `dataset.name` or `algorithm.name` that no flowerbed registry holds is
- `package.module:function`: the function (or any attribute) of an importable module, e.g.
  `model.name=mypkg.nets:build_net` with the module's folder on PYTHONPATH; or
- the name of an installed entry point in the key's group (`flowerbed.models`, `flowerbed.datasets`,
  `flowerbed.algorithms`), which a package declares in its own pyproject:
  `[project.entry-points."flowerbed.models"] mynet = "mypkg.nets:build_net"`.
Either fails in one line naming the key, the value and what was wrong (no such module, no such
function, an import that raised). A lookup imports the module once per process.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from flowerbed.tasks.errors import ConfigError

ENTRY_POINT_GROUPS = {"model.name": "flowerbed.models", "dataset.name": "flowerbed.datasets",
                      "algorithm.name": "flowerbed.algorithms"}
REFERENCE = "package.module:function"


@dataclass(frozen=True)
class Algorithm:
    """An algorithm of your own, both halves under one name (`algorithm.name=mypkg.algo:fedfoo` with
    `fedfoo = Algorithm(strategy=..., client=...)` in mypkg/algo.py): `strategy(run_config)` builds the
    server half (a Flower Strategy; flowerbed.strategies.registry.common(cfg) gives the usual knobs),
    `client` is the client half, a `flowerbed.clients.base.ClientAlgorithm` subclass."""

    strategy: Callable[[dict], Any]
    client: type


def algorithm_half(name: object, builtin: Mapping[str, Any], half: str) -> Any:
    """The `half` ("strategy" or "client") of the algorithm `algorithm.name=name` names."""
    if str(name) in builtin:
        return builtin[str(name)]
    found = find("algorithm.name", name, builtin)
    if not hasattr(found, "strategy") or not hasattr(found, "client"):
        raise ConfigError.invalid("algorithm.name", name, "an object with .strategy (run config -> Strategy) and .client "
                                  f"(a ClientAlgorithm class), e.g. flowerbed.tasks.plugins.Algorithm; got {type(found).__name__}")
    return getattr(found, half)


def find(key: str, name: object, builtin: Mapping[str, Any]) -> Any:
    """What `key=name` names: a built-in entry of `builtin`, a `module:function`, or an entry point."""
    name = str(name)
    if name in builtin:
        return builtin[name]
    if ":" in name:
        return load_reference(key, name)
    found = entry_point(key, name)
    if found is None:
        names = sorted(builtin) + sorted(entry_point_names(key))
        raise ConfigError.invalid(key, name, f"one of {', '.join(names)}, or your own as {REFERENCE}", names)
    return found


@functools.lru_cache(maxsize=None)
def load_reference(key: str, name: str) -> Any:
    """The attribute `name` (`module:attr`, attr dotted or not) names, or `key`'s one-line error."""
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise ConfigError.invalid(key, name, f"{REFERENCE}, both parts given")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise ConfigError.invalid(key, name, f"{REFERENCE} of an importable module: no module named {err.name!r} "
                                      "(is its folder on PYTHONPATH?)") from err
        raise ConfigError.invalid(key, name, f"{REFERENCE} whose module imports: {module_name} needs {err.name!r}") from err
    except Exception as err:  # the user's module raised while being imported
        raise ConfigError.invalid(key, name, f"{REFERENCE} whose module imports: {type(err).__name__}: {err}".splitlines()[0]) from err
    found: Any = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise ConfigError.invalid(key, name, f"{REFERENCE}: module {module_name} has no {attribute!r}")
        found = getattr(found, part)
    return found


def entry_point(key: str, name: str) -> Any | None:
    """The loaded entry point `name` of `key`'s group, or None if no installed package declares it."""
    group = ENTRY_POINT_GROUPS.get(key)
    matches = [ep for ep in metadata.entry_points(group=group) if ep.name == name] if group else []
    if not matches:
        return None
    try:
        return matches[0].load()
    except Exception as err:  # an installed package whose entry point no longer loads
        raise ConfigError.invalid(key, name, f"an entry point of {group} that loads ({matches[0].value}: "
                                  f"{type(err).__name__}: {err})".splitlines()[0]) from err


def entry_point_names(key: str) -> list[str]:
    group = ENTRY_POINT_GROUPS.get(key)
    return [ep.name for ep in metadata.entry_points(group=group)] if group else []


def is_own(name: object) -> bool:
    """Whether a name is a `module:function` reference rather than a registry name."""
    return ":" in str(name)
