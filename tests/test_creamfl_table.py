"""experiments/creamfl_table.py end to end on a generated image-caption set: every method, 1 seed, 2 rounds."""

from __future__ import annotations

import re
import sys
from contextlib import redirect_stdout
from io import StringIO

import pytest

from flowerbed.experiments import creamfl_table
from flowerbed.experiments.runs import history
from tests.shapes import make_shapes

SEED = 0


@pytest.fixture(scope="module")
def tool_output(tmp_path_factory):
    """The tool's printed report and its output folder, after one pass over every method."""
    root = tmp_path_factory.mktemp("creamfl-table")
    shapes = make_shapes(root / "shapes", 100)
    out = root / "runs"
    argv = ["creamfl_table", f"dataset.path={shapes}", f"dataset.cache_dir={root / 'cache'}", "rounds=2",
            "partition.public_images=20", "--out", str(out), "--seeds", str(SEED)]
    patch = pytest.MonkeyPatch()
    patch.setattr(sys, "argv", argv)
    printed = StringIO()
    with redirect_stdout(printed):
        creamfl_table.main()
    patch.undo()
    return printed.getvalue(), out


def test_every_method_ran_and_the_files_exist(tool_output):
    printed, out = tool_output
    for method in creamfl_table.METHODS:
        assert (creamfl_table.run_dir(out, method, SEED) / "summary.json").exists()
    assert (out / "rsum.png").stat().st_size > 0 and (out / "retrievals.png").stat().st_size > 0
    assert f"wrote {out / 'rsum.png'}" in printed and f"wrote {out / 'retrievals.png'}" in printed


def test_the_table_holds_the_runs_final_numbers(tool_output):
    printed, out = tool_output
    rows = {line.split(" | ")[0].strip("| "): line for line in printed.splitlines() if line.startswith("| ") and "±" in line}
    assert len(rows) == len(creamfl_table.METHODS)
    for method in creamfl_table.METHODS:
        lines = history(creamfl_table.run_dir(out, method, SEED))
        final = [m for m in lines if "global/rsum" in m][-1]
        assert final["round"] == 2
        row = rows[creamfl_table.LABELS[method]]
        numbers = re.findall(r"(-?[\d.]+) ± ([\d.]+)", row)
        expected = [final[f"global/{k}"] for k in creamfl_table.RECALLS]
        assert [float(mean) for mean, _ in numbers[:7]] == pytest.approx(expected, abs=0.051)
        assert all(float(std) == 0 for _, std in numbers[:7])  # one seed
        mb_up = float(row.split(" | ")[8])
        assert mb_up == pytest.approx(sum(m["comm/bytes_up"] for m in lines[1:]) / 2 / 1e6, abs=0.006)


def test_representations_travel_for_creamfl_and_weights_for_fedavg(tool_output):
    """CreamFL's clients send 2 x public pairs x 64 floats each; FedAvg's send their whole dual encoder."""
    _, out = tool_output
    cream = history(creamfl_table.run_dir(out, "creamfl", SEED))[1]["comm/bytes_up"]
    fedavg = history(creamfl_table.run_dir(out, "fedavg", SEED))[1]["comm/bytes_up"]
    assert 5 * 2 * 20 * 64 * 4 <= cream < 1.1 * 5 * 2 * 20 * 64 * 4
    assert fedavg > 10 * cream


def test_the_orderings_are_reported(tool_output):
    printed, _ = tool_output
    assert re.search(r"CreamFL - public-only = [+-][\d.]+ rsum; 2 std = [\d.]+: (holds|fails)", printed)
    assert re.search(r"CreamFL - representation mean = [+-][\d.]+ rsum: (holds|fails)", printed)
