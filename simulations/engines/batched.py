"""The `batched` engine: the in-process Grid, training each round's clients together.

The strategy's `send_and_receive` hands the whole round to `push_messages` at once. Train
messages whose algorithm has a batched form (clients/batched.py) are trained as one computation
over stacked client weights and answered with one real Flower reply per client, the records the
sequential client would send; the unchanged strategy aggregates them. Evaluate messages of such an
algorithm are scored together too where it has a batched evaluate (one forward pass over the local
test sets). Everything else (query messages, algorithms without a batched form) runs through the
real ClientApp one message at a time, exactly as in `sequential`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import torch
from flwr.app import Error, Message, MessageType, RecordDict
from flwr.clientapp import ClientApp
from rich.console import Console

from flowerbed.clients import state
from flowerbed.clients.batched import BATCHED_EVALUATE, Cohort, batched_form
from flowerbed.clients.data import client_index
from flowerbed.clients.privacy import apply_to_reply
from flowerbed.simulations.engines.inprocess import CLIENT_EXCEPTION, InProcessGrid
from flowerbed.tasks.errors import ConfigError
from flowerbed.tasks.models import resolve_device

console = Console(stderr=True)


class BatchedGrid(InProcessGrid):
    def __init__(self, client_app: ClientApp, run_config: dict, num_nodes: int, run_id: int = 1) -> None:
        super().__init__(client_app, run_config, num_nodes, run_id)
        self.compile = run_config.get("engine.compile", False)
        if not isinstance(self.compile, bool):
            raise ConfigError.invalid("engine.compile", self.compile, "true or false")
        algorithm = str(run_config["algorithm.name"])
        self.form = batched_form(algorithm)
        faults = [k for k, v in run_config.items() if k.startswith("faults.") and k.endswith("_fraction") and v]
        if self.form is None:
            console.print(f"[yellow]engine batched[/]: {algorithm} has no batched form; its clients train one after another")
        elif faults:  # faults are injected by the ClientApp (clients/faults.py), so it must run every client
            self.form = None
            console.print(f"[yellow]engine batched[/]: {faults[0]} is set; clients train one after another through the ClientApp")
        elif run_config.get("train.augment", "none") != "none":  # the views are drawn per client, one after another
            self.form = None
            console.print(f"[yellow]engine batched[/]: train.augment={run_config['train.augment']}; clients train one after another")
        elif run_config.get("privacy.secagg"):  # SecAgg+'s four exchanges go through its mod on the ClientApp
            self.form = None
            console.print("[yellow]engine batched[/]: privacy.secagg=true; clients train one after another through the ClientApp")
        # evaluation together only where training is: otherwise the engine is `sequential` to the last bit
        self.evaluate_form = batched_form(algorithm, BATCHED_EVALUATE) if self.form is not None else None

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        forms = {MessageType.TRAIN: (self.form, True), MessageType.EVALUATE: (self.evaluate_form, False)}
        ids, together = [], set()
        for kind, (form, trains) in forms.items():
            batch = [m for m in messages if form is not None and m.metadata.message_type == kind]
            if batch:
                ids += self.run_together(batch, form, trains)
                together.update(id(m) for m in batch)
        return ids + list(super().push_messages([m for m in messages if id(m) not in together]))

    def run_together(self, messages: list[Message], form: Callable[[Cohort], list[RecordDict]], trains: bool) -> list[str]:
        ids = [self.assign_id(message) for message in messages]
        start = time.perf_counter()
        replies = self.answer_together(messages, form, trains)
        if self.in_time(start):  # all clients ran at once, so each took the whole batch's time
            self._replies.update(zip(ids, replies))
        return ids

    def answer_together(self, messages: list[Message], form: Callable[[Cohort], list[RecordDict]], trains: bool) -> list[Message]:
        """One batched computation for all `messages`; a failure fails each of them, as in Flower."""
        contexts = [self.contexts[m.metadata.dst_node_id] for m in messages]
        client_ids = [client_index(c.node_config) for c in contexts]
        cfg = contexts[0].run_config
        server_round = int(messages[0].content["config"]["server-round"])
        try:
            torch.set_num_threads(int(cfg["train.num_threads"]))
            for context, cid in zip(contexts, client_ids):
                state.restore(context, cid, server_round)
            cohort = Cohort(dict(cfg), messages, contexts, client_ids, resolve_device(str(cfg["train.device"])), self.compile)
            contents = form(cohort)
            if trains:
                for context, cid in zip(contexts, client_ids):
                    state.save(context, cid, server_round)
        except Exception as err:  # noqa: BLE001 - reported per client, the round goes on
            error = Error(code=CLIENT_EXCEPTION, reason=f"{type(err).__name__}: {err}")
            return [Message(error, reply_to=m) for m in messages]
        # the ClientApp's privacy mods (clipping, local noise) act on each reply as they would there
        return [apply_to_reply(m, x, Message(content=c, reply_to=m)) for c, m, x in zip(contents, messages, contexts)]
