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
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch
from flwr.app import ArrayRecord

from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.holdout import pretrained_part

IGNORED_ON_RESUME = ("resume", "overwrite", "rounds", "clients.timeout", "engine.", "train.device", "train.num_threads",
                     "privacy.target_epsilon")  # a run stopped at its privacy budget may go on with a larger one


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

    def write_config(self, cfg: dict) -> None:
        """config.yaml (and the folder); only `prepare_run_directory` calls it, once it has decided."""
        import yaml

        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "config.yaml").write_text(yaml.safe_dump(dict(cfg), sort_keys=True))

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


def check_run_directory(cfg: dict) -> str:
    """Whether this run may write `output.dir` (an absolute path): "new", "resume" or "overwrite".

    The one decision for every path that writes a run directory (`flowerbed run` before it starts,
    the ServerApp of every engine and of `flwr run` before it writes anything): an earlier run there
    is continued only with resume=true (and the same config but for IGNORED_ON_RESUME), replaced
    only with overwrite=true, and otherwise refused with one line; nothing is written here.
    """
    import yaml

    out = Path(str(cfg["output.dir"]))
    earlier = out / "config.yaml"
    if earlier.exists():
        if cfg.get("resume"):
            saved = yaml.safe_load(earlier.read_text())
            for key, value in cfg.items():
                if not key.startswith(IGNORED_ON_RESUME) and saved.get(key) != value:
                    raise ConfigError(f"resume=true but {key}={value!r} differs from the run in {out} ({saved.get(key)!r})")
            return "resume"
        if cfg.get("overwrite"):
            return "overwrite"
        raise ConfigError(f"output.dir={str(out)!r} holds an earlier run: resume=true continues it, overwrite=true replaces it")
    if cfg.get("resume"):  # a mistyped output.dir would otherwise start a new run from round 0
        raise ConfigError(f"resume=true but output.dir={str(out)!r} holds no run to continue (no config.yaml); "
                          "leave resume out to start one there")
    return "new"


def prepare_run_directory(cfg: dict) -> RunDirectory:
    """Decide (`check_run_directory`), then act: remove the earlier run for overwrite=true, and write
    config.yaml (the folder too). Called by the server right before its first write."""
    decision = check_run_directory(cfg)
    out = RunDirectory(str(cfg["output.dir"]))
    try:
        if decision == "overwrite":
            shutil.rmtree(out.path)
        out.write_config(cfg)
    except OSError as err:  # what the check before any work cannot see (a full disk, a read-only mount)
        raise ConfigError.invalid("output.dir", str(out.path), f"a folder that can be written ({err.strerror})") from err
    return out


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
