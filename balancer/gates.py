"""The dispatcher's gate: tasks whose running the dispatcher decides once every upstream
task has settled, rather than an ack queueing them directly.

A task is gated when it is a mapped call (``t.map``) or its trigger or skip rule is not
the default (``balancer.triggers``). Acks and cascades put it in the ``gate`` zset when
its last upstream settles, counting on its record how many failed (``upfailed``) and how
many were skipped (``upskipped``). Here the dispatcher reads it and decides, with Prefect
1's rules (``decide``, a pure function): skip it (an upstream skipped), fail it (its
trigger failed), queue it, or, for a map, expand it into one child per item, and when the
children have all settled, gather their results. ``gate.lua`` applies the decision; only
the call that takes the task out of the gate acts, so each is applied once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import redis
from redis.typing import EncodableT, FieldT

from balancer import triggers
from balancer.common import aside, codec, signing
from balancer.common.codec import CodecError, ErrorInfo
from balancer.common.keys import Keys
from balancer.common.models import TaskState
from balancer.common.replies import as_bytes_list, as_opt_bytes_list, field_int, field_text
from balancer.common.retry import is_outage
from balancer.common.scripts import Child, Scripts
from balancer.common.settings import Settings
from balancer.mapping import MapError, MapSpec, items, take_spec
from balancer.mapplan import Planner, child_ids
from balancer.setaside import SetAside

log = logging.getLogger("balancer.dispatcher")

BATCH = 100
CHUNK = 1000  # records per pipeline when a map is expanded or gathered
# A gathered map result may be this many times max_payload_bytes: it is one value a
# dependent receives, read whole by the dispatcher and by that dependent's worker.
GATHER_FACTOR = 64
FIELDS = ("state", "flow", "name", "queue", "score", "trigger", "runskip", "nup",
          "upfailed", "upskipped", "map", "mapped", "children", "args", "fn", "priority",
          "retries", "retry_delay", "timeout", "gate", "deps", "sig", "tags")


@dataclass(frozen=True)
class Gated:
    """A gated task's record, as the gate reads it."""

    task_id: str
    state: str
    name: str = ""
    trigger: str = triggers.ALL_SUCCESSFUL
    skip_on_upstream_skip: bool = True
    upstream: int = 0
    failed: int = 0
    skipped: int = 0
    is_map: bool = False


Verdict = Literal["drop", "skip", "fail", "queue", "expand", "gather"]


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    message: str = ""


def decide(task: Gated) -> Decision:
    """Prefect 1's order: a skipped upstream skips the task (unless it runs on skips),
    then its trigger decides; a map that passes is expanded, and gathered once its
    children (counted as its upstream then) settled."""
    if task.state == TaskState.RUNNING and task.is_map:
        return Decision("gather")
    if task.state != TaskState.PENDING:
        return Decision("drop")
    if task.skipped and task.skip_on_upstream_skip:
        return Decision("skip", f"{task.skipped} upstream task(s) skipped")
    if (task.trigger == triggers.NOT_ALL_SKIPPED and task.upstream
            and task.skipped == task.upstream):
        return Decision("skip", "every upstream task skipped (trigger not_all_skipped)")
    if not triggers.passes(task.trigger, task.upstream, task.failed, task.skipped):
        return Decision("fail", f'trigger was "{task.trigger}": {task.failed} of'
                                f" {task.upstream} upstream task(s) did not succeed")
    return Decision("expand" if task.is_map else "queue")


class Gates:
    def __init__(self, client: redis.Redis, keys: Keys, scripts: Scripts,
                 settings: Settings, set_aside: SetAside | None = None) -> None:
        self.client = client
        self.keys = keys
        self.scripts = scripts
        self.settings = settings
        self.set_aside = set_aside or SetAside(scripts, lambda: 0.0)
        self.ttl_ms = int(settings.result_ttl * 1000)
        self.signer = signing.signer(settings.signing_keys)

    def run(self) -> bool:
        """Decide the gated tasks waiting, a batch at a time; True if more remain. An entry
        that cannot be used is set aside, not left to hold up the others."""
        members = as_bytes_list(self.client.zrange(self.keys.gate, 0, BATCH - 1))
        for member in members:
            try:
                task_id = member.decode()
            except UnicodeDecodeError:
                self.set_aside.move(aside.UNREADABLE, self.keys.gate, "zset", member,
                                    "not a task id (not UTF-8): taken out of the gate")
                continue
            try:
                self.one(task_id)
            except redis.ResponseError as exc:
                if is_outage(exc):
                    raise
                self.set_aside.move(aside.kind_of(exc), self.keys.gate, "zset", member,
                                    f"deciding gated task={task_id} failed: {exc}; taken out"
                                    " of the gate")
        return len(members) == BATCH

    def one(self, task_id: str) -> None:
        raw = self._read(task_id)
        if raw["state"] is None:
            log.error("task=%s in the gate has no record; dropped", task_id)
            self.client.zrem(self.keys.gate, task_id)
            return
        if raw["state"] == TaskState.CANCELLED.encode():
            # Its run was cancelled (balancer/cancel.py): nothing to decide, nothing wrong.
            log.info("task=%s in the gate was cancelled; dropped", task_id)
            self.client.zrem(self.keys.gate, task_id)
            return
        if raw["gate"] is None or field_int(raw["deps"]) > 0:
            # Not a gated task, or upstreams not settled: whoever put it there (a bug, a
            # hand-written entry), deciding it would run it before its time.
            self.set_aside.move(aside.UNUSABLE, self.keys.gate, "zset", task_id.encode(),
                                f"task={task_id} is not a gated task whose upstreams all"
                                " settled: taken out of the gate, left as it was")
            return
        task = Gated(task_id, field_text(raw["state"]), field_text(raw["name"]),
                     field_text(raw["trigger"], triggers.ALL_SUCCESSFUL),
                     raw["runskip"] is None, field_int(raw["nup"]), field_int(raw["upfailed"]),
                     field_int(raw["upskipped"]), raw["map"] is not None)
        decision = decide(task)
        flow, queue = field_text(raw["flow"]), field_text(raw["queue"], "default")
        score = float(field_text(raw["score"], "0") or 0)
        if decision.verdict == "drop":
            self.client.zrem(self.keys.gate, task_id)
        elif decision.verdict == "queue":
            self.scripts.gate(task_id, flow, queue, "queue", self.ttl_ms, score=score)
        elif decision.verdict == "skip":
            self._settle(task, flow, queue, "skip", ErrorInfo("balancer.Skipped",
                                                              decision.message))
        elif decision.verdict == "fail":
            self._settle(task, flow, queue, "fail", ErrorInfo("balancer.TriggerFailed",
                                                              decision.message),
                         TaskState.UPSTREAM_FAILED)
        elif decision.verdict == "expand":
            self._expand(task, raw, flow, queue, score)
        else:
            self._gather(task, raw, flow, queue)

    def _settle(self, task: Gated, flow: str, queue: str, mode: Literal["skip", "fail"],
                error: ErrorInfo, state: str = "") -> None:
        if self.scripts.gate(task.task_id, flow, queue, mode, self.ttl_ms,
                             error=codec.pack_error(error), state=state):
            log.info("task=%s name=%s %s: %s", task.task_id, task.name,
                     "skipped" if mode == "skip" else f"settled {state}", error.message)

    # -- maps ------------------------------------------------------------------------

    def _expand(self, task: Gated, raw: dict[str, bytes | None], flow: str, queue: str,
                score: float) -> None:
        """Write the children's records, then queue them in one gate.lua call (with those
        of the maps expanding with this one, item by item: balancer.mapplan)."""
        refusal = self.refusal(task.task_id, raw)
        if refusal is not None:
            self._settle(task, flow, queue, "fail", ErrorInfo("balancer.BadSignature", refusal),
                         TaskState.FAILED)
            return
        try:
            args, kwargs = codec.decode_call(raw["args"] or b"")
            spec = take_spec(kwargs)
            args, kwargs = self._with_mapped_values(spec, args, kwargs)
            calls = items(task.name, spec, args, kwargs, self.settings.max_map_children)
            planner = Planner(self._read, flow, self.settings.max_payload_bytes, self.signer,
                              lambda i, r: self.refusal(i, r) is None)
            planned = planner.plan(task.task_id, raw, calls)
        except (MapError, CodecError, TypeError, ValueError) as exc:
            kind = "balancer.MapError" if isinstance(exc, MapError) else "balancer.BadPayload"
            self._settle(task, flow, queue, "fail", ErrorInfo(kind, str(exc)),
                         TaskState.FAILED)
            return
        records = [item for p in planned for item in p.records.items()]
        for start in range(0, len(records), CHUNK):
            pipe = self.client.pipeline(transaction=False)
            for child, record in records[start:start + CHUNK]:
                fields: dict[FieldT, EncodableT] = dict(record.items())
                pipe.hset(self.keys.task(child), mapping=fields)
            pipe.execute()
        if self.scripts.gate(task.task_id, flow, queue, "expand", self.ttl_ms, score=score,
                             expansions=[p.expansion for p in planned]):
            log.info("task=%s name=%s mapped: %d children queued in %s%s", task.task_id,
                     task.name, len(calls), queue,
                     f", with {len(planned) - 1} maps over it item by item"
                     if len(planned) > 1 else "")

    def refusal(self, task_id: str, raw: dict[str, bytes | None]) -> str | None:
        """With signing keys, why the map's record may not be expanded (its signature does
        not match what the client wrote), else None: the dispatcher signs the children, so
        it must not sign what a writer without the keys changed."""
        if self.signer is None:
            return None
        timeout = float(field_text(raw["timeout"])) if raw["timeout"] is not None else None
        message = signing.spec_message(task_id, field_text(raw["flow"]), field_text(raw["queue"]),
                                       timeout, field_text(raw["fn"]), field_text(raw["name"]),
                                       raw["children"] or b"", raw["args"] or b"")
        if self.signer.verify(message, raw["sig"]):
            return None
        return (f"the signature of mapped task {task_id} does not match its record: it was"
                " written or changed by someone without a signing key; not expanded")

    def _read(self, task_id: str) -> dict[str, bytes | None]:
        return dict(zip(FIELDS, as_opt_bytes_list(
            self.client.hmget(self.keys.task(task_id), list(FIELDS)))))

    def _with_mapped_values(self, spec: MapSpec, args: list[Any], kwargs: dict[str, Any]
                            ) -> tuple[list[Any], dict[str, Any]]:
        """The call's arguments with each upstream result a mapped argument refers to in
        its place (the unmapped ones stay references: each child reads them)."""
        mapped = [args[p] for p in spec.positions if p < len(args)]
        mapped += [kwargs[k] for k in spec.keywords if k in kwargs]
        refs = sorted(codec.upstream_refs(mapped))
        if not refs:
            return args, kwargs
        pipe = self.client.pipeline(transaction=False)
        for ref in refs:
            pipe.hget(self.keys.task(ref), "result")
        results = {ref: codec.unpack(blob) if blob is not None else None
                   for ref, blob in zip(refs, pipe.execute())}
        new_args = [codec.substitute(a, results) if i in spec.positions else a
                    for i, a in enumerate(args)]
        new_kwargs = {k: codec.substitute(v, results) if k in spec.keywords else v
                      for k, v in kwargs.items()}
        return new_args, new_kwargs

    def _gather(self, task: Gated, raw: dict[str, bytes | None], flow: str,
                queue: str) -> None:
        count = field_int(raw["mapped"])
        if not 0 <= count <= self.settings.max_map_children:
            # Only a hand-edited record gets here: reading that many children would stall
            # the dispatcher, so the map fails instead.
            self._settle(task, flow, queue, "fail", ErrorInfo(
                "balancer.MapError", f"the record says {count} mapped runs, outside 0 to"
                f" {self.settings.max_map_children} (BALANCER_MAX_MAP_CHILDREN)"),
                TaskState.FAILED)
            return
        ids = child_ids(task.task_id, count)
        limit = self.settings.max_payload_bytes * GATHER_FACTOR
        size = 0
        for start in range(0, count, CHUNK):
            pipe = self.client.pipeline(transaction=False)
            for child in ids[start:start + CHUNK]:
                pipe.hstrlen(self.keys.task(child), "result")
            size += sum(int(n) for n in pipe.execute())
        error = b""
        if task.failed:
            state = TaskState.FAILED
            error = codec.pack_error(ErrorInfo(
                "balancer.MappedRunFailed", f"{task.failed} of {count} mapped runs of"
                                            f" {task.name} did not complete"))
        elif task.skipped:
            state = TaskState.SKIPPED
        else:
            state = TaskState.COMPLETED
        if size > limit:
            state = TaskState.FAILED
            error = codec.pack_error(ErrorInfo(
                "balancer.ResultTooLarge", f"the {count} results of mapped task {task.name}"
                f" take {size} bytes together, over the limit of {limit}"
                f" ({GATHER_FACTOR} x BALANCER_MAX_PAYLOAD_BYTES)"))
            result = b""
        else:
            blobs: list[bytes] = []
            for start in range(0, count, CHUNK):
                pipe = self.client.pipeline(transaction=False)
                for child in ids[start:start + CHUNK]:
                    pipe.hmget(self.keys.task(child), ["state", "result"])
                for child_state, blob in pipe.execute():
                    ok = child_state is not None and blob is not None
                    blobs.append(blob if ok else codec.pack(None))
            result = codec.pack_packed_list(blobs)
        try:
            entries = codec.unpack(raw["children"]) if raw["children"] else []
            dependents = [Child(str(c[0]), str(c[1]), float(c[2]), bool(len(c) > 3 and c[3]))
                          for c in entries]
        except (CodecError, TypeError, ValueError, IndexError):
            log.error("task=%s: unreadable list of dependents; they are not unlocked",
                      task.task_id)
            dependents = []
        if self.scripts.gate(task.task_id, flow, queue, "gather", self.ttl_ms, error=error,
                             state=state, result=result, dependents=dependents):
            log.info("task=%s name=%s %s: %d mapped runs gathered", task.task_id, task.name,
                     state, count)


__all__ = ["FIELDS", "Decision", "Gated", "Gates", "child_ids", "decide"]
