"""The `flower` engine (Ray, through `flwr run` and a real SuperLink) gives the sequential numbers."""

import os
import subprocess

import pytest

from tests.conftest import run


def test_flower_engine_matches_sequential_engine(tmp_path):
    overrides = ("clients.num=5", "rounds=3", "clients.fraction_train=0.6", "partition.alpha=0.3")
    sequential = run(tmp_path / "seq", *overrides)
    flower = run(tmp_path / "ray", *overrides, "engine=flower")
    assert len(flower) == len(sequential) == 4
    for a, b in zip(sequential, flower):
        for key, value in a.items():
            if key.startswith("time/"):
                continue
            # torch threads are pinned (train.num_threads=1) and replies are summed in client-id
            # order, so the engines agree to the last bit; allow float noise all the same
            if isinstance(value, float):
                assert abs(value - b[key]) <= 1e-6, (a["round"], key)
            else:
                assert value == b[key], (a["round"], key)
    # the engine stopped everything it started (its FLWR_HOME is a flowerbed-flwr-<this pid>-* temp folder)
    left = subprocess.run(["pgrep", "-f", f"flowerbed-flwr-{os.getpid()}-"], capture_output=True, text=True).stdout.split()
    assert left == []


def test_flwr_run_on_a_simulation_of_the_wrong_size_fails_at_once(tmp_path):
    """`flwr run . --stream` on Flower's default simulation federation (2 SuperNodes) with
    clients.num=10: one line saying how to size the federation, the run failed, nothing written,
    instead of a silent wait of clients.timeout (600 s); 12 SuperNodes (two without a partition)
    likewise. Through Flower's own CLI and a real SuperLink (own FLWR_HOME and ports, stopped by PID)."""
    import json

    from tests.conftest import ROOT as PROJECT_ROOT  # the checkout's own pyproject.toml: `flwr run .` there
    from flowerbed.simulations.engines.flower import CONNECTION, simulation_superlink

    run_dir = tmp_path / "run"
    submit = ["flwr", "run", str(PROJECT_ROOT), CONNECTION, "--stream", "-c", f"output.dir='{run_dir}' clients.timeout=600.0"]
    with simulation_superlink(tmp_path / "flwr-home") as env:
        outputs = [subprocess.run(submit + extra, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
                                  stdin=subprocess.DEVNULL).stdout for extra in ([], ["--federation-config", "num-supernodes=12"])]
        listed = subprocess.run(["flwr", "ls", CONNECTION, "--format", "json"], env=env, cwd=PROJECT_ROOT,
                                capture_output=True, text=True, timeout=60)
    size_it = 'size it with `flwr run . --federation-config "num-supernodes=10"`'
    expected = [f'flowerbed: error: clients.num=10 is not valid: at most the 2 SuperNodes of this simulation federation: '
                f'{size_it}, or run fewer clients with -c "clients.num=2"',
                f'flowerbed: error: clients.num=10 is not valid: the 12 SuperNodes of this simulation federation, one per client: '
                f'{size_it}, or run more clients with -c "clients.num=12"']
    for output, line in zip(outputs, expected):
        said = [text for text in output.splitlines() if "flowerbed: error:" in text]
        print(said[0] if said else output[-3000:])
        assert said and said[0].endswith(line), output[-3000:]
    assert [r["status"] for r in json.loads(listed.stdout)["runs"]] == ["finished:failed"] * 2
    assert not run_dir.exists()


def test_a_deployment_says_how_many_nodes_it_is_waiting_for(tmp_path, caplog, monkeypatch):
    """SuperNodes of a deployment connect over time: the server logs "waiting for nodes: 2 of 4
    connected" every few seconds (NODES_LOG_EVERY_S; shortened here) and starts once all are there;
    if they never are, one line after clients.timeout."""
    import logging
    import time

    import pytest

    from flowerbed.clients.app import app as client_app
    from flowerbed.server import loop
    from flowerbed.server.app import app as server_app
    from flowerbed.simulations import config
    from flowerbed.simulations.engines.inprocess import InProcessGrid, run_in_process
    from flowerbed.tasks.errors import RunAborted
    from tests.conftest import read_metrics

    class LateNodes(InProcessGrid):
        """Two SuperNodes at first, one more every second (as devices coming online), up to `limit`."""

        limit = 4

        def get_node_ids(self):
            self.first = getattr(self, "first", time.monotonic())
            return list(self.contexts)[:min(self.limit, 2 + int(time.monotonic() - self.first))]

    monkeypatch.setattr(loop, "NODES_LOG_EVERY_S", 0.4)
    caplog.set_level(logging.INFO, logger="flwr")
    flat = config.load(["experiment=smoke", f"output.dir={tmp_path / 'run'}"])
    run_in_process(server_app, client_app, flat, 4, LateNodes)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting for nodes")]
    print(said[0])
    assert said[0] == "waiting for nodes: 2 of 4 connected (clients.num; giving up after clients.timeout=600s)"
    assert "waiting for nodes: 3 of 4 connected" in " ".join(said)
    assert read_metrics(tmp_path / "run")[-1]["clients/trained"] == 4

    LateNodes.limit = 3  # the fourth device never comes
    flat = config.load(["experiment=smoke", "clients.timeout=2", f"output.dir={tmp_path / 'run2'}"])
    with pytest.raises(RunAborted, match=r"^only 3 of clients.num=4 nodes connected within clients.timeout=2s$"):
        run_in_process(server_app, client_app, flat, 4, LateNodes)


def test_flower_engine_draws_the_same_privacy_noise(tmp_path):
    """Central DP with adaptive client-side clipping: the server's noise (on the model and on the
    clipped count) and the clients' mods run in other processes on Ray, seeded by the run."""
    overrides = ("clients.num=5", "rounds=2", "clients.fraction_train=0.6", "privacy=central-adaptive",
                 "privacy.clipping=client", "privacy.noise_multiplier=0.2", "privacy.clipped_count_stddev=1")
    sequential = run(tmp_path / "seq", *overrides)
    flower = run(tmp_path / "ray", *overrides, "engine=flower")
    assert sequential[-1]["privacy/epsilon"] > 0 and len(sequential) == len(flower) == 3
    for a, b in zip(sequential, flower):
        for key in ("global/loss", "global/acc", "privacy/epsilon", "privacy/clipping_norm", "train/loss"):
            assert a["round"] == 0 or key in a and key in b, (a["round"], key)  # None == approx(None) would pass
            assert a.get(key) == pytest.approx(b.get(key), abs=1e-6), (a["round"], key)
