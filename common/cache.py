"""Prefect 1's output caching (``cache_for``, ``cache_key``, ``cache_validator``): what a
task's cache options are, how its inputs are digested, and the format of a cache entry.

The options travel with the task's arguments, under CACHE_KEYWORD, so that they are signed
with them (``common.signing``) and cost a task without caching nothing: a worker finds the
keyword with one byte scan of the arguments (``marked``) and strips it before the call.

A validator decides which earlier result may stand in for a run, from the inputs' digest
(``digest``): ``all_inputs`` the same arguments, ``partial_inputs_only`` the same values of
the named arguments, ``duration_only`` any arguments, ``never_use`` none. Every entry
expires ``cache_for`` after the run that stored it. The cache entry lives at
``keys.cache(cache_key, digest)`` (``digest`` is "any" under ``duration_only``), so one
GET decides a hit.

An entry is data: [digest, expires (ms), result, signature], msgpack like a result, never
pickled. With signing keys, the worker storing it signs [key, digest, expires, result] and
a worker reading it uses it only if the signature verifies; an unsigned or altered entry is
a miss (logged) and the task runs. Without signing keys, whoever can write to Redis can
plant the result a cached task "returns" (never code: it is msgpack).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from balancer.common import codec
from balancer.common.codec import CodecError
from balancer.common.importpath import RUN_NAME_KEYWORD

CACHE_KEYWORD = "__balancer_cache__"
_MARK = codec.pack(CACHE_KEYWORD)
VALIDATORS = ("all_inputs", "duration_only", "never_use", "partial_inputs_only", "policy")
# A policy's parts (balancer/cache_policies.py names them for users).
INPUTS_PART = "inputs"
SOURCE_PART = "task_source"
RUN_ID_PART = "run_id"
PARAMETERS_PART = "flow_parameters"
KEY_FN_PART = "key_fn"
PARTS = frozenset({INPUTS_PART, SOURCE_PART, RUN_ID_PART, PARAMETERS_PART, KEY_FN_PART})
EXCLUDED_INPUT = "-input:"
ONE_PARAMETER = "flow_parameter:"
REFRESH = "refresh"
PART_LIMIT = 200  # characters of one part
ANY_INPUTS = "any"
# The longest cache_for, in ms (about 31 years, as options.SECONDS_LIMIT).
MAX_TTL_MS = 10**12


@dataclass(frozen=True)
class CacheSpec:
    """A task's cache options as they travel with its call."""

    ttl_ms: int  # cache_for
    key: str  # cache_key, else the task's import path
    validator: str  # one of VALIDATORS
    names: tuple[str, ...] = ()  # the function's parameter names, to name positional inputs
    validate_on: tuple[str, ...] = ()  # partial_inputs_only's names
    parts: tuple[str, ...] = ()  # a policy's parts, and REFRESH

    def to_list(self) -> list[Any]:
        fields = [self.ttl_ms, self.key, self.validator, list(self.names),
                  list(self.validate_on)]
        return [*fields, list(self.parts)] if self.parts else fields

    @classmethod
    def from_list(cls, value: Any) -> CacheSpec:
        """Raise ValueError when ``value`` is not one (written by someone else)."""
        try:
            ttl, key, validator, names, validate_on, *more = value
            parts = tuple(str(p) for p in more[0]) if more else ()
            spec = cls(int(ttl), str(key), str(validator), tuple(str(n) for n in names),
                       tuple(str(n) for n in validate_on), parts)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not a cache spec: {exc}") from None
        if (spec.validator not in VALIDATORS or not 0 < spec.ttl_ms <= MAX_TTL_MS
                or not spec.key or len(more) > 1 or not all(map(_known_part, spec.parts))
                or (spec.validator == "policy") != bool(set(spec.parts) - {REFRESH})):
            raise ValueError(f"not a cache spec: {value!r}")
        return spec

    @property
    def refresh(self) -> bool:
        """Whether a run ignores the cache's entry and stores its own."""
        return REFRESH in self.parts

    @property
    def used(self) -> bool:
        """Whether a run may reuse an entry at all (``never_use``: never, and none is
        stored either: nobody could read it)."""
        return self.validator != "never_use"


def _known_part(part: str) -> bool:
    if part in PARTS or part == REFRESH:
        return True
    prefix = EXCLUDED_INPUT if part.startswith(EXCLUDED_INPUT) else ONE_PARAMETER
    return part.startswith(prefix) and 0 < len(part) - len(prefix) <= PART_LIMIT


def marked(args_blob: bytes) -> bool:
    """False when the packed call surely carries no cache options: one byte scan."""
    return _MARK in args_blob


def take_spec(kwargs: dict[str, Any]) -> CacheSpec | None:
    """Remove the cache options from a call's keywords; None when it has none."""
    raw = kwargs.pop(CACHE_KEYWORD, None)
    return None if raw is None else CacheSpec.from_list(raw)


def inputs(spec: CacheSpec, args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's inputs by name, as Prefect 1's validators compare them: ``f(1, b=2)``
    and ``f(1, 2)`` are the same inputs. Positional ones past the known names are named
    by their place (``*2``)."""
    named = {(spec.names[i] if i < len(spec.names) else f"*{i}"): v
             for i, v in enumerate(args)}
    named.update(kwargs)
    named.pop(RUN_NAME_KEYWORD, None)  # a copy's run name is no input
    return named


def digest(spec: CacheSpec, args: list[Any], kwargs: dict[str, Any]) -> str:
    """The digest the validator compares: of every input (all_inputs), of the named
    ones (partial_inputs_only), or ANY_INPUTS (duration_only). Raise CodecError if an
    input cannot be packed (it came packed, so it can)."""
    if spec.validator in ("duration_only", "never_use"):
        return ANY_INPUTS
    given = inputs(spec, args, kwargs)
    if spec.validator == "partial_inputs_only":
        given = {k: v for k, v in given.items() if k in spec.validate_on}
    return hashlib.sha256(codec.pack(sorted(given.items()))).hexdigest()


def entry_message(redis_key: str, digest_: str, expires_ms: int, result: bytes) -> bytes:
    """The bytes an entry's signature covers: the key it lives at too, so that an entry
    copied under another key (another task's, other inputs') does not verify."""
    return codec.pack([redis_key, digest_, expires_ms, result])


def index_member(key: str, digest_: str, label: str = "") -> bytes:
    """A cached result's member in its partition's ``cache_index``: its cache key, its
    digest and a label an operator knows it by (what a key function returned: a Prefect 1
    target as rendered; "" for none), at most PART_LIMIT characters of it."""
    return codec.pack([key, digest_, label[:PART_LIMIT]])


def from_index(member: bytes) -> tuple[str, str, str]:
    """(key, digest, label) of an ``index_member``; ValueError when ``member`` is not
    one (written by someone else)."""
    try:
        key, digest_, label = codec.unpack(member)
    except (CodecError, TypeError, ValueError) as exc:
        raise ValueError(f"not a cache index member: {exc}") from None
    if not all(isinstance(v, str) for v in (key, digest_, label)):
        raise ValueError("not a cache index member: a field is not text")
    return key, digest_, label


@dataclass(frozen=True)
class Entry:
    digest: str
    expires_ms: int
    result: bytes  # the packed result, as a task's record holds it
    sig: str = ""

    def encode(self) -> bytes:
        return codec.pack([self.digest, self.expires_ms, self.result, self.sig])

    @classmethod
    def decode(cls, raw: bytes) -> Entry:
        """Raise ValueError when ``raw`` is not an entry."""
        try:
            digest_, expires, result, sig = codec.unpack(raw)
            if not isinstance(result, bytes) or not math.isfinite(float(expires)):
                raise ValueError("bad field")
            return cls(str(digest_), int(expires), result, str(sig))
        except (CodecError, TypeError, ValueError) as exc:
            raise ValueError(f"not a cache entry: {exc}") from None
