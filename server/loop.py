"""The server's round loop: Flower's `Strategy.start` sequence, plus what a run needs around it.

Each round calls the strategy's own configure/aggregate methods in Flower's order (train,
client evaluation, central evaluation). Around them this loop adds what `Strategy.start` lacks:
stable client ids, a metrics line and a checkpoint after every round, resume from the last
checkpoint, byte and failure counts, and a progress bar. With `devices.profile` a virtual clock
(server/clock.py) times each round as the fleet's devices would; an asynchronous strategy
(FedBuff, FedAsync) takes its rounds from server/asynchronous.py instead of `synchronous_rounds`.

The global model is kept as a tensor-backed record (tasks/records.py), converted once per round if
a strategy returned bytes: in process, the round's clients load it without decoding it each, and
bytes are made only where they are needed (the `flower` engine, a deployment). Checkpoints are
written by a background thread while the next round runs (`CheckpointWriter`).
"""

from __future__ import annotations

import math
import pickle
import sys
import time
from collections.abc import Iterable
from logging import INFO

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flowerbed.server.evaluation import CentralEvaluator
from flowerbed.server.clock import VirtualClock, settle_round
from flowerbed.server.loggers import build_logger
from flowerbed.server.results import CheckpointWriter, RunDirectory, check_run_directory, initial_weights, prepare_run_directory
from flowerbed.strategies.registry import build_strategy
from flowerbed.strategies.sampling import has_test_samples, sample_size
from flowerbed.strategies.secagg import secure_round
from flowerbed.tasks.devices import build_profiles, from_classes
from flowerbed.tasks.errors import ConfigError, RunAborted
from flowerbed.tasks.models import resolve_device
from flowerbed.tasks.partitions import Federation
from flowerbed.tasks.records import as_tensor_record, records_of, tensor_record, wire_bytes
from flowerbed.tasks.registry import task_of

console = Console(stderr=True)


def is_simulation(grid: Grid) -> bool:
    """Whether Flower's Simulation Runtime runs this ServerApp (`flwr run` on a simulation federation).

    Flower 1.42 gives a simulation's ServerApp an `InMemoryGrid` (flwr/simulation/run_simulation.py)
    and a deployment's an `HttpGrid` (flwr/superlink/runtime/run_serverapp.py); flowerbed's own
    engines bring their own Grid with every node in place before the ServerApp starts.
    """
    # Looked up, not imported (1 s): while Flower's grid module is not loaded no InMemoryGrid exists here.
    grids = sys.modules.get("flwr.superlink.grid")
    return grids is not None and isinstance(grid, grids.InMemoryGrid)


def check_simulation_size(grid: Grid, expected: int, settle_s: float = 2.0, patience_s: float = 30.0) -> None:
    """In a simulation, fail at once unless it has one SuperNode per client (`clients.num`).

    A simulation registers all its SuperNodes in one go right after the ServerApp starts, so once
    the count stops changing, fewer than `clients.num` will never become more: waiting
    `clients.timeout` (600 s) would only hide the problem. More would each ask for a partition
    the config does not have, and fail every round. The app does not adapt `clients.num` to the
    federation instead: clients.num defines the partition (how the data is split, who holds which
    classes), so a silently resized federation would be another experiment than the one the
    config, its config.yaml and `flowerbed run` with the same config describe. The message says
    both ways out.
    """
    count, since, start = -1, time.monotonic(), time.monotonic()
    while time.monotonic() - start < patience_s:
        now_count = len(list(grid.get_node_ids()))
        if now_count != count:
            count, since = now_count, time.monotonic()
        steady = time.monotonic() - since
        if (count == expected and steady >= 0.5) or (count > 0 and steady >= settle_s):
            break
        time.sleep(0.1)
    if count == expected:
        return
    allowed = (f"at most the {count} SuperNodes of this simulation federation" if count < expected else
               f"the {count} SuperNodes of this simulation federation, one per client")
    raise ConfigError.invalid(
        "clients.num", expected, f"{allowed}: size it with `flwr run . --federation-config \"num-supernodes={expected}\"`, "
        f"or run {'fewer' if count < expected else 'more'} clients with -c \"clients.num={count}\"")


NODES_LOG_EVERY_S = 5.0  # how often a deployment waiting for its SuperNodes says how many are there


def wait_for_nodes(grid: Grid, expected: int, timeout: float) -> list[int]:
    """The node ids once `expected` nodes are connected; a deployment's SuperNodes come over time,
    so say how many are there every few seconds until `timeout`."""
    deadline, last_said = time.monotonic() + timeout, -math.inf
    while len(node_ids := list(grid.get_node_ids())) < expected:
        if time.monotonic() > deadline:
            raise RunAborted(f"only {len(node_ids)} of clients.num={expected} nodes connected within clients.timeout={timeout:.0f}s")
        if time.monotonic() - last_said >= NODES_LOG_EVERY_S:
            log(INFO, "waiting for nodes: %d of %d connected (clients.num; giving up after clients.timeout=%.0fs)",
                len(node_ids), expected, timeout)
            last_said = time.monotonic()
        time.sleep(0.5)
    return node_ids


def identify_clients(grid: Grid, expected: int, timeout: float) -> dict[int, int]:
    """Ask every node for its stable client id; waits until `expected` nodes are connected."""
    node_ids = wait_for_nodes(grid, expected, timeout)
    ids = _ask_client_ids(grid, node_ids, timeout)
    if len(set(ids.values())) != len(ids):
        raise RuntimeError("two nodes reported the same client-id; each node needs its own")
    return ids


def rejoin_clients(grid: Grid, client_of_node: dict[int, int], timeout: float) -> dict[int, int]:
    """Map the clients of nodes that connected since the last round to their new node ids.

    Without node authentication a restarted SuperNode gets a new node id from the SuperLink (with
    it, the id is tied to the node's key and stays). Asking only the unknown nodes for their client
    id lets a restarted device serve its client again from the next round on (its personal state
    comes back from its state-dir); clients are still sampled by client id, so the rounds stay
    those of the same run. In simulation no node is ever new and nothing is sent.
    """
    new = [n for n in grid.get_node_ids() if n not in client_of_node]
    if not new:
        return client_of_node
    node_of = {c: n for n, c in client_of_node.items()}
    node_of.update({c: n for n, c in _ask_client_ids(grid, new, timeout).items()})  # the newest node of a client wins
    return {n: c for c, n in node_of.items()}


def _ask_client_ids(grid: Grid, node_ids: list[int], timeout: float) -> dict[int, int]:
    query = RecordDict({"config": ConfigRecord({"server-round": 0})})
    messages = [Message(query, dst_node_id=n, message_type=MessageType.QUERY) for n in node_ids]
    replies = grid.send_and_receive(messages, timeout=timeout)
    return {m.metadata.src_node_id: int(m.content["identity"]["client-id"]) for m in replies if not m.has_error()}


def _bytes(messages: Iterable[Message]) -> int:
    """What the arrays of `messages` take on the wire (`ArrayRecord.count_bytes`), serialised or not
    (a record that several messages carry, e.g. the global model, is sized once and counted each time)."""
    sizes: dict[int, int] = {}
    total = 0
    for m in messages:
        if m.has_content():
            for rec in records_of(m.content, ArrayRecord):
                total += sizes[id(rec)] if id(rec) in sizes else sizes.setdefault(id(rec), wire_bytes(rec))
    return total


def _scalars(record) -> dict:
    return dict(record) if record is not None else {}


def run_federated(grid: Grid, cfg: dict) -> dict:
    """Run (or resume) the rounds a flat run config describes; returns the summary.

    The data, the strategy and the initial model are built before the run directory is touched, so
    a config that cannot run writes nothing; `prepare_run_directory` then decides (new, resume,
    overwrite, or one line refusing) right before the first write.
    """
    check_run_directory(cfg)  # an earlier run's folder is refused before the data is loaded
    federation = task_of(cfg).federation(cfg)
    device = resolve_device(str(cfg["train.device"]))
    torch.set_num_threads(int(cfg["train.num_threads"]))
    strategy = build_strategy(cfg)
    arrays, first_round, elapsed = initial_arrays(cfg, federation, getattr(strategy, "has_global_model", True)), 1, 0.0
    clock = build_clock(cfg, federation, arrays, grid, asynchronous=getattr(strategy, "asynchronous", False))
    evaluate = CentralEvaluator(cfg, federation, device)
    evaluate = getattr(strategy, "central_evaluation", lambda e: e)(evaluate)  # a strategy may score more than one global model
    if not cfg.get("evaluate.central", True):  # e.g. feature shift: the pooled test set is no client's domain
        evaluate = lambda arrays: {}  # noqa: E731
    num_rounds, every = int(cfg["rounds"]), int(cfg["evaluate.every"])
    metric = task_of(cfg).metric  # the headline: progress, per-client values, best/final in the summary

    out = prepare_run_directory(cfg)
    log(INFO, "flowerbed: results in %s", out.path.absolute())
    logger = build_logger(cfg)  # TensorBoard / MLflow when logging.* asks for them; else a no-op
    checkpoint = out.load_checkpoint() if cfg.get("resume") else None
    if checkpoint is not None:
        if getattr(strategy, "asynchronous", False):
            raise ConfigError.invalid("resume", True, f"false for {cfg['algorithm.name']}: an asynchronous run's clients in flight are not checkpointed")
        arrays, first_round, elapsed = resume(checkpoint, strategy, out)
        if clock is not None:
            clock.now = float(out.read_metrics()[-1].get("time/virtual_total_s", 0.0))
    privacy = strategy.privacy  # None, or differential privacy / secure aggregation (strategies/privacy.py)
    if privacy is not None:
        privacy.bind([len(client.train) for client in federation.clients])
    if checkpoint is None:
        out.keep_metrics_until(-1)
        out.append_metrics({"round": 0, **evaluate(arrays), **(privacy.metrics() if privacy else {}),
                            **({"time/virtual_total_s": 0.0} if clock is not None else {})})

    strategy.client_of_node = identify_clients(grid, int(cfg["clients.num"]), float(cfg["clients.timeout"]))
    timeout = float(cfg["clients.timeout"])
    max_short = int(cfg.get("clients.max_failed_rounds", 3))
    latest = out.read_metrics()[-1]
    checkpoints = CheckpointWriter(out)
    if getattr(strategy, "asynchronous", False):
        from flowerbed.server.asynchronous import asynchronous_rounds

        rounds = asynchronous_rounds(grid, strategy, clock, arrays, num_rounds, timeout)
    else:
        rounds = synchronous_rounds(grid, strategy, clock, arrays, range(first_round, num_rounds + 1), timeout)
    terminal = console.is_terminal  # asked once: rich asks the OS each time
    with checkpoints, Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(), console=console, disable=not terminal,
    ) as progress:
        task = progress.add_task(str(cfg["algorithm.name"]), total=num_rounds, completed=first_round - 1, status="")
        for rnd, arrays, record, start in rounds:
            if rnd % every == 0 or rnd == num_rounds:
                eval_sent = list(strategy.configure_evaluate(rnd, arrays, ConfigRecord(), grid))
                eval_replies = list(grid.send_and_receive(eval_sent, timeout=timeout))
                record.update(_per_client(eval_replies, strategy.client_of_node, f"personal/{metric}"))
                record.update(_scalars(strategy.aggregate_evaluate(rnd, eval_replies)))
                record.update(evaluate(arrays))
            record["time/round_s"] = time.perf_counter() - start
            elapsed += record["time/round_s"]
            record.pop("num-examples", None)
            out.append_metrics(record)
            logger.log(rnd, record)
            state = pickle.dumps({k: v for k, v in vars(strategy).items() if k not in ("client_of_node", "offline")})
            checkpoints.submit(rnd, elapsed, arrays, state)
            if record.get("clients/short_rounds", 0) >= max_short:
                raise RunAborted(f"stopped after round {rnd}: {record['clients/short_rounds']} rounds in a row had fewer than "
                                 f"{strategy.min_train_nodes} usable replies (clients.max_failed_rounds={max_short}); "
                                 f"see clients/failures in {out.metrics_path}")
            latest = record if f"global/{metric}" in record or f"personal/{metric}" in record else latest
            status = progress_status(latest, record, metric)
            progress.update(task, advance=1, status=status)
            if not terminal:
                console.file.write(f"round {rnd}/{num_rounds}  {status}  {record['time/round_s']:.2f}s\n")  # plain text: no rich rendering
    logger.close()
    summary = summarize(out.read_metrics(), elapsed, metric)
    summary.update(privacy.summary() if privacy else {})
    out.write_summary(summary)
    log(INFO, "flowerbed: results in %s", out.path.absolute())
    return summary


def synchronous_rounds(grid: Grid, strategy, clock: VirtualClock | None, arrays: ArrayRecord, rounds: range, timeout: float):
    """Flower's round: send to the sampled clients, wait for the replies, aggregate. Yields
    (round, global arrays, the round's metrics so far, its wall-clock start) after each training."""
    privacy, short_rounds = strategy.privacy, 0  # consecutive rounds with fewer usable replies than the strategy's minimum
    for rnd in rounds:
        if privacy is not None and privacy.would_exceed():
            console.print(f"privacy budget: stopped before round {rnd}: epsilon would pass privacy.target_epsilon="
                          f"{privacy.settings.target_epsilon:g} (spent {privacy.spent():.3f} at delta "
                          f"{privacy.accountant.delta:.2g}); the checkpoint of round {rnd - 1} is kept", highlight=False)
            return
        start = time.perf_counter()
        strategy.client_of_node = rejoin_clients(grid, strategy.client_of_node, timeout)
        if clock is not None:
            strategy.offline = clock_offline(clock, sorted(strategy.client_of_node.values()))
        sent = list(strategy.configure_train(rnd, arrays, ConfigRecord(), grid))
        if privacy is not None and privacy.settings.secagg:  # Flower's SecAgg+: replies carry the secure mean
            replies, bytes_down, bytes_up = secure_round(grid, sent, rnd, timeout, privacy.max_weight)
        else:
            replies = list(grid.send_and_receive(sent, timeout=timeout))
            bytes_down, bytes_up = _bytes(sent), _bytes(replies)
        settled = None
        if clock is not None:
            available = len(strategy.client_of_node) - len(strategy.offline)
            keep = sample_size(available, strategy.fraction_train, strategy.min_train_nodes) if strategy.over_select > 0 else None
            settled = settle_round(clock, sent, replies, strategy.client_of_node, keep)
            replies = settled.replies
        new_arrays, train_metrics = strategy.aggregate_train(rnd, replies)
        arrays = as_tensor_record(new_arrays) if new_arrays is not None else arrays
        record = train_record(rnd, train_metrics, sent, replies, strategy.round_stats)
        short_rounds = short_rounds + 1 if record.pop("clients/short", 0) else 0
        record["clients/short_rounds"] = short_rounds
        record["comm/bytes_down"], record["comm/bytes_up"] = bytes_down, bytes_up
        if settled is not None:
            record["clients/failures"] -= settled.surplus  # over-selected on purpose, not failed
            record.update({"clients/late": settled.late, "clients/surplus": settled.surplus,
                           "time/virtual_s": settled.duration, "time/virtual_total_s": clock.now})
        record.update(privacy.metrics() if privacy else {})
        yield rnd, arrays, record, start


def clock_offline(clock: VirtualClock, clients: list[int]) -> frozenset[int]:
    """The clients away at the clock's time; with all of them away, the clock first waits for one."""
    if not clock.online(clients):
        clock.wait_for_online(clients)
    return frozenset(clients) - set(clock.online(clients))


def build_clock(cfg: dict, federation: Federation, arrays: ArrayRecord, grid: Grid, asynchronous: bool = False) -> VirtualClock | None:
    """The virtual clock when `devices.profile` asks for one; asynchronous runs in simulation always
    get one (every client a `laptop` without profiles), so that their events have a seeded order."""
    profiles = build_profiles(cfg, len(federation.clients))
    if profiles is None and asynchronous and (is_simulation(grid) or type(grid).__module__.startswith("flowerbed.")):
        profiles = from_classes({**cfg, "devices.classes": "laptop", "devices.availability": "always"}, len(federation.clients))
    if profiles is None:
        return None
    clock = VirtualClock(cfg, profiles)
    clock.check_deadline(wire_bytes(arrays), [len(client.labeled) for client in federation.clients])
    return clock


def train_record(server_round: int, train_metrics: MetricRecord | None, sent: list[Message], replies: list[Message],
                 round_stats: dict) -> dict:
    """A round's metrics line after training: the aggregated train metrics and the client counts
    (trained, failed, rejected by the strategy's screening; `clients/short` for the loop to pop)."""
    record = {"round": server_round, **_scalars(train_metrics)}
    record["clients/trained"] = sum(not m.has_error() for m in replies)
    record.update({f"clients/{k}": v for k, v in round_stats.items()})
    record["clients/failures"] = record.get("clients/failures", 0) + len(sent) - len(replies)  # timed out: no reply
    return record


def initial_arrays(cfg: dict, federation: Federation, has_global_model: bool = True) -> ArrayRecord:
    """The global model before round 1: the seed's initial weights, or `model.init`'s (checked even
    for a strategy with no global model, so a wrong path fails the same way for every algorithm)."""
    initial = task_of(cfg).build_model(cfg, federation.data)
    if cfg.get("model.init"):
        initial.load_state_dict(initial_weights(str(cfg["model.init"]), initial, cfg))
    if not has_global_model:  # personalized only (pFedPG): nothing global to send or checkpoint
        return ArrayRecord()
    return tensor_record(initial.state_dict())


def resume(checkpoint: dict, strategy, out: RunDirectory) -> tuple[ArrayRecord, int, float]:
    """Restore the strategy's state and the global model from `checkpoint` and drop the metrics lines
    of later rounds; returns (global arrays, first round to run, seconds the rounds so far took)."""
    arrays = ArrayRecord({k: Array(v) for k, v in checkpoint["arrays"].items()})
    settings = getattr(strategy.privacy, "settings", None)
    vars(strategy).update(pickle.loads(checkpoint["strategy"]))
    if settings is not None:  # the budget spent comes from the checkpoint, the target from this run
        strategy.privacy.settings = settings
    out.keep_metrics_until(checkpoint["round"])
    return arrays, checkpoint["round"] + 1, checkpoint["elapsed"]


def progress_status(latest: dict, record: dict, metric: str = "acc") -> str:
    """The progress bar's text: the latest evaluated headline metric (the task's: accuracy for
    classification), global and personal, and the privacy spent so far. With evaluate.every > 1 a
    round that was not evaluated shows the last evaluated round's, marked as such (`acc 0.412 (round 2)`)."""
    shown = ((metric, f"global/{metric}"), ("personal", f"personal/{metric}"))
    status = " ".join(f"{name} {latest[key]:.3f}" for name, key in shown if key in latest)
    if status and latest.get("round") != record.get("round"):
        status += f" (round {latest['round']})"
    if "privacy/epsilon" in record:
        status += f"  ε {record['privacy/epsilon']:.2f}"
    return status


def _per_client(replies: list[Message], client_of_node: dict[int, int], key: str) -> dict:
    """`{key}_per_client`: each replying client's value, ordered by client id (for distributions);
    clients without a local test set have none (`has_test_samples`)."""
    values = {client_of_node.get(m.metadata.src_node_id, m.metadata.src_node_id): float(rec[key])
              for m in replies if not m.has_error() and has_test_samples(m.content)
              for rec in records_of(m.content, MetricRecord) if key in rec}
    return {f"{key}_per_client": [values[c] for c in sorted(values)]} if values else {}


def summarize(history: list[dict], elapsed: float, metric: str = "acc") -> dict:
    """Final and best values of the headline metric (the task's: `acc` for classification)."""
    evaluated = [r for r in history if f"global/{metric}" in r or f"personal/{metric}" in r]
    final = evaluated[-1] if evaluated else {}
    summary = {"rounds": history[-1]["round"] if history else 0, "train_time_s": elapsed}
    for key, value in final.items():
        if isinstance(value, (int, float)) and key != "round":
            summary[f"final/{key}"] = value
    for key in (f"global/{metric}", f"personal/{metric}"):
        values = [r[key] for r in evaluated if key in r]
        if values:
            summary[f"best/{key}"] = max(values)
    return summary


def check_algorithm(cfg: dict) -> None:
    from flowerbed.strategies.registry import strategy_builder

    strategy_builder(cfg.get("algorithm.name"))  # one line if it names none
