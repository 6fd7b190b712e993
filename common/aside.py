"""Entries the dispatcher set aside: bad data it met in Redis and could not use.

One bad entry (a queue member that is not UTF-8, a key of the wrong type, a setting that
is not a number) must never stop the dispatching of everything else. The dispatcher moves
such an entry out of the way, or skips what it cannot move, and records here what was
wrong and where it came from, so that an operator sees it (``balancer dlq aside``,
``balancer status``) and can restore or dismiss it. A moved entry keeps its raw bytes (and
its score in a queue): nothing is lost.

The records live in one hash (``Keys.aside``), field = entry id, value = ``Aside.to_blob``.
An entry id is derived from what was wrong, so meeting the same bad entry again rewrites
one record instead of adding another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import redis
from balancer.common import codec
from balancer.common.retry import error_code

UNREADABLE = "unreadable"  # a member that is not UTF-8: moved out of its key
WRONG_TYPE = "wrong-type"  # a key of the wrong type: a task's record (its id moved out of
#                            its queue), or a queue (skipped until fixed, never deleted)
BAD_CONFIG = "bad-config"  # a queue setting that is not a number: its default is used
BAD_EPOCH = "bad-epoch"  # the epoch counter was not a counter: a new epoch was taken
UNUSABLE = "unusable"  # a command failed on it, for its data (no outage): moved or skipped


def entry_id(kind: str, key: str, member: bytes = b"") -> str:
    """A short id, the same each time the same bad entry is met."""
    return hashlib.sha1(b"\0".join((kind.encode(), key.encode(), member))).hexdigest()[:12]


def kind_of(exc: redis.ResponseError) -> str:
    """The kind of entry a command's error reply (not an outage) makes of its data."""
    return WRONG_TYPE if error_code(exc) == "WRONGTYPE" else UNUSABLE


def shown(raw: bytes) -> str:
    """Bytes as an operator can read and retype them (redis-cli's escapes for the rest)."""
    return raw.decode("utf-8", "backslashreplace")


def readable(raw: Iterable[bytes]) -> list[str]:
    """The members that are UTF-8, decoded (for readers that cannot move the others)."""
    names = []
    for member in raw:
        try:
            names.append(member.decode())
        except UnicodeDecodeError:
            continue
    return names


@dataclass(frozen=True)
class Aside:
    """What was wrong, where, and what the dispatcher did about it."""

    kind: str
    key: str  # the key the entry was in (or that is wrong)
    detail: str  # what was wrong and what was done, in a sentence
    member: bytes = b""  # the entry as it was, for a moved one
    score: float | None = None  # its score, for a member moved out of a sorted set
    queue: str = ""  # the queue it concerns, if any
    since_ms: float = 0.0

    @property
    def id(self) -> str:
        return entry_id(self.kind, self.key, self.member)

    def to_blob(self) -> bytes:
        return codec.pack(asdict(self))

    @classmethod
    def from_blob(cls, blob: bytes) -> Aside:
        data: Any = codec.unpack(blob)
        if not isinstance(data, dict):
            raise codec.CodecError("a set-aside record is not a map")
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def to_row(self, entry: str) -> dict[str, Any]:
        """For listings and JSON: the member shown as text (escaped where not UTF-8)."""
        return {"id": entry, "kind": self.kind, "key": self.key, "queue": self.queue,
                "member": shown(self.member), "score": self.score, "detail": self.detail,
                "since": self.since_ms / 1000}


def rows(raw: dict[bytes, bytes]) -> list[dict[str, Any]]:
    """Every record of the hash as a row, oldest first; an unreadable record shows as such."""
    out = []
    for field, blob in raw.items():
        entry = shown(field)
        try:
            out.append(Aside.from_blob(blob).to_row(entry))
        except (codec.CodecError, TypeError, ValueError) as exc:
            out.append(Aside("unreadable-record", "", f"the record cannot be read: {exc}",
                             blob[:200]).to_row(entry))
    return sorted(out, key=lambda r: (r["since"], r["id"]))
