"""Prefect's global concurrency limits: ``with concurrency("db", occupy=1):`` runs its block
only while it holds that many of the limit's slots, cluster-wide, whatever process runs it
(a task on a worker, a @flow function, any client code). ``balancer limit set db 5`` (or
``set_concurrency_limit("db", 5)``) sets how many slots a limit has; a name with no limit
holds nothing back (with ``strict=True`` it is an error). Tag limits bound whole task
runs, from the dispatcher; these bound a block of code, wherever it runs.

Slots are leased, not owned: a holder takes them for ``BALANCER_CONCURRENCY_LEASE``
seconds (30) and one thread per process renews the leases of every block it holds, each
third of a lease, so that a holder that dies (kill -9, a lost host) frees its slots once
its lease runs out and never holds a limit for good. A block that waits polls, backing
off from 5 ms to 250 ms; ``timeout_seconds`` bounds the wait (``ConcurrencyTimeout``, a
``TimeoutError``). Several names are taken all or none, in one script call
(common/lua/slots_take.lua). ``async with concurrency(...)`` waits without blocking its
event loop.

``rate_limit("api")`` (Prefect's) takes slots the same way and never gives them back: they
decay, at the limit's ``slot_decay_per_second`` (``balancer limit set api 10
--slot-decay-per-second 2``), one after another, so that past a burst of ``limit`` calls
it lets that many calls a second through, cluster-wide. Only a limit with decay can be
taken so; blocks and rate_limit's slots count against the same limit.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid

# Not `import asyncio`: importing the submodule balancer.concurrency.asyncio (Prefect's
# path) rebinds that name in this package to the submodule.
from asyncio import sleep as async_sleep
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType

import redis

from balancer.common.connection import server_time_ms
from balancer.common.keys import Keys
from balancer.common.replies import as_bytes_list
from balancer.common.scripts import Scripts

log = logging.getLogger("balancer.concurrency")

MAX_NAME = 200
MAX_LEASE = 86_400.0  # seconds a block's slots may stay held unrenewed
POLL_FIRST, POLL_MOST = 0.005, 0.25


class ConcurrencyTimeout(TimeoutError):
    """The slots were not free within ``timeout_seconds``."""


class ConcurrencyError(ValueError):
    """A limit that cannot be taken: it holds fewer slots than asked for, (``strict``) it
    is not set, or (``rate_limit``) its slots do not decay."""


def check_name(name: object) -> str:
    if (not isinstance(name, str) or not name or len(name) > MAX_NAME
            or not name.isprintable()):
        raise ValueError(f"invalid concurrency limit name {name!r}: use 1 to {MAX_NAME}"
                         " printable characters")
    return name


class concurrency:  # Prefect's name, lower case as a function's: a context manager
    """``with concurrency("db"):`` / ``async with concurrency(["db", "api"], occupy=2):``
    hold ``occupy`` slots of each named limit for the block (module docstring).

    As Prefect 3's, ``max_retries`` bounds the tries after the first (past them:
    ``ConcurrencyTimeout``) and ``lease_duration`` is how long, in seconds, the slots stay
    held unrenewed: how soon a holder that died frees them (``BALANCER_CONCURRENCY_LEASE``
    when not given)."""

    _rate = False  # rate_limit's taking (_RateTaking): slots left to decay, not held

    def __init__(self, names: str | Sequence[str], occupy: int = 1,
                 timeout_seconds: float | None = None, strict: bool = False, *,
                 max_retries: int | None = None, lease_duration: float | None = None,
                 client: redis.Redis | None = None, redis_url: str | None = None,
                 namespace: str | None = None) -> None:
        given = [names] if isinstance(names, str) else list(names)
        if not given:
            raise ValueError("concurrency: give at least one limit name")
        self.names = sorted({check_name(n) for n in given})
        if isinstance(occupy, bool) or not isinstance(occupy, int) or occupy < 1:
            raise ValueError(f"concurrency: occupy must be a positive integer, got {occupy!r}")
        if timeout_seconds is not None and not timeout_seconds >= 0:
            raise ValueError("concurrency: timeout_seconds must be a number of seconds,"
                             f" got {timeout_seconds!r}")
        if max_retries is not None and (isinstance(max_retries, bool)
                                        or not isinstance(max_retries, int) or max_retries < 0):
            raise ValueError("concurrency: max_retries must be a count of tries (0 or more),"
                             f" got {max_retries!r}")
        if lease_duration is not None and (isinstance(lease_duration, bool)
                                           or not isinstance(lease_duration, (int, float))
                                           or not 0.3 <= lease_duration <= MAX_LEASE):
            raise ValueError(f"concurrency: lease_duration must be from 0.3 to {MAX_LEASE:.0f}"
                             f" seconds, got {lease_duration!r}")
        self.occupy, self.timeout, self.strict = occupy, timeout_seconds, strict
        self.max_retries, self.lease_duration = max_retries, lease_duration
        self._where = (client, redis_url, namespace)
        self._held: _Held | None = None
        self._frees_in_ms = -1  # rate_limit's: when the last try's answer frees a slot

    def __enter__(self) -> concurrency:
        for wait in self._polls():
            time.sleep(wait)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._give()

    async def __aenter__(self) -> concurrency:
        for wait in self._polls():  # its Redis calls are short: made on the loop
            await async_sleep(wait)
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._give()

    # -- taking and giving ---------------------------------------------------------------

    def _polls(self) -> Iterator[float]:
        """Take the slots: yields how long to wait before each next try, until a try
        holds them (then they are held and renewed); ConcurrencyTimeout past
        ``timeout_seconds``. The sync and async entries wait each their own way. A wait
        is the backoff's, or until a rate_limit slot decays when the script says when
        (its exact time: polling would let fewer calls through than the rate)."""
        held = self._try_first()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        delay = POLL_FIRST
        retries = 0
        while held is None:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise self._timed_out()
            if self.max_retries is not None and retries >= self.max_retries:
                raise self._timed_out(f"after {retries} retries (max_retries)")
            retries += 1
            wait = delay
            if self._frees_in_ms >= 0:  # and a few ms of jitter: waiters not in step
                wait = min(self._frees_in_ms / 1000 + random.uniform(0.001, 0.003), POLL_MOST)
            yield wait if deadline is None else min(wait, deadline - now)
            delay = _next(delay)
            held = self._try()
        if self._rate:  # nothing to give back: the slots decay
            return
        self._held = held
        if held.names:  # none when no name given has a limit: nothing to renew
            _renewer().add(held)

    def _try_first(self) -> _Held | None:
        from balancer.client import here
        from balancer.submit import client_scripts

        client, settings = here(*self._where)
        self._scripts = client_scripts(client, Keys(settings.namespace), settings)
        self._lease_ms = int((self.lease_duration or settings.concurrency_lease) * 1000)
        self._holder = uuid.uuid4().hex
        return self._try()

    def _try(self) -> _Held | None:
        """One attempt: the limits as they are set now (read each time: an operator may
        change one while blocks wait), then their slots, all or none."""
        limits = _limits(self._scripts, self.names)
        missing = [n for n in self.names if n not in limits]
        if self.strict and missing:
            raise ConcurrencyError(f"no concurrency limit {missing[0]!r} is set"
                                   f" (strict=True; `balancer limit set {missing[0]} N`)")
        limited = [(n, *limits[n]) for n in self.names if n in limits]
        self._frees_in_ms = -1
        if limited:
            code, detail, frees_in_ms = self._scripts.slots_take(
                self._holder, limited, self.occupy, self._lease_ms, self._rate)
            self._frees_in_ms = frees_in_ms if self._rate else -1
            if code == -1:
                raise ConcurrencyError(f"concurrency limit {detail!r} has fewer slots than"
                                       f" occupy={self.occupy}: it could never be taken")
            if code == -2:
                raise ConcurrencyError(
                    f"concurrency limit {detail!r} has no slot decay, so rate_limit's slots"
                    f" would never free: give it one (`balancer limit set {detail} N"
                    f" --slot-decay-per-second R`), or hold it with `concurrency`")
            if code != 1:
                return None
        return _Held(self._scripts, self._holder, self.occupy, [n for n, *_ in limited],
                     self._lease_ms)

    def _give(self) -> None:
        held, self._held = self._held, None
        if held is not None and held.names:
            _renewer().remove(held)
            held.give()

    def _timed_out(self, when: str = "") -> ConcurrencyTimeout:
        return ConcurrencyTimeout(
            f"{'rate limit' if self._rate else 'concurrency'} {', '.join(self.names)}:"
            f" {self.occupy} slot(s) not free {when or f'within {self.timeout}s'}")


def rate_limit(names: str | Sequence[str], occupy: int = 1,
               timeout_seconds: float | None = None, strict: bool = False, *,
               client: redis.Redis | None = None, redis_url: str | None = None,
               namespace: str | None = None) -> None:
    """Prefect's ``rate_limit``: wait until ``occupy`` slots of each named limit are free,
    take them and return; they are not given back but decay at the limit's
    ``slot_decay_per_second`` (module docstring). A name with no limit holds nothing back
    (``strict=True``: ``ConcurrencyError``); a limit without decay is refused
    (``ConcurrencyError``: its slots would never free); ``timeout_seconds`` bounds the
    wait (``ConcurrencyTimeout``)."""
    with _RateTaking(names, occupy, timeout_seconds, strict, client=client,
                     redis_url=redis_url, namespace=namespace):
        pass  # taken on entering; nothing to give back on leaving


async def arate_limit(names: str | Sequence[str], occupy: int = 1,
                      timeout_seconds: float | None = None, strict: bool = False, *,
                      client: redis.Redis | None = None, redis_url: str | None = None,
                      namespace: str | None = None) -> None:
    """``rate_limit`` for async code: waits without blocking its event loop
    (``balancer.concurrency.asyncio.rate_limit``, Prefect's path, is this one)."""
    async with _RateTaking(names, occupy, timeout_seconds, strict, client=client,
                           redis_url=redis_url, namespace=namespace):
        pass  # taken on entering; nothing to give back on leaving


class _RateTaking(concurrency):
    """rate_limit's wait, a block's entry whose slots are left to decay: its script call
    scores them by when they have decayed, it waits until the first one frees, and it
    holds nothing to renew or give back."""

    _rate = True


def _next(delay: float) -> float:
    """The next poll's wait: doubling, jittered so that waiters do not poll in step."""
    return min(POLL_MOST, delay * 2) * random.uniform(0.8, 1.2)


def _limits(scripts: Scripts, names: Sequence[str]) -> dict[str, tuple[int, float]]:
    """The limits set among ``names``, with their decay per second (0: none), in one round
    trip (a value that is no count, written by hand, reads as no limit; a decay that is no
    positive number, as none)."""
    keys = scripts.keys.of(0)
    pipe = scripts.client.pipeline(transaction=False)
    pipe.hmget(keys.concurrency_limits, list(names))
    pipe.hmget(keys.concurrency_decay, list(names))
    values, decays = pipe.execute()
    found = {name: (_slots(value), _decay(decay))
             for name, value, decay in zip(names, values, decays)}
    return {name: (slots, decay) for name, (slots, decay) in found.items()
            if slots is not None}


@dataclass(eq=False)
class _Held:
    """Slots one block holds: their member in each limited name's set."""

    scripts: Scripts
    holder: str
    occupy: int
    names: list[str]
    lease_ms: int

    @property
    def member(self) -> str:
        return f"{self.holder}|{self.occupy}"

    def keys(self) -> list[str]:
        k = self.scripts.keys.of(0)
        return [k.concurrency(n) for n in self.names]

    def renew(self) -> list[str]:
        """Move the lease on (ZADD XX: a lease already ended stays ended), by Redis's
        clock, which slots_take.lua reads. Returns the names whose slots are no longer
        held: their lease lapsed (this process stalled, or Redis was away, past it) and
        another block's take swept them, so others may hold them now."""
        until = self.scripts.now_ms() + self.lease_ms
        pipe = self.scripts.client.pipeline(transaction=False)
        for key in self.keys():
            pipe.zadd(key, {self.member: until}, xx=True)
            # Its score, or nil once swept: ZADD XX INCR 0 reads it, writing nothing, with
            # the command a worker's ACL user already has (an older ACL's too).
            pipe.zadd(key, {self.member: 0}, xx=True, incr=True)
        replies = pipe.execute()
        return [name for name, score in zip(self.names, replies[1::2]) if score is None]

    def give(self) -> None:
        try:
            pipe = self.scripts.client.pipeline(transaction=False)
            for key in self.keys():
                pipe.zrem(key, self.member)
            pipe.execute()
        except redis.RedisError as exc:  # its lease ends on its own
            log.warning("concurrency %s: slots not given back (%s); they free when their"
                        " lease ends", ", ".join(self.names), exc)


class _Renewer(threading.Thread):
    """Renews the lease of every block this process holds, each third of its lease."""

    def __init__(self) -> None:
        super().__init__(name="balancer-concurrency", daemon=True)
        self._due: dict[_Held, float] = {}  # when each is renewed next (monotonic)
        self._lock = threading.Lock()
        self._wake = threading.Event()

    def add(self, held: _Held) -> None:
        with self._lock:
            self._due[held] = time.monotonic() + held.lease_ms / 3000
        self._wake.set()  # it may be due before what the thread sleeps for

    def remove(self, held: _Held) -> None:
        with self._lock:
            self._due.pop(held, None)

    def run(self) -> None:
        while True:
            with self._lock:
                next_due = min(self._due.values(), default=None)
            self._wake.wait(None if next_due is None
                            else max(0.0, next_due - time.monotonic()))
            self._wake.clear()
            now = time.monotonic()
            with self._lock:
                due = [h for h, at in self._due.items() if at <= now]
                for h in due:
                    self._due[h] = now + h.lease_ms / 3000
            for h in due:
                try:
                    lapsed = h.renew()
                except redis.RedisError as exc:  # tried again at the next third
                    log.warning("concurrency %s: lease not renewed (%s)",
                                ", ".join(h.names), exc)
                    continue
                if lapsed:
                    self._lapsed(h, lapsed)

    def _lapsed(self, held: _Held, names: list[str]) -> None:
        """Said once: the block runs on, but its slots of ``names`` are free for others
        (the limit may be exceeded meanwhile). It renews the rest."""
        log.warning("concurrency %s: the block's lease of %.1fs lapsed before it was"
                    " renewed (its process stalled or Redis was away that long); its"
                    " slots were freed for other blocks while it runs on",
                    ", ".join(names), held.lease_ms / 1000)
        held.names = [n for n in held.names if n not in names]
        if not held.names:
            self.remove(held)


_renewer_lock = threading.Lock()
_the_renewer: _Renewer | None = None


def _renewer() -> _Renewer:
    global _the_renewer
    with _renewer_lock:
        if _the_renewer is None or not _the_renewer.is_alive():
            _the_renewer = _Renewer()
            _the_renewer.start()
        return _the_renewer


# -- the limits ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConcurrencyLimit:
    name: str
    limit: int | None  # None: not set (slots are still held under it)
    held: int  # slots held now (rate_limit's until they have decayed)
    slot_decay_per_second: float = 0.0  # how fast rate_limit's slots free (0: none)


MAX_DECAY = 1_000_000.0


def set_concurrency_limit(name: str, limit: int | None, client: redis.Redis | None = None,
                          *, slot_decay_per_second: float = 0.0, redis_url: str | None = None,
                          namespace: str | None = None) -> None:
    """Let at most ``limit`` slots of ``name`` be held at once, cluster-wide; None removes
    the limit (its blocks then wait for nothing). ``slot_decay_per_second``: how many of
    ``rate_limit``'s slots free each second (0, the default: none, and ``rate_limit``
    refuses the limit; a block's slots free when it ends either way)."""
    from balancer.client import resolve_url, talking

    check_name(name)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or not 1 <= limit <= 1_000_000):
        raise ValueError(f"concurrency limit {name!r}: the limit must be an integer from 1"
                         f" to 1000000, got {limit!r}")
    if (isinstance(slot_decay_per_second, bool)
            or not isinstance(slot_decay_per_second, (int, float))
            or not 0 <= slot_decay_per_second <= MAX_DECAY):
        raise ValueError(f"concurrency limit {name!r}: slot_decay_per_second must be a number"
                         f" from 0 to {MAX_DECAY:.0f}, got {slot_decay_per_second!r}")
    conn, settings = resolve_url(client, redis_url, namespace)
    keys = Keys(settings.namespace)
    with talking(conn):
        pipe = conn.pipeline(transaction=True)  # the limit and its decay change together
        if limit is None:
            pipe.hdel(keys.concurrency_limits, name)
        else:
            pipe.hset(keys.concurrency_limits, name, limit)
        if limit is None or not slot_decay_per_second:
            pipe.hdel(keys.concurrency_decay, name)
        else:
            pipe.hset(keys.concurrency_decay, name, repr(float(slot_decay_per_second)))
        pipe.execute()


def concurrency_limits(client: redis.Redis | None = None, *, redis_url: str | None = None,
                       namespace: str | None = None) -> list[ConcurrencyLimit]:
    """Every limit set, with the slots held under it now, by name."""
    from balancer.client import resolve_url, talking

    conn, settings = resolve_url(client, redis_url, namespace)
    keys = Keys(settings.namespace)
    with talking(conn):
        raw = {_text(k): v for k, v in conn.hgetall(keys.concurrency_limits).items()}
        names = sorted(raw)
        if not names:
            return []
        now = int(server_time_ms(conn, keys.concurrency_limits))
        pipe = conn.pipeline(transaction=False)
        pipe.hmget(keys.concurrency_decay, names)
        for n in names:
            pipe.zrangebyscore(keys.concurrency(n), now, "+inf")
        decays, *members = pipe.execute()
    out = []
    for n, held, decay in zip(names, members, decays):
        out.append(ConcurrencyLimit(n, _slots(raw[n]),
                                    sum(_occupied(m) for m in as_bytes_list(held)),
                                    _decay(decay)))
    return out


def _slots(value: bytes | str | None) -> int | None:
    """A limit's slots as stored; None when there is none, or it is no count (written by
    hand): such a limit holds nothing back."""
    text = _text(value) if value is not None else ""
    return int(text) if text.isdigit() else None


def _decay(value: bytes | str | None) -> float:
    """A limit's decay per second as stored; 0 when there is none, or it is no positive
    finite number (written by hand)."""
    try:
        decay = float(_text(value)) if value is not None else 0.0
    except ValueError:
        return 0.0
    return decay if 0 < decay <= MAX_DECAY else 0.0


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _occupied(member: bytes) -> int:
    _, _, occupy = member.rpartition(b"|")
    return int(occupy) if occupy.isdigit() else 1
