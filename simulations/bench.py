"""`flowerbed bench`: the project's benchmark workloads (calls, B1, B2, B3) on every engine, in one table.

    flowerbed bench b2 --repeats 3                       # digits, 20 clients: sequential, batched, flower
    flowerbed bench calls --repeats 3                    # framework time per client call (50 one-step clients)
    flowerbed bench b3                                   # 1k / 10k / 100k clients, 100 per round: set-up, s/round, RSS
    flowerbed bench b2 b1 --profile --rounds 20          # where each millisecond of a round goes (cProfile)
    flowerbed bench b1 --rounds 20                       # pfl-research's CIFAR-10 shape (needs a GPU to mean anything)

Each (workload, row) runs as its own `flowerbed run` in a child process, so imports, data loading
and peak memory are its own: peak RSS of the child (`os.wait4`; Ray's worker processes are not
counted) and, on a GPU, `torch.cuda.max_memory_allocated`. s/round is the median of the run's
`time/round_s`; client updates/s divides the clients trained per round by it. Where the `pfl`
package (pfl-research) imports, it runs the same federation, model and hyperparameters with its
own FedAvg: every user once per round when the cohort is all of them, each user's rows in the order
of our client's batch plan (pfl iterates rows as stored), updates weighted by their data points as
ours are: on B2 it ends where our engines end. A row whose final accuracy is not within ACC_TOLERANCE of the sequential
engine's is marked and not ranked: it did not learn the same thing, so its speed compares nothing.
Timings are printed, never asserted.

Framework time per client call (`calls`, and every in-process row): the child times the compute
itself (`sgd_train`, `train_stacked`, `predict`; synchronised on a GPU) and the wall time between
two rounds' metrics lines (checkpoints included); per round, (wall - compute) / client calls, the
median over rounds after the first. `--profile` adds one run per row under cProfile and sums the
inclusive time of the functions in `BUCKETS`, per round (cProfile slows Python code, not kernels:
read shares, not absolutes). Every table also goes to OUT/bench.md with the load average.
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

import flowerbed
from flowerbed.tasks.errors import ConfigError

# the folder holding the flowerbed package this process imported (a checkout, or site-packages): the child imports the same
PACKAGE_PARENT = Path(flowerbed.__file__).resolve().parents[1]

# fake 1x8x8 images and an MLP: a federation whose data does not grow with the number of clients
_B3_FAKE = ["dataset=fake-images", "dataset.shape=1x8x8", "dataset.num_train=200000", "dataset.num_test=10000", "model=mlp",
            "partition=iid"]
_B3_SYNTHETIC = ["dataset=synthetic", "partition=natural", "model=logreg"]
_B3 = ["rounds=5", "train.local_epochs=1", "train.batch_size=16", "evaluate.every=5"]


def _b3(clients: int, base: list[str]) -> list[str]:
    share = 100 / clients  # 100 clients per round, for training and for evaluation
    return [*base, f"clients.num={clients}", f"clients.fraction_train={share}", f"clients.fraction_evaluate={share}"]


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
    # the per-call workload: digits, cnn, 50 clients of one SGD step each, train + evaluate every round
    "calls": [
        "dataset=digits", "partition=iid", "clients.num=50", "clients.fraction_train=1.0", "clients.fraction_evaluate=1.0",
        "rounds=10", "train.local_steps=1", "train.local_epochs=0", "model=cnn",
    ],
    # scale: rows are federation sizes, 100 clients per round
    "b3": _B3,
}
ENGINES: dict[str, dict[str, list[str]]] = {
    "b1": {"sequential": ["engine=sequential"], "batched": ["engine=batched"],
           "batched+compile": ["engine=batched", "engine.compile=true"], "pfl": []},
    "b2": {"sequential": ["engine=sequential"], "batched": ["engine=batched"], "flower": ["engine=flower"], "pfl": []},
    "calls": {"sequential": ["engine=sequential"], "batched": ["engine=batched"]},
    "b3": {
        "fake 1k": _b3(1_000, _B3_FAKE), "fake 10k": _b3(10_000, _B3_FAKE), "fake 100k": _b3(100_000, _B3_FAKE),
        "synthetic 1k": _b3(1_000, _B3_SYNTHETIC), "synthetic 10k": _b3(10_000, _B3_SYNTHETIC),
    },
}
# cProfile inclusive time of these functions, per round (`--profile`); nested rows are indented
BUCKETS: list[tuple[str, list[tuple[str, str]]]] = [
    ("local training compute (sgd_train / train_stacked)",
     [("tasks/training.py", "sgd_train"), ("clients/batched.py", "train_stacked")]),
    ("evaluation forward passes (predict)", [("tasks/metrics.py", "predict")]),
    ("ClientApp calls (everything a client does)", [("flwr/clientapp/client_app.py", "__call__")]),
    ("  build_model", [("tasks/models.py", "build_model")]),
    ("    of which fork_rng + manual_seed", [("torch/random.py", "fork_rng"), ("torch/random.py", "manual_seed")]),
    ("  load_state_dict", [("torch/nn/modules/module.py", "load_state_dict")]),
    ("batched engine: a round's messages at once", [("simulations/engines/batched.py", "run_together"),
                                                   ("simulations/engines/batched.py", "answer_together")]),
    ("Flower's type-checked record writes (RecordDict, ArrayRecord, MetricRecord)",
     [("flwr/app/message/typeddict.py", "__setitem__")]),
    ("serialise arrays (np.save into bytes)", [("flwr/app/message/array.py", "from_numpy_ndarray")]),
    ("deserialise arrays (Array.numpy)", [("flwr/app/message/array.py", "numpy")]),
    ("strategy aggregate_train", [("strategies/sampling.py", "aggregate_train")]),
    ("  screening (NaN/Inf, update norm)", [("strategies/sampling.py", "screen")]),
    ("central evaluation", [("server/evaluation.py", "__call__")]),
    ("byte counts", [("server/loop.py", "_bytes")]),
    # cProfile sees the loop's thread only: a checkpoint written in the background costs the loop ~0 here
    ("server checkpoint", [("server/results.py", "save_checkpoint")]),
    ("client state files", [("clients/state.py", "save"), ("clients/state.py", "restore")]),
]


# -- children ------------------------------------------------------------------------------------
def _gpu_peak() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


COMPUTE = (("flowerbed.tasks.training", "sgd_train"), ("flowerbed.clients.batched", "train_stacked"), ("flowerbed.tasks.metrics", "predict"))


def _clock_compute(profiler=None) -> tuple[list[tuple[float, float]], list[float]]:
    """Time every call of the COMPUTE functions, wherever they were imported, and stamp each
    metrics line (a `profiler` starts after round 1's line: warm-up and set-up stay out of it);
    returns the (end, seconds) list of compute calls and the stamps."""
    import importlib

    import torch

    import flowerbed.clients.app  # noqa: F401 - every module that holds a COMPUTE function by name
    import flowerbed.server.app  # noqa: F401
    import flowerbed.simulations.engines.batched  # noqa: F401
    from flowerbed.server.results import RunDirectory

    calls: list[tuple[float, float]] = []
    stamps: list[float] = []
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    def clocked(fn):
        def timed(*args, **kwargs):
            sync()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            sync()
            end = time.perf_counter()
            calls.append((end, end - start))
            return out

        return timed

    for module, name in COMPUTE:
        original = getattr(importlib.import_module(module), name)
        wrapped = clocked(original)
        for mod in list(sys.modules.values()):
            if getattr(mod, "__name__", "").startswith("flowerbed."):  # every module is flowerbed.<folder>.<module>
                if getattr(mod, name, None) is original:
                    setattr(mod, name, wrapped)
    append = RunDirectory.append_metrics

    def stamped(self, record):
        append(self, record)
        stamps.append(time.perf_counter())
        if profiler is not None and record["round"] == 1:
            profiler.enable()

    RunDirectory.append_metrics = stamped
    return calls, stamps


def child_flowerbed(overrides: list[str], out: Path, profile: str | None = None) -> dict:
    from flowerbed.simulations import config
    from flowerbed.simulations.runner import run
    from flowerbed.tasks.partitions import build_federation

    cfg = config.load(overrides, load_data=False)
    start = time.perf_counter()
    # data and partitions (with the imports that computing them takes, where tasks/stored.py has no copy
    # yet); cached in the process, the run below reuses them
    build_federation(cfg)
    partition_s = time.perf_counter() - start
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    calls, stamps = _clock_compute(profiler)
    status = run([*overrides, f"output.dir={out}", "overwrite=true"])
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    if status != 0:
        raise SystemExit(1)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rounds = [r for r in rows if r["round"] > 0]
    # per round: wall time since the previous metrics line, compute inside it, client calls
    walls = [b - a for a, b in zip(stamps, stamps[1:])]
    compute = [sum(dt for end, dt in calls if a < end <= b) for a, b in zip(stamps, stamps[1:])]
    client_calls = [r["clients/trained"] + len(r.get("personal/acc_per_client", [])) for r in rounds]
    return {
        "round_s": [r["time/round_s"] for r in rounds],
        "round_wall_s": walls, "compute_s": compute, "client_calls": client_calls, "partition_s": partition_s,
        "clients_per_round": statistics.median(r["clients/trained"] for r in rounds),
        "acc": next((r["global/acc"] for r in reversed(rows) if "global/acc" in r), None),
        "gpu_mib": _gpu_peak(),
    }


def child_pfl(overrides: list[str]) -> dict:
    """pfl-research's FedAvg on the same federation, model and hyperparameters."""
    import collections
    import types

    import numpy as np
    import torch
    from pfl.aggregate.simulate import SimulatedBackend
    from pfl.aggregate.weighting import WeightByDatapoints
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

    from flowerbed.clients.core import batches_from
    from flowerbed.simulations import config
    from flowerbed.tasks.models import build_model
    from flowerbed.tasks.partitions import build_federation
    from flowerbed.tasks.training import generator

    cfg = config.load(overrides)
    fed, device = build_federation(cfg), get_default_device()
    torch.set_num_threads(int(cfg["train.num_threads"]))
    d = fed.data
    x, y = torch.as_tensor(d.x_train).to(device), torch.as_tensor(d.y_train).to(device)
    users = {k: (x[c.labeled], y[c.labeled]) for k, c in enumerate(fed.clients)}
    visits: collections.Counter = collections.Counter()

    def user_dataset(user_id: int) -> Dataset:
        """The user's rows in the order of our client's batch plan for this visit (round, when every
        user trains every round): pfl iterates a user's rows as stored, every epoch, so it is given
        all epochs' batches as one pass. Same batches as ours; an epoch's short last batch is merged
        into the next epoch's first when the data size is not a multiple of the batch size."""
        visits[user_id] += 1
        xu, yu = users[user_id]
        plan = batches_from(cfg, len(yu), generator(int(cfg["seed"]), visits[user_id], user_id, "train"))
        order = torch.cat(plan).to(xu.device)
        return Dataset(raw_data=[xu[order], yu[order]], user_id=user_id)

    # every user once per round when the cohort is all of them (pfl's "random" draws with replacement)
    data = FederatedDataset(user_dataset, get_user_sampler("minimize_reuse", list(users)))
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
        backend=SimulatedBackend(training_data=data, val_data=data, postprocessors=[WeightByDatapoints()]),  # FedAvg's weights
        model=model,
        model_train_params=NNTrainHyperParams(local_learning_rate=float(cfg["train.lr"]), local_num_epochs=1,  # all epochs in one pass
                                              local_batch_size=int(cfg["train.batch_size"])),
        model_eval_params=NNEvalHyperParams(local_batch_size=10000),
        callbacks=[evaluation, clock],
    )
    acc = float(np.mean(net.metrics(central.raw_data[0], central.raw_data[1])["accuracy"].overall_value))
    return {"round_s": list(np.diff(clock.stamps)), "clients_per_round": cohort, "acc": acc, "gpu_mib": _gpu_peak()}


def _child(spec: dict) -> None:
    if spec["engine"] == "pfl":
        result = child_pfl(spec["overrides"])
    else:
        result = child_flowerbed(spec["overrides"], Path(spec["out"]), spec.get("profile"))
    Path(spec["result"]).write_text(json.dumps(result))


# -- parent --------------------------------------------------------------------------------------
def measure(workload: str, engine: str, overrides: list[str], scratch: Path, profile: bool = False) -> dict:
    """One run in a child process: its result plus wall time and peak RSS."""
    if engine == "pfl" and subprocess.run([sys.executable, "-c", "import pfl.model.pytorch"], capture_output=True).returncode:
        return {"skipped": "pfl not installed (pip install pfl)"}
    folder = Path(tempfile.mkdtemp(prefix=f"{workload}-{engine.replace(' ', '-')}-", dir=scratch))
    spec = {"engine": engine, "overrides": overrides, "out": str(folder / "run"), "result": str(folder / "result.json"),
            "profile": str(folder / "profile.pstats") if profile else None}
    log = open(folder / "log.txt", "w")
    start = time.perf_counter()  # the floor of any set-up, measured under the same load as the run
    subprocess.run([sys.executable, "-c", "import torch"], check=True)
    torch_s = time.perf_counter() - start
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "flowerbed.simulations.bench", "--child", json.dumps(spec)]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        return {"skipped": f"failed (exit {process.returncode}); log: {folder / 'log.txt'}"}
    result = json.loads(Path(spec["result"]).read_text())
    if profile:
        result["profile"] = profile_buckets(Path(spec["profile"]), len(result["round_s"]) - 1)  # profiled from round 2 on
    return {**result, "wall_s": wall, "rss_mib": usage.ru_maxrss / 1024, "torch_s": torch_s}


def profile_buckets(path: Path, rounds: int) -> dict[str, float]:
    """Milliseconds per round spent in each of BUCKETS (cProfile's inclusive time)."""
    import pstats

    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    out = {}
    for label, functions in BUCKETS:
        total = sum(v[3] for (file, _, name), v in stats.items()
                    if any(file.replace(os.sep, "/").endswith(suffix) and name == fn for suffix, fn in functions))
        out[label] = 1000 * total / max(rounds, 1)
    return out


def framework_per_call(run: dict) -> tuple[float, float] | None:
    """Median over rounds (after the first) of (round wall - compute) / client calls, and compute / call, in ms."""
    walls, compute, calls = run.get("round_wall_s", []), run.get("compute_s", []), run.get("client_calls", [])
    per = [((w - c) / n * 1000, c / n * 1000) for w, c, n in zip(walls, compute, calls) if n][1:]
    if not per:
        return None
    return statistics.median(p[0] for p in per), statistics.median(p[1] for p in per)


def summarize(runs: list[dict]) -> dict:
    """Medians over repeats: s/round is the median round of each run, then the median over runs."""
    ok = [r for r in runs if "skipped" not in r]
    if not ok:
        return {"skipped": runs[0]["skipped"]}
    s_round = statistics.median(statistics.median(r["round_s"]) for r in ok)
    gpu = [r["gpu_mib"] for r in ok if r.get("gpu_mib") is not None]
    calls = [f for f in map(framework_per_call, ok) if f is not None]
    out = {
        "s_round": s_round, "updates_s": ok[0]["clients_per_round"] / s_round, "wall_s": statistics.median(r["wall_s"] for r in ok),
        "rss_mib": max(r["rss_mib"] for r in ok), "gpu_mib": max(gpu) if gpu else None, "acc": ok[0]["acc"], "runs": len(ok),
        "s_round_each": [statistics.median(r["round_s"]) for r in ok], "wall_each": [r["wall_s"] for r in ok],
    }
    if calls:
        out["framework_ms"] = statistics.median(c[0] for c in calls)
        out["compute_ms"] = statistics.median(c[1] for c in calls)
    if all(r.get("round_wall_s") for r in ok):  # stamped in process (not the flower engine's runs)
        out["setup_s"] = statistics.median(r["wall_s"] - sum(r["round_wall_s"]) for r in ok)
        out["partition_s"] = statistics.median(r["partition_s"] for r in ok)
        out["torch_s"] = statistics.median(r["torch_s"] for r in ok)
    return out


COLUMNS = {  # header -> (key, format); a column shows when some row has its key
    "s/round (median)": ("s_round", "{:.4f}"), "client updates/s": ("updates_s", "{:.1f}"),
    "wall s (command)": ("wall_s", "{:.1f}"), "set-up s": ("setup_s", "{:.1f}"), "`import torch` s": ("torch_s", "{:.1f}"),
    "of which data + partitions s": ("partition_s", "{:.2f}"),
    "framework ms / client call": ("framework_ms", "{:.2f}"), "compute ms / client call": ("compute_ms", "{:.2f}"),
    "peak RSS MiB": ("rss_mib", "{:.0f}"), "peak GPU MiB": ("gpu_mib", "{:.0f}"), "final acc": ("acc", "{:.3f}"),
    "runs": ("runs", "{}"),
}


ACC_TOLERANCE = 0.03  # a row learns "the same" as the reference engine within this much final accuracy


def learned_alike(rows: dict[str, dict]) -> dict[str, bool]:
    """Which rows reach the reference engine's final accuracy (sequential's, else the first row's)
    within ACC_TOLERANCE: only those are ranked by speed. Our engines run the same numbers; a peer
    (pfl-research, Flower's own loop) draws its own batches, so it lands near, or is not like for like."""
    done = {e: r for e, r in rows.items() if "skipped" not in r}
    reference = done.get("sequential") or next(iter(done.values()), None)
    return {e: reference is not None and abs(r["acc"] - reference["acc"]) <= ACC_TOLERANCE for e, r in done.items()}


def table_rows(rows: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of one workload's table (also written as markdown)."""
    done = {e: r for e, r in rows.items() if "skipped" not in r}
    alike = learned_alike(rows)
    ranked = [r for e, r in done.items() if alike[e]]
    fastest = min((r["s_round"] for r in ranked), default=1.0)
    fastest_wall = min((r["wall_s"] for r in ranked), default=1.0)
    shown = [h for h, (k, _) in COLUMNS.items() if any(r.get(k) is not None for r in done.values())]
    header = ["row", *shown[:1], "x fastest (s/round)", *shown[1:3], "x fastest (wall)", *shown[3:],
              f"same acc (±{ACC_TOLERANCE:.2f})"]
    cells = []
    for engine, r in rows.items():
        if "skipped" in r:
            cells.append([engine, r["skipped"], *[""] * (len(header) - 2)])
            continue
        fmt = {h: ("-" if r.get(k) is None else f.format(r[k])) for h, (k, f) in COLUMNS.items()}
        x_round, x_wall = (f"{r['s_round'] / fastest:.2f}", f"{r['wall_s'] / fastest_wall:.2f}") if alike[engine] else ("not ranked",) * 2
        cells.append([engine, *[fmt[h] for h in shown[:1]], x_round, *[fmt[h] for h in shown[1:3]],
                      x_wall, *[fmt[h] for h in shown[3:]], "yes" if alike[engine] else "no"])
    return header, cells


def table(workload: str, rows: dict[str, dict], note: str) -> Table:
    header, cells = table_rows(rows)
    out = Table(title=f"{workload}: {note}")
    for col in header:
        out.add_column(col, justify="left" if col == "row" else "right")
    for row in cells:
        out.add_row(*row)
    return out


def markdown(header: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def profile_markdown(rows: dict[str, dict]) -> str | None:
    """ms per round in each bucket, one column per row that was profiled."""
    profiled = {e: r["profile"] for e, r in rows.items() if "profile" in r}
    if not profiled:
        return None
    header = ["ms per round (cProfile, inclusive)", *profiled]
    cells = [[label, *(f"{p[label]:.1f}" for p in profiled.values())] for label, _ in BUCKETS]
    profiled_round = [f"{1000 * rows[e]['s_round_profiled']:.1f}" for e in profiled]
    cells.append(["round under the profiler (median time/round_s, rounds 2+)", *profiled_round])
    return markdown(header, cells)


def bench(workloads: list[str], engines: list[str] | None, rounds: int | None, repeats: int, extra: list[str], scratch: Path,
          console: Console, profile: bool = False) -> dict[str, dict[str, dict]]:
    for w in workloads:
        if w not in WORKLOADS:
            raise ConfigError.invalid("workload", w, "one of " + ", ".join(WORKLOADS))
    if repeats < 1:
        raise ConfigError.invalid("--repeats", repeats, "an integer >= 1")
    if rounds is not None and rounds < 1:
        raise ConfigError.invalid("--rounds", rounds, "an integer >= 1")
    for w in workloads:
        unknown = [e for e in engines or [] if e not in ENGINES[w]]
        if unknown:
            raise ConfigError.invalid("--engines", unknown[0], f"for {w} one of " + ", ".join(ENGINES[w]))
    scratch.mkdir(parents=True, exist_ok=True)
    import torch

    device = f"GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else f"CPU only, {os.cpu_count()} cores"
    results: dict[str, dict[str, dict]] = {}
    loads: dict[str, list[float]] = {}
    report = [f"# flowerbed bench {' '.join(workloads)} (repeats {repeats}{', profile' if profile else ''}), {device}, "
              f"{time.strftime('%Y-%m-%d %H:%M')}"]
    for w in workloads:
        chosen = engines or list(ENGINES[w])
        base = WORKLOADS[w] + ([f"rounds={rounds}"] + ([f"evaluate.every={min(10, rounds)}"] if w == "b1" else []) if rounds else []) + extra
        runs: dict[str, list[dict]] = {e: [] for e in chosen}
        load = [os.getloadavg()]
        for i in range(repeats):  # interleaved, so that load from other jobs spreads over every engine
            for e in chosen:
                console.print(f"{w} {e} run {i + 1}/{repeats} ...", highlight=False)
                runs[e].append(measure(w, e, base + ENGINES[w][e], scratch))
                load.append(os.getloadavg())
        results[w] = {e: summarize(r) for e, r in runs.items()}
        if profile:
            for e in chosen:
                if e in ("pfl", "flower"):  # not our process: nothing to profile
                    continue
                console.print(f"{w} {e} under cProfile ...", highlight=False)
                run = measure(w, e, base + ENGINES[w][e], scratch, profile=True)
                if "profile" in run:
                    results[w][e]["profile"] = run["profile"]
                    results[w][e]["s_round_profiled"] = statistics.median(run["round_s"][1:] or run["round_s"])
        rows = results[w]
        console.print(table(w, rows, f"{' '.join(base)} ({device})"))
        loads[w] = [round(x[0], 2) for x in load]
        report += [f"\n## {w}\n", f"`{' '.join(base)}`; load average (1 min) {min(loads[w]):.2f}-{max(loads[w]):.2f} "
                   "during the runs\n", markdown(*table_rows(rows))]
        if (prof := profile_markdown(rows)) is not None:
            console.print(prof)
            report += ["", prof]
    (scratch / "bench.json").write_text(json.dumps({**results, "load_average": loads}, indent=1))
    (scratch / "bench.md").write_text("\n".join(report) + "\n")
    console.print(f"tables: {scratch / 'bench.md'}; raw numbers: {scratch / 'bench.json'}")
    return results


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--child":
    _child(json.loads(sys.argv[2]))
