"""The ClientApp: routes each message to the client half the run config names."""

from __future__ import annotations

from logging import ERROR

from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode
from flwr.common.logger import log

from flowerbed.clients import faults, state
from flowerbed.clients.data import client_index
from flowerbed.clients.privacy import privacy_mod
from flowerbed.clients.registry import client_class
from flowerbed.tasks.errors import ConfigError

app = ClientApp()


def _handle(msg: Message, context: Context, handler: str) -> Message:
    try:
        return _run(msg, context, handler)
    except ConfigError as err:  # e.g. a device's data-path
        return _failed(msg, err)


def _failed(msg: Message, err: ConfigError) -> Message:
    """One line in the node's log (not a traceback) and a failed reply, which the server counts."""
    log(ERROR, "flowerbed: %s", err)
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"ConfigError: {err}"), reply_to=msg)


def _run(msg: Message, context: Context, handler: str) -> Message:
    algorithm = client_class(context.run_config["algorithm.name"])(context)
    server_round = int(msg.content["config"]["server-round"])
    state.restore(context, algorithm.client_id, server_round)
    fault = faults.before_train(context.run_config, server_round, algorithm.client_id) if handler == "train" else None
    content = getattr(algorithm, handler)(msg)
    if fault == "poison":
        content = faults.poison(content, context.run_config, server_round, algorithm.client_id)
    if handler == "train":
        state.save(context, algorithm.client_id, server_round)
    return Message(content=content, reply_to=msg)


@app.train(mods=[privacy_mod])  # Flower's DP mods when the run's privacy mode asks for them
def train(msg: Message, context: Context) -> Message:
    return _handle(msg, context, "train")


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return _handle(msg, context, "evaluate")


@app.query()
def identify(msg: Message, context: Context) -> Message:
    """Tell the server this node's stable client id (Flower's node ids change between runs)."""
    try:
        identity = ConfigRecord({"client-id": client_index(context.node_config)})
    except ConfigError as err:  # e.g. client-id="kitchen-pi": one line in the node's log
        return _failed(msg, err)
    return Message(content=RecordDict({"identity": identity}), reply_to=msg)
