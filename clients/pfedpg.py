"""pFedPG's client half, shared by the prompt baselines (FedVPT, P_base-only, SingleSet-VPT).

The backbone is the frozen pretrained ViT every client builds locally; only the K prompt tokens
and the personal linear head H_n train. A round: take the received prompt P_n (SingleSet-VPT
receives none and continues from its own), train prompt and head with SGD, reply
dP_n = P~_n - P_n. The head and the adapted prompt P~_n stay in `context.state`.

Evaluation reports `personal/acc` with the adapted P~_n and H_n (the natural inference prompt at
the client) and, when the server sent one, `personal_generated/acc` with the received P_n and
H_n (the paper leaves open which of the two it evaluates).
"""

from __future__ import annotations

import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from torch import nn

from flowerbed.clients.base import ClientAlgorithm
from flowerbed.clients.core import batches_from, sgd, sgd_train

STATE_KEY = "prompt-client"


class PromptClient(ClientAlgorithm):
    def personal_model(self) -> nn.Module:
        """Frozen backbone with this client's own prompt and head (fresh ones before round 1)."""
        model = self.new_model()
        if STATE_KEY in self.context.state:
            saved = self.context.state[STATE_KEY].to_torch_state_dict()
            model.features.prompt.data.copy_(saved["prompt"])
            model.classifier.load_state_dict({"weight": saved["weight"], "bias": saved["bias"]})
        return model

    def keep(self, model: nn.Module) -> None:
        head = {k: v.detach().cpu() for k, v in model.classifier.state_dict().items()}
        state = {"prompt": model.features.prompt.detach().cpu(), **head}
        self.context.state[STATE_KEY] = ArrayRecord(state)

    @staticmethod
    def received(msg: Message) -> torch.Tensor | None:
        arrays = msg.content.array_records.get("arrays")
        return None if arrays is None or "prompt" not in arrays else torch.from_numpy(arrays["prompt"].numpy().copy())

    def train(self, msg: Message) -> RecordDict:
        model = self.personal_model()
        prompt = self.received(msg)
        if prompt is not None:
            model.features.prompt.data.copy_(prompt)
        start = model.features.prompt.detach().clone()
        loss = self.fit(model, msg)
        self.keep(model)
        content = RecordDict({"metrics": MetricRecord({"train/loss": loss, "num-examples": len(self.data.y_labeled)})})
        if prompt is not None:
            content["arrays"] = ArrayRecord({"delta": (model.features.prompt.detach() - start).cpu()})
        return content

    def fit(self, model: nn.Module, msg: Message) -> float:
        """SGD on prompt and head only; the backbone has requires_grad=False and is not in the optimizer."""
        d = self.data
        params = [model.features.prompt, *model.classifier.parameters()]
        batches = batches_from(self.cfg, len(d.y_labeled), self.generator(self.server_round(msg)))
        return sgd_train(model, d.x_labeled, d.y_labeled, batches, sgd(params, self.cfg))

    def evaluate(self, msg: Message) -> RecordDict:
        model = self.personal_model()
        metrics = self.local_metrics(model)
        prompt = self.received(msg)
        if prompt is not None:
            model.features.prompt.data.copy_(prompt)
            generated = self.local_metrics(model, "personal_generated")
            metrics["personal_generated/acc"] = generated["personal_generated/acc"]
        return RecordDict({"metrics": MetricRecord(metrics)})
