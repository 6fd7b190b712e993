"""The contract between the Python code and the Lua scripts, written once: the lease token
grammar and every script's KEYS and ARGV layout.

Python and Lua both build and read these, so each rule lives here and its Lua side is
checked against it by ``tests/common/test_protocol.py``: the token patterns of
``_prelude.lua`` (``counted``, ``lease_token``) against ``parse_token``, and every script's
``-- KEYS:`` / ``-- ARGV:`` header against its ``LAYOUTS`` entry, which the wrapper in
``common/scripts.py`` follows. The wake-list signals are owned by ``common/signals.py``
(its ``LUA_KINDS`` mirrors the prelude's ``SIGNAL`` table), the prefetch rules by
``common/prefetch.py``.

Lease tokens
------------

A lease is the member ``<task id>|<token>`` of its worker's leases set, and the token is
new for every lease, so that removing the member fences a late ack::

    token   = prefix "." index [ "t" ] [ "!" ]
    prefix  = epoch "." batch [ "u" ]
    epoch   = digit+          the leader's epoch (leader token "<epoch>|<dispatcher id>")
    batch   = alnum+          the dispatcher's count of lease calls, or a submit's fresh hex
                              id (a standing offer taken by submit_small.lua); never ending
                              in "u" when counted
    index   = digit+          1-based place of the lease in its lease call
    "u"     = uncounted       the queue has no concurrency limit: the lease is not counted
                              in ``inflight`` (one write per batch saved everywhere else)
    "t"     = tag-counted     the task has tags with a limit (balancer/taglimits.py): the lease
                              counts in ``tag-inflight``, for the tags its task record's
                              ``tagged`` field names (``token|tag,tag``); every path that
                              ends the lease gives them back (``untag`` in the prelude)
    "!"     = suspect         the task was held ahead by a worker that died: a pool child
                              tells Redis when it starts it (see reap.lua)

A "u" right before the index's "." is the flag when a batch character precedes it
(``1.2uu.3``: batch ``2u``, uncounted; ``1.u.3``: batch ``u``, counted). Python builds the
prefix (``lease_prefix``: the dispatcher and a submit taking an offer); Lua adds the index
and the tag and suspect marks (``lease_token`` in the prelude). Only those places carry a
meaning, never a letter anywhere else; a token not of the grammar counts in ``inflight``
and is not tag-counted (its record's ``tagged`` field could not name it anyway).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from typing import NamedTuple

# The version of what every process of a cluster reads of the others: the key schema, the
# records, the inbox entries, the signals and heartbeats, the scripts' KEYS and ARGV. A
# change that a process of the release before would misread raises it. A dispatcher
# leases nothing to a worker that reports another version (balancer/view.py; a worker of
# a release from before it was reported counts as version 0), and `balancer status` shows
# each worker's (README, "Upgrading"). 2: a task record's retry_delay may be a list of
# delays ("1,10,"), which fail.lua of version 1 cannot read.
VERSION = 2


def other_release(version: int) -> bool:
    """Whether a process reporting ``version`` reads and writes the formats otherwise than
    this code: a dispatcher leases nothing to such a worker."""
    return version != VERSION


@cache
def release() -> str:
    """The installed release of this code (its package's version), for operators."""
    try:
        return metadata.version("balancer")
    except metadata.PackageNotFoundError:  # run from a checkout that was not installed
        return "unknown"


class Stamp(NamedTuple):
    """What the dispatcher leading partition 0 stores of itself (``Keys.protocol``), for
    clients and workers to see whether they read and write the formats it does."""

    version: int
    release: str


def stamp() -> str:
    """This code's stamp, as a leading dispatcher stores it: ``<version>|<release>``."""
    return f"{VERSION}|{release()}"


def parse_stamp(raw: bytes | None) -> Stamp | None:
    """A stored stamp; None when none is (or it is unreadable: a check that cannot read
    the stamp lets the client go, as before stamps were written)."""
    if not raw:
        return None
    version, _, name = raw.partition(b"|")
    try:
        return Stamp(int(version), name.decode(errors="replace") or "unknown")
    except ValueError:
        return None


class ProtocolMismatch(RuntimeError):
    """This client's release reads and writes the cluster's formats otherwise than the
    dispatcher leading it: what it would write would be misread."""


def check_cluster(stored: Stamp | None, namespace: str) -> None:
    """Refuse to write to a cluster whose leading dispatcher runs another protocol version
    (README, "Upgrading"): its workers would misread the records."""
    if stored is None or stored.version == VERSION:
        return
    raise ProtocolMismatch(
        f"namespace {namespace!r} is led by a dispatcher of release {stored.release}"
        f" (protocol {stored.version}); this client runs release {release()} (protocol"
        f" {VERSION}), whose records its workers would misread: run this client with the"
        f" cluster's release (README: Upgrading)")


# The wake list holds at most this many signals: the oldest go first (a lost signal costs
# latency, never a task). Mirrored by WAKE_CAP in _prelude.lua (checked by a test).
WAKE_CAP = 10_000

UNCOUNTED = "u"
TAGGED = "t"
SUSPECT = "!"

_TOKEN = re.compile(r"(\d+)\.([0-9A-Za-z]+?)(u?)\.(\d+)(t?)(!?)")


class Token(NamedTuple):
    """A lease token, read by ``parse_token``."""

    epoch: int
    batch: str
    counted: bool
    position: int  # the grammar's index (a tuple has its own ``index`` method)
    suspect: bool
    tagged: bool = False


def lease_prefix(epoch: str | int, batch: str | int, counted: bool) -> str:
    """The token prefix of one lease call: the lease script appends each lease's index.

    ``batch`` is a count or a hex id (never ending in "u"). Not checked here: an epoch
    read from a bad offer must cost the submit its offer (the script refuses an epoch
    that does not lead), not an exception."""
    return f"{epoch}.{batch}{'' if counted else UNCOUNTED}"


def lease_token(prefix: str, index: int, suspect: bool = False, tagged: bool = False) -> str:
    """A lease's token, as ``lease_token`` in _prelude.lua builds it."""
    return f"{prefix}.{index}{TAGGED if tagged else ''}{SUSPECT if suspect else ''}"


def parse_token(token: str) -> Token | None:
    """Read a lease token; None when it does not follow the grammar."""
    m = _TOKEN.fullmatch(token)
    if m is None:
        return None
    epoch, batch, uncounted, index, tagged, suspect = m.groups()
    return Token(int(epoch), batch, not uncounted, int(index), bool(suspect), bool(tagged))


def is_counted(token: str) -> bool:
    """Whether the lease counts in ``inflight``: as ``counted`` in _prelude.lua, a token
    not of the grammar counts (the safe side: it is uncounted only when it says so)."""
    parsed = parse_token(token)
    return parsed is None or parsed.counted


def is_tagged(token: str) -> bool:
    """Whether the lease counts in ``tag-inflight`` (``tag_counted`` in _prelude.lua)."""
    parsed = parse_token(token)
    return parsed is not None and parsed.tagged


def is_suspect(token: str) -> bool:
    """Whether the lease is of a suspect (the token's last character is "!")."""
    return token.endswith(SUSPECT)


def leader_epoch(leader_token: str) -> str:
    """The epoch of a leader token ``<epoch>|<dispatcher id>``."""
    return leader_token.split("|", 1)[0]


# -- script layouts ------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """What one script takes: its KEYS and ARGV, the fixed head of each by name (a key by
    its kind in common/keys.py, or ``source`` for any key), then in words what repeats.

    The script's header says the same (``-- KEYS: <names>; then <rest>``), and its wrapper
    passes the head in this order: a test checks both, so the positional arithmetic on
    either side cannot drift from the other unnoticed.
    """

    keys: tuple[str, ...]
    argv: tuple[str, ...]
    keys_then: str = ""
    argv_then: str = ""


def _names(text: str) -> tuple[str, ...]:
    """The names of a comma-separated head ("none": no head)."""
    return () if text.strip() == "none" else tuple(n.strip() for n in text.split(","))


def layout(keys: str, argv: str, keys_then: str = "", argv_then: str = "") -> Layout:
    """A Layout from its header's words, as the script's header writes them."""
    return Layout(_names(keys), _names(argv), keys_then, argv_then)


LAYOUTS: dict[str, Layout] = {
    "ack": layout(
        "leases, inflight, wake, deadlines, inbox, ahead, idle, events, tag-inflight,"
        " delayed",
        "worker id, ttl ms, finished ms, task count, take, quiet above, ahead field,"
        " events cap, task events",
        "per task: task, flow, flow done, then (child task, child queue) per child",
        "per task: id, token, queue, started ms, result, has deadline, event record, child"
        " count, then (child id, child score, child queue name) per child"),
    "assign": layout(
        "leader, inbox, leases, inflight, queue, deadlines, events, tag-inflight",
        "leader token, worker id, queue name, capacity, grace ms, lease prefix, refill at,"
        " prefetch depth, events cap, task events, tagged",
        "task...", "task id... (in the order of the task keys), then with tagged 1 the"
        " counted tags of each task ('' none)"),
    "cancel": layout(
        "flow, flow done, delayed, dlq, deadlines, inflight, wake, gate, flow tasks, events,"
        " tag-inflight",
        "ttl ms, task count, length of flow tasks seen, events cap, task events",
        "per task: task, queue, and with a lease: leases, inbox, cancels",
        "per task: id, queue name, lease token, worker id, inbox entry, mapped seen"),
    "cascade": layout("cascade, flow, flow done, gate, wake, events",
                      "settled task id, ttl ms, error, how it settled ('failed' or 'skipped'),"
                      " events cap",
                      "child task...", "(child id, gated 0/1)..."),
    "dlq_purge": layout("dlq, task, flow, flow done, cascade, wake, events",
                        "task id, ttl ms, events cap"),
    "dlq_retry": layout("dlq, task, queue, wake, delayed", "task id"),
    "fail": layout(
        "task, leases, inflight, flow, flow done, wake, delayed, cascade, deadlines, queue,"
        " dlq, events, tag-inflight",
        "worker id, token, task id, error, ttl ms, mode, poison threshold, queue name,"
        " started ms, events cap, task events, summary"),
    "flow_close": layout("flow, flow done, flow tasks", "state, ttl ms, error"),
    "flow_extend": layout(
        "flow, flow tasks, queues, wake, delayed", "flow id, task count, signal",
        "(task, queue) per task",
        "per task: id, queue name, score, listing, pair count, the pairs"),
    "flow_release": layout("task, queue, queues, wake, flow, flow done, delayed",
                           "task id, queue name, score, ttl ms, error, signal"),
    "gate": layout(
        "gate, task, flow, flow done, wake, cascade, queue, delayed",
        "task id, mode, ttl ms, error, state, result, queue name, score, count",
        "child task... (expand: the map's), then per map expanded with it (map task, child"
        " task...); or (dependent task, dependent queue or the gate)... (gather)",
        "expand: dependents, dependent count, chained count, child id..., then per map"
        " expanded with it (map id, dependents, dependent count, child id...); gather:"
        " (dependent id, score, gated 0/1)..."),
    "heartbeat": layout("worker, workers, leases, wake, events",
                        "worker id, heartbeat, ttl ms, events cap"),
    "leader": layout("leader, epoch, events, dispatchers", "dispatcher id, ttl ms, events cap"),
    "mark_running": layout("leases, events", "worker id, events cap, task events", "task...",
                           "(task id, token, started ms)... in the order of the task keys"),
    "loop": layout("leases, task, deadlines", "task id, token, worker id, loop, deadline ms"),
    "name_run": layout("leases, task", "task id, token, name"),
    "promote": layout("delayed, gate", "none", "(task, queue)...", "task id..."),
    "queue_rm": layout("queues, queue, queue-conf, offer, inflight, wake", "queue name"),
    "reap": layout(
        "leader, worker, workers, inbox, leases, inflight, dlq, deadlines, ahead, events,"
        " tag-inflight, delayed",
        "leader token, worker id, seen before ms, poison threshold, quarantine error,"
        " events cap, task events, why",
        "(task, queue)...", "(task id, lease token, started)..."),
    "release": layout("inbox, leases, inflight, wake, deadlines, tag-inflight, delayed",
                      "worker id",
                      "(task, queue)...", "(inbox entry, task id, token, queue name)..."),
    "set_aside": layout("aside, source", "entry id, record, source type, member"),
    "submit_small": layout(
        "flow, flows, queues, queue, wake, offer, events, backlog",
        "flow id, created ms, recent flows, queue name, signal, task count, flow pairs,"
        " events cap, task events",
        "task... (one per task), then with an offer: leader, queue-conf, workers, inflight,"
        " deadlines, tag-limits, (inbox, leases) per offered worker, the offered workers' other"
        " queues...",
        "the flow's field/value pairs, then per task: id, score, pair count, the pairs; then"
        " the offer as read ('' when none), and with one: its leader epoch, lease prefix,"
        " grace ms, worker count, other queue count, prefetch depth, then (worker id,"
        " capacity, host load, places) per offered worker"),
    "schedule_fire": layout(
        "leader, schedules, schedule, flow, flows, queues, wake, flow done, gate, delayed",
        "leader token, schedule id, due ms, next due ms, version, skipped",
        "task... (one per task), then queue... (one per queue the run touches)",
        "for a fire: flow id, recent flows, signal, the flow's pair count and pairs, task"
        " count, then per task its pair count and pairs, queue count, then per queue its"
        " name, its ready count and (score, id) per ready task, then the gated task count"
        " and (when, id) per gated task with no upstream (balancer.gates decides those)"),
    "schedule_put": layout("schedules, schedule, wake", "schedule id, clocks, first due ms",
                           "", "field/value pairs of its record"),
    "slots_take": layout("none", "holder, occupy, lease ms, rate",
                         "concurrency... (one per limited name)",
                         "(name, limit, decay per second) per key"),
    "take": layout("inbox, leases, fetched", "count"),
}
