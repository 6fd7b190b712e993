"""Run one task function on decoded arguments and encode what came out.

This runs inside a pool thread or a pool child process, so it touches no Redis: it takes
bytes and returns bytes, and every failure becomes an error record instead of a crash.
"""

from __future__ import annotations

from dataclasses import dataclass

from balancer.common import codec
from balancer.common.codec import CodecError, ErrorInfo
from balancer.common.importpath import TaskNotAllowed, TaskNotFound, load
from balancer.common.runsignals import PrefectStateSignal


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


def execute(fn_path: str, args_blob: bytes, max_result_bytes: int) -> Outcome:
    try:
        fn = load(fn_path)
    except TaskNotAllowed as exc:
        return Outcome.failure(ErrorInfo("balancer.TaskNotAllowed", str(exc)), retryable=False)
    except TaskNotFound as exc:
        return Outcome.failure(ErrorInfo.from_exception(exc))
    try:
        args, kwargs = codec.decode_call(args_blob)
    except CodecError as exc:
        return Outcome.failure(ErrorInfo("balancer.BadPayload", f"task {fn_path}: {exc}"), False)
    try:
        value = fn(*args, **kwargs)
    except PrefectStateSignal as signal:
        if signal.mode == "success":  # ENDRUN(Success(...)): completed, with its result
            value = getattr(getattr(signal, "state", None), "result", None)
        else:
            error = ErrorInfo.from_exception(signal)
            return Outcome(False, codec.pack_error(error), signal.mode != "final",
                           mode=signal.mode)
    except Exception as exc:
        return Outcome.failure(ErrorInfo.from_exception(exc))
    try:
        blob = codec.pack(value)
    except CodecError as exc:
        return Outcome.failure(ErrorInfo(
            "balancer.ResultNotSerializable",
            f"task {fn_path} returned a {type(value).__qualname__} that cannot be stored: {exc}"
            " (results travel as msgpack)"), retryable=False)
    if len(blob) > max_result_bytes:
        return Outcome.failure(ErrorInfo(
            "balancer.ResultTooLarge",
            f"task {fn_path} returned {len(blob)} bytes, over the limit of {max_result_bytes}"
            " (max_payload_bytes)"), retryable=False)
    return Outcome(True, blob)
