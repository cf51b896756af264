"""A run config as a hashable key (for the per-process caches of data, partitions and models).

`tuple(sorted(cfg.items()))` of a 70-key config costs ~10 µs to build and hash, and a client call
asked for it three times. The in-process engines hand every node the same read-only mapping
(`MappingProxyType`), which cannot change, so its key is made once and remembered by identity;
any other mapping (a plain dict may be edited between calls) is keyed afresh each time.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType


class _Key(tuple):
    """A tuple whose hash is computed once (a plain tuple rehashes all its items on every lookup)."""

    def __hash__(self) -> int:
        if "hash" not in self.__dict__:
            self.__dict__["hash"] = tuple.__hash__(self)
        return self.__dict__["hash"]


_REMEMBERED: dict[int, tuple[Mapping, _Key]] = {}  # id(mapping) -> (the mapping, kept alive so the id is not reused; its key)


def config_key(cfg: Mapping) -> tuple:
    """`tuple(sorted(cfg.items()))`, equal to it and hashing the same."""
    if isinstance(cfg, MappingProxyType):
        held = _REMEMBERED.get(id(cfg))
        if held is not None and held[0] is cfg:
            return held[1]
        if len(_REMEMBERED) > 64:  # one per run in a process; bounded for long sweeps
            _REMEMBERED.clear()
        key = _Key(sorted(cfg.items()))
        _REMEMBERED[id(cfg)] = (cfg, key)
        return key
    return tuple(sorted(cfg.items()))


DATA_SECTIONS = ("dataset", "partition", "clients", "seed")


def data_key(cfg: Mapping) -> tuple:
    """The config's data keys (`dataset.*`, `partition.*`, `clients.*`, `seed`), sorted: all a
    federation depends on, so runs that differ elsewhere (algorithm, model, rounds) share one."""
    return tuple(sorted((k, v) for k, v in cfg.items() if k.split(".")[0] in DATA_SECTIONS))
