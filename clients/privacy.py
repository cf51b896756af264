"""Differential privacy on the client: Flower's own mods, chosen by the run config.

One mod on the ClientApp's train handler (`privacy_mod`) reads `privacy.*` and runs, around the
client half's training:
- `privacy=central privacy.clipping=client`: Flower's `fixedclipping_mod` (the update is clipped
  to the norm the server's `DifferentialPrivacyClientSideFixedClipping` puts in the config);
  `central-adaptive`: `adaptiveclipping_mod` (it also reports whether it clipped);
- `privacy=local`: Flower's `LocalDpMod`: clip to `privacy.clipping_norm`, add Gaussian noise
  of std noise_multiplier * clipping_norm before the update leaves the device. The mod takes an
  (epsilon, delta) and derives the std as sensitivity * sqrt(2 ln(1.25 / delta)) / epsilon; the
  pair below gives exactly that std. The run's epsilon comes from the server's accountant, not
  from this formula (which holds only for epsilon < 1).
With `privacy.secagg=true`, Flower's `secaggplus_mod` comes first (clients/secagg.py): whatever the
mods above produce is what gets masked. Noise (and SecAgg+'s stochastic quantization) is drawn from
(run seed, round, client), so every engine and a device draw the same.
"""

from __future__ import annotations

import math

from flwr.app import Context, Message
from flwr.client.mod.utils import make_ffn
from flwr.clientapp.mod import LocalDpMod, adaptiveclipping_mod, fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable, Mod

from flowerbed.clients.data import client_index
from flowerbed.clients.secagg import secagg_mods
from flowerbed.tasks.noise import numpy_seeded

LOCAL_DP_DELTA = 1e-5  # only a parameter of LocalDpMod's std formula (module doc)
NOISE_STREAM = 0x10C  # keeps the clients' noise apart from the server's


def train_mods(cfg: dict) -> list[Mod]:
    """Flower's mods for this run's privacy mode, outermost first (none: no privacy on the client)."""
    mode, mods = str(cfg.get("privacy.name", "none")), secagg_mods(cfg)
    if mode == "local":
        clip, z = float(cfg["privacy.clipping_norm"]), float(cfg["privacy.noise_multiplier"])
        epsilon = math.sqrt(2 * math.log(1.25 / LOCAL_DP_DELTA)) / z if z > 0 else math.inf
        mods.append(LocalDpMod(clipping_norm=clip, sensitivity=clip, epsilon=epsilon, delta=LOCAL_DP_DELTA))
    elif mode.startswith("central") and cfg.get("privacy.clipping") == "client":
        mods.append(fixedclipping_mod if mode == "central" else adaptiveclipping_mod)
    return mods


def privacy_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Runs the run's privacy mods around the train handler (the ClientApp's `@app.train` mod)."""
    mods = train_mods(context.run_config)
    if not mods:
        return call_next(msg, context)
    with numpy_seeded(int(context.run_config["seed"]), server_round(msg), client_index(context.node_config), NOISE_STREAM):
        return make_ffn(call_next, mods)(msg, context)


def server_round(msg: Message) -> int:
    """The round a train message belongs to (SecAgg+'s stage messages carry it as their group id)."""
    config = msg.content.config_records.get("config")
    if config is not None and "server-round" in config:
        return int(config["server-round"])
    group = msg.metadata.group_id
    return int(group) if group.isdigit() else 0


def apply_to_reply(msg: Message, context: Context, reply: Message) -> Message:
    """The same mods on a reply computed elsewhere (the batched engine trains a round at once)."""
    return privacy_mod(msg, context, lambda _msg, _context: reply)
