"""One directory per run: config.yaml, metrics.jsonl, summary.json, checkpoints/.

The server checkpoint is written atomically after each round with a SHA-256 beside it, so a run
killed at any moment resumes from the last complete round, and a damaged file is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from flwr.app import ArrayRecord

from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.holdout import pretrained_part


class RunDirectory:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.metrics_path = self.path / "metrics.jsonl"
        self.checkpoint_path = self.path / "checkpoints" / "server.pt"

    def check_writable(self, key: str = "output.dir") -> None:
        """Raise `ConfigError` unless this folder exists and is writable, or can be created there.

        Checked before any work and without creating anything: the nearest part of the path that
        exists must be a folder this user may write in.
        """
        path = self.path.expanduser().absolute()
        existing = next(p for p in (path, *path.parents) if os.path.lexists(p))
        if not existing.is_dir():
            raise ConfigError.invalid(key, str(self.path), f"a folder that can be created ({existing} is a file, not a folder)")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError.invalid(key, str(self.path), f"a folder this user can write ({existing} is not writable)")

    # -- metrics -------------------------------------------------------------------------------
    def append_metrics(self, record: dict) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(_jsonable(record)) + "\n")

    def read_metrics(self) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line.strip()]

    def keep_metrics_until(self, last_round: int) -> None:
        """Drop lines of rounds after the checkpoint (they will be recomputed)."""
        kept = [r for r in self.read_metrics() if r["round"] <= last_round]
        self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in kept))

    def write_config(self, cfg: dict, replace: bool = False) -> None:
        """config.yaml (and the folder). The server writes it only when absent: `flowerbed run` has
        already written it (`replace=True`), a deployment's `flwr run` has not."""
        import yaml

        target = self.path / "config.yaml"
        if replace or not target.exists():
            self.path.mkdir(parents=True, exist_ok=True)
            target.write_text(yaml.safe_dump(dict(cfg), sort_keys=True))

    def write_summary(self, summary: dict) -> None:
        (self.path / "summary.json").write_text(json.dumps(_jsonable(summary), indent=2) + "\n")

    # -- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self, payload: dict) -> None:
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        blob = buffer.getvalue()
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.checkpoint_path.with_suffix(".tmp")
        tmp.write_bytes(blob)
        digest = self.checkpoint_path.with_suffix(".sha256")
        digest_tmp = digest.with_suffix(".sha256.tmp")
        digest_tmp.write_text(hashlib.sha256(blob).hexdigest())
        tmp.replace(self.checkpoint_path)
        digest_tmp.replace(digest)

    def load_checkpoint(self) -> dict | None:
        if not self.checkpoint_path.exists():
            return None
        blob = self.checkpoint_path.read_bytes()
        digest = self.checkpoint_path.with_suffix(".sha256")
        # a kill between the two renames of save_checkpoint leaves the new digest in .sha256.tmp
        expected = {f.read_text().strip() for f in (digest, digest.with_suffix(".sha256.tmp")) if f.exists()}
        if hashlib.sha256(blob).hexdigest() not in expected:
            raise ConfigError(f"checkpoint {self.checkpoint_path} is damaged (checksum mismatch); remove {self.path} or pick another output.dir")
        return torch.load(io.BytesIO(blob), weights_only=False)


def initial_weights(path: str, model: torch.nn.Module, cfg: dict | None = None) -> dict[str, torch.Tensor]:
    """`model.init`: the weights a run starts from instead of its seeded initialisation.

    `path` is an earlier run's output.dir (the global model of its last checkpoint), a `.pt` file
    holding a state dict, or one that `flowerbed pretrain` wrote (a state dict and the samples it
    held out, checked against `cfg`'s federation). Checked against `model` (same keys and shapes),
    so a wrong path or another architecture is one line before any work, not a traceback in round 1.
    """
    source = Path(path).expanduser()
    if source.is_dir():
        checkpoint = RunDirectory(source).load_checkpoint()
        if checkpoint is None or not checkpoint.get("arrays"):
            raise ConfigError.invalid("model.init", path, "a run folder with a checkpoint of a global model, or a .pt state dict")
        state = {k: torch.as_tensor(v) for k, v in checkpoint["arrays"].items()}
    elif source.is_file():
        try:
            state = torch.load(source, map_location="cpu", weights_only=True)
        except Exception as err:  # not a torch file, or one that pickles more than tensors
            raise ConfigError.invalid("model.init", path, f"a .pt file holding a state dict ({type(err).__name__})") from err
        if not isinstance(state, dict):
            raise ConfigError.invalid("model.init", path, "a .pt file holding a state dict (or a run folder)")
        state = pretrained_part(state, "model", "model.init", path, cfg or {})
    else:
        raise ConfigError.invalid("model.init", path, "an existing run folder or .pt file")
    expected = model.state_dict()
    misfit = sorted(set(expected) ^ set(state)) or [k for k in expected if tuple(expected[k].shape) != tuple(state[k].shape)]
    if misfit:
        raise ConfigError.invalid("model.init", path, f"weights of this model.name (first mismatch: {misfit[0]})")
    return {k: v.to(expected[k].dtype) for k, v in state.items()}


class CheckpointWriter:
    """Writes each round's server checkpoint on a background thread, one at a time.

    The next round starts while the disk works; a new checkpoint first waits for the previous one,
    and leaving the `with` block (the run's end, Ctrl-C, SIGTERM) waits for the last, so a finished
    run always ends with its last round saved. A process killed outright may lose the checkpoint
    in flight: the run then resumes from the one before and recomputes that round, as after any
    kill mid-round. The caller pickles the strategy state itself (it changes next round); the
    global arrays are copied to the host here (the loop never modifies them in place).
    """

    def __init__(self, out: RunDirectory) -> None:
        self.out = out
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending: Future | None = None

    def submit(self, server_round: int, elapsed: float, arrays: ArrayRecord, strategy_state: bytes) -> None:
        self.wait()

        def write() -> None:
            self.out.save_checkpoint({
                "round": server_round, "elapsed": elapsed, "arrays": {k: v.numpy() for k, v in arrays.items()},
                "strategy": strategy_state,
            })

        self._pending = self._pool.submit(write)

    def wait(self) -> None:
        """Block until the checkpoint in flight is on disk (its error, if any, is raised here)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> "CheckpointWriter":
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)


def _jsonable(value):
    """JSON without NaN/Inf (they become null) and without numpy scalars."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
