"""Turn a flow into Redis records, atomically: either the whole flow exists, with its
ready tasks queued, or none of it.

A flow is written in one MULTI/EXEC transaction. A small submit (a few ready tasks of one
queue, no queue configured) is one script call instead (``submit_small.lua``), the latency
of a one-task flow: the records, and the taking of the dispatcher's standing offer for
the queue when this client saw one. When the offer still stands and every check still
holds, the tasks are leased to the offered worker at once; otherwise they stay queued and
the dispatcher is told, as for any submit.
"""

from __future__ import annotations

import logging
import random
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import redis

from balancer import caching, parameter, tagging, taskclass
from balancer.common import clusterfacts, codec, keytypes, partitions, protocol, signals, signing
from balancer.common.cache import CACHE_KEYWORD
from balancer.common.codec import MAX_DEPTH, CodecError, TooDeep, UpstreamRef
from balancer.common.connection import SlotMoved, slot_moved
from balancer.common.importpath import RUN_NAME_KEYWORD
from balancer.common.keys import Keys
from balancer.common.models import FlowState, TaskState, new_id
from balancer.common.retry import is_outage
from balancer.common.scripts import NotReplicated, Scripts, durability
from balancer.common.settings import Settings
from balancer.flow import Flow, FlowError, Node, SubmitRefused
from balancer.mapping import MAP_KEYWORD
from balancer.options import EXACT_SCORE_LIMIT, delay_field
from balancer.parameter import Parameter
from balancer.run import FlowRun
from balancer.scheduling import task_score
from balancer.task import RUN_NAME_TRAVELS, Task

log = logging.getLogger("balancer.client")

RECENT_FLOWS = 1000
# How long a submit is sent again through a failover (_sent_through_failovers).
RESEND_PATIENCE = 10.0
T = TypeVar("T")
# A small submit trims the recent flows to RECENT_FLOWS once in this many (at random): a
# call saved on the others, and the list runs over by about this many at most.
TRIM_EVERY = 64
_trim = random.Random()


# Argument types that hold no node or parameter, passed as they are without a walk.
_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})


def _with_refs(value: Any, ids: dict[Node, str], params: dict[Parameter, Any],
               depth: int = 0) -> Any:
    """``value`` with each node replaced by a reference to its task's result, and each
    parameter by its value for this run. The depth was checked at the call, but a list
    passed then may have been nested deeper since: counted here again, so that the
    recursion stays bounded."""
    if isinstance(value, Node):
        return UpstreamRef(ids[value])
    if isinstance(value, Parameter):
        return params[value]
    if isinstance(value, (list, tuple, dict)) and depth >= MAX_DEPTH:
        raise TooDeep()
    if isinstance(value, tuple) and hasattr(value, "_asdict"):  # a NamedTuple
        if codec.is_registered(type(value)):
            return value
        return {k: _with_refs(v, ids, params, depth + 1) for k, v in value._asdict().items()}
    if isinstance(value, (list, tuple)):
        return [_with_refs(v, ids, params, depth + 1) for v in value]
    if isinstance(value, dict):
        return {k: _with_refs(v, ids, params, depth + 1) for k, v in value.items()}
    return value


def call_keywords(task: Task) -> dict[str, Any]:
    """What travels with each call of ``task`` beside its arguments, under keywords of the
    product's that the worker takes out before the call (signed with the arguments): a
    task class's constructor arguments, the cache options, a copy's run name template. A
    flow's submit and a @flow function's (balancer/dynamic.py) both send them."""
    out: dict[str, Any] = {}
    init = taskclass.init_arguments(task)
    if init is not None:
        out[taskclass.INIT_KEYWORD] = init
    cached = caching.spec(task)
    if cached is not None:
        out[CACHE_KEYWORD] = cached.to_list()
    if task.task_run_name is not None and task.__dict__.get(RUN_NAME_TRAVELS):
        out[RUN_NAME_KEYWORD] = task.task_run_name  # a copy's (balancer/runnames.py)
    return out


def _encode_args(node: Node, ids: dict[Node, str], params: dict[Parameter, Any],
                 limit: int) -> bytes:
    name = node.task.name
    try:
        args = tuple([a if type(a) in _SCALARS else _with_refs(a, ids, params)
                      for a in node.args])
        kwargs = {k: v if type(v) in _SCALARS else _with_refs(v, ids, params)
                  for k, v in node.kwargs.items()}
    except TooDeep:
        try:
            codec.check_depth(name, node.args, node.kwargs)  # to name the argument
        except TooDeep as exc:
            raise FlowError(str(exc)) from None
        raise FlowError(f"task {name!r}: an argument {TooDeep()}") from None
    except CodecError as exc:
        raise FlowError(f"task {name!r}: {exc}") from None
    for up, key in node.upstream.items():
        if key is None:
            continue
        if key in kwargs:
            raise FlowError(f"task {name!r}: keyword {key!r} is given twice")
        kwargs[key] = UpstreamRef(ids[up])
    kwargs.update(call_keywords(node.task))
    if node.mapped is not None:  # with the arguments: signed with them
        kwargs[MAP_KEYWORD] = node.mapped.to_list()
    try:
        return codec.encode_call(name, args, kwargs, limit)
    except CodecError as exc:
        raise FlowError(str(exc)) from None


def _score(node: Node, settings: Settings, now_ms: int) -> float:
    return task_score(now_ms, node.task.priority, settings.aging_seconds * 1000)


def _task_record(node: Node, flow_id: str, ids: dict[Node, str], children: list[Node],
                 params: dict[Parameter, Any], settings: Settings, now_ms: int
                 ) -> dict[str, Any]:
    """The task hash. Fields at their default (0, none) are left out: the scripts read a
    missing field as its default, and a 10,000-task flow then costs far less to send."""
    task = node.task
    try:
        path = task.path
    except ValueError as exc:
        raise FlowError(str(exc)) from None
    record: dict[str, Any] = {
        "name": task.name,
        "fn": path,
        "flow": flow_id,
        "queue": node.queue_name,
        "score": _score(node, settings, now_ms),
        "args": _encode_args(node, ids, params, settings.max_payload_bytes),
        "state": TaskState.PENDING if node.upstream or node.gated else TaskState.QUEUED,
    }
    optional = {
        "priority": task.priority,
        "retries": task.retries,
        "retry_delay": delay_field(task.retry_delay, task.retries,
                                   task.retry_jitter_factor),
        "timeout": task.timeout,
        "deps": len(node.upstream),
        "nchildren": len(children),
    }
    record.update({k: v for k, v in optional.items() if v})
    if node.gated:  # decided by the dispatcher (balancer.gates)
        record.update({"gate": 1, "nup": len(node.upstream), "trigger": task.trigger})
        if not task.skip_on_upstream_skip:
            record["runskip"] = 1
        if node.mapped is not None:
            record["map"] = 1  # its spec travels in its arguments
    tags = tagging.merged(task.name, task.tags, node.tags) if node.tags else task.tags
    if tags:
        record["tags"] = ",".join(tags)
    if not node.upstream:
        record["ready"] = now_ms  # ready at once: its wait time counts from now
    if children:
        # [id, queue, score], and a fourth item 1 for a gated dependent (it goes to the gate)
        record["children"] = codec.pack([
            [ids[c], c.queue_name, _score(c, settings, now_ms), *([1] if c.gated else [])]
            for c in children])
    signer = signing.signer(settings.signing_keys)
    if signer is not None:
        record["sig"] = signer.sign(signing.spec_message(
            ids[node], flow_id, node.queue_name, task.timeout, path, task.name,
            record.get("children", b""), record["args"]))
    return record


def _check_options(nodes: list[Node], flow: Flow, settings: Settings, now_ms: int) -> None:
    """Every task's and queue's options once more, as Redis will take them: they are
    plain attributes, settable after decoration. Then each priority's score: with a large
    BALANCER_AGING_SECONDS even a priority within bounds may pass what a double holds
    exactly. FlowError names the task or queue and the option."""
    for task in dict.fromkeys(node.task for node in nodes):
        try:
            task.check()
        except ValueError as exc:
            raise FlowError(str(exc)) from None
        score = task_score(now_ms, task.priority, settings.aging_seconds * 1000)
        if not abs(score) < EXACT_SCORE_LIMIT:
            raise FlowError(
                f"task {task.name!r}: priority {task.priority} gives a queue score of"
                f" {score:.3g}, past what Redis orders exactly (2**53) with aging_seconds"
                f" {settings.aging_seconds}")
    for queue in flow.queues().values():
        try:
            queue.check()
        except ValueError as exc:
            raise FlowError(str(exc)) from None


@dataclass
class Prepared:
    """A flow's records as a submit writes them: the flow's, and each task's by id, the
    ready ones by queue. Schedules keep one as the template of their runs."""

    flow_id: str
    flow_record: dict[str, Any]
    records: dict[str, dict[str, Any]]
    ready: dict[str, dict[str, float]]
    touched: set[str]
    ids: dict[Node, str]
    gate: dict[str, float]  # gated tasks with no upstream, for the dispatcher to decide


def prepare(flow: Flow, settings: Settings, params: dict[Parameter, Any] | None,
            now_ms: int, partition_count: int = 1) -> Prepared:
    """Check ``flow`` and build its records, writing nothing: everything that can be
    refused (options, arguments, their size) is refused here. With several partitions,
    the flow is placed in one, which its id names (common/partitions.py)."""
    nodes = flow.plan()
    _check_options(nodes, flow, settings, now_ms)
    flow_id = new_id()
    if partition_count > 1:
        flow_id = partitions.flow_id_in(flow_id, partitions.place(flow_id, partition_count))
    ids = {node: new_id() for node in nodes}
    children: dict[Node, list[Node]] = {node: [] for node in nodes}
    for node in nodes:
        for up in node.upstream:
            children[up].append(node)
    params = params or {}
    records = {ids[n]: _task_record(n, flow_id, ids, children[n], params, settings, now_ms)
               for n in nodes}
    by_reference = flow.judged_by_reference()
    if by_reference:
        for node in flow.reference_tasks(nodes):
            records[ids[node]]["ref"] = 1
    ready: dict[str, dict[str, float]] = {}
    gate: dict[str, float] = {}  # gated tasks with no upstream: the dispatcher decides
    for task_id, record in records.items():
        if record["state"] == TaskState.QUEUED:
            ready.setdefault(record["queue"], {})[task_id] = record["score"]
        elif record.get("gate") and not record.get("nup"):
            gate[task_id] = now_ms

    flow_record = {
        "id": flow_id, "name": flow.name,
        "state": FlowState.RUNNING if nodes else FlowState.COMPLETED,
        "total": len(nodes), "remaining": len(nodes), "failed": 0, "created": now_ms,
        "tasks": codec.pack([[ids[n], n.task.name] for n in nodes]),
    }
    if by_reference:
        flow_record["refs"] = 1  # its state is its reference tasks' (flow_tasks_done)
    # For its tasks (balancer.context.parameters, caches keyed on them).
    flow_record.update(parameter.record_fields({p.name: v for p, v in params.items()}))
    touched = {r["queue"] for r in records.values()}
    return Prepared(flow_id, flow_record, records, ready, touched, ids, gate)


def submit_flow(client: redis.Redis, settings: Settings, flow: Flow,
                params: dict[Parameter, Any] | None = None,
                start_ms: int | None = None, delay_ms: int | None = None) -> FlowRun:
    """Write ``flow`` to the cluster, all or nothing: everything that can be refused
    (options, arguments, their size) is checked before the first write, and a write
    Redis refuses anyway (a key of the wrong type) is undone. With ``start_ms`` (epoch
    ms, later than now), its first tasks wait until then (``delay_start``); with
    ``delay_ms``, until that long after now by Redis's clock, which the dispatcher
    compares start times with (this machine's clock may be off by more than a delay)."""
    keys = Keys(settings.namespace)
    now_ms = redis_now_ms(client, keys, settings)
    prepared = prepare(flow, settings, params, now_ms, clusterfacts.count_to_write(client, keys))
    flow_id, flow_record, records = prepared.flow_id, prepared.flow_record, prepared.records
    keys = partitions.flow_keys(keys, flow_id)  # everything it writes is in its partition
    ready, touched, ids, gate = prepared.ready, prepared.touched, prepared.ids, prepared.gate
    listed = {q: list(ready.get(q, ())) for q in touched}
    configured = flow.queues()
    signal = signals.QUEUES if configured else signals.submitted(listed)
    # Gated tasks: the dispatcher reads the gate on this submit's signal.
    small = None if configured or gate else signals.small_submit(listed)
    if gate and signal.startswith(signals.READY):
        signal = signals.SUBMITTED
    delayed: dict[str, float] = {}
    if delay_ms is not None:
        start_ms = round(_scripts_of(client, keys, settings).time_ms()) + delay_ms
    if start_ms is not None and (delay_ms is not None or start_ms > now_ms):
        delayed = delay_start(prepared, start_ms)
        ready, gate, small = {}, {}, None
        # The queues, for the dispatcher to know them at the start; the delayed set, for
        # it to wake then.
        signal = signals.QUEUES if configured else signals.submitted(
            {q: [] for q in touched})

    def send() -> str | None:
        if small is None:
            _submit_large(_scripts_of(client, keys, settings), keys, flow, flow_id,
                          flow_record, records, ready, touched, now_ms, signal, gate,
                          delayed)
            return None
        return _submit_small(client, keys, settings, flow_id, flow_record, records,
                             ready[small], small, now_ms, signal)

    def landed() -> bool:
        try:
            return client.hget(keys.flow(flow_id), "state") is not None
        except redis.ResponseError as exc:  # a cluster mid-failover: not known yet
            if slot_moved(exc):
                raise SlotMoved(f"Redis Cluster: {exc}") from None
            raise

    state = _state_of(client)
    try:
        worker = _sent_through_failovers(send, flow_id, landed if state.reached else None,
                                         settings.min_replicas)
    except redis.ResponseError as exc:
        _undo(client, keys, flow_id, list(records), ready)
        said = (f"flow {flow.name!r}: Redis refused a write of its submit"
                f" ({keytypes.explain(client, keys, exc, touched)}); what it had written is"
                f" removed")
        if is_outage(exc):
            raise SubmitRefused(f"{said}; Redis cannot take writes for now: submit it"
                                f" again later") from exc
        raise FlowError(said) from exc
    state.reached = True
    log.info("submitted flow=%s name=%s tasks=%d%s", flow_id, flow.name, len(ids),
             f" and leased it at once to worker={worker}" if worker else "")
    return FlowRun(client, keys, flow_id, flow, ids)


def _sent_through_failovers(send: Callable[[], T], flow_id: str,
                            landed: Callable[[], bool] | None,
                            replicas: int = 0) -> T | None:
    """``send()``, sent again until Redis takes it, for up to RESEND_PATIENCE seconds: a
    failover (Sentinel's or a Cluster's), a slot moving, a master restarting. A submit is
    one script call or one transaction, so it ran whole or not at all:
    - a Redis Cluster's redirect (SlotMoved) refused it before any write: sent again;
    - a lost connection leaves it unsure: once Redis answers again, ``landed()`` (the
      flow's record read) tells whether it ran, and it is sent again only if not. A
      connection lost is never answered later, so it cannot run after that read. A
      timeout could (the server may still run it): it is raised, as is a lost connection
      when ``landed`` is None (the client never reached Redis yet: a wrong URL is said at
      once).
    None when an earlier send had run. With ``replicas`` to confirm it, one that had run
    raises NotReplicated instead: a new connection cannot wait for another's writes."""
    deadline = time.monotonic() + RESEND_PATIENCE
    pause, unsure = 0.02, False
    while True:
        try:
            if unsure and landed is not None:
                if landed():
                    if replicas:
                        raise NotReplicated(f"flow {flow_id}", 0, replicas, 0, lost=True)
                    log.info("flow=%s: the submit had reached Redis before its connection"
                             " was lost", flow_id)
                    return None
                unsure = False
            return send()
        except SlotMoved as exc:
            why: Exception = exc
        except redis.ConnectionError as exc:
            if landed is None:
                raise
            unsure, why = True, exc
        if time.monotonic() + pause > deadline:
            raise why
        log.debug("flow=%s: sent again in %.2fs (%s)", flow_id, pause, why)
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


def delay_start(prepared: Prepared, start_ms: int) -> dict[str, float]:
    """Make the flow's first tasks (those ready at once, and gated ones with no upstream)
    wait until ``start_ms``, ``scheduled`` in the delayed set, where the dispatcher moves
    them to their queues (a gated one to the gate) when their time comes, as it does a
    retry's; the run stands for that time (its record's ``scheduled``, as a scheduled
    run's). What is to be written in the delayed set: {task id: start_ms}."""
    first = [*(t for members in prepared.ready.values() for t in members), *prepared.gate]
    for task_id in first:
        prepared.records[task_id]["state"] = TaskState.SCHEDULED
    prepared.flow_record["scheduled"] = start_ms
    return dict.fromkeys(first, float(start_ms))


def _hset(key: str, record: dict[str, Any]) -> tuple[Any, ...]:
    return ("HSET", key, *(item for pair in record.items() for item in pair))


def _zadd(key: str, members: dict[str, float]) -> tuple[Any, ...]:
    return ("ZADD", key, *(item for member, score in members.items()
                           for item in (score, member)))


def _submit_large(scripts: Scripts, keys: Keys, flow: Flow, flow_id: str,
                  flow_record: dict[str, Any], records: dict[str, dict[str, Any]],
                  ready: dict[str, dict[str, float]], touched: set[str], now_ms: int,
                  signal: str, gate: dict[str, float] | None = None,
                  delayed: dict[str, float] | None = None) -> None:
    """Write a flow in one transaction: its records, its ready tasks queued (or delayed),
    its queues' configuration, then the signal; confirmed by the replicas the settings
    ask for."""
    commands = [_hset(keys.flow(flow_id), flow_record)]
    if not records:
        commands.append(("RPUSH", keys.flow_done(flow_id), FlowState.COMPLETED))
    commands += [_hset(keys.task(task_id), record) for task_id, record in records.items()]
    commands += [_zadd(keys.queue(queue), members) for queue, members in ready.items()]
    if gate:
        commands.append(_zadd(keys.gate, gate))
    if delayed:
        commands.append(_zadd(keys.delayed, delayed))
    commands.append(("SADD", keys.queues, *(touched or {"default"})))
    for given in flow.queues().values():
        given_conf = (("priority", given.priority),
                      ("concurrency_limit", given.concurrency_limit))
        conf = {k: v for k, v in given_conf if v is not None}
        if conf:
            commands.append(_hset(keys.queue_conf(given.name), conf))
    commands.append(_zadd(keys.flows, {flow_id: now_ms}))
    commands.append(("ZREMRANGEBYRANK", keys.flows, 0, -RECENT_FLOWS - 1))
    hints = signals.pushed(keys.wake, signal)
    if delayed:
        hints += signals.pushed(keys.wake, signals.RETRY)
    scripts.transaction([*commands, *hints], f"flow {flow_id}", hints=len(hints))


def _undo(client: redis.Redis, keys: Keys, flow_id: str, task_ids: list[str],
          ready: dict[str, dict[str, float]]) -> None:
    """Remove what a submit wrote before Redis refused one of its writes. Neither a
    transaction nor a script is rolled back on such an error: the commands before it (and,
    in a transaction, after it) took effect: a key of the wrong type in the namespace. (A
    refusal for Redis's own state, out of memory say, comes at a script's first write or
    before a transaction runs, so nothing was written; the undo runs all the same.) A
    plain pipeline, not a transaction: Redis out of memory refuses every command queued in
    one, while DEL and ZREM, which free memory, still run. A DEL never fails, so the
    records go even if a queue cannot be read."""
    pipe = client.pipeline(transaction=False)
    pipe.delete(keys.flow(flow_id), keys.flow_done(flow_id),
                *(keys.task(task_id) for task_id in task_ids))
    pipe.zrem(keys.flows, flow_id)
    pipe.zrem(keys.gate, *task_ids or ["-"])
    pipe.zrem(keys.delayed, *task_ids or ["-"])
    for queue, members in ready.items():
        pipe.zrem(keys.queue(queue), *members)
    try:
        replies = pipe.execute(raise_on_error=False)
    except redis.RedisError as exc:  # the submit's own error is the one to raise
        log.error("flow=%s: could not undo a refused submit (its records may remain): %s",
                  flow_id, exc)
        return
    for failed in replies:
        if isinstance(failed, Exception):
            log.error("flow=%s: undoing a refused submit: %s", flow_id, failed)


@dataclass(frozen=True)
class _SeenOffer:
    """A standing offer as the last small submit's script returned it, and read (parsed
    once: an offer stands for many submits)."""

    raw: bytes
    offer: signals.Offer | None


@dataclass
class _ClientState:
    """What a client keeps between submits: its scripts per partition (with the settings
    they were made for: a process's settings object is the same from one submit to the
    next), and the standing offer last read per partition and queue."""

    scripts: dict[str, tuple[Settings, Scripts]]
    offers: dict[tuple[str, str], _SeenOffer]
    # A submit went through: a connection lost later is a failover or a restart to wait
    # out; lost before, a wrong URL or a Redis not started, said at once.
    reached: bool = False


_clients: weakref.WeakKeyDictionary[redis.Redis, _ClientState] = weakref.WeakKeyDictionary()
# Clients whose Redis user may not take standing offers: taking one writes the offered
# worker's inbox and leases, which a least-privilege client user may not touch (README,
# "Security"). Learnt from the first refusal; they submit through the dispatcher.
_offers_refused: weakref.WeakSet[redis.Redis] = weakref.WeakSet()


def _state_of(client: redis.Redis) -> _ClientState:
    state = _clients.get(client)
    if state is None:
        state = _clients[client] = _ClientState({}, {})
    return state


def redis_now_ms(client: redis.Redis, keys: Keys, settings: Settings) -> int:
    """Redis's clock now, for the scores and times a submit writes: they are compared
    with other hosts' and with Redis's clock, never with this host's wall clock, which may
    be off or step (common/redisclock.py). Read once a minute per client and partition
    (``Scripts.clock``)."""
    return _scripts_of(client, keys, settings).now_ms()


def seen_offer(client: redis.Redis, keys: Keys, queue: str) -> bytes | None:
    """The standing offer of ``queue`` this client's next small submit in ``keys``'
    partition will take (as read by its last one), or None."""
    state = _clients.get(client)
    seen = state.offers.get((keys.prefix, queue)) if state is not None else None
    return seen.raw if seen is not None else None


def see_offer(client: redis.Redis, keys: Keys, queue: str, raw: bytes | None,
              state: _ClientState | None = None) -> None:
    """Remember ``raw`` (None: no offer stands) as the offer of ``queue`` in ``keys``'
    partition for this client's next small submit."""
    seen = (state or _state_of(client)).offers
    if raw is None:
        seen.pop((keys.prefix, queue), None)
    else:
        known = seen.get((keys.prefix, queue))
        if known is None or known.raw != raw:
            seen[(keys.prefix, queue)] = _SeenOffer(raw, signals.parse_offer(raw))


def client_scripts(client: redis.Redis, keys: Keys, settings: Settings) -> Scripts:
    """This client's scripts for the namespace, kept with the client (one connection per
    thread, made once), for client code that runs scripts besides submits: a block of
    ``concurrency`` made its own, and a connection, each time."""
    return _scripts_of(client, keys, settings)


def _scripts_of(client: redis.Redis, keys: Keys, settings: Settings,
                state: _ClientState | None = None) -> Scripts:
    """This client's scripts for the namespace (one connection per thread), durable as
    ``settings`` ask."""
    made = (state or _state_of(client)).scripts
    known = made.get(keys.prefix)  # one per partition
    if known is not None and known[0] is settings:
        return known[1]
    scripts = known[1] if known is not None else None
    if scripts is None or scripts.durability != durability(settings):
        scripts = Scripts.for_settings(client, keys, settings)
    made[keys.prefix] = (settings, scripts)
    return scripts


def _submit_small(client: redis.Redis, keys: Keys, settings: Settings, flow_id: str,
                  flow_record: dict[str, Any], records: dict[str, dict[str, Any]],
                  ready: dict[str, float], queue: str, now_ms: int, signal: str) -> str | None:
    """Write a small submit in one script call (``submit_small.lua``) that also takes the
    queue's standing offer if this client has seen one (the script checks it still stands
    and still holds; if not, it signals the dispatcher). The script returns the offer as
    it stands, for the next submit: the offer costs no round trip of its own. The worker
    the tasks were leased to, or None."""
    state = _state_of(client)
    scripts = _scripts_of(client, keys, settings, state)
    seen = state.offers.get((keys.prefix, queue))
    offer, raw = (seen.offer, seen.raw) if seen is not None else (None, None)
    tasks = [(task_id, ready.get(task_id), record) for task_id, record in records.items()]
    recent = RECENT_FLOWS if _trim.random() * TRIM_EVERY < 1 else 0
    taking = offer is not None and raw is not None and client not in _offers_refused
    if taking and offer is not None and raw is not None:  # (said again for mypy)
        try:
            worker, now = scripts.submit_small(
                flow_id, flow_record, queue, tasks, now_ms, recent, signal, offer, raw,
                protocol.lease_prefix(offer.epoch, new_id(), counted=False),
                int(settings.timeout_grace * 1000))
        except redis.exceptions.NoPermissionError:  # the offer's keys: refused before it ran
            _offers_refused.add(client)
            taking = False
            log.info("this client's Redis user may not take standing offers; its small"
                     " submits go through the dispatcher")
    if not taking:
        worker, now = scripts.submit_small(flow_id, flow_record, queue, tasks, now_ms,
                                           recent, signal)
    see_offer(client, keys, queue, now, state)
    return worker or None
