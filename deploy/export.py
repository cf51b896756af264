"""Per-node data files: each client's partition of a run config as `client-<k>.npz`, the form a
device's `data-path` names, plus `run-config.toml` for `flwr run -c`, so that a demo federation
trains on exactly the arrays the `sequential` engine uses for the same config.
"""

from __future__ import annotations

from pathlib import Path

from flowerbed.tasks.client_types import IMAGE_TEXT, client_type, unimodal_arrays
from flowerbed.tasks.local_data import partition_arrays, save_npz


def toml_value(value: bool | int | float | str) -> str:
    """One run-config value as TOML (what `flwr run -c FILE` and pyproject's app config read)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def run_config_toml(run_config: dict) -> str:
    """A flat run config as the TOML file `flwr run -c FILE` reads."""
    return "".join(f'"{k}" = {toml_value(v)}\n' for k, v in run_config.items())


def export_partitions(run_config: dict, out: Path) -> list[Path]:
    """Write each client's partition to `OUT/client-<k>.npz` and the run config to `OUT/run-config.toml`."""
    out = Path(out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    flat = dict(run_config)
    flat["output.dir"] = str(Path(str(flat["output.dir"])).expanduser().resolve())  # the ServerApp runs elsewhere
    files = []
    for k in range(int(flat["clients.num"])):
        path = out / f"client-{k}.npz"
        save_npz(path, unimodal_arrays(flat, k) if client_type(flat, k) != IMAGE_TEXT else partition_arrays(flat, k))
        files.append(path)
    (out / "run-config.toml").write_text(run_config_toml(flat))
    return files


