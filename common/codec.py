"""The one owner of what travels through Redis: task arguments, results and errors.

Everything is msgpack, never pickle: a worker must never run code an attacker wrote into
Redis. An upstream task's result passed as an argument travels as an extension value that
names the upstream task; the worker swaps in the result before calling the function.

Values users pass every day travel as msgpack extension types (codes 1-15 are ours):
``datetime`` (naive, or aware with its UTC offset: a named zone arrives as a fixed offset),
``date``, ``time``, ``timedelta``, ``Decimal``, ``UUID``, ``set`` and ``frozenset`` come
back as the same type (a set's tuples as tuples: lists are not hashable).
Dataclass instances and NamedTuples arrive as plain dicts of their fields: a message never
names a class to import, since whoever can write to Redis would choose it. A type that
should come back as itself is registered on both sides with ``register_type`` (codes
16-127), by code both sides run; an extension code nobody registered is an error.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgpack

UPSTREAM_REF = 1
DATETIME, DATE, TIME, TIMEDELTA, DECIMAL, UUID, SET, FROZENSET = 2, 3, 4, 5, 6, 7, 8, 9
FIRST_USER_CODE, LAST_USER_CODE = 16, 127


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


@dataclass(frozen=True)
class _UserType:
    cls: type
    code: int
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


_by_type: dict[type, _UserType] = {}
_by_code: dict[int, _UserType] = {}


def register_type(cls: type, code: int, encode: Callable[[Any], Any] | None = None,
                  decode: Callable[[Any], Any] | None = None) -> None:
    """Make instances of ``cls`` travel as msgpack extension ``code`` (16-127) and come
    back as ``cls``. ``encode`` turns an instance into a value the codec carries (it may
    hold other registered or built-in types), ``decode`` turns that value back. A
    dataclass or NamedTuple needs neither: its fields travel as a dict and ``cls(**fields)``
    rebuilds it. Call it at import of the module defining the tasks that use the type, so
    that the client and every worker register the same pairs; registering a code or a
    type twice with another partner is a ValueError."""
    if not isinstance(cls, type):
        raise TypeError(f"register_type expects a class, got {type(cls).__name__}")
    if isinstance(code, bool) or not isinstance(code, int) or not (
            FIRST_USER_CODE <= code <= LAST_USER_CODE):
        raise ValueError(f"register_type({cls.__qualname__}): code must be an integer from"
                         f" {FIRST_USER_CODE} to {LAST_USER_CODE} (lower codes are"
                         f" balancer's), got {code!r}")
    if encode is None or decode is None:
        if dataclasses.is_dataclass(cls):
            encode = encode or _dataclass_fields
            decode = decode or (lambda value: cls(**value))
        elif issubclass(cls, tuple) and hasattr(cls, "_fields"):
            encode = encode or (lambda value: value._asdict())
            decode = decode or (lambda value: cls(**value))
        else:
            raise ValueError(f"register_type({cls.__qualname__}): give encode and decode"
                             " (only dataclasses and NamedTuples have defaults)")
    entry = _UserType(cls, code, encode, decode)
    known = _by_code.get(code) or _by_type.get(cls)
    if known is not None and (known.cls is not cls or known.code != code):
        raise ValueError(f"register_type({cls.__qualname__}, {code}): code {code} or the"
                         f" type is already registered for {known.cls.__qualname__}"
                         f" (code {known.code})")
    _by_code[code] = _by_type[cls] = entry


def is_registered(cls: type) -> bool:
    return cls in _by_type


def _dataclass_fields(obj: Any) -> dict[str, Any]:
    """A dataclass's fields, one level: nested values go through the codec in turn."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


def _ext(code: int, value: Any) -> msgpack.ExtType:
    return msgpack.ExtType(code, pack(value))


def _default(obj: Any) -> Any:
    """What msgpack calls for every value that is not exactly a type it carries (packing
    is strict: subclasses come here too, so that a NamedTuple is not taken for a tuple)."""
    kind = type(obj)
    user = _by_type.get(kind)
    if user is not None:
        return _ext(user.code, user.encode(obj))
    if kind is tuple:
        return list(obj)
    if isinstance(obj, UpstreamRef):
        return msgpack.ExtType(UPSTREAM_REF, obj.task_id.encode())
    if isinstance(obj, dt.datetime):
        return msgpack.ExtType(DATETIME, obj.isoformat().encode())
    if isinstance(obj, dt.date):
        return msgpack.ExtType(DATE, obj.isoformat().encode())
    if isinstance(obj, dt.time):
        return msgpack.ExtType(TIME, obj.isoformat().encode())
    if isinstance(obj, dt.timedelta):
        return msgpack.ExtType(TIMEDELTA, msgpack.packb([obj.days, obj.seconds,
                                                         obj.microseconds]))
    if isinstance(obj, Decimal):
        return msgpack.ExtType(DECIMAL, str(obj).encode())
    if isinstance(obj, uuid.UUID):
        return msgpack.ExtType(UUID, obj.bytes)
    if isinstance(obj, (set, frozenset)):
        return _ext(FROZENSET if isinstance(obj, frozenset) else SET, _set_items(obj))
    if isinstance(obj, tuple) and hasattr(obj, "_asdict"):
        return dict(obj._asdict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _dataclass_fields(obj)
    # Subclasses of the plain types (an IntEnum, an OrderedDict...) travel as their base.
    for base in _PLAIN:
        if isinstance(obj, base):
            return _PLAIN[base](obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot serialize object of type {kind.__qualname__}")


def _set_items(items: set[Any] | frozenset[Any]) -> list[Any]:
    """A set's items, sorted when they sort (the same set packs to the same bytes, for the
    cache's digest of inputs), refused when they would not come back hashable."""
    for item in items:
        if type(item) not in _by_type and (
                dataclasses.is_dataclass(item) or hasattr(item, "_asdict")):
            raise TypeError(f"a set of {type(item).__qualname__} cannot travel: its items"
                            " would arrive as dicts, which a set cannot hold (register the"
                            " type with balancer.register_type, or send a list)")
    try:
        return sorted(items)
    except TypeError:
        return list(items)


def _hashable(value: Any) -> Any:
    """A set's item as it was: msgpack gives tuples back as lists."""
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


def _set(kind: type[set[Any]] | type[frozenset[Any]]) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return kind(_hashable(v) for v in unpack(data))
        except TypeError as exc:
            raise CodecError(f"a {kind.__name__} holds an item that is not hashable: {exc}"
                             ) from None
    return decode


_PLAIN: dict[type, Callable[[Any], Any]] = {bool: bool, int: int, float: float, str: str,
                                              bytes: bytes, dict: dict, list: list}


def _timedelta(data: bytes) -> dt.timedelta:
    days, seconds, micros = msgpack.unpackb(data)
    return dt.timedelta(days=days, seconds=seconds, microseconds=micros)


_DECODERS: dict[int, Callable[[bytes], Any]] = {
    UPSTREAM_REF: lambda data: UpstreamRef(data.decode()),
    DATETIME: lambda data: dt.datetime.fromisoformat(data.decode()),
    DATE: lambda data: dt.date.fromisoformat(data.decode()),
    TIME: lambda data: dt.time.fromisoformat(data.decode()),
    TIMEDELTA: _timedelta,
    DECIMAL: lambda data: Decimal(data.decode()),
    UUID: lambda data: uuid.UUID(bytes=data),
    SET: _set(set),
    FROZENSET: _set(frozenset),
}


def _ext_hook(code: int, data: bytes) -> Any:
    decode = _DECODERS.get(code)
    if decode is not None:
        return decode(data)
    user = _by_code.get(code)
    if user is not None:
        return user.decode(unpack(data))
    raise CodecError(f"unknown msgpack extension type {code}: a type registered with"
                     " balancer.register_type on the sending side only (register it in"
                     " the module that defines the task, so every side imports it)")


def _keep_ext(code: int, data: bytes) -> Any:
    """Decode upstream references only; every other extension stays as it came."""
    if code == UPSTREAM_REF:
        return UpstreamRef(data.decode())
    return msgpack.ExtType(code, data)


def pack(value: Any) -> bytes:
    try:
        packed: bytes = msgpack.packb(value, default=_default, use_bin_type=True,
                                      strict_types=True)
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


def unpack_refs(data: bytes) -> Any:
    """Unpack with only upstream references decoded, every other extension kept as bytes
    (``msgpack.ExtType``), which ``pack`` writes back unchanged: a worker substitutes
    upstream results before it imports the task's module, where user types register."""
    try:
        return msgpack.unpackb(data, ext_hook=_keep_ext, raw=False, strict_map_key=False)
    except Exception as exc:
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
                    " list, tuple, dict, datetime, date, time, timedelta, Decimal, UUID, a"
                    " dataclass or NamedTuple (sent as a dict), or a type registered with"
                    " balancer.register_type)"
                ) from None
        raise
    if len(blob) > limit:
        raise CodecError(
            f"task {task_name!r}: arguments take {len(blob)} bytes, over the limit of {limit}"
            " (BALANCER_MAX_PAYLOAD_BYTES); pass a reference such as a path or a key instead"
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


def decode_call(blob: bytes, *, refs_only: bool = False) -> tuple[list[Any], dict[str, Any]]:
    """``refs_only``: decode upstream references and leave every other extension as
    bytes (``unpack_refs``)."""
    value = unpack_refs(blob) if refs_only else unpack(blob)
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
