"""Each registered algorithm's accuracy after tests/test_defaults_learn.py's short run, as a table;
the test takes its list, round count and per-algorithm model from here.

    python -m flowerbed.experiments.defaults_table --out /tmp/defaults

Runs `flowerbed run algorithm=<name> rounds=6` with nothing else changed (the prompt methods on
the tiny ViT pretrained as the test does; FedBN/FRAug on `cnn_bn`, the model they name when given
one without BatchNorm) and prints the final global and personalized accuracy per algorithm.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from flowerbed.clients.registry import CLIENTS
from flowerbed.simulations.config import group_options
from flowerbed.strategies.fedsto import VARIANTS as DETECTION_ALGORITHMS
from flowerbed.strategies.registry import LOCAL_BATCHNORM, STRATEGIES

ROUNDS = 6  # the slowest starters (Krum, FedMedian, FedAdam on Dir(0.5)) need about this many
# Detection's algorithms (FedSTO and its baselines) need task.name=detection, CreamFL task.name=retrieval:
# tests/test_fedsto.py and tests/test_creamfl.py run them.
OTHER_TASKS = {*DETECTION_ALGORITHMS, "creamfl"}
ALGORITHMS = sorted(set(CLIENTS) & set(STRATEGIES) & set(group_options("algorithm")) - OTHER_TASKS)


def rounds_for(name: str) -> int:
    """ROUNDS of a synchronous algorithm; an asynchronous one's "round" is one server update (FedBuff:
    algorithm.buffer_size replies, FedAsync: one), so it gets as many rounds as take the same number
    of client updates as ROUNDS synchronous rounds of every client."""
    from flowerbed.simulations import config

    if name not in ("fedbuff", "fedasync"):
        return ROUNDS
    cfg = config.load([f"algorithm={name}"], load_data=False)
    per_round = int(cfg["algorithm.buffer_size"]) if name == "fedbuff" else 1
    return ROUNDS * int(cfg["clients.num"]) // per_round


def prompt_method(name: str) -> bool:
    """Trains prompt tokens of a frozen ViT (pFedPG and its baselines): needs the prompted model."""
    from flowerbed.clients.pfedpg import PromptClient

    return issubclass(CLIENTS[name], PromptClient)


def model_overrides(name: str, checkpoint: Path) -> list[str]:
    """What an algorithm needs besides its name: FedBN/FRAug a model with BatchNorm (the one their
    refusal of `cnn` names); the prompt methods the prompted tiny ViT on a backbone pretrained for 10
    epochs on the held-out half of digits' training set (64% test accuracy), into `checkpoint` on
    first use."""
    if name in LOCAL_BATCHNORM:
        return ["model=cnn_bn"]
    if not prompt_method(name):
        return []
    if not checkpoint.exists():
        from flowerbed.simulations import config
        from flowerbed.simulations.pretrain import pretrain

        pretrain(config.load(["model=tiny-vit", "partition.pretrain_fraction=0.5"], load_data=False), epochs=10, out=str(checkpoint))
    return ["model=prompted-tiny-vit", "partition.pretrain_fraction=0.5", f"model.weights={checkpoint}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/defaults"))
    parser.add_argument("algorithms", nargs="*", default=ALGORITHMS)
    args = parser.parse_args()
    from flowerbed.simulations.cli import main as flowerbed

    lines = ["| algorithm | model | global acc | personalized acc |", "|---|---|---|---|"]
    for name in args.algorithms:
        model = model_overrides(name, args.out / "tiny-vit-digits.pt")
        target = args.out / name
        if not (target / "summary.json").exists():
            rounds = rounds_for(name)
            flowerbed(["run", f"algorithm={name}", *model, f"rounds={rounds}", f"evaluate.every={rounds}", f"output.dir={target}",
                       "overwrite=true"])
        last = json.loads((target / "metrics.jsonl").read_text().splitlines()[-1])
        cells = [f"{last[k] * 100:.1f}" if k in last else "–" for k in ("global/acc", "personal/acc")]
        shown = next((m.split("=")[1] for m in model if m.startswith("model=")), "cnn")
        lines.append(f"| {name} | {shown} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
