"""FedBN's client half (Li et al., ICLR 2021): BatchNorm stays on the client, the rest is FedAvg.

Every BatchNorm layer's affine weight and bias and its running statistics (`tasks.models.
batchnorm_keys`) are this client's own: kept in `context.state["fedbn/bn"]` (written to the
node's state-dir by clients/state.py), never sent. The server sends and averages everything else.
Before its first round a client uses the BatchNorm layers of the run's starting model, which is
also what every other client starts from: the seed's initial ones, or the ones of `model.init`,
which the server sends for that (strategies/fedbn.py). Local training is FedAvg's; personalized accuracy is the
received shared weights with the client's own BatchNorm on its local test set.
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Message
from torch import nn

from flowerbed.clients.fedavg import FedAvgClient
from flowerbed.tasks.models import BATCHNORM_RECORD, batchnorm_keys, build_model
from flowerbed.tasks.records import snapshot, tensors

STATE_KEY = "fedbn/bn"


class LocalBatchNorm:
    """Mixed into a client half: the model arrives without BatchNorm and leaves without it."""

    context: object

    @staticmethod
    def applies_to(setting: dict) -> bool:
        """For the leaderboard (experiments/leaderboard.py): only models that have BatchNorm layers."""
        try:
            model = build_model(str(setting.get("model", "cnn")), (3, 32, 32), 10, 0)
        except Exception:  # a model that needs other inputs or pretrained weights: not one for FedBN here
            return False
        return bool(batchnorm_keys(model.state_dict()))

    def model_from(self, msg: Message) -> nn.Module:
        model = self.new_model()
        own = model.state_dict()
        received = {k: v for k, v in tensors(msg.content["arrays"]).items() if k in own}
        missing = set(own) - set(received)
        if missing - set(batchnorm_keys(own)):
            raise ValueError(f"the server sent no {sorted(missing)[0]}: only BatchNorm may be missing")
        if STATE_KEY in self.context.state:
            received.update(self.context.state[STATE_KEY].to_torch_state_dict())
        elif BATCHNORM_RECORD in msg.content.array_records:  # the run's starting BatchNorm (model.init)
            received.update({k: v for k, v in tensors(msg.content[BATCHNORM_RECORD]).items() if k in own})
        model.load_state_dict({**own, **received})
        return model

    def keep_batchnorm(self, model: nn.Module) -> None:
        state = model.state_dict()
        self.context.state[STATE_KEY] = ArrayRecord({k: state[k].detach().cpu() for k in batchnorm_keys(state)})

    def reply_arrays(self, model: nn.Module) -> ArrayRecord:
        state = model.state_dict()
        local = set(batchnorm_keys(state))
        return snapshot({k: v for k, v in state.items() if k not in local})


class FedBNClient(LocalBatchNorm, FedAvgClient):
    def fit(self, model: nn.Module, msg: Message) -> dict:
        metrics = super().fit(model, msg)
        self.keep_batchnorm(model)
        return metrics
