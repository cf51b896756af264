"""Optional metric sinks (TensorBoard, MLflow, Weights & Biases) behind one tiny interface.

The round loop calls `logger.log(round, record)` once per round and `logger.close()` at the end;
which sinks are on is decided here alone, from the `logging.*` keys (all off by default), so
nothing else in the code knows about TensorBoard, MLflow or W&B.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

from flowerbed.tasks.errors import ConfigError


class MetricsLogger(Protocol):
    def log(self, rnd: int, record: dict) -> None: ...

    def close(self) -> None: ...


def _scalars(record: dict) -> dict[str, float]:
    """Numbers only: per-class and per-client lists stay in metrics.jsonl."""
    return {k: float(v) for k, v in record.items()
            if k != "round" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class TensorBoardLogger:
    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, rnd: int, record: dict) -> None:
        for key, value in _scalars(record).items():
            self.writer.add_scalar(key, value, rnd)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MLflowLogger:
    def __init__(self, cfg: dict) -> None:
        import mlflow

        self.mlflow = mlflow
        mlflow.start_run(run_name=Path(str(cfg["output.dir"])).name)
        mlflow.log_params({k: v for k, v in cfg.items() if not k.startswith("logging.")})

    def log(self, rnd: int, record: dict) -> None:
        # MLflow metric names may not hold "/": keep them readable as "global.acc"
        self.mlflow.log_metrics({k.replace("/", "."): v for k, v in _scalars(record).items()}, step=rnd)

    def close(self) -> None:
        self.mlflow.end_run()


class WandbLogger:
    """A W&B run per flowerbed run, its files under output.dir/wandb; `WANDB_MODE=offline` (W&B's own
    setting) keeps them there for a later `wandb sync`. Metric names keep their "/": W&B groups
    `global/acc` and `global/loss` into one section."""

    def __init__(self, cfg: dict) -> None:
        import wandb

        out = Path(str(cfg["output.dir"]))
        self.run = wandb.init(project=str(cfg.get("logging.wandb_project", "flowerbed")), name=out.name, dir=str(out),
                              config={k: v for k, v in cfg.items() if not k.startswith("logging.")})

    def log(self, rnd: int, record: dict) -> None:
        self.run.log(_scalars(record), step=rnd)

    def close(self) -> None:
        self.run.finish()


class Loggers:
    """Fan one record out to every sink that is on (none: a no-op)."""

    def __init__(self, sinks: list[MetricsLogger]) -> None:
        self.sinks = sinks

    def log(self, rnd: int, record: dict) -> None:
        for sink in self.sinks:
            sink.log(rnd, record)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


def _require(key: str, module: str, package: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{key}=true needs the `{package}` package, which is not installed (pip install {package}), "
                          f"or set {key}=false")


def check_sinks(cfg: dict) -> None:
    """Every sink that is on has its package: checked again by `flowerbed run` before it writes anything."""
    for key, package in (("logging.tensorboard", "tensorboard"), ("logging.mlflow", "mlflow"), ("logging.wandb", "wandb")):
        if cfg.get(key, False):
            _require(key, package, package)


def build_logger(cfg: dict) -> Loggers:
    check_sinks(cfg)
    sinks: list[MetricsLogger] = []
    if cfg.get("logging.tensorboard", False):
        sinks.append(TensorBoardLogger(Path(str(cfg["output.dir"])) / "tensorboard"))
    if cfg.get("logging.mlflow", False):
        sinks.append(MLflowLogger(cfg))
    if cfg.get("logging.wandb", False):
        sinks.append(WandbLogger(cfg))
    return Loggers(sinks)
