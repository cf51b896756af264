"""`flwr run .` writes a run directory under the same rules as `flowerbed run` (issue 31, defects 1-2).

Through Flower's own CLI and a real simulation SuperLink (own FLWR_HOME and free ports, stopped by
PID; runtime dependency installation off): an earlier run is refused with one line and left as it
was, resume=true continues it, a bad value is one line with nothing written, and a relative
output.dir lands next to FLWR_HOME with its absolute path in the log.
"""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from tests.conftest import ROOT, read_metrics, run

SMOKE = "clients.num=4 rounds=2"  # experiment=smoke, as -c keys


def test_flwr_run_refuses_resumes_validates_and_says_where(tmp_path):
    from flowerbed.simulations.engines.flower import CONNECTION, simulation_superlink

    earlier = tmp_path / "earlier"
    run(earlier, "partition.imbalance_factor=20")  # flowerbed run, sequential engine
    files = {p: p.read_bytes() for p in earlier.rglob("*") if p.is_file()}

    def flwr(env: dict, config: str) -> str:
        command = ["flwr", "run", str(ROOT), CONNECTION, "--stream", "-c", config, "--federation-config", "num-supernodes=4"]
        done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=400, stdin=subprocess.DEVNULL)
        return done.stdout + done.stderr

    home = tmp_path / "flwr-home"
    with simulation_superlink(home) as env:
        refused = flwr(env, f"output.dir='{earlier}' {SMOKE}")
        assert {p: p.read_bytes() for p in earlier.rglob("*") if p.is_file()} == files  # not a byte changed

        resumed = flwr(env, f"output.dir='{earlier}' clients.num=4 rounds=3 partition.imbalance_factor=20.0 resume=true")
        bad = flwr(env, f"output.dir='{tmp_path / 'bad'}' partition.alpha=0.0 {SMOKE}")
        relative = flwr(env, f"output.dir='rel/run' {SMOKE}")
        statuses = [r["status"] for r in json.loads(subprocess.run(
            ["flwr", "ls", CONNECTION, "--format", "json"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60).stdout)["runs"]]

    def said(output: str, marker: str) -> list[str]:
        return [line.split(marker, 1)[1] for line in output.splitlines() if marker in line]

    print(refused[-2000:], resumed[-1500:], bad[-1500:], relative[-1500:], statuses, sep="\n-----\n")
    assert said(refused, "flowerbed: error: ")[0] == (f"output.dir='{earlier}' holds an earlier run: resume=true continues it, "
                                                     "overwrite=true replaces it")
    assert [m["round"] for m in read_metrics(earlier)] == [0, 1, 2, 3]  # continued from round 2's checkpoint
    assert yaml.safe_load((earlier / "config.yaml").read_text())["partition.imbalance_factor"] == 20.0
    assert said(bad, "flowerbed: error: ")[0] == "partition.alpha=0.0 is not valid: a number > 0"
    assert not (tmp_path / "bad").exists()
    results = tmp_path / "rel" / "run"  # FLWR_HOME's parent, whatever folder the SuperLink was started in
    assert said(relative, "flowerbed: results in ") == [str(results)] * 2  # at the start and at the end
    assert (results / "summary.json").exists()
    assert sorted(statuses) == sorted(["finished:failed", "finished:completed", "finished:failed", "finished:completed"])


def test_flower_finds_both_components_while_flowerbed_is_still_being_imported(tmp_path):
    """Flower imports the ServerApp in one thread and, at the same time, looks the ClientApp's module
    up in another (flwr.simulation.run_simulation). The second can see `flowerbed` half imported: in
    sys.modules, its path still only flowerbed/ (flowerbed/__init__.py extends it). CI failed on
    exactly that with "No module named 'flowerbed.clients'"; both components must be found then."""
    script = tmp_path / "half_imported.py"
    script.write_text(
        "import sys, tomllib, types\n"
        "from flwr.supercore.object_ref import validate\n"
        "root = sys.argv[1]\n"
        "half = types.ModuleType('flowerbed')\n"
        "half.__path__ = [root + '/flowerbed']  # as the import system sets it before __init__ runs\n"
        "sys.modules['flowerbed'] = half\n"
        "components = tomllib.load(open(root + '/pyproject.toml', 'rb'))['tool']['flwr']['app']['components']\n"
        "for ref in components.values():\n"
        "    try:\n"
        "        print(ref, validate(ref, project_dir=root))\n"
        "    except ImportError as err:\n"
        "        print(ref, err)\n"
    )
    done = subprocess.run([sys.executable, str(script), str(ROOT)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["flowerbed.server_app:app (True, None)", "flowerbed.client_app:app (True, None)"], done.stdout
