"""The worker's side of output caching (Prefect 1's ``cache_for``, Prefect 2/3's cache
policies): before a task with cache options runs, look its entry up; on a valid hit
complete it with the cached result without running it; after a successful run, store the
entry for ``cache_for``. A policy's digest is worked out by worker/cachekeys.py; an entry
keyed on the flow run's id lives no longer than the run's records (the worker's
``result_ttl``): no later run can reuse it.

Only a task whose arguments carry cache options (``cache.marked``: one byte scan) pays:
one GET before a run, one round trip (SET, and HDEL of a stale mark) after it, one HSET
marking a hit on its record. The entry is read as msgpack data, never unpickled; with
signing keys it is used only if its signature verifies (common/cache.py says why and what
a Redis writer can do without them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis
from balancer.common import cache, codec, importpath
from balancer.common.cache import RUN_ID_PART, CacheSpec, Entry
from balancer.common.codec import CodecError
from balancer.common.keys import Keys
from balancer.common.signing import Signer
from balancer.worker import cachekeys

from balancer import runcontext

log = logging.getLogger("worker")


@dataclass(frozen=True)
class Prepared:
    """A call with cache options, ready to look up and to run."""

    spec: CacheSpec
    args: bytes  # the call as the function takes it: without the cache options
    key: str  # the Redis key of its entry
    digest: str
    ttl_ms: int  # how long its entry lives
    label: str = ""  # what its key functions returned (a target as rendered), if any

    @property
    def refresh(self) -> bool:
        """Whether the run ignores the entry it finds (Prefect's ``refresh_cache``)."""
        return self.spec.refresh


def prepare(keys: Keys, task_id: str, fn_path: str, args_blob: bytes, run_ttl_ms: int
            ) -> tuple[bytes, Prepared | None]:
    """The call without its cache options, and what to look up (None: no caching, or
    cache options that are not valid, or a policy's key that cannot be made, which are
    logged and ignored: the task runs)."""
    if not cache.marked(args_blob):
        return args_blob, None
    try:
        args, kwargs = codec.decode_call(args_blob, refs_only=True)
        spec = cache.take_spec(kwargs)
    except (CodecError, ValueError) as exc:
        log.warning("task=%s: cache options unreadable (%s); it runs uncached", task_id, exc)
        return args_blob, None
    if spec is None:
        return args_blob, None
    stripped = codec.pack([args, kwargs])
    if not spec.used:
        return stripped, None
    ttl_ms = spec.ttl_ms
    label = ""
    if spec.validator != "policy":
        digest = cache.digest(spec, args, kwargs)
    else:
        facts = runcontext.current()
        try:
            if facts is None:
                raise cachekeys.KeyUnmade("it runs outside a task run")
            keyed = cachekeys.digest(spec, fn_path, args, kwargs, facts)
        except (cachekeys.KeyUnmade, importpath.TaskNotFound, importpath.TaskNotAllowed
                ) as exc:
            log.warning("task=%s: no cache key (%s); it runs uncached", task_id, exc)
            return stripped, None
        if keyed is None:  # its key functions said not to cache this run
            return stripped, None
        digest, label = keyed
        if RUN_ID_PART in spec.parts:
            ttl_ms = min(ttl_ms, run_ttl_ms)
    return stripped, Prepared(spec, stripped, keys.cache(spec.key, digest), digest, ttl_ms,
                              label)


def lookup(client: redis.Redis, signer: Signer | None, task_id: str,
           prepared: Prepared, now_ms: int) -> bytes | None:
    """The cached result (packed) if a valid entry exists at ``now_ms`` (Redis's clock,
    as the entry's expiry: workers' wall clocks differ), else None."""
    raw = client.get(prepared.key)
    if not isinstance(raw, bytes):  # none (a str only from a client that decodes: never)
        return None
    try:
        entry = Entry.decode(raw)
    except ValueError as exc:
        log.warning("task=%s: cache entry %s unreadable (%s); it runs", task_id,
                    prepared.key, exc)
        return None
    if entry.digest != prepared.digest or entry.expires_ms <= now_ms:
        return None
    if signer is not None and not signer.verify(
            cache.entry_message(prepared.key, entry.digest, entry.expires_ms, entry.result),
            entry.sig.encode()):
        log.warning("task=%s: cache entry %s is not signed with a signing key; ignored, the"
                    " task runs", task_id, prepared.key)
        return None
    return entry.result


def store(client: redis.Redis, signer: Signer | None, keys: Keys, prepared: Prepared,
          result: bytes, task_key: str, now_ms: int) -> None:
    """Store a successful run's result for ``cache_for``, note it in the partition's
    ``cache_index`` (what `balancer cache ls` and `rm` read; the members of expired
    entries are dropped from it here), and clear the task's ``cached`` mark (set by an
    earlier attempt whose acknowledgement was refused), in one round trip."""
    expires = now_ms + prepared.ttl_ms
    sig = ""
    if signer is not None:
        sig = signer.sign(cache.entry_message(prepared.key, prepared.digest, expires, result))
    pipe = client.pipeline(transaction=False)
    pipe.set(prepared.key, Entry(prepared.digest, expires, result, sig).encode(),
             px=prepared.ttl_ms)
    pipe.zadd(keys.cache_index,
              {cache.index_member(prepared.spec.key, prepared.digest, prepared.label): expires})
    pipe.zremrangebyscore(keys.cache_index, "-inf", now_ms)
    pipe.hdel(task_key, "cached")
    pipe.execute()
