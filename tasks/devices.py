"""Device profiles: how fast each simulated client computes, how fast its link is, when it is online.

A profile is three numbers and an availability pattern. `devices.profile=classes` draws each
client's class from `devices.classes` (seeded by `seed`, one uniform draw per client);
`devices.profile=trace` reads them from a user's trace file (`read_trace`). The server's virtual
clock (server/clock.py) turns a profile into seconds; nothing here sleeps.

Where the numbers come from (docs/results/device-time.md says the same):
- `laptop` (relative speed 1.0) is measured: this project's `cnn` on `digits`, batch 16, one torch
  thread, trained at about 11,800 samples/s on the 2-core machine the project is developed on
  (`devices.reference_speed`, the samples/s of relative speed 1.0; set it for another model).
- The other classes' relative speeds are assumptions, not measurements: they span the 10x spread
  between a laptop CPU and a Raspberry-Pi-class board that the issue asks to study, with phones in
  between. Bandwidths are assumed round numbers (Mbit/s) of a home link, a good and a poor mobile
  link, and a board on Wi-Fi. Replace them with a trace for a real fleet.
- Availability: each class is online a share of the time (`online`), in sessions whose lengths are
  exponential with mean `devices.session_s` (off-periods sized to give that share); `online=1` is
  always on. Only with `devices.availability=classes`; `always` (default) keeps every client on.
"""

from __future__ import annotations

import bisect
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from flowerbed.tasks.errors import ConfigError

MEASURED_SAMPLES_PER_S = 11800.0  # cnn on digits, batch 16, 1 thread (see the module docstring)
MBIT = 1e6 / 8  # bytes per second in one Mbit/s
PERIOD_S = 7 * 86400.0  # availability patterns drawn from classes repeat weekly


@dataclass(frozen=True)
class DeviceClass:
    speed: float  # relative to `laptop` (1.0)
    down_mbit: float
    up_mbit: float
    online: float  # share of the time the device is available (devices.availability=classes)


CLASSES: dict[str, DeviceClass] = {
    "laptop": DeviceClass(speed=1.0, down_mbit=100.0, up_mbit=20.0, online=0.9),
    "phone-high": DeviceClass(speed=0.5, down_mbit=50.0, up_mbit=10.0, online=0.6),
    "phone-low": DeviceClass(speed=0.2, down_mbit=10.0, up_mbit=2.0, online=0.5),
    "rpi4": DeviceClass(speed=0.1, down_mbit=20.0, up_mbit=10.0, online=1.0),
}


@dataclass(frozen=True)
class Availability:
    """Online in [starts[i], ends[i]) of every period of `period` seconds (FedScale's trace shape:
    `active` and `inactive` times within `finish_time`, repeating); `period` 0: always online."""

    starts: tuple[float, ...] = ()
    ends: tuple[float, ...] = ()
    period: float = 0.0

    def online(self, t: float) -> bool:
        if self.period == 0:
            return True
        phase = t % self.period
        i = bisect.bisect_right(self.starts, phase) - 1
        return i >= 0 and phase < self.ends[i]

    def online_until(self, t: float) -> float:
        """When the session holding `t` ends (inf if always online); `t` itself if offline at `t`."""
        if self.period == 0:
            return math.inf
        if not self.online(t):
            return t
        base = t - t % self.period
        end = base + self.ends[bisect.bisect_right(self.starts, t % self.period) - 1]
        if end - base < self.period or self.starts[0] > 0:
            return end
        if len(self.starts) == 1:  # one session that spans the whole period
            return math.inf
        return base + self.period + self.ends[0]  # the session runs on into the next period's first

    def next_online(self, t: float) -> float:
        """The first time >= t at which the device is online."""
        if self.online(t):
            return t
        base, phase = t - t % self.period, t % self.period
        i = bisect.bisect_right(self.starts, phase)
        return base + (self.starts[i] if i < len(self.starts) else self.period + self.starts[0])


ALWAYS = Availability()


@dataclass(frozen=True)
class DeviceProfile:
    name: str  # the class, or "trace:<key>"
    samples_per_s: float
    down_bytes_per_s: float
    up_bytes_per_s: float
    availability: Availability = ALWAYS


def sessions(online: float, mean_session_s: float, rng: random.Random, period: float = PERIOD_S) -> Availability:
    """Alternating on/off periods over `period` seconds, exponential lengths, `online` share on."""
    if online >= 1.0:
        return ALWAYS
    mean_off = mean_session_s * (1 - online) / online
    starts, ends, t = [], [], rng.expovariate(1 / mean_off)  # begins offline at a random phase
    while t < period:
        starts.append(t)
        t = min(period, t + rng.expovariate(1 / mean_session_s))
        ends.append(t)
        t += rng.expovariate(1 / mean_off)
    return Availability(tuple(starts), tuple(ends), period) if starts else ALWAYS


def class_names(cfg: dict) -> list[str]:
    names = [n.strip() for n in str(cfg.get("devices.classes", "")).split("+") if n.strip()]
    if not names:
        raise ConfigError.invalid("devices.classes", cfg.get("devices.classes"), "device classes joined by +, from " + ", ".join(CLASSES))
    for name in names:
        if name not in CLASSES:
            raise ConfigError.invalid("devices.classes", name, "one of " + ", ".join(CLASSES) + " (joined by +)", CLASSES)
    return names


def from_classes(cfg: dict, num_clients: int) -> list[DeviceProfile]:
    """Each client's class drawn uniformly from `devices.classes`, seeded by (seed, client)."""
    names = class_names(cfg)
    reference = float(cfg.get("devices.reference_speed", MEASURED_SAMPLES_PER_S))
    with_sessions = str(cfg.get("devices.availability", "always")) == "classes"
    session_s = float(cfg.get("devices.session_s", 600.0))
    profiles = []
    for client in range(num_clients):
        rng = random.Random(f"{cfg.get('seed', 0)}/{client}/device")
        name = names[rng.randrange(len(names))]
        cls = CLASSES[name]
        availability = sessions(cls.online, session_s, rng) if with_sessions else ALWAYS
        profiles.append(DeviceProfile(name, cls.speed * reference, cls.down_mbit * MBIT, cls.up_mbit * MBIT, availability))
    return profiles


def read_trace(path: str | Path, num_clients: int) -> list[DeviceProfile]:
    """Profiles from a JSON trace: FedScale's two traces (device capacity, client behaviour) as one
    file, keyed by client id, the k-th key in numeric order for client k:

        {"1": {"computation": 162.0, "communication": 5648.1,
               "active": [0, 5000], "inactive": [3000, 9000], "finish_time": 10000}, ...}

    `computation` is milliseconds per trained sample, `communication` kbit/s both ways (or
    `up_kbps` / `down_kbps` separately); `active`/`inactive`/`finish_time` (seconds, optional: always
    online without them) say when the device comes and goes within a period that repeats. FedScale
    ships its traces as pickles; we read JSON only, since unpickling a file runs its code.
    """
    key = "devices.trace"
    try:
        data = json.loads(Path(path).expanduser().read_text())
    except FileNotFoundError:
        raise ConfigError.invalid(key, str(path), "an existing JSON trace file") from None
    except (OSError, ValueError) as err:
        raise ConfigError.invalid(key, str(path), f"a readable JSON trace file ({type(err).__name__}: {err})") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError.invalid(key, str(path), "a JSON object mapping client ids to device entries")
    ids = sorted(data, key=lambda k: (0, int(k)) if str(k).isdigit() else (1, str(k)))
    if len(ids) < num_clients:
        raise ConfigError.invalid(key, str(path), f"a trace with at least clients.num={num_clients} clients (it has {len(ids)})")
    return [_trace_entry(path, cid, data[cid]) for cid in ids[:num_clients]]


def _trace_entry(path, cid: str, entry) -> DeviceProfile:
    def number(name: str, positive: bool = True) -> float:
        value = entry.get(name) if isinstance(entry, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise ConfigError.invalid("devices.trace", str(path), f"client {cid}: {name} a number {'> 0' if positive else '>= 0'} (got {value!r})")
        return float(value)

    ms_per_sample = number("computation")
    if isinstance(entry, dict) and ("up_kbps" in entry or "down_kbps" in entry):
        up, down = number("up_kbps"), number("down_kbps")
    else:
        up = down = number("communication")
    return DeviceProfile(f"trace:{cid}", 1000.0 / ms_per_sample, down * 1000 / 8, up * 1000 / 8, _trace_availability(path, cid, entry, number))


def _trace_availability(path, cid: str, entry: dict, number) -> Availability:
    if not any(k in entry for k in ("active", "inactive", "finish_time")):
        return ALWAYS
    period = number("finish_time")
    starts, ends = entry.get("active"), entry.get("inactive")
    where = f"client {cid}: active and inactive"
    if not isinstance(starts, list) or not isinstance(ends, list) or not starts or len(starts) != len(ends):
        raise ConfigError.invalid("devices.trace", str(path), f"{where} lists of equal, non-zero length")
    for s, e in zip(starts, ends):
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in (s, e)) or not 0 <= s < e <= period:
            raise ConfigError.invalid("devices.trace", str(path), f"{where} times with 0 <= active < inactive <= finish_time (got {s!r}, {e!r})")
    if any(e > s2 for e, s2 in zip(ends, starts[1:])):
        raise ConfigError.invalid("devices.trace", str(path), f"{where} sessions in time order, not overlapping")
    return Availability(tuple(map(float, starts)), tuple(map(float, ends)), period)


def build_profiles(cfg: dict, num_clients: int) -> list[DeviceProfile] | None:
    """The clients' profiles, or None with `devices.profile=none` (no virtual clock)."""
    kind = str(cfg.get("devices.profile", "none"))
    if kind == "none":
        return None
    if kind == "classes":
        return from_classes(cfg, num_clients)
    if kind == "trace":
        if not str(cfg.get("devices.trace", "")).strip():
            raise ConfigError.invalid("devices.trace", cfg.get("devices.trace", ""), "a JSON trace file with devices.profile=trace")
        return read_trace(str(cfg["devices.trace"]), num_clients)
    raise ConfigError.invalid("devices.profile", kind, "none, classes or trace", ("none", "classes", "trace"))
