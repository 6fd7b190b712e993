"""The one owner of what travels through Redis: task arguments, results and errors.

Everything is msgpack, never pickle: a worker must never run code an attacker wrote into
Redis. An upstream task's result passed as an argument travels as an extension value that
names the upstream task; the worker swaps in the result before calling the function.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass
from typing import Any

import msgpack

UPSTREAM_REF = 1


class CodecError(ValueError):
    """A value cannot be encoded, or bytes cannot be decoded."""


@dataclass(frozen=True)
class UpstreamRef:
    """Stands for the result of another task of the same flow run."""

    task_id: str


@dataclass(frozen=True)
class ErrorInfo:
    """Why a task failed: enough to read the cause without the worker's logs."""

    type: str
    message: str
    traceback: str = ""

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        return cls(
            type=f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins."),
            message=str(exc),
            traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        )

    def __str__(self) -> str:
        return f"{self.type}: {self.message}"


def _default(obj: Any) -> Any:
    if isinstance(obj, UpstreamRef):
        return msgpack.ExtType(UPSTREAM_REF, obj.task_id.encode())
    raise TypeError(f"cannot serialize object of type {type(obj).__qualname__}")


def _ext_hook(code: int, data: bytes) -> Any:
    if code == UPSTREAM_REF:
        return UpstreamRef(data.decode())
    raise CodecError(f"unknown msgpack extension type {code}")


def pack(value: Any) -> bytes:
    try:
        packed: bytes = msgpack.packb(value, default=_default, use_bin_type=True)
        return packed
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(str(exc)) from None


def unpack(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False, strict_map_key=False)
    except CodecError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types on bad bytes
        raise CodecError(f"undecodable payload ({type(exc).__name__}: {exc})") from None


def encode_call(task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any], limit: int) -> bytes:
    """Encode a call's arguments, naming the task and the argument that cannot travel."""
    try:
        blob = pack([list(args), kwargs])
    except CodecError:
        for where, value in _arguments(args, kwargs):
            try:
                pack(value)
            except CodecError as exc:
                raise CodecError(
                    f"task {task_name!r}: argument at {where} cannot be sent to a worker: {exc}"
                    " (arguments travel as msgpack: use None, bool, int, float, str, bytes,"
                    " list, tuple or dict)"
                ) from None
        raise
    if len(blob) > limit:
        raise CodecError(
            f"task {task_name!r}: arguments take {len(blob)} bytes, over the limit of {limit}"
            " (max_payload_bytes); pass a reference such as a path or a key instead"
        )
    return blob


# Deepest nesting of containers in one argument. msgpack refuses past 511 levels; the
# worker's walks over arguments (upstream_refs, substitute) recurse two Python frames per
# level, so this keeps them far from the interpreter's recursion limit (1000).
MAX_DEPTH = 200
CONTAINERS = (list, tuple, set, frozenset, dict)


class TooDeep(CodecError):
    """An argument nests containers deeper than MAX_DEPTH."""

    def __init__(self, where: str = "") -> None:
        super().__init__(f"{where}is nested deeper than {MAX_DEPTH} levels")


def find_in_call(task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                 kind: type | tuple[type, ...]) -> list[Any]:
    """Every instance of ``kind`` inside a call's arguments (list, tuple, set, frozenset,
    a dict's values), in order. The walk keeps its own stack: an argument nested past
    MAX_DEPTH is a TooDeep naming the task and the argument, never a RecursionError."""
    found: list[Any] = []
    values = (*args, *kwargs.values())
    for i, value in enumerate(values):
        if isinstance(value, kind):
            found.append(value)
        elif isinstance(value, CONTAINERS):
            try:
                _find(value, kind, found)
            except TooDeep:
                where = (f"position {i}" if i < len(args)
                         else f"keyword {list(kwargs)[i - len(args)]!r}")
                raise TooDeep(f"task {task_name!r}: argument at {where} ") from None
    return found


def _find(value: Any, kind: type | tuple[type, ...], found: list[Any]) -> None:
    """Depth first, in order: the stack holds an iterator per container being read."""
    stack = [iter(value.values() if isinstance(value, dict) else value)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, kind):
                found.append(item)
            elif isinstance(item, CONTAINERS):
                if len(stack) >= MAX_DEPTH:
                    raise TooDeep()
                stack.append(iter(item.values() if isinstance(item, dict) else item))
                break
        else:
            stack.pop()


def check_depth(task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Raise TooDeep naming the task and the argument nested past MAX_DEPTH."""
    find_in_call(task_name, args, kwargs, ())


def _arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[tuple[str, Any]]:
    return [*((f"position {i}", a) for i, a in enumerate(args)),
            *((f"keyword {k!r}", v) for k, v in kwargs.items())]


def decode_call(blob: bytes) -> tuple[list[Any], dict[str, Any]]:
    value = unpack(blob)
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not isinstance(value[0], list)
        or not isinstance(value[1], dict)
    ):
        raise CodecError("task arguments are not an [args, kwargs] pair")
    return value[0], value[1]


# The first bytes of every msgpack extension (fixext 1-16, ext 8/16/32): an upstream
# reference is one, so a blob holding none of these bytes holds no reference.
_EXT_MARKERS = re.compile(rb"[\xd4-\xd8\xc7-\xc9]")


def may_hold_refs(blob: bytes) -> bool:
    """False when the packed ``blob`` surely holds no upstream reference: one byte scan,
    where decoding it would cost a task's run its decode twice (the runner decodes it)."""
    return _EXT_MARKERS.search(blob) is not None


def upstream_refs(value: Any) -> set[str]:
    """Task ids of every upstream reference inside an argument structure."""
    if isinstance(value, UpstreamRef):
        return {value.task_id}
    if isinstance(value, (list, tuple)):
        return set().union(*(upstream_refs(v) for v in value)) if value else set()
    if isinstance(value, dict):
        return set().union(*(upstream_refs(v) for v in value.values())) if value else set()
    return set()


def substitute(value: Any, results: dict[str, Any]) -> Any:
    """Replace every upstream reference by that task's result."""
    if isinstance(value, UpstreamRef):
        return results[value.task_id]
    if isinstance(value, list):
        return [substitute(v, results) for v in value]
    if isinstance(value, tuple):
        return tuple(substitute(v, results) for v in value)
    if isinstance(value, dict):
        return {k: substitute(v, results) for k, v in value.items()}
    return value


def pack_packed_list(items: list[bytes]) -> bytes:
    """The msgpack list of values that are each packed already: its header, then the items
    as they are (a map's gathered results, without decoding each one)."""
    n = len(items)
    if n < 16:
        head = bytes([0x90 | n])
    elif n < 1 << 16:
        head = b"\xdc" + n.to_bytes(2, "big")
    else:
        head = b"\xdd" + n.to_bytes(4, "big")
    return head + b"".join(items)


def pack_error(error: ErrorInfo) -> bytes:
    return pack([error.type, error.message, error.traceback])


def unpack_error(blob: bytes | None) -> ErrorInfo | None:
    if not blob:
        return None
    try:
        record = unpack(blob)
    except CodecError:
        record = None
    if not (isinstance(record, list) and len(record) == 3
            and all(isinstance(x, str) for x in record)):
        return ErrorInfo("balancer.CorruptError", "the stored error record is unreadable")
    kind, message, tb = record
    return ErrorInfo(kind, message, tb)
