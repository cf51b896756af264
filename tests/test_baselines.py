"""SCAFFOLD, FedNova, FedDyn, MOON, Ditto: client and server state survive a resume and restarted SuperNodes."""

import pytest
import torch

from tests.conftest import run, untimed
from tests.test_deploy import RestartingNodes, _device_run, close

# half the clients per round, so that state left by a round a client skipped must come back from disk
ALGORITHMS = {
    "scaffold": ["algorithm.server_lr=0.8"],  # c in the checkpoint, c_i in client state
    "feddyn": ["algorithm.dyn_alpha=0.1"],  # h in the checkpoint, g_k in client state
    "moon": ["algorithm.contrastive_mu=5"],  # the previous local model in client state
    "ditto": [],  # the personal model in client state, scored in evaluation
    "fednova": ["train.momentum=0.5"],  # stateless: the resumed run takes the same steps
}


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_state_survives_a_resume(tmp_path, algorithm):
    common = [f"algorithm={algorithm}", *ALGORITHMS[algorithm], "clients.fraction_train=0.5", "clients.fraction_evaluate=1.0"]
    straight = run(tmp_path / "straight", *common, "rounds=4")
    run(tmp_path / "cut", *common, "rounds=2")
    resumed = run(tmp_path / "cut", *common, "rounds=4", "resume=true")
    assert untimed(resumed) == untimed(straight)


@pytest.mark.parametrize("algorithm", ["scaffold", "ditto"])
def test_state_survives_supernode_restarts(tmp_path, algorithm):
    """Exported data files and node-local state-dirs, every node restarted before every round: the
    sequential engine's numbers (SCAFFOLD's c_i, Ditto's personal model come back from the state-dir)."""
    overrides = [f"algorithm={algorithm}", "clients.num=3", "rounds=3", "seed=0", "clients.timeout=120"]
    sequential, restarted, grid = _device_run(tmp_path, RestartingNodes, overrides)
    assert grid.restarts == 2 * 3 and len(sequential) == len(restarted) == 4
    for a, b in zip(sequential, restarted):
        assert close(a, b) == [], a["round"]
    saved = torch.load(next((tmp_path / "state" / "node-1" / "1").glob("round-*.pt")), weights_only=False)
    assert {"scaffold": "scaffold/c_i", "ditto": "ditto/personal"}[algorithm] in saved
