"""`flowerbed sweep`: many runs from one command, resumable, each run's directory indexed.

    flowerbed sweep algorithm=fedavg,fedprox seed=0,1,2 partition.alpha=0.1,0.5 sweep.dir=/tmp/s jobs=2

Comma lists (and Hydra's `range(...)`) are expanded by Hydra's own override parser into their
cartesian product. Every point runs through the same code as `flowerbed run` (in this process when
jobs=1, as `flowerbed run` subprocesses otherwise) into sweep.dir/<name>/; sweep.dir/index.jsonl
lists each point's name, overrides and directory. Running the same sweep again skips points with
a summary.json and resumes (resume=true) the ones that have a config.yaml but no summary.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from flowerbed.tasks.errors import ConfigError


@dataclass
class Point:
    name: str
    overrides: list[str]  # without output.dir / resume
    path: Path

    def state(self) -> str:
        if (self.path / "summary.json").exists():
            return "done"
        return "partial" if (self.path / "config.yaml").exists() else "new"

    def command(self) -> list[str]:
        extra = ["resume=true"] if self.state() == "partial" else []
        return [*self.overrides, f"output.dir={self.path}", *extra]


def split_args(args: list[str]) -> tuple[list[str], Path, int]:
    """Take the sweep's own keys (sweep.dir, jobs) out of the overrides."""
    rest, sweep_dir, jobs = [], Path("runs/sweep"), 1
    for arg in args:
        key, _, value = arg.partition("=")
        if key == "sweep.dir":
            if not value.strip():  # "" is the working directory: every run's folder would land among the user's files
                raise ConfigError.invalid("sweep.dir", value, "a folder (default runs/sweep)")
            sweep_dir = Path(value).expanduser()
        elif key == "jobs":
            if not value.isdigit() or int(value) < 1:
                raise ConfigError.invalid("jobs", value, "an integer >= 1")
            jobs = int(value)
        elif key in ("output.dir", "resume", "overwrite"):
            raise ConfigError.invalid(key, value, "not set by hand in a sweep (sweep.dir names the runs; a rerun resumes)")
        else:
            rest.append(arg)
    return rest, sweep_dir.resolve(), jobs


def _slug(combo: tuple[str, ...]) -> str:
    """`algorithm-fedavg_seed-0`: a folder name Hydra also accepts inside output.dir=..."""
    return "_".join(re.sub(r"[^A-Za-z0-9.-]+", "-", item) for item in combo)


def expand(overrides: list[str], sweep_dir: Path) -> list[Point]:
    """The cartesian product of the comma-list overrides; fixed overrides go to every point."""
    from flowerbed.simulations.config import parse_overrides

    fixed, axes, swept = [], [], {}
    for text, override in zip(overrides, parse_overrides(overrides)):
        if override.is_sweep_override():
            key = override.get_key_element()
            if override.key_or_group in swept:  # every point would keep the second list's value: runs repeated under other names
                raise ConfigError(f"{override.key_or_group} is swept twice ({swept[override.key_or_group]} and {text}): "
                                  "give one comma list")
            swept[override.key_or_group] = text
            axes.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            fixed.append(text)
    points = []
    for combo in itertools.product(*axes):
        name = _slug(combo) or "run"
        points.append(Point(name, [*fixed, *combo], sweep_dir / name))
    return points


def write_index(points: list[Point], sweep_dir: Path) -> Path:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    index = sweep_dir / "index.jsonl"
    index.write_text("".join(json.dumps({"name": p.name, "overrides": p.overrides, "dir": str(p.path)}) + "\n" for p in points))
    return index


def record_time(sweep_dir: Path, name: str, seconds: float) -> None:
    """sweep.dir/times.json: wall seconds per run, summed over resumes (what a sweep costs in total)."""
    path = sweep_dir / "times.json"
    times = json.loads(path.read_text()) if path.exists() else {}
    times[name] = times.get(name, 0.0) + seconds
    path.write_text(json.dumps(times, indent=1) + "\n")


def check_points(points: list[Point], sweep_dir: Path, console) -> None:
    """Validate every point not done yet as `flowerbed run` would, before the first one starts.

    A bad value in the last point of a long sweep is reported now, in one line, not after the
    valid points have run for hours; nothing is written before every point has passed.
    """
    from flowerbed.server.results import RunDirectory
    from flowerbed.simulations import config

    if len({p.name for p in points}) != len(points):
        raise ConfigError("two sweep points share a name; give each comma list distinct values")
    RunDirectory(sweep_dir).check_writable("sweep.dir")
    todo = [p for p in points if p.state() != "done"]
    with console.status(f"sweep: checking {len(todo)} configurations") as status:
        for i, point in enumerate(todo, 1):
            status.update(f"sweep: checking configuration {i}/{len(todo)}: {point.name}")
            try:
                config.load(point.command(), here=True)
            except ConfigError as err:
                raise ConfigError(f"sweep point {point.name}: {err}") from err


def run_sweep(points: list[Point], sweep_dir: Path, jobs: int, console) -> dict[str, str]:
    """Check every point, then run the points not done yet; returns name -> done|skipped|resumed|failed|interrupted."""
    check_points(points, sweep_dir, console)
    console.print(f"sweep: {len(points)} runs in {sweep_dir} (index: {write_index(points, sweep_dir)})")
    status = {p.name: "skipped" for p in points if p.state() == "done"}
    todo = [p for p in points if p.state() != "done"]
    if status:
        console.print(f"sweep: {len(status)} finished runs skipped")
    start = time.perf_counter()
    from flowerbed.simulations.runner import sigterm_interrupts

    sigterm_interrupts()  # a SIGTERM to the sweep stops its runs cleanly, as Ctrl-C does
    if jobs == 1:
        _run_here(todo, status, sweep_dir, console)
    else:
        _run_processes(todo, status, jobs, sweep_dir, console)
    console.print(f"sweep: {sum(v in ('done', 'resumed') for v in status.values())} runs finished, "
                  f"{sum(v == 'failed' for v in status.values())} failed, in {time.perf_counter() - start:.0f}s")
    return status


def _run_here(todo: list[Point], status: dict[str, str], sweep_dir: Path, console) -> None:
    from flowerbed.simulations.runner import run

    for i, point in enumerate(todo, 1):
        resumed = point.state() == "partial"
        console.print(f"[bold]sweep {i}/{len(todo)}[/] {point.name}{' (resuming)' if resumed else ''}")
        begin = time.perf_counter()
        try:
            code = run(point.command())
        except ConfigError as err:
            console.print(f"[red]{point.name}: {err}[/]")
            code = 2
        except Exception as err:  # one broken point must not end the sweep
            console.print(f"[red]{point.name} failed: {type(err).__name__}: {err}[/]")
            code = 1
        record_time(sweep_dir, point.name, time.perf_counter() - begin)
        if code in (130, 143):
            status[point.name] = "interrupted"
            raise KeyboardInterrupt
        status[point.name] = ("resumed" if resumed else "done") if code == 0 else "failed"


def _run_processes(todo: list[Point], status: dict[str, str], jobs: int, sweep_dir: Path, console) -> None:
    """Up to `jobs` `flowerbed run` subprocesses at a time; each one's output in sweep.dir/logs/."""
    logs = sweep_dir / "logs"
    logs.mkdir(exist_ok=True)
    waiting, running = list(todo), {}
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                point = waiting.pop(0)
                resumed = point.state() == "partial"
                log = (logs / f"{point.name.replace('/', '_')}.log").open("a")
                proc = subprocess.Popen([sys.executable, "-m", "flowerbed.simulations.cli", "run", *point.command()],
                                        stdout=log, stderr=subprocess.STDOUT)
                running[proc] = (point, resumed, log, time.perf_counter())
                console.print(f"[bold]sweep[/] started {point.name}{' (resuming)' if resumed else ''}")
            time.sleep(0.2)
            for proc in [p for p in running if p.poll() is not None]:
                point, resumed, log, begin = running.pop(proc)
                log.close()
                record_time(sweep_dir, point.name, time.perf_counter() - begin)
                ok = proc.returncode == 0
                status[point.name] = ("resumed" if resumed else "done") if ok else "failed"
                console.print(f"sweep: {point.name} {status[point.name]}" + ("" if ok else f" (see {log.name})"))
    except KeyboardInterrupt:
        for proc, (point, *_) in running.items():
            proc.terminate()  # SIGTERM: the run keeps its last finished round
            proc.wait()
            status[point.name] = "interrupted"
        raise
