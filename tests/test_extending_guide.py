"""docs/extending.md runs: its code, written where it says, trains; so the guide cannot rot.

The project is copied to a temporary folder; every block of the guide whose header names a file
(```python file=clients/fednova.py) is written there, every registry block
(```python add-to=clients/registry.py:CLIENTS) adds its import and entry lines to that registry,
and then, in one Python process in the copy: the guide's test file and the registry tests run
under pytest, and the guide's commands (```bash run) run in order, `flowerbed run|sweep` with
`experiment=smoke` first (4 clients, 2 rounds; the command's own overrides still win).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from flowerbed.deploy.processes import PROJECT_ROOT

GUIDE = PROJECT_ROOT / "docs" / "extending.md"
BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.S | re.M)


def blocks() -> list[tuple[str, str, str]]:
    """(language, header, body) of every fenced block of the guide."""
    return [(lang, header.strip(), body) for lang, header, body in BLOCK.findall(GUIDE.read_text())]


def add_to_registry(path: Path, registry: str, block: str) -> None:
    """The block's import lines after the file's last import; its `"name": ...,` lines at the end of `registry`."""
    lines = path.read_text().splitlines()
    imports = [line for line in block.splitlines() if line.startswith(("from ", "import "))]
    entries = [line for line in block.splitlines() if re.match(r'^\s+"[\w-]+":', line)]
    assert imports and entries, block
    start = next(i for i, line in enumerate(lines) if line.startswith(registry))
    end = next(i for i in range(start, len(lines)) if lines[i] == "}")
    lines[end:end] = entries
    last_import = max(i for i, line in enumerate(lines[:start]) if line.startswith(("from ", "import ")))
    lines[last_import + 1:last_import + 1] = imports
    path.write_text("\n".join(lines) + "\n")


DRIVER = r'''
import os, runpy, shlex, sys
import pytest
from flowerbed.simulations.cli import main

tests, commands = sys.argv[1].split(","), sys.argv[2:]
if pytest.main(["-q", "-p", "no:cacheprovider", *tests]) != 0:
    sys.exit("the guide's tests failed")
for line in commands:
    print("$", line, flush=True)
    words = shlex.split(line.replace("$PWD", os.getcwd()))
    if words[0] == "python":
        runpy.run_path(words[1], run_name="__main__")
        continue
    assert words[0] == "flowerbed", line
    if words[1] in ("run", "sweep"):
        words.insert(2, "experiment=smoke")
    if main(words[1:]) != 0:
        sys.exit(f"failed: {line}")
'''


def test_the_extending_guide_runs(tmp_path):
    copy = tmp_path / "project"
    shutil.copytree(PROJECT_ROOT, copy, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "docs", "__pycache__", "*.egg-info"))
    commands = []
    for lang, header, body in blocks():
        if header.startswith("file="):
            target = copy / header.removeprefix("file=")
            assert not target.exists(), f"the guide overwrites {target.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body)
        elif header.startswith("add-to="):
            path, registry = header.removeprefix("add-to=").split(":")
            add_to_registry(copy / path, registry, body)
        elif header == "run":
            commands += [line for line in body.splitlines() if line.strip()]
        else:  # nothing in the guide goes untested
            assert lang not in ("python", "yaml", "bash"), f"an untested {lang} block: {body[:80]!r}"
    assert all((copy / path).exists() for path in ("clients/fednova.py", "tasks/lenet.py", "tasks/smoothed.py"))
    assert len(commands) >= 8

    tests = ["tests/test_fednova.py", "tests/test_smoothed.py",
             "tests/test_registries.py::test_client_and_server_registries_hold_the_same_names",
             "tests/test_registries.py::test_every_algorithm_config_names_a_registered_algorithm"]
    env = {**_env(), "PYTHONPATH": str(copy), "FLOWERBED_CACHE": str(tmp_path / "cache")}  # decoded images stay here
    result = subprocess.run([sys.executable, "-c", DRIVER, ",".join(tests), *commands], cwd=copy, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "5 passed" in result.stdout  # the guide's three tests and the two registry tests
    assert (copy / "runs" / "fednova" / "report" / "accuracy.png").exists()
    assert (copy / "wine.npz").exists() and (copy / "digit-images" / "9").is_dir()


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
