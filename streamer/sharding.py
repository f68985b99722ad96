"""Camera sharding: each of N workers runs only its share of the cameras of one shared configuration.

A camera goes to the shard with the highest rendezvous weight (highest-random-weight hashing) of its name:
every worker computes the same owner from the names alone, with nothing shared between them, and going from
N to N+1 shards moves only the cameras the new shard now wins (about 1/(N+1) of them; none moves between
the old shards). A camera can be pinned to a shard by name, outside the configuration's schema:
``--shard-pin NAME=INDEX`` or ``STREAMER_SHARD_PINS="gate=0,yard=2"``.

Which shard this worker is: ``--shard I/N`` (shards 0..N-1), or ``--shard auto`` with ``STREAMER_SHARDS=N``:
the index is the ordinal at the end of the host name, as a Kubernetes StatefulSet names its pods
(``streamer-3`` is shard 3). ``STREAMER_SHARD`` stands for ``--shard`` where the flag is not given.
"""

from __future__ import annotations

import hashlib
import logging
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from streamer.config import AppConfig, ConfigError

log = logging.getLogger(__name__)

MAX_SHARDS = 4096
_ORDINAL = re.compile(r"-(\d+)$")


@dataclass(frozen=True)
class Shard:
    index: int
    count: int
    pins: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ConfigError(f"shard count must be 1 to {MAX_SHARDS}, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ConfigError(f"shard index must be 0 to {self.count - 1} with {self.count} shard(s), got {self.index}")
        for name, index in self.pins.items():
            if not 0 <= index < self.count:
                raise ConfigError(f"shard pin {name}={index}: there are only shards 0 to {self.count - 1}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def owns(self, name: str) -> bool:
        return owner(name, self.count, self.pins) == self.index


def weight(name: str, shard: int) -> int:
    """The rendezvous weight of camera ``name`` on ``shard``: a stable 64-bit hash (never Python's salted
    ``hash``), the same in every process and on every machine."""
    digest = hashlib.blake2b(f"{shard}\x00{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(name: str, count: int, pins: Mapping[str, int] | None = None) -> int:
    """The shard (0..count-1) that runs camera ``name``: its pin, else the shard of highest weight."""
    if pins and name in pins:
        return pins[name]
    return max(range(count), key=lambda shard: (weight(name, shard), -shard))


def assign(names: Iterable[str], count: int, pins: Mapping[str, int] | None = None) -> dict[str, int]:
    """Every camera's shard."""
    return {name: owner(name, count, pins) for name in names}


def parse_pins(text: str | Iterable[str] | None) -> dict[str, int]:
    """``"gate=0,yard=2"`` (or the items of a list, each ``NAME=INDEX``) as ``{"gate": 0, "yard": 2}``."""
    if text is None:
        return {}
    items = text.split(",") if isinstance(text, str) else [part for item in text for part in item.split(",")]
    pins: dict[str, int] = {}
    for item in (item.strip() for item in items):
        if not item:
            continue
        name, sep, index = item.rpartition("=")
        if not sep or not name.strip() or not index.strip().isdigit():
            raise ConfigError(f"shard pin {item!r}: expected NAME=INDEX, e.g. gate=0")
        pins[name.strip()] = int(index)
    return pins


def parse_shard(text: str, environ: Mapping[str, str], hostname: str | None = None,
                pins: Mapping[str, int] | None = None) -> Shard:
    """``I/N`` or ``auto`` (index from the host name's ordinal, count from ``STREAMER_SHARDS``)."""
    text = text.strip()
    if text == "auto":
        count_text = environ.get("STREAMER_SHARDS", "").strip()
        if not count_text.isdigit():
            raise ConfigError(f"--shard auto needs STREAMER_SHARDS=N (the number of workers), got {count_text!r}")
        host = hostname if hostname is not None else environ.get("HOSTNAME") or socket.gethostname()
        match = _ORDINAL.search(host.split(".")[0])
        if match is None:
            raise ConfigError(f"--shard auto: host name {host!r} does not end in -ORDINAL (as a StatefulSet's "
                              "pod streamer-3 does); give --shard I/N")
        return Shard(int(match.group(1)), int(count_text), dict(pins or {}))
    index, sep, count = text.partition("/")
    if not sep or not index.strip().isdigit() or not count.strip().isdigit():
        raise ConfigError(f"--shard {text!r}: expected I/N (shard I of N, from 0), e.g. 3/8, or 'auto'")
    return Shard(int(index), int(count), dict(pins or {}))


def shard_from(flag: str | None, pin_flags: Iterable[str] | None, environ: Mapping[str, str],
               hostname: str | None = None) -> Shard | None:
    """This worker's shard from the command line, else the environment; None when neither names one."""
    text = flag if flag is not None else environ.get("STREAMER_SHARD")
    if not text or not text.strip():
        return None
    pins = parse_pins(environ.get("STREAMER_SHARD_PINS"))
    pins.update(parse_pins(list(pin_flags or [])))
    return parse_shard(text, environ, hostname, pins)


def restrict(config: AppConfig, shard: Shard | None, writeback: bool = False) -> AppConfig:
    """``config`` with only ``shard``'s cameras (the whole configuration was validated first, so errors name
    the shared file's fields). A shard may get no camera: it runs empty, ready, and says so. ``writeback``
    is refused with a shard: the worker would write its share back over the shared file."""
    if shard is None:
        return config
    if writeback:
        raise ConfigError("--config-writeback cannot be used with --shard: this worker would save only its "
                          "share of the cameras over the shared file")
    names = [camera.name for camera in config.cameras]
    unknown = sorted(set(shard.pins) - set(names))
    if unknown:
        log.warning("shard pins name no camera of the configuration: %s", ", ".join(unknown))
    mine = [camera for camera in config.cameras if shard.owns(camera.name)]
    if mine:
        log.info("shard %s: %d of %d camera(s): %s", shard, len(mine), len(names),
                 ", ".join(camera.name for camera in mine))
    else:
        log.info("shard %s: no camera of the %d in the configuration falls to this shard; running with none "
                 "(cameras can still be added over the API)", shard, len(names))
    return config.model_copy(update={"cameras": mine})
