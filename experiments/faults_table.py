"""The fault-scenario table of docs/reliability.md: one config and seed, one injected fault per row.

    python -m flowerbed.experiments.faults_table --out /tmp/9/faults

Each row is a real `flowerbed run` (sequential engine) of the same base config; the table gives
what the metrics counted and the final global accuracy next to the fault-free run's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

BASE = ["dataset=digits", "clients.num=10", "rounds=10", "seed=0", "partition=iid"]
SCENARIOS: list[tuple[str, list[str]]] = [
    ("fault-free", []),
    ("20% of clients raise", ["faults.raise_fraction=0.2"]),
    ("30% drop out", ["faults.dropout_fraction=0.3"]),
    ("10% time out (clients.timeout=3)", ["faults.timeout_fraction=0.1", "clients.timeout=3"]),
    ("20% send NaN", ["faults.poison_fraction=0.2", "faults.poison=nonfinite"]),
    ("20% send a huge update, plain mean", ["faults.poison_fraction=0.2"]),
    ("20% huge, clients.max_update_norm=100", ["faults.poison_fraction=0.2", "clients.max_update_norm=100"]),
    ("20% huge, aggregation=median", ["faults.poison_fraction=0.2", "algorithm.aggregation=median"]),
    ("20% huge, aggregation=trimmed (beta 0.2)", ["faults.poison_fraction=0.2", "algorithm.aggregation=trimmed"]),
    ("20% huge, aggregation=krum (f=2)", ["faults.poison_fraction=0.2", "algorithm.aggregation=krum", "algorithm.num_malicious=2"]),
    ("every client raises", ["faults.raise_fraction=1.0"]),
]


def run(out: Path, name: str, overrides: list[str]) -> dict:
    run_dir = out / name.replace(" ", "_").replace("%", "pct").replace("(", "").replace(")", "").replace("=", "-").replace(",", "")
    cmd = [sys.executable, "-m", "flowerbed.simulations.cli", "run", *BASE, *overrides, f"output.dir={run_dir}", "overwrite=true"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()] if (run_dir / "metrics.jsonl").exists() else []
    rounds = [m for m in lines if m["round"] > 0]
    stderr = done.stderr.strip().splitlines()
    return {
        "scenario": name, "exit": done.returncode, "rounds": len(rounds),
        "failures": sum(m.get("clients/failures", 0) for m in rounds),
        "rejected": sum(m.get("clients/rejected", 0) for m in rounds),
        "short": sum(m.get("clients/short_rounds", 0) > 0 for m in rounds),
        "acc": next((m["global/acc"] for m in reversed(lines) if m.get("global/acc") is not None), float("nan")),
        "message": stderr[-1] if done.returncode else "",
        "command": "flowerbed run " + " ".join(BASE + overrides),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/flowerbed-faults")
    out = Path(parser.parse_args().out)
    rows = [run(out, name, overrides) for name, overrides in SCENARIOS]
    (out / "faults.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "faults.json").write_text(json.dumps(rows, indent=1) + "\n")
    clean = rows[0]["acc"]
    print("| scenario | exit | rounds | failed replies | rejected updates | short rounds | final global acc | vs fault-free |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scenario']} | {r['exit']} | {r['rounds']} | {r['failures']} | {r['rejected']} | {r['short']} | "
              f"{r['acc']:.4f} | {r['acc'] - clean:+.4f} |")
    for r in rows:
        if r["message"]:
            print(f"\n{r['scenario']}: `{r['message']}`")


if __name__ == "__main__":
    main()
