"""`flowerbed bench`: the workloads of docs (shared performance.md) on every engine, in one table.

    flowerbed bench b2 --repeats 3                       # digits, 20 clients: sequential, batched, flower
    flowerbed bench b1 --rounds 20                       # pfl-research's CIFAR-10 shape (needs a GPU to mean anything)

Each (workload, engine) runs as its own `flowerbed run` in a child process, so imports, data
loading and peak memory are its own: peak RSS of the child (`os.wait4`; Ray's worker processes are
not counted) and, on a GPU, `torch.cuda.max_memory_allocated`. s/round is the median of the run's
`time/round_s`; client updates/s divides the clients trained per round by it. Where the `pfl`
package (pfl-research) imports, it runs the same federation, model and hyperparameters with its
own FedAvg (its cohort is drawn by pfl's sampler). Timings are printed, never asserted.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tasks.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

WORKLOADS: dict[str, list[str]] = {
    # 1000 clients x 50 fake 3x32x32 images, 50 per round, 1 epoch of batch 10, lr 0.1, pfl's simple_cnn
    "b1": [
        "dataset=fake-images", "partition=iid", "clients.num=1000", "clients.fraction_train=0.05",
        "clients.fraction_evaluate=0.0", "rounds=1500", "train.local_epochs=1", "train.batch_size=10",
        "train.lr=0.1", "model=pfl_cnn", "evaluate.every=10",
    ],
    # embedded digits, 20 clients, Dirichlet(0.5), all clients every round, 10 rounds, 1 epoch, small CNN
    "b2": [
        "dataset=digits", "partition=dirichlet", "partition.alpha=0.5", "clients.num=20", "clients.fraction_train=1.0",
        "rounds=10", "train.local_epochs=1", "model=cnn",
    ],
}
ENGINES: dict[str, dict[str, list[str]]] = {
    "b1": {"sequential": ["engine=sequential"], "batched": ["engine=batched"],
           "batched+compile": ["engine=batched", "engine.compile=true"], "pfl": []},
    "b2": {"sequential": ["engine=sequential"], "batched": ["engine=batched"], "flower": ["engine=flower"], "pfl": []},
}


# -- children ------------------------------------------------------------------------------------
def _gpu_peak() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def child_flowerbed(overrides: list[str], out: Path) -> dict:
    from simulations.runner import run

    if run([*overrides, f"output.dir={out}", "overwrite=true"]) != 0:
        raise SystemExit(1)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rounds = [r for r in rows if r["round"] > 0]
    return {
        "round_s": [r["time/round_s"] for r in rounds],
        "clients_per_round": statistics.median(r["clients/trained"] for r in rounds),
        "acc": next((r["global/acc"] for r in reversed(rows) if "global/acc" in r), None),
        "gpu_mib": _gpu_peak(),
    }


def child_pfl(overrides: list[str]) -> dict:
    """pfl-research's FedAvg on the same federation, model and hyperparameters."""
    import types

    import numpy as np
    import torch
    from pfl.aggregate.simulate import SimulatedBackend
    from pfl.aggregate.weighting import WeightByUser
    from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
    from pfl.callback.base import TrainingProcessCallback
    from pfl.callback.central_evaluation import CentralEvaluationCallback
    from pfl.data.dataset import Dataset
    from pfl.data.federated_dataset import FederatedDataset
    from pfl.data.sampling import get_user_sampler
    from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
    from pfl.internal.ops.pytorch_ops import get_default_device
    from pfl.metrics import Metrics, Weighted
    from pfl.model.pytorch import PyTorchModel

    from simulations import config
    from tasks.models import build_model
    from tasks.partitions import build_federation

    cfg = config.load(overrides)
    fed, device = build_federation(cfg), get_default_device()
    torch.set_num_threads(int(cfg["train.num_threads"]))
    d = fed.data
    x, y = torch.as_tensor(d.x_train).to(device), torch.as_tensor(d.y_train).to(device)
    users = {k: (x[c.labeled], y[c.labeled]) for k, c in enumerate(fed.clients)}
    data = FederatedDataset.from_slices(users, get_user_sampler("random", list(users)))
    central = Dataset(raw_data=[torch.as_tensor(d.x_test).to(device), torch.as_tensor(d.y_test).to(device)])

    net = build_model(str(cfg["model.name"]), d.input_shape, d.num_classes, int(cfg["seed"]), cfg).to(device)

    def loss(self, inputs, targets, eval=False):  # noqa: A002 - pfl's signature
        self.train(not eval)
        return torch.nn.functional.cross_entropy(self(inputs), targets.long())

    @torch.no_grad()
    def metrics(self, inputs, targets, eval=True):  # noqa: A002
        self.train(not eval)
        logits = self(inputs)
        correct = float((logits.argmax(-1) == targets).sum())
        return {"accuracy": Weighted(correct, len(inputs))}

    net.loss, net.metrics = types.MethodType(loss, net), types.MethodType(metrics, net)
    model = PyTorchModel(model=net, local_optimizer_create=torch.optim.SGD,
                         central_optimizer=torch.optim.SGD(net.parameters(), 1.0))

    class Clock(TrainingProcessCallback):
        def __init__(self):
            self.stamps = [time.perf_counter()]

        def after_central_iteration(self, aggregate_metrics, model, *, central_iteration):
            if device.type == "cuda":
                torch.cuda.synchronize()
            self.stamps.append(time.perf_counter())
            return False, Metrics()

    every, cohort = int(cfg["evaluate.every"]), max(1, int(len(users) * float(cfg["clients.fraction_train"])))
    clock = Clock()
    evaluation = CentralEvaluationCallback(central, model_eval_params=NNEvalHyperParams(local_batch_size=10000), frequency=every)
    FederatedAveraging().run(
        algorithm_params=NNAlgorithmParams(central_num_iterations=int(cfg["rounds"]), evaluation_frequency=every,
                                           train_cohort_size=cohort, val_cohort_size=0),
        backend=SimulatedBackend(training_data=data, val_data=data, postprocessors=[WeightByUser()]),
        model=model,
        model_train_params=NNTrainHyperParams(local_learning_rate=float(cfg["train.lr"]), local_num_epochs=int(cfg["train.local_epochs"]),
                                              local_batch_size=int(cfg["train.batch_size"])),
        model_eval_params=NNEvalHyperParams(local_batch_size=10000),
        callbacks=[evaluation, clock],
    )
    acc = float(np.mean(net.metrics(central.raw_data[0], central.raw_data[1])["accuracy"].overall_value))
    return {"round_s": list(np.diff(clock.stamps)), "clients_per_round": cohort, "acc": acc, "gpu_mib": _gpu_peak()}


def _child(spec: dict) -> None:
    result = child_pfl(spec["overrides"]) if spec["engine"] == "pfl" else child_flowerbed(spec["overrides"], Path(spec["out"]))
    Path(spec["result"]).write_text(json.dumps(result))


# -- parent --------------------------------------------------------------------------------------
def measure(workload: str, engine: str, overrides: list[str], scratch: Path) -> dict:
    """One run in a child process: its result plus wall time and peak RSS."""
    if engine == "pfl" and subprocess.run([sys.executable, "-c", "import pfl.model.pytorch"], capture_output=True).returncode:
        return {"skipped": "pfl not installed (pip install pfl)"}
    folder = Path(tempfile.mkdtemp(prefix=f"{workload}-{engine}-", dir=scratch))
    spec = {"engine": engine, "overrides": overrides, "out": str(folder / "run"), "result": str(folder / "result.json")}
    log = open(folder / "log.txt", "w")
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "simulations.bench", "--child", json.dumps(spec)]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        return {"skipped": f"failed (exit {process.returncode}); log: {folder / 'log.txt'}"}
    result = json.loads(Path(spec["result"]).read_text())
    return {**result, "wall_s": wall, "rss_mib": usage.ru_maxrss / 1024}


def summarize(runs: list[dict]) -> dict:
    """Medians over repeats: s/round is the median round of each run, then the median over runs."""
    ok = [r for r in runs if "skipped" not in r]
    if not ok:
        return {"skipped": runs[0]["skipped"]}
    s_round = statistics.median(statistics.median(r["round_s"]) for r in ok)
    gpu = [r["gpu_mib"] for r in ok if r.get("gpu_mib") is not None]
    return {
        "s_round": s_round, "updates_s": ok[0]["clients_per_round"] / s_round, "wall_s": statistics.median(r["wall_s"] for r in ok),
        "rss_mib": max(r["rss_mib"] for r in ok), "gpu_mib": max(gpu) if gpu else None, "acc": ok[0]["acc"], "runs": len(ok),
    }


def table(workload: str, rows: dict[str, dict], note: str) -> Table:
    done = {e: r for e, r in rows.items() if "skipped" not in r}
    fastest = min((r["s_round"] for r in done.values()), default=None)
    fastest_wall = min((r["wall_s"] for r in done.values() if r.get("wall_s")), default=None)
    out = Table(title=f"{workload}: {note}")
    for col in ("engine", "s/round (median)", "client updates/s", "x fastest (s/round)", "wall s (command)", "x fastest (wall)",
                "peak RSS MiB", "peak GPU MiB", "final acc", "runs"):
        out.add_column(col, justify="left" if col == "engine" else "right")
    for engine, r in rows.items():
        if "skipped" in r:
            out.add_row(engine, f"[yellow]{r['skipped']}[/]", *[""] * 8)
            continue
        out.add_row(
            engine, f"{r['s_round']:.4f}", f"{r['updates_s']:.1f}", f"{r['s_round'] / fastest:.2f}", f"{r['wall_s']:.1f}",
            f"{r['wall_s'] / fastest_wall:.2f}", f"{r['rss_mib']:.0f}", "-" if r["gpu_mib"] is None else f"{r['gpu_mib']:.0f}",
            "-" if r["acc"] is None else f"{r['acc']:.3f}", str(r["runs"]),
        )
    return out


def bench(workloads: list[str], engines: list[str] | None, rounds: int | None, repeats: int, extra: list[str], scratch: Path,
          console: Console) -> dict[str, dict[str, dict]]:
    for w in workloads:
        if w not in WORKLOADS:
            raise ConfigError.invalid("workload", w, "one of " + ", ".join(WORKLOADS))
    if repeats < 1:
        raise ConfigError.invalid("--repeats", repeats, "an integer >= 1")
    if rounds is not None and rounds < 1:
        raise ConfigError.invalid("--rounds", rounds, "an integer >= 1")
    scratch.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, dict]] = {}
    for w in workloads:
        chosen = engines or list(ENGINES[w])
        unknown = [e for e in chosen if e not in ENGINES[w]]
        if unknown:
            raise ConfigError.invalid("--engines", unknown[0], f"for {w} one of " + ", ".join(ENGINES[w]))
        base = WORKLOADS[w] + ([f"rounds={rounds}"] + ([f"evaluate.every={min(10, rounds)}"] if w == "b1" else []) if rounds else []) + extra
        runs: dict[str, list[dict]] = {e: [] for e in chosen}
        for i in range(repeats):  # interleaved, so that load from other jobs spreads over every engine
            for e in chosen:
                console.print(f"{w} {e} run {i + 1}/{repeats} ...", highlight=False)
                runs[e].append(measure(w, e, base + ENGINES[w][e], scratch))
        results[w] = {e: summarize(r) for e, r in runs.items()}
        import torch

        device = f"GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else f"CPU only, {os.cpu_count()} cores"
        console.print(table(w, results[w], f"{' '.join(base)} ({device})"))
    (scratch / "bench.json").write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--child":
    _child(json.loads(sys.argv[2]))
