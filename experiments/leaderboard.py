"""A leaderboard: every registered algorithm that applies, on the same partitions and seeds.

    python -m flowerbed.experiments.leaderboard --dataset digits --seeds 0,1 --rounds 10   (make leaderboard)

Algorithms are discovered at run time from flowerbed.clients.registry.CLIENTS and flowerbed.strategies.registry.STRATEGIES,
so new ones join without an edit here. Whether one applies to a setting: a client class may say so
itself (`applies_to(setting: dict) -> bool`, with the setting's flat overrides); otherwise the small
rule table below; otherwise it is taken to be a plain image classifier and applies everywhere.
Runs go through `flowerbed sweep` (resumable), the page through `flowerbed report`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Callable

from flowerbed.simulations.sweep import Point, run_sweep

# name -> partition overrides; every setting shares the dataset, model, clients, rounds and seeds
SETTINGS: dict[str, list[str]] = {
    "iid": ["partition=iid"],
    "Dir(0.5)": ["partition=dirichlet", "partition.alpha=0.5"],
    "Dir(0.1)": ["partition=dirichlet", "partition.alpha=0.1"],
    "LT IF=20, Dir(0.5)": ["partition=dirichlet", "partition.alpha=0.5", "partition.imbalance_factor=20"],
    "20% labels, Dir(0.5)": ["partition=dirichlet", "partition.alpha=0.5", "partition.labeled_fraction=0.2"],
}
SEMI_SUPERVISED = {"fedlabel", "fixmatch", "uda"}  # learn from unlabeled samples: only with labels < 100%
# A server update there is one client's (FedAsync) or a buffer's (FedBuff): rounds do not compare; their
# comparison is in virtual time (docs/results/device-time.md).
ASYNCHRONOUS = {"fedasync", "fedbuff"}
PROMPT_BASED = {"pfedpg", "pbase-only", "fedvpt", "singleset-vpt"}  # need a (pretrained) prompted ViT
CPU_SIZED = {"fedloge": ["algorithm.etf_steps=1000", "algorithm.etf_lr=0.001"]}  # as experiment=fedloge-small
# What an algorithm computes per round beyond its local SGD steps on the uploaded model (the budget table).
EXTRA_WORK = {
    "fedlabel": "two runs from the global model per round: `tau_l` steps of the local model on labeled data, then `tau_u` "
                "steps of a second model on pseudo-labeled data; the reply adds both changes to the global model; "
                "pseudo-labeling predicts the unlabeled set with both models",
    "fixmatch": "each step adds an unlabeled batch of the same size (weak view labels, strong view learns)",
    "fedrep": "`head_epochs` epoch(s) of the personal head (body fixed) before the body's steps",
    "fedbabu": "the head never trains; `finetune_epochs` epochs of fine-tuning (whole model, not uploaded) before "
               "each personalized evaluation",
    "fedloge": "the same steps also train psi and phi_k on the detached features; the frozen SSE-C is built once "
               "per process (`etf_steps` Adam steps)",
    "fedprox": "a proximal term: mu/2 times the squared distance to the global model, in every step",
    "scaffold": "the correction c - c_i on every step's gradient; c travels down and c_i's change up with the model "
                "(twice FedAvg's bytes each way)",
    "fednova": "none (the reply's update is divided by a_i); server: the mean update scaled by tau_eff",
    "feddyn": "a linear term <g_k, w> and the squared distance to the global model (times alpha/2) in every step",
    "moon": "two more forward passes per step (the global and the previous local model's features) for the "
            "model-contrastive term",
    "ditto": "a second run of the same local steps: the personal model, pulled toward the global one (lambda)",
    "fedrod": "the same steps also train the personal head (cross-entropy on the detached generic logits plus its own); "
              "the generic head's loss is the balanced softmax (log class counts added to the logits)",
    "fedlc": "none (each logit is shifted down by tau * n_c^(-1/4), n_c the client's label count, before the loss)",
    "uda": "each step adds an unlabeled batch of the same size (sharpened weak-view targets, strong view learns, KL)",
    "ccvr": "at each evaluation: one pass of the global model over the labeled data for per-class feature statistics; "
            "server: the head retrained on virtual features drawn from them (scored, never sent)",
    "fedavgm": "server: SGD with momentum on the averaged update",
    "fedadam": "server: Adam on the averaged update",
    "fedyogi": "server: Yogi on the averaged update",
    "fedtrimmedavg": "server: coordinate-wise trimmed mean instead of the mean",
    "fedmedian": "server: coordinate-wise median instead of the mean",
    "krum": "server: the one update closest to its neighbours instead of the mean",
}


def equal_steps(name: str, steps: int) -> list[str]:
    """`steps` SGD steps from the global model to the uploaded one, for every algorithm.

    FedLabel's reply adds two runs' changes to the global model, the local model's tau_l steps and the
    unlabeled model's tau_u, each set to `steps` (tau = tau', as in the paper).
    """
    if steps <= 0:
        return []
    own = [f"algorithm.tau_l={steps}", f"algorithm.tau_u={steps}"] if name == "fedlabel" else []
    return [f"train.local_steps={steps}", *own]


def _value(overrides: list[str], key: str, default: str) -> str:
    found = [o.split("=", 1)[1] for o in overrides if o.startswith(key + "=")]
    return found[-1] if found else default


def applies(name: str, setting: list[str], model: str) -> bool:
    from flowerbed.clients.registry import CLIENTS

    own = getattr(CLIENTS[name], "applies_to", None)
    if callable(own):
        return bool(own({o.split("=", 1)[0]: o.split("=", 1)[1] for o in setting + [f"model={model}"]}))
    if name in ASYNCHRONOUS:
        return False
    if name in PROMPT_BASED or "Prompt" in CLIENTS[name].__name__:
        return model.startswith("prompted")
    if name in SEMI_SUPERVISED:
        return float(_value(setting, "partition.labeled_fraction", "1.0")) < 1.0
    return True


def algorithms() -> list[str]:
    """Registered on both sides and with a config option to compose (simulations/conf/algorithm/)."""
    from flowerbed.clients.registry import CLIENTS
    from flowerbed.simulations.config import group_options
    from flowerbed.strategies.registry import STRATEGIES

    return sorted(set(CLIENTS) & set(STRATEGIES) & set(group_options("algorithm")))


def folder(setting: str) -> str:
    """`LT IF=20, Dir(0.5)` -> `LTIF20_Dir0.5`: a folder name Hydra accepts in output.dir."""
    return "".join(c for c in setting.replace("%", "pct").replace(",", "_") if c.isalnum() or c in "._-")


def points(dataset: str, model: str, seeds: list[int], rounds: int, clients: int, root: Path,
           only: set[str] | None = None, extra: list[str] | None = None, steps: int = 0) -> list[Point]:
    out = []  # seed-major: a sweep cut short still covers every algorithm and setting once
    for seed in seeds:
        for setting, overrides in SETTINGS.items():
            for name in algorithms():
                if not applies(name, overrides, model) or (only and name not in only):
                    continue
                run = [f"dataset={dataset}", f"model={model}", f"algorithm={name}", *overrides, *CPU_SIZED.get(name, []),
                       *equal_steps(name, steps), f"clients.num={clients}", f"rounds={rounds}", *(extra or []), f"seed={seed}"]
                out.append(Point(f"{folder(setting)}/{name}/seed{seed}", run, root / folder(setting) / name / f"seed{seed}"))
    return out


def pivot(runs, metric: str, setting_of) -> str:
    """Algorithms x settings, `metric` in % as mean ± std over seeds; rows by their mean over settings."""
    from flowerbed.simulations.report import mean_std

    cells: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        if run.summary is not None and run.summary.get(metric) is not None:
            cells.setdefault(str(run.config["algorithm.name"]), {}).setdefault(setting_of(run), []).append(run.summary[metric])
    if not cells:
        return ""
    settings = [s for s in SETTINGS if any(s in row for row in cells.values())]
    rows = sorted(cells, key=lambda a: -sum(mean_std(v)[0] for v in cells[a].values()) / len(cells[a]))
    lines = ["| algorithm | " + " | ".join(settings) + " |", "|---|" + "---|" * len(settings)]
    for algo in rows:
        parts = []
        for s in settings:
            mean, std = mean_std(cells[algo].get(s, []))
            parts.append("–" if s not in cells[algo] else f"{100 * mean:.1f} ± {100 * std:.1f}")
        lines.append(f"| {algo} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def budget(runs) -> str:
    """One row per algorithm: its local steps per round, optimizer, own settings and extra work,
    read from a finished run's config (every seed and setting of an algorithm shares them)."""
    first: dict[str, dict] = {}
    for run in runs:
        first.setdefault(str(run.config["algorithm.name"]), run.config)
    lines = ["| algorithm | local SGD steps per round | batch, lr, momentum | algorithm settings | beyond those steps |",
             "|---|---|---|---|---|"]
    for name in sorted(first):
        c = first[name]
        steps = int(c["train.local_steps"])
        plan = f"{steps}" if steps > 0 else f"{c['train.local_epochs']} epochs"
        own = ", ".join(f"`{k}={c['algorithm.' + k]}`" for k in own_settings(name)) or "–"
        lines.append(f"| {name} | {plan} | {c['train.batch_size']}, {c['train.lr']}, {c['train.momentum']} | {own} | "
                     f"{EXTRA_WORK.get(name, '–')} |")
    return "\n".join(lines)


def own_settings(name: str) -> list[str]:
    """The keys an algorithm's own config file (simulations/conf/algorithm/<name>.yaml) sets."""
    from omegaconf import OmegaConf

    from flowerbed.simulations.config import CONF_DIR

    return [k for k in OmegaConf.to_container(OmegaConf.load(CONF_DIR / "algorithm" / f"{name}.yaml")) if k != "name"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--set", dest="extra", action="append", default=[],
                        help="extra override for every run, e.g. train.local_epochs=1")
    parser.add_argument("--steps", type=int, default=0,
                        help="equal compute: S local SGD steps per round for every algorithm (FedLabel: tau_l = tau_u = S)")
    parser.add_argument("--report-only", action="store_true", help="rewrite the page from the finished runs in --dir")
    parser.add_argument("--algorithms", help="comma-separated subset (quick checks); default: all that apply")
    parser.add_argument("--dir", default="runs/leaderboard", help="sweep folder (a rerun skips finished runs)")
    parser.add_argument("--out", default="docs/results", help="leaderboard[-DATASET].md goes here, figures in a folder beside it")
    return parser


def command(args: argparse.Namespace) -> str:
    """The command line that regenerates the page, as the page quotes it."""
    return (f"python -m flowerbed.experiments.leaderboard --dataset {args.dataset} --model {args.model} --seeds {args.seeds} "
            f"--rounds {args.rounds} --clients {args.clients} --jobs {args.jobs}"
            + (f" --steps {args.steps}" if args.steps else "")
            + "".join(f" --set {x}" for x in args.extra)
            + f" --dir {args.dir} --out {args.out}")


def end_load(args: argparse.Namespace) -> float:
    """The 1-minute load average when the sweep ended (main keeps it beside the runs: `--report-only`
    rewrites the page later, when the load says nothing about them)."""
    path = Path(args.dir).resolve() / args.dataset / "load.json"
    return float(json.loads(path.read_text())) if path.exists() else float("nan")


def intro(args: argparse.Namespace, runs: list, todo: list[Point], total: float, wall: float, only: set[str] | None,
          setting_of: Callable) -> str:
    """The page above the report's own tables: the setting, how to regenerate it, what it cost, the
    budget table and the accuracy pivots."""
    algos = sorted({str(r.config["algorithm.name"]) for r in runs})
    skipped = [a for a in algorithms() if a not in algos and (only is None or a in only)]
    personal = pivot(runs, "final/personal/acc", setting_of)
    return "\n".join([
        f"Every registered algorithm that applies, on {args.dataset} with the `{args.model}` model, {args.clients} clients "
        f"(all train every round), {args.rounds} rounds, seeds {args.seeds}"
        + (f", {', '.join(f'`{x}`' for x in args.extra)}" if args.extra else "")
        + (f", **{args.steps} local SGD steps per round for every algorithm** (FedLabel: tau_l = tau_u = {args.steps}; "
           "its reply adds both runs' changes; every other uploaded model took that many steps from the global one)" if args.steps else "")
        + "; the flowerbed defaults otherwise (" + ("" if args.steps else "2 local epochs, ") + "batch 16, SGD lr 0.05). "
        "Same partitions and seeds for every algorithm.",
        "",
        f"Regenerate: `{command(args)}` (`make leaderboard` runs the same with `--dir runs/leaderboard`); runs land in "
        f"`{args.dir}/{args.dataset}/` and a rerun skips finished ones.",
        "",
        f"Wall time: **{total / 60:.1f} min** for the {len(todo)} runs, one at a time "
        f"({sum(float(r.summary.get('train_time_s', 0)) for r in runs if r.summary) / 60:.1f} min of it in the round loops, "
        f"the rest data, model and process setup), on a {os.cpu_count()}-core CPU, load average {end_load(args):.1f} "
        "at the end of the runs (other jobs count in it)"
        + (f"; this invocation took {wall / 60:.1f} min (earlier ones ran the rest)."
           if abs(wall - total) > 30 and not args.report_only else "."),
        "",
        f"Algorithms: {', '.join(algos)}. Not applicable here: {', '.join(skipped) or 'none'} "
        f"(prompt-based methods need a prompted ViT on a pretrained backbone, see `experiment=pfedpg-small`; FedBN and "
        f"FRAug need a model with BatchNorm, see `experiment=fraug-digits`; CreamFL and FedSTO's family learn "
        f"retrieval and detection; the asynchronous FedAsync and FedBuff count server updates, not rounds: "
        f"docs/results/device-time.md compares them in virtual time). "
        f"Semi-supervised methods ({', '.join(sorted(SEMI_SUPERVISED))}) run only with 20% labels, where the "
        "others train on the labeled 20% alone.",
        "",
        "A short budget on purpose (it must fit a 2-core CPU): the tables rank how far each method gets in "
        f"{args.rounds} rounds, not where it would converge; the personalized methods' global models are especially "
        "far from their end points.",
        "",
        "## Each algorithm's budget",
        "",
        f"Every algorithm: {args.rounds} rounds, {args.clients} clients, all of them training every round. Per round and "
        "client (settings as the runs resolved them; `algorithm.etf_norm=auto` is 3.0 for a BatchNorm-free model "
        "such as `cnn`, 0.1 with BatchNorm):",
        "",
        budget(runs),
        "",
        "## Final central test accuracy (%), mean ± std over seeds",
        "",
        "The global model on the held-out test set after the last round (rows: best mean first).",
        "",
        pivot(runs, "final/global/acc", setting_of),
        "",
        *(["## Final personalized accuracy (%), mean ± std over seeds", "",
           "Mean over clients of each client's model on its own test split (FedAvg-like methods: the global model).", "",
           personal, ""] if personal else []),
    ])


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    from flowerbed.simulations.report import find_runs, write_report

    args = build_parser().parse_args(argv)
    console = Console()
    root = Path(args.dir).resolve() / args.dataset
    seeds = [int(s) for s in args.seeds.split(",")]
    only = set(args.algorithms.split(",")) if args.algorithms else None
    todo = points(args.dataset, args.model, seeds, args.rounds, args.clients, root, only, args.extra, args.steps)
    start = time.perf_counter()
    if not args.report_only:
        run_sweep(todo, root, args.jobs, console)
        (root / "load.json").write_text(json.dumps(os.getloadavg()[0]))
    wall = time.perf_counter() - start
    times = json.loads((root / "times.json").read_text()) if (root / "times.json").exists() else {}
    total = sum(times.get(p.name, 0.0) for p in todo)
    stem = "leaderboard" if args.dataset == "digits" else f"leaderboard-{args.dataset}"
    folder_to_setting = {folder(s): s for s in SETTINGS}
    setting_of = lambda run: folder_to_setting[run.path.parent.parent.name]  # noqa: E731
    runs = [r for r in find_runs([root]) if r.path.parent.parent.name in folder_to_setting
            and (only is None or r.config["algorithm.name"] in only)]
    page_intro = intro(args, runs, todo, total, wall, only, setting_of)
    report = write_report([root], Path(args.out) / stem, title=f"Leaderboard: {args.dataset}", intro=page_intro, panel_of=setting_of,
                          order=lambda r: (list(SETTINGS).index(setting_of(r)), str(r.config["algorithm.name"])))
    # the page itself sits in docs/results/ with its figures in docs/results/<stem>/
    page = Path(args.out) / f"{stem}.md"
    text = report.read_text().replace("](", f"]({stem}/").replace(f"]({stem}/http", "](http")
    page.write_text(text.replace(f"from {root}", f"from `{args.dir}/{args.dataset}`"))
    report.unlink()
    console.print(f"leaderboard: {page} ({wall / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
