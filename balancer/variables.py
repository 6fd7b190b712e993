"""Prefect's Variables: named values the cluster keeps, for any task, flow or client.

    from balancer.variables import Variable

    Variable.set("db_host", "10.0.0.5", overwrite=True)
    host = Variable.get("db_host", default="localhost")
    Variable.unset("db_host")

As Prefect 3's: ``get`` returns the value (``default`` when there is none), ``set`` refuses
to replace a value unless ``overwrite=True`` (one HSETNX: two setters cannot both win),
``unset`` says whether there was one; ``aget``, ``aset`` and ``aunset`` are the same for
async code. Names are Prefect's: lowercase letters, digits, ``_`` and ``-``, at most 255
characters. Values are what msgpack carries (JSON's types, and bytes), up to 64 KiB
packed; ``tags`` are kept with them, for ``balancer variable ls``.

They live in the hash ``variables`` of partition 0, read where the code runs: in a task,
on its worker's cluster; in a @flow function, its run's; else the client's
(``balancer.client.here``). They are not signed: whoever can write to Redis can change
one (the README's trust model), so a value a task must trust is given as an argument.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import redis

from balancer.common import codec
from balancer.common.codec import CodecError
from balancer.common.keys import Keys
from balancer.common.replies import as_bytes_dict, as_opt_bytes

NAME = re.compile(r"[a-z0-9_-]{1,255}")
VALUE_LIMIT = 64 * 1024  # bytes of a value packed
_MISSING: Any = object()


class VariableError(ValueError):
    """A name or value the cluster cannot keep, or a value it did not write."""


@dataclass(frozen=True)
class Stored:
    """A variable as kept: its value and tags."""

    name: str
    value: Any
    tags: tuple[str, ...] = ()


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise VariableError(f"a variable's name is 1 to 255 lowercase letters, digits, '_'"
                            f" or '-', got {name!r}")
    return name


def _packed(name: str, value: Any, tags: Any) -> bytes:
    tag_list = [tags] if isinstance(tags, str) else list(tags or ())
    if not all(isinstance(t, str) and t for t in tag_list):
        raise VariableError(f"variable {name!r}: tags must be non-empty strings, got {tags!r}")
    try:
        blob = codec.pack([value, sorted(set(tag_list))])
    except CodecError as exc:
        raise VariableError(f"variable {name!r}: its value must travel as msgpack: {exc}"
                            ) from None
    if len(blob) > VALUE_LIMIT:
        raise VariableError(f"variable {name!r}: its value packs to {len(blob)} bytes, over"
                            f" the limit of {VALUE_LIMIT}")
    return blob


def _read(name: str, blob: bytes) -> Stored:
    try:
        value, tags = codec.unpack(blob)
        return Stored(name, value, tuple(str(t) for t in tags))
    except (CodecError, TypeError, ValueError):
        raise VariableError(f"variable {name!r} holds something this cluster did not write"
                            " (set it again, or unset it)") from None


def _where(client: redis.Redis | None, redis_url: str | None, namespace: str | None
           ) -> tuple[redis.Redis, Keys]:
    from balancer.client import here

    conn, settings = here(client, redis_url, namespace)
    return conn, Keys(settings.namespace)


class Variable:
    """Prefect's ``prefect.variables.Variable``: class methods only."""

    @classmethod
    def get(cls, name: str, default: Any = None, *, client: redis.Redis | None = None,
            redis_url: str | None = None, namespace: str | None = None) -> Any:
        """The value of ``name``, or ``default`` when it has none."""
        from balancer.client import talking

        _check_name(name)
        conn, keys = _where(client, redis_url, namespace)
        with talking(conn):
            blob = as_opt_bytes(conn.hget(keys.variables, name))
        return default if blob is None else _read(name, blob).value

    @classmethod
    def set(cls, name: str, value: Any, *, overwrite: bool = False, tags: Any = None,
            client: redis.Redis | None = None, redis_url: str | None = None,
            namespace: str | None = None) -> Any:
        """Keep ``value`` under ``name``; ValueError when it has one already and
        ``overwrite`` is not given. Returns the value."""
        from balancer.client import talking

        blob = _packed(_check_name(name), value, tags)
        conn, keys = _where(client, redis_url, namespace)
        with talking(conn):
            if overwrite:
                conn.hset(keys.variables, name, blob)
            elif not conn.hsetnx(keys.variables, name, blob):
                raise VariableError(f"Variable {name!r} already exists. Use `overwrite=True`"
                                    " to update it.")
        return value

    @classmethod
    def unset(cls, name: str, *, client: redis.Redis | None = None,
              redis_url: str | None = None, namespace: str | None = None) -> bool:
        """Forget ``name``; whether it had a value."""
        from balancer.client import talking

        _check_name(name)
        conn, keys = _where(client, redis_url, namespace)
        with talking(conn):
            return bool(conn.hdel(keys.variables, name))

    @classmethod
    async def aget(cls, name: str, default: Any = None, **where: Any) -> Any:
        return await asyncio.to_thread(cls.get, name, default, **where)

    @classmethod
    async def aset(cls, name: str, value: Any, **options: Any) -> Any:
        return await asyncio.to_thread(cls.set, name, value, **options)

    @classmethod
    async def aunset(cls, name: str, **where: Any) -> bool:
        return await asyncio.to_thread(cls.unset, name, **where)


def variables(client: redis.Redis | None = None, *, redis_url: str | None = None,
              namespace: str | None = None) -> list[Stored]:
    """Every variable, by name; one that holds what this cluster did not write is shown
    with the error as its value."""
    from balancer.client import talking

    conn, keys = _where(client, redis_url, namespace)
    with talking(conn):
        raw = as_bytes_dict(conn.hgetall(keys.variables))
    out = []
    for field, blob in sorted(raw.items()):
        name = field.decode(errors="replace")
        try:
            out.append(_read(name, blob))
        except VariableError as exc:
            out.append(Stored(name, f"<{exc}>"))
    return out


__all__ = ["Variable", "VariableError", "variables"]
