"""What a task's run came to: ``Ran`` as its function gave it, ``Outcome`` as the worker
reports it (encoded, and how it settles)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from balancer.common import codec
from balancer.common.codec import ErrorInfo


@dataclass(frozen=True)
class Outcome:
    ok: bool
    payload: bytes  # the packed result, or the packed ErrorInfo
    retryable: bool = True
    crashed: bool = False  # the run killed the process running it
    quarantine: bool = False  # refused: no run can succeed until an operator looks
    # Set by a signal the task raised (common/runsignals.py): "skip" (settle as skipped),
    # "again" (retry whether or not retries are left), "final" (fail, never retried).
    mode: str = ""

    @classmethod
    def failure(cls, error: ErrorInfo, retryable: bool = True, crashed: bool = False,
                quarantine: bool = False) -> Outcome:
        return cls(False, codec.pack_error(error), retryable, crashed, quarantine)

    def to_bytes(self) -> bytes:
        return codec.pack([self.ok, self.payload, self.retryable, self.mode])

    @classmethod
    def from_bytes(cls, data: bytes) -> Outcome:
        ok, payload, retryable, *rest = codec.unpack(data)
        return cls(bool(ok), bytes(payload), bool(retryable), mode=str(rest[0]) if rest else "")


class Ran(NamedTuple):
    """What calling a task's function gave, before it is encoded: its value, or the
    error and how the run settles (an Outcome's ``retryable`` and ``mode``). A named
    tuple: one is made per task, and it costs a fraction of a frozen dataclass."""

    ok: bool
    value: Any = None  # what it returned; for a failure, the exception it raised, if any
    error: ErrorInfo | None = None
    retryable: bool = True
    mode: str = ""
