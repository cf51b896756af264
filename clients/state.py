"""Client state that survives a process restart.

`context.state` lives as long as the process that holds the Context. After each call that changed
it, the client also writes it to `<state-dir>/<client>/round-<r>.pt` (the node's `state-dir`, or the
run's checkpoint folder in simulation), keeping the newest three. A fresh process, or a resumed run,
restores the newest file written before the current round, so client state always matches the
server's checkpoint (which may be one round behind: it is written in the background).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord, RecordDict

KINDS = {"arrays": ArrayRecord, "metrics": MetricRecord, "config": ConfigRecord}
CHECKED = "_flowerbed_nothing_saved"  # set on a state found empty with no files behind it
ROUND_FILE = re.compile(r"round-(\d+)\.pt$")


def state_dir(context: Context, client_id: int | str) -> Path | None:
    root = context.node_config.get("state-dir") or (
        os.path.join(str(context.run_config["output.dir"]), "checkpoints", "clients") if context.run_config.get("output.dir") else None
    )
    return Path(str(root)).expanduser() / str(client_id) if root else None


def _encode(state: RecordDict) -> dict:
    out = {}
    for key, record in state.items():
        if isinstance(record, ArrayRecord):
            out[key] = ("arrays", {k: torch.from_numpy(v.numpy().copy()) for k, v in record.items()})
        else:
            out[key] = ("metrics" if isinstance(record, MetricRecord) else "config", dict(record))
    return out


def _decode(blob: dict) -> RecordDict:
    records = {}
    for key, (kind, values) in blob.items():
        records[key] = ArrayRecord(values) if kind == "arrays" else KINDS[kind](values)
    return RecordDict(records)


KEEP = 3  # files per client: the server's checkpoint may lag one round (written in the background), so a
# resume from the round before needs this client's file from before that round: newest 3 always hold one


def save(context: Context, client_id: int | str, server_round: int) -> None:
    """Write the state after round `server_round`, keeping the newest KEEP files."""
    if len(context.state) == 0:
        return
    folder = state_dir(context, client_id)
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"round-{server_round}.pt"
    tmp = target.with_suffix(".tmp")
    torch.save(_encode(context.state), tmp)
    tmp.replace(target)
    saved = sorted((int(m.group(1)), p) for p in folder.glob("round-*.pt") if (m := ROUND_FILE.search(p.name)))
    for _, old in saved[:-KEEP]:
        old.unlink(missing_ok=True)


def restore(context: Context, client_id: int | str, server_round: int) -> None:
    """Fill an empty `context.state` from the newest file of a round before `server_round`.

    Once a state was found empty with nothing on disk, it is not looked for again: only `save`
    writes files, and none for an empty state (a new process, or a state replaced by an empty one,
    looks again)."""
    if len(context.state) > 0 or vars(context.state).get(CHECKED):
        return
    folder = state_dir(context, client_id)
    if folder is None or not folder.is_dir():
        vars(context.state)[CHECKED] = True
        return
    saved = [(int(m.group(1)), p) for p in folder.glob("round-*.pt") if (m := ROUND_FILE.search(p.name))]
    saved = [item for item in saved if item[0] < server_round]
    if saved:
        restored = _decode(torch.load(max(saved)[1], weights_only=False))
        for key, record in restored.items():
            context.state[key] = record
