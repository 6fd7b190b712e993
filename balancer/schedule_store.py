"""Schedules as the cluster keeps them, and each run made from its template.

A schedule is registered with the flow's records as a submit would write them (its
parameters bound), kept as a template: firing one is "submit that again with new ids",
so the dispatcher never imports the user's code. ``instantiate`` gives the template new
task and flow ids (in every field that names one: the flow, the dependents, the upstream
references in the arguments), scores of the moment it fires, and, when the cluster signs
task specs, new signatures: the template itself is signed by the client that registered
it, and the dispatcher signs a run only from a template whose signature it checked, so a
Redis writer without a key cannot get a spec of its own signed.

``register``, ``remove`` and ``read_all`` are what clients and the CLI use; the
dispatcher's side is ``balancer.schedule_fire``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import redis
from redis.typing import EncodableT, FieldT

from balancer.common import clusterfacts, codec, signals, signing
from balancer.common.codec import UpstreamRef
from balancer.common.keys import Keys
from balancer.common.models import FlowState, new_id
from balancer.common.replies import as_scored
from balancer.common.scripts import ScheduledRun, Scripts
from balancer.common.settings import Settings
from balancer.schedules import Schedule, ScheduleError
from balancer.scheduling import task_score

log = logging.getLogger("balancer.client")

TEMPLATE_VERSION = 1
# A flow record's fields that each run of a schedule writes anew; the template keeps the
# rest of what a submit writes.
_PER_RUN = frozenset({"id", "name", "state", "total", "remaining", "failed", "created",
                      "tasks", "schedule", "scheduled"})
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@/-]{0,199}$")
RECENT_FLOWS = 1000  # as balancer.submit keeps


def check_id(schedule_id: str) -> str:
    if not isinstance(schedule_id, str) or not ID_PATTERN.match(schedule_id):
        raise ScheduleError(
            f"schedule id {schedule_id!r} must be 1 to 200 characters: letters, digits and"
            " . _ @ / - (not first)")
    return schedule_id


def template_message(schedule_id: str, template: bytes) -> bytes:
    """The bytes a template's signature covers: it is good for this schedule only."""
    return codec.pack(["schedule", schedule_id, template])


@dataclass(frozen=True)
class ScheduleRecord:
    """A schedule as read from ``schedule:<id>`` and its place in ``schedules``."""

    id: str
    flow_name: str
    schedule: Schedule
    template: bytes
    sig: str
    version: str
    next_due: float  # ms; inf once ended, nan when not in the index
    parameters: dict[str, Any]
    last_flow: str
    last_due: int | None
    fired: int
    skipped: int

    @classmethod
    def parse(cls, schedule_id: str, raw: dict[bytes, bytes], next_due: float
              ) -> ScheduleRecord:
        """ScheduleError naming what is missing or unreadable."""
        def text(name: str, default: str | None = None) -> str:
            value = raw.get(name.encode())
            if value is None:
                if default is None:
                    raise ScheduleError(f"schedule {schedule_id!r}: no {name!r} field")
                return default
            return value.decode(errors="replace")

        clocks = raw.get(b"clocks")
        template = raw.get(b"template")
        if clocks is None or template is None:
            raise ScheduleError(f"schedule {schedule_id!r}: its record has no clocks or"
                                " template")
        try:
            params = codec.unpack(raw[b"parameters"]) if raw.get(b"parameters") else {}
            last_due = text("last_due", "")
            return cls(schedule_id, text("name"), Schedule.from_spec(clocks), template,
                       text("sig", ""), text("version"), next_due,
                       params if isinstance(params, dict) else {}, text("last_flow", ""),
                       int(last_due) if last_due else None, int(text("fired", "0")),
                       int(text("skipped", "0")))
        except (codec.CodecError, ValueError) as exc:
            raise ScheduleError(f"schedule {schedule_id!r}: unreadable record ({exc})"
                                ) from None


# -- the client's side ---------------------------------------------------------------


def register(client: redis.Redis, settings: Settings, flow: Any, schedule: Schedule,
             schedule_id: str | None = None, parameters: dict[str, Any] | None = None
             ) -> tuple[str, int, bool]:
    """Register ``flow`` to run on ``schedule`` with ``parameters`` (else its defaults):
    (the schedule id, its next due time ms, True when an existing schedule of the same
    clocks kept its due time). FlowError/ScheduleError for anything refused, before
    anything is written."""
    from balancer.flow import FlowError
    from balancer.parameter import bind
    from balancer.submit import prepare

    if not isinstance(schedule, Schedule):
        raise ScheduleError(f"flow {flow.name!r}: schedule must be an IntervalSchedule,"
                            f" CronSchedule or Schedule, got {type(schedule).__name__}")
    schedule_id = check_id(schedule_id if schedule_id is not None else flow.name)
    clusterfacts.count_to_write(client, Keys(settings.namespace))  # its dispatcher's protocol
    try:
        values = bind(flow.name, flow.parameters, parameters)
    except ValueError as exc:
        raise FlowError(str(exc)) from None
    seconds, micros = client.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    first = schedule.next_after(now_ms)
    if first is None:
        raise ScheduleError(f"schedule {schedule_id!r} ({schedule.describe()}) has no due"
                            " time after now (its end_date has passed)")
    prepared = prepare(flow, settings, values, now_ms)
    template = codec.pack({
        "v": TEMPLATE_VERSION,
        "name": flow.name,
        "tasks": [[tid, r["name"], r] for tid, r in prepared.records.items()],
        "queues": sorted(prepared.touched),
        # What the flow's record holds beyond one run's counts and ids: whether its state
        # is its reference tasks' ("refs"), its parameters ("params").
        "flow": {k: v for k, v in prepared.flow_record.items() if k not in _PER_RUN},
    })
    signer = signing.signer(settings.signing_keys)
    keys = Keys(settings.namespace)
    pipe = client.pipeline(transaction=True)
    for given in flow.queues().values():  # as a submit would: configured once, here
        given_conf = (("priority", given.priority),
                      ("concurrency_limit", given.concurrency_limit))
        conf: dict[FieldT, EncodableT] = {k: v for k, v in given_conf if v is not None}
        if conf:
            pipe.hset(keys.queue_conf(given.name), mapping=conf)
    if len(pipe):
        pipe.sadd(keys.queues, *flow.queues())
        signals.push(pipe, keys.wake, signals.QUEUES)
        pipe.execute()
    fields = {
        "name": flow.name,
        "template": template,
        "sig": signer.sign(template_message(schedule_id, template)) if signer else "",
        "parameters": codec.pack({p.name: v for p, v in values.items()}),
        "describe": schedule.describe(),
        "registered": now_ms,
    }
    scripts = Scripts.for_settings(client, keys, settings)
    due, kept = scripts.schedule_put(schedule_id, schedule.spec(), first, fields)
    log.info("schedule=%s registered for flow %r (%s): next due %d%s", schedule_id,
             flow.name, schedule.describe(), due, " (kept)" if kept else "")
    return schedule_id, due, kept


def remove(client: redis.Redis, keys: Keys, schedule_id: str) -> bool:
    """Remove a schedule; False when there was none of that id. Its runs stay."""
    pipe = client.pipeline(transaction=True)
    pipe.zrem(keys.schedules, schedule_id)
    pipe.delete(keys.schedule(schedule_id))
    zrem, deleted = pipe.execute()
    return bool(zrem or deleted)


def read_all(client: redis.Redis, keys: Keys
             ) -> list[tuple[str, ScheduleRecord | ScheduleError]]:
    """Every schedule in the index, soonest first, each as a record or what is wrong."""
    entries = as_scored(client.zrange(keys.schedules, 0, -1, withscores=True))
    pipe = client.pipeline(transaction=False)
    ids = [m.decode(errors="replace") for m, _ in entries]
    for schedule_id in ids:
        pipe.hgetall(keys.schedule(schedule_id))
    out: list[tuple[str, ScheduleRecord | ScheduleError]] = []
    for schedule_id, (_, score), raw in zip(ids, entries, pipe.execute()):
        try:
            out.append((schedule_id, ScheduleRecord.parse(schedule_id, raw, score)))
        except ScheduleError as exc:
            out.append((schedule_id, exc))
    return out


def flow_states(client: redis.Redis, keys: Keys, flow_ids: list[str]) -> list[str | None]:
    pipe = client.pipeline(transaction=False)
    for flow_id in flow_ids:
        pipe.hget(keys.flow(flow_id), "state")
    return [s.decode() if isinstance(s, bytes) else None for s in pipe.execute()]


# -- a run from the template ---------------------------------------------------------


def _remap(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, UpstreamRef):
        return UpstreamRef(ids[value.task_id])
    if isinstance(value, list):
        return [_remap(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _remap(v, ids) for k, v in value.items()}
    return value


def instantiate(record: ScheduleRecord, due_ms: int, now_ms: int, settings: Settings
                ) -> ScheduledRun:
    """A run of the schedule for ``due_ms``: the template's records with new ids and
    scores of ``now_ms``, re-signed when the cluster signs. ScheduleError when the template
    cannot be used (unreadable, or its signature does not check)."""
    signer = signing.signer(settings.signing_keys)
    if signer is not None:
        refusal = check_template(record, signer)
        if refusal:
            raise ScheduleError(refusal)
    try:
        template = codec.unpack(record.template)
        tasks: list[list[Any]] = template["tasks"]
        ids = {str(t[0]): new_id() for t in tasks}
        aging = settings.aging_seconds * 1000
        scores = {ids[str(t[0])]: task_score(now_ms, int(t[2].get("priority", 0)), aging)
                  for t in tasks}
        flow_id = new_id()
        records: dict[str, dict[str, Any]] = {}
        ready: dict[str, dict[str, float]] = {q: {} for q in template["queues"]}
        gate: dict[str, float] = {}
        for old, _name, fields in tasks:
            task_id = ids[str(old)]
            rec = dict(fields)
            rec["flow"], rec["score"] = flow_id, scores[task_id]
            # user types stay packed as they came: the dispatcher imports no user code
            rec["args"] = codec.pack(_remap(codec.unpack_refs(rec["args"]), ids))
            if "children" in rec:  # [id, queue, score, (gated mark)]
                rec["children"] = codec.pack([[ids[c[0]], c[1], scores[ids[c[0]]], *c[3:]]
                                              for c in codec.unpack(rec["children"])])
            rec.pop("sig", None)
            if signer is not None:
                rec["sig"] = signer.sign(signing.spec_message(
                    task_id, flow_id, rec["queue"], rec.get("timeout"), rec["fn"],
                    rec["name"], rec.get("children", b""), rec["args"]))
            records[task_id] = rec
            if rec["state"] == "queued":
                ready.setdefault(rec["queue"], {})[task_id] = rec["score"]
            elif rec.get("gate") and not rec.get("nup"):  # as a submit: the gate decides
                gate[task_id] = now_ms
        flow = {
            "id": flow_id, "name": template["name"],
            "state": FlowState.RUNNING if tasks else FlowState.COMPLETED,
            "total": len(tasks), "remaining": len(tasks), "failed": 0, "created": now_ms,
            "tasks": codec.pack([[ids[str(t[0])], t[1]] for t in tasks]),
            "schedule": record.id, "scheduled": due_ms,
        }
        # A template registered before it kept them has none: such a run is judged by
        # all its tasks and knows no parameters, as such runs were.
        flow.update({str(k): v for k, v in template.get("flow", {}).items()
                     if str(k) not in _PER_RUN})
    except (codec.CodecError, KeyError, TypeError, ValueError, IndexError,
            AttributeError) as exc:
        raise ScheduleError(f"schedule {record.id!r}: its template cannot be used"
                            f" ({type(exc).__name__}: {exc})") from None
    listed = {q: list(r) for q, r in ready.items()}
    signal = signals.submitted(listed)
    if gate and signal.startswith(signals.READY):  # the dispatcher must read the gate
        signal = signals.SUBMITTED
    return ScheduledRun(flow_id, flow, records, ready, signal, RECENT_FLOWS, gate)


def check_template(record: ScheduleRecord, signer: signing.Signer) -> str | None:
    """None when the template carries a signature made with one of the keys, else why not."""
    if not record.sig:
        return (f"schedule {record.id!r} carries no signature, and this dispatcher fires"
                " only schedules registered with one of its BALANCER_SIGNING_KEYS")
    if signer.verify(template_message(record.id, record.template), record.sig.encode()):
        return None
    return (f"the signature of schedule {record.id!r} does not match its template: it was"
            " written or changed by someone without a signing key")
