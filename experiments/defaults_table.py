"""Each registered algorithm's accuracy after tests/test_defaults_learn.py's short run, as a table.

    python -m experiments.defaults_table --out /tmp/defaults

Runs `flowerbed run algorithm=<name> rounds=6` with nothing else changed (the prompt methods on
the tiny ViT pretrained as the test does; FedBN/FRAug on `cnn_bn`, the model they name when given
one without BatchNorm) and prints the final global and personalized accuracy per algorithm.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tests.test_defaults_learn import ALGORITHMS, ROUNDS, model_overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/defaults"))
    parser.add_argument("algorithms", nargs="*", default=ALGORITHMS)
    args = parser.parse_args()
    from simulations.cli import main as flowerbed

    lines = ["| algorithm | model | global acc | personalized acc |", "|---|---|---|---|"]
    for name in args.algorithms:
        model = model_overrides(name, args.out / "tiny-vit-digits.pt")
        target = args.out / name
        if not (target / "summary.json").exists():
            flowerbed(["run", f"algorithm={name}", *model, f"rounds={ROUNDS}", f"evaluate.every={ROUNDS}", f"output.dir={target}",
                       "overwrite=true"])
        last = json.loads((target / "metrics.jsonl").read_text().splitlines()[-1])
        cells = [f"{last[k] * 100:.1f}" if k in last else "–" for k in ("global/acc", "personal/acc")]
        shown = next((m.split("=")[1] for m in model if m.startswith("model=")), "cnn")
        lines.append(f"| {name} | {shown} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
