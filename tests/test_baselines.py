"""SCAFFOLD, FedNova, FedDyn, MOON, Ditto: client and server state survive a resume."""

import pytest

from tests.conftest import run, untimed

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
