"""`flowerbed report RUN_OR_SWEEP_DIR... --out DIR`: a markdown table and figures from run directories.

Runs are grouped by the swept keys: the config keys whose values differ between the runs, other
than seed and output.dir (and keys that only restate another, like algorithm.proximal_mu beside
algorithm.name; never a key that changes the data: DATA_KEYS). Each group's seeds give mean ± std
(sample std, ddof=1; a single seed shows its value alone).
Figures are PNGs next to report.md, linked relative so the report reads on GitHub.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from flowerbed.tasks.errors import ConfigError

VIRTUAL = "time/virtual_total_s"  # the virtual clock's cumulative seconds (server/clock.py)
IGNORED = ("seed", "output.dir", "resume", "overwrite", "engine.", "train.device", "train.num_threads", "clients.timeout",
           "logging.")  # how a run was executed, not what it computed
DATA_KEYS = ("dataset.", "partition.", "clients.num")  # what the clients hold: always named when it differs


@dataclass
class Run:
    path: Path
    config: dict
    metrics: list[dict]
    summary: dict | None = field(default=None)

    def curve(self, key: str) -> dict[int, float]:
        return {r["round"]: r[key] for r in self.metrics if r.get(key) is not None}

    def bytes_by_round(self) -> dict[int, float]:
        """Cumulative bytes sent both ways after each round."""
        total, out = 0.0, {}
        for r in self.metrics:
            total += r.get("comm/bytes_up", 0) + r.get("comm/bytes_down", 0)
            out[r["round"]] = total
        return out


def find_runs(paths: list[str | Path]) -> list[Run]:
    """Every run directory (one with config.yaml and metrics.jsonl) at or under the given paths."""
    runs = []
    for root in map(Path, paths):
        if not root.exists():
            raise ConfigError.invalid("run directory", str(root), "an existing run or sweep directory")
        for config in sorted([root / "config.yaml"] if (root / "config.yaml").exists() else root.rglob("config.yaml")):
            run_dir = config.parent
            if not (run_dir / "metrics.jsonl").exists():
                continue
            metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
            summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else None
            runs.append(Run(run_dir, yaml.safe_load(config.read_text()), metrics, summary))
    if not runs:
        raise ConfigError(f"no run directories (config.yaml + metrics.jsonl) under {', '.join(map(str, paths))}")
    return runs


def swept_keys(runs: list[Run]) -> list[str]:
    """Keys whose values differ between runs, minus those that add no grouping of their own."""
    keys = sorted({k for r in runs for k in r.config})
    differ = [k for k in keys if not k.startswith(IGNORED) and len({repr(r.config.get(k)) for r in runs}) > 1]

    def n_groups(ks: list[str]) -> int:
        return len({tuple(repr(r.config.get(k)) for k in ks) for r in runs})

    # drop keys whose removal leaves the grouping unchanged (`.name` keys always stay: they read best);
    # a key that changes the data stays too, or a long-tailed run would pass for a balanced one (issue 31, defect 6)
    kept = list(differ)
    for key in [k for k in differ if not k.endswith(".name") and not k.startswith(DATA_KEYS)]:
        rest = [k for k in kept if k != key]
        if rest and n_groups(rest) == n_groups(kept):
            kept = rest
    return kept


def group(runs: list[Run], keys: list[str]) -> dict[tuple, list[Run]]:
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(run.config.get(k) for k in keys), []).append(run)
    return groups


def seed_std(values: np.ndarray) -> np.ndarray:
    """The sample std over seeds (axis 0) that the figures' bands show, as the table does; 0 for one seed."""
    return values.std(0, ddof=1) if len(values) > 1 else np.zeros(values.shape[1:])


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return float(np.mean(values)), float(seed_std(np.array(values)))


def label(keys: list[str], values: tuple) -> str:
    """`fedavg, dirichlet, alpha=0.1`: `.name` keys by value, others by their last part; unset keys left out."""
    parts = [str(v) if k.endswith(".name") else f"{k.split('.')[-1]}={v}" for k, v in zip(keys, values) if v is not None]
    return ", ".join(parts) or "all runs"


def _pm(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """`81.2 ± 1.3` over seeds; `81.2` for one seed (a std of one value is no spread); `–` for none."""
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "–"
    single = sum(v is not None and math.isfinite(v) for v in values) == 1
    return f"{mean * scale:.{digits}f}" + ("" if single else f" ± {std * scale:.{digits}f}")


def table(runs: list[Run], keys: list[str]) -> str:
    """Markdown: one row per group of finished runs, accuracies in % as mean ± std over seeds."""
    finished = [r for r in runs if r.summary is not None]
    private = any(r.summary.get("privacy/epsilon") is not None for r in finished)
    head = [*keys, "seeds", "final global acc (%)", "best global acc (%)", "final personal acc (%)",
            "best personal acc (%)", "MB sent (up+down)", "train time (s)", *(["ε (at δ)"] if private else [])]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for values, members in sorted(group(finished, keys).items(), key=lambda item: tuple(map(str, item[0]))):
        s = [m.summary for m in members]
        mb = [m.bytes_by_round()[max(m.bytes_by_round())] / 1e6 for m in members]
        cells = [*("–" if v is None else str(v) for v in values), str(len(members)),
                 _pm([x.get("final/global/acc") for x in s]), _pm([x.get("best/global/acc") for x in s]),
                 _pm([x.get("final/personal/acc") for x in s]), _pm([x.get("best/personal/acc") for x in s]),
                 _pm(mb, 1.0, 2), _pm([x.get("train_time_s") for x in s], 1.0, 1)]
        if private:
            cells.append(_epsilon_cell(s))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _epsilon_cell(summaries: list[dict]) -> str:
    """`2.31 ± 0.00 (δ 7e-04)`; `–` without differential privacy."""
    eps = [x.get("privacy/epsilon") for x in summaries]
    if all(e is None for e in eps):
        return "–"
    delta = summaries[0].get("privacy/delta")
    return _pm(eps, 1.0, 2) + (f" (δ {delta:.0e})" if delta else "")


# -- figure data --------------------------------------------------------------------------------
def _split(keys: list[str]) -> tuple[list[str], str | None]:
    """Panels by every swept key but the algorithm; one line per algorithm."""
    return [k for k in keys if k != "algorithm.name"], ("algorithm.name" if "algorithm.name" in keys else None)


PanelOf = Callable[[Run], str] | None  # a caller's own panel titles (the leaderboard's setting names)


def _panels(runs: list[Run], keys: list[str], panel_of: PanelOf = None) -> dict[str, dict[str, list[Run]]]:
    """panel -> line -> runs. A line is named by the algorithm, or by every swept key that still
    differs inside its panel (`fedavg, labeled_fraction=1.0` beside `fedavg, labeled_fraction=0.1`)."""
    panel_keys, line_key = _split(keys)
    by_panel: dict[str, list[Run]] = {}
    for run in runs:
        if panel_of:
            panel = panel_of(run)
        else:
            panel = label(panel_keys, tuple(run.config.get(k) for k in panel_keys)) if panel_keys else _setting(run)
        by_panel.setdefault(panel, []).append(run)
    panels: dict[str, dict[str, list[Run]]] = {}
    for panel, members in by_panel.items():
        varying = [k for k in keys if len({repr(r.config.get(k)) for r in members}) > 1]
        line_keys = [line_key] if line_key and varying in ([], [line_key]) else (varying or keys)
        for run in members:
            panels.setdefault(panel, {}).setdefault(label(line_keys, tuple(run.config.get(k) for k in line_keys)), []).append(run)
    return panels


def one_panel_per_setting(run: Run) -> str:
    """`panel_of` for `flowerbed report --one-panel`: every run of a data setting in one panel."""
    return _setting(run)


SETTING_EXTRAS = {"partition.imbalance_factor": ("long-tailed IF={}", 1.0), "partition.labeled_fraction": ("{} labeled", 1.0),
                  "partition.domain_shift": ("domain shift", False), "partition.samples_per_client": ("{} samples/client", 0)}


def _setting(run: Run) -> str:
    """`digits, dirichlet(0.5), 10 clients`: a title when every run shares the data setting; what
    departs from a balanced, fully labeled split is added (`digits, dirichlet(0.5), long-tailed IF=20, 10 clients`)."""
    c = run.config
    part = str(c.get("partition.name"))
    if part == "dirichlet":
        part += f"({c.get('partition.alpha')})"
    extras = [text.format(c[key]) for key, (text, plain) in SETTING_EXTRAS.items() if c.get(key, plain) != plain]
    return ", ".join([str(c.get("dataset.name")), part, *extras, f"{c.get('clients.num', '?')} clients"])


def _acc_key(members: list[Run]) -> str:
    return "global/acc" if all(m.curve("global/acc") for m in members) else "personal/acc"


def accuracy_curves(runs: list[Run], keys: list[str], panel_of: PanelOf = None) -> dict:
    """panel -> line -> (rounds, mean, std) over seeds, on the rounds every seed evaluated."""
    data = {}
    for panel, lines in _panels(runs, keys, panel_of).items():
        data[panel] = {}
        for line, members in lines.items():
            key = _acc_key(members)
            curves = [m.curve(key) for m in members]
            rounds = sorted(set.intersection(*(set(c) for c in curves)))
            if rounds:
                values = np.array([[c[r] for r in rounds] for c in curves])
                name = line if key == "global/acc" else f"{line} (personal)"
                data[panel][name] = (np.array(rounds), values.mean(0), seed_std(values))
    return data


def accuracy_vs_bytes(runs: list[Run], keys: list[str], panel_of: PanelOf = None) -> dict:
    """panel -> line -> (cumulative MB, mean accuracy) over seeds."""
    data = {}
    for panel, lines in _panels(runs, keys, panel_of).items():
        data[panel] = {}
        for line, members in lines.items():
            key = _acc_key(members)
            curves, sent = [m.curve(key) for m in members], [m.bytes_by_round() for m in members]
            rounds = sorted(set.intersection(*(set(c) for c in curves)))
            if rounds:
                mb = np.mean([[b[r] for r in rounds] for b in sent], axis=0) / 1e6
                data[panel][line] = (mb, np.mean([[c[r] for r in rounds] for c in curves], axis=0))
    return data


def accuracy_vs_time(runs: list[Run], keys: list[str], panel_of: PanelOf = None) -> dict:
    """panel -> line -> (mean cumulative virtual seconds, mean accuracy) over seeds, for runs with a
    virtual clock (`devices.profile`, or an asynchronous strategy)."""
    data = {}
    for panel, lines in _panels([r for r in runs if r.curve(VIRTUAL)], keys, panel_of).items():
        data[panel] = {}
        for line, members in lines.items():
            key = _acc_key(members)
            curves, clocks = [m.curve(key) for m in members], [m.curve(VIRTUAL) for m in members]
            rounds = sorted(set.intersection(*(set(c) & set(t) for c, t in zip(curves, clocks))))
            if rounds:
                data[panel][line] = (np.mean([[t[r] for r in rounds] for t in clocks], axis=0),
                                     np.mean([[c[r] for r in rounds] for c in curves], axis=0))
    return data


def time_to_accuracy(run: Run, target: float) -> float | None:
    """Virtual seconds until the first evaluation at or above `target`; None if never."""
    clock, acc = run.curve(VIRTUAL), run.curve(_acc_key([run]))
    return next((clock[r] for r in sorted(acc) if acc[r] >= target and r in clock), None)


def time_table(runs: list[Run], keys: list[str], target: float) -> str:
    """Markdown: per group, virtual seconds to `target` accuracy (mean ± std over the seeds that
    reach it, and how many do) and in total."""
    timed = [r for r in runs if r.summary is not None and r.curve(VIRTUAL)]
    head = [*keys, "seeds", f"virtual s to {100 * target:g}% (mean ± std)", "reached", "virtual s in total"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for values, members in sorted(group(timed, keys).items(), key=lambda item: tuple(map(str, item[0]))):
        reached = [t for t in (time_to_accuracy(m, target) for m in members) if t is not None]
        total = [m.curve(VIRTUAL)[max(m.curve(VIRTUAL))] for m in members]
        cells = [*("–" if v is None else str(v) for v in values), str(len(members)),
                 _pm(reached, 1.0, 1) if reached else "never", f"{len(reached)}/{len(members)}", _pm(total, 1.0, 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def personal_distribution(runs: list[Run], keys: list[str], panel_of: PanelOf = None) -> dict:
    """panel -> line -> every client's personalized accuracy at the last evaluation, seeds pooled."""
    data: dict[str, dict[str, list[float]]] = {}
    for panel, lines in _panels(runs, keys, panel_of).items():
        for line, members in lines.items():
            pooled = []
            for m in members:
                last = [r["personal/acc_per_client"] for r in m.metrics if r.get("personal/acc_per_client")]
                pooled += last[-1] if last else []
            if pooled:
                data.setdefault(panel, {})[line] = pooled
    return data


def class_frequency(run: Run) -> tuple[np.ndarray, tuple[str, ...]]:
    """Training samples per class over the whole federation, and the class names (if the dataset has
    them), rebuilt from the run's config."""
    from flowerbed.tasks.partitions import build_federation

    fed = build_federation(run.config)
    return fed.label_counts().sum(0), fed.data.class_names


def accuracy_vs_epsilon(runs: list[Run], keys: list[str], panel_of: PanelOf = None) -> dict:
    """panel -> line -> (epsilon, mean accuracy, std) after each evaluated round, over seeds; runs
    without differential privacy -> (None, final accuracy, std), a reference line. Privacy settings
    are lines, not panels (one panel compares the noise levels); empty without a private run."""
    if not any(r.curve("privacy/epsilon") for r in runs):
        return {}
    data: dict[str, dict] = {}
    panel_keys = [k for k in keys if not k.startswith("privacy.") and k != "algorithm.name"]
    for run in runs:
        panel = panel_of(run) if panel_of else (label(panel_keys, tuple(run.config.get(k) for k in panel_keys))
                                                if panel_keys else _setting(run))
        private = str(run.config.get("privacy.name", "none")) != "none"
        line_keys = [k for k in keys if k not in panel_keys and (private or not k.startswith("privacy."))]
        if private:
            line = label(line_keys, tuple(run.config.get(k) for k in line_keys))
        else:
            line = f"{run.config.get('algorithm.name')}, no DP"
        data.setdefault(panel, {}).setdefault(line, []).append(run)
    out: dict[str, dict] = {}
    for panel, lines in data.items():
        out[panel] = {}
        for line, members in lines.items():
            key = _acc_key(members)
            accs, eps = [m.curve(key) for m in members], [m.curve("privacy/epsilon") for m in members]
            if not all(eps):  # no differential privacy: the final accuracy as a reference
                finals = [c[max(c)] for c in accs if c]
                out[panel][line] = (None, float(np.mean(finals)), float(seed_std(np.array(finals))))
                continue
            rounds = sorted(set.intersection(*(set(c) for c in accs), *(set(e) for e in eps)) - {0})
            if rounds:
                acc = np.array([[c[r] for r in rounds] for c in accs])
                out[panel][line] = (np.mean([[e[r] for r in rounds] for e in eps], axis=0), acc.mean(0), seed_std(acc))
    return out


def per_class(runs: list[Run], keys: list[str], panel_of: PanelOf = None) -> dict:
    """For long-tailed runs (partition.imbalance_factor > 1):
    panel -> (class counts, line -> final per-class acc, class names)."""
    long_tailed = [r for r in runs if float(r.config.get("partition.imbalance_factor", 1.0)) > 1
                   and any("global/acc_per_class" in m for m in r.metrics)]
    data = {}
    for panel, lines in _panels(long_tailed, keys, panel_of).items():
        frequencies = [class_frequency(m) for ms in lines.values() for m in ms]
        counts = np.mean([f for f, _ in frequencies], axis=0)
        last = lambda m: [x for x in m.metrics if "global/acc_per_class" in x][-1]["global/acc_per_class"]  # noqa: E731
        finals = {line: np.mean([last(m) for m in ms], axis=0)
                  for line, ms in lines.items()}
        data[panel] = (counts, finals, frequencies[0][1])
    return data


# -- the report ---------------------------------------------------------------------------------
def write_report(paths: list[str | Path], out: Path, title: str = "flowerbed report", intro: str = "",
                 panel_of: PanelOf = None, order: Callable[[Run], object] | None = None, target: float | None = None) -> Path:
    """report.md and its PNGs in `out`; `panel_of` titles figure panels, `order` sorts runs (and so
    panels); `target`: an accuracy whose virtual time-to-reach runs with a virtual clock report."""
    from flowerbed.simulations import plots

    runs = find_runs(paths)
    keys = swept_keys(runs)
    runs.sort(key=order or (lambda r: tuple(str(r.config.get(k)) for k in keys)))
    out.mkdir(parents=True, exist_ok=True)
    unfinished = [r for r in runs if r.summary is None]
    lines = [f"# {title}", ""]
    if intro:
        lines += [intro, ""]
    lines += [f"{len(runs) - len(unfinished)} finished runs from {', '.join(map(str, paths))}; grouped by "
              f"{', '.join(f'`{k}`' for k in keys) or 'nothing (all runs share their config but the seed)'}; "
              "mean ± std over seeds (sample std).", ""]
    if unfinished:
        lines += [f"Unfinished (no summary.json, left out of the table): {', '.join(str(r.path) for r in unfinished)}", ""]
    lines += ["## Final and best metrics", "", table(runs, keys), ""]
    if target is not None and any(r.curve(VIRTUAL) for r in runs):
        lines += [f"## Time to {100 * target:g}% accuracy", "", "Virtual seconds (devices.profile, server/clock.py) until "
                  "the first evaluation at or above the target; the mean is over the seeds that reach it.", "",
                  time_table(runs, keys, target), ""]
    figures = [
        ("Accuracy vs round", "accuracy.png", plots.accuracy_curves(accuracy_curves(runs, keys, panel_of), out / "accuracy.png"),
         "Central test accuracy after each evaluated round; line = mean over seeds, band = ± 1 std."),
        ("Accuracy vs bytes communicated", "accuracy_vs_bytes.png",
         plots.accuracy_vs_bytes(accuracy_vs_bytes(runs, keys, panel_of), out / "accuracy_vs_bytes.png"),
         "The same accuracy against the cumulative model bytes sent server→clients plus clients→server (mean over seeds)."),
        ("Accuracy vs virtual time", "accuracy_vs_time.png",
         plots.accuracy_vs_time(accuracy_vs_time(runs, keys, panel_of), out / "accuracy_vs_time.png", target),
         "The same accuracy against the virtual clock's cumulative seconds (mean over seeds); dotted: the target."),
        ("Per-client personalized accuracy", "personal_accuracy.png",
         plots.personal_boxes(personal_distribution(runs, keys, panel_of), out / "personal_accuracy.png"),
         "Each client's accuracy on its own test split at the last evaluation, all seeds pooled."),
        ("Accuracy vs privacy budget", "accuracy_vs_epsilon.png",
         plots.accuracy_vs_epsilon(accuracy_vs_epsilon(runs, keys, panel_of), out / "accuracy_vs_epsilon.png"),
         "Central test accuracy against the epsilon the accountant reports after each evaluated round (mean over "
         "seeds, band = ± 1 std; log scale); dashed: runs without differential privacy, final accuracy."),
        ("Per-class accuracy vs class frequency (long-tailed runs)", "per_class.png",
         plots.per_class(per_class(runs, keys, panel_of), out / "per_class.png"),
         "Final per-class central test accuracy against the class's training samples in the federation (mean over seeds)."),
    ]
    for heading, name, made, caption in figures:
        if made is not None:
            lines += [f"## {heading}", "", caption, "", f"![{heading}]({name})", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report
