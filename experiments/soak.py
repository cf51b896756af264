"""Memory over a long run: RSS of a `flowerbed run` sampled from outside, per finished round.

    python -m flowerbed.experiments.soak --rounds 1000 --out /tmp/9/soak

Runs the real CLI as a child process (the sequential engine: server and clients in that one
process) and reads its VmRSS from /proc every 50 ms; a round's RSS is the first sample taken
after its line appears in metrics.jsonl. A measurement, not a test: flat means no leak per round.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

DEFAULT = ["dataset=digits", "clients.num=4", "train.local_steps=1", "train.local_epochs=0", "evaluate.every=100"]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def soak(rounds: int, out: Path, overrides: list[str]) -> dict[int, float]:
    run_dir = out / "run"
    metrics = run_dir / "metrics.jsonl"
    cmd = [sys.executable, "-m", "flowerbed.simulations.cli", "run", *DEFAULT, f"rounds={rounds}", f"output.dir={run_dir}", "overwrite=true", *overrides]
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    by_round: dict[int, float] = {}
    while child.poll() is None:
        done = len(metrics.read_text().splitlines()) - 1 if metrics.exists() else -1  # line 0 is round 0
        rss = rss_mb(child.pid)
        if rss is not None and done >= 1 and done not in by_round:
            by_round[done] = rss
        time.sleep(0.05)
    if child.returncode != 0:
        raise SystemExit(f"the run failed with exit status {child.returncode}: {' '.join(cmd)}")
    (out / "rss.json").write_text(json.dumps(by_round, indent=0) + "\n")
    return by_round


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--out", default="/tmp/flowerbed-soak")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    by_round = soak(args.rounds, Path(args.out), args.overrides)
    rounds = sorted(by_round)
    near = lambda r: by_round[min(rounds, key=lambda k: abs(k - r))]  # noqa: E731 - nearest sampled round
    for r in (10, 100, 500, args.rounds):
        print(f"round {r:>5}: RSS {near(r):7.1f} MiB")
    late = [by_round[r] for r in rounds if r >= 100]
    print(f"rounds 100-{args.rounds}: min {min(late):.1f}, max {max(late):.1f} MiB ({len(rounds)} rounds sampled)")


if __name__ == "__main__":
    main()
