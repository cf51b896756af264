"""Secure aggregation on the client: Flower's `secaggplus_mod`, and the hand-over it needs.

`secaggplus_mod` answers the protocol's key-exchange and unmasking stages itself and, in the
stage that collects masked vectors, calls the app with a legacy FitIns and reads a legacy FitRes
back. `message_api_fit` sits between the two (strategies/secagg.py has the server's side): it
gives the train handler the message it always gets ("arrays" named as the model's state dict,
"config") and turns its reply into the FitRes the mod masks. The weight the mod multiplies in
is the reply's `num-examples`, or 1 under central DP, whose noise is calibrated for an unweighted
mean. The metrics are not masked: they reach the server as they are.
"""

from __future__ import annotations

from copy import deepcopy

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat

from flowerbed.tasks.records import SECAGG_ARRAY_KEYS as KEYS  # set by the server's hand-over (strategies/secagg.py)


def message_api_fit(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Legacy FitIns in, the app's train message through, its reply out as a legacy FitRes."""
    fitins = compat.recorddict_to_fitins(msg.content, keep_input=True)
    config = dict(fitins.config)
    keys = str(config.pop(KEYS)).split("\n")
    arrays = ArrayRecord({k: Array(v) for k, v in zip(keys, parameters_to_ndarrays(fitins.parameters))})
    inner = Message(RecordDict({"arrays": arrays, "config": ConfigRecord(config)}), metadata=deepcopy(msg.metadata))
    reply = call_next(inner, context)
    if reply.has_error():
        return reply
    metrics = dict(reply.content["metrics"])
    uniform = str(context.run_config.get("privacy.name", "none")).startswith("central")
    weight = 1 if uniform else int(metrics["num-examples"])
    parameters = ndarrays_to_parameters([a.numpy() for a in reply.content["arrays"].values()])
    fitres = FitRes(Status(Code.OK, ""), parameters, weight, metrics)
    return Message(compat.fitres_to_recorddict(fitres, keep_input=True), reply_to=msg)


def secagg_mods(cfg: dict) -> list[Mod]:
    """Outermost first: the protocol, then the hand-over to the app's train message."""
    return [secaggplus_mod, message_api_fit] if cfg.get("privacy.secagg", False) else []
