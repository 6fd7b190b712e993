"""The leader's side of schedules: fire each due time once, skip those past the window.

The dispatcher calls ``fire_due`` from its timers while it leads. For each schedule due
by now it applies the rule (``balancer.schedules.plan``) and carries it out one due time
at a time, each in one ``schedule_fire.lua`` call that checks the leader's token and that
the schedule is as read, advances its next due time and writes the run. Whatever happens
between two calls (this leader killed, another taking over, the schedule removed or
registered again), every due time is fired by exactly one call or skipped by one.

A schedule that cannot be used (its record unreadable, its template refused) is set aside
(``balancer dlq aside``), out of the index, with its next due time kept for restoring.
"""

from __future__ import annotations

import logging
import math

import redis

from balancer.common import aside
from balancer.common.keys import Keys
from balancer.common.replies import as_bytes_dict, as_scored
from balancer.common.retry import is_outage
from balancer.common.scripts import Scripts
from balancer.common.settings import Settings
from balancer.schedule_store import ScheduleRecord, instantiate
from balancer.schedules import Plan, ScheduleError, from_ms, plan
from balancer.setaside import SetAside

log = logging.getLogger("balancer.dispatcher")

BATCH = 100  # schedules read per call
FIRE_LIMIT = 100  # due times fired per schedule per call; the rest on the next one


class NotLeader(Exception):
    """A fire was refused: the caller no longer holds the leader lease."""


def shown(ms: float) -> str:
    if not math.isfinite(ms):
        return "never"
    return from_ms(int(ms)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Firer:
    def __init__(self, client: redis.Redis, keys: Keys, scripts: Scripts, settings: Settings,
                 set_aside: SetAside) -> None:
        self.client = client
        self.keys = keys
        self.scripts = scripts
        self.settings = settings
        self.set_aside = set_aside
        self.window_ms = int(settings.schedule_catchup * 1000)

    def fire_due(self, token: str, now_ms: int) -> float | None:
        """Fire or skip what is due by ``now_ms``; the next due time (ms) of any schedule
        afterwards, or None when there is none. NotLeader when the lease was lost. With
        nothing due, one round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.zrangebyscore(self.keys.schedules, "-inf", now_ms, start=0, num=BATCH,
                           withscores=True)
        pipe.zrange(self.keys.schedules, 0, 0, withscores=True)
        due, head = (as_scored(reply) for reply in pipe.execute())
        for member, score in due:
            try:
                self._one(token, member, score, now_ms)
            except redis.ResponseError as exc:  # its record's key of the wrong type, ...
                if is_outage(exc):
                    raise
                self._aside(aside.kind_of(exc), member, int(score),
                            f"firing it failed: {exc}")
        if due:
            head = as_scored(self.client.zrange(self.keys.schedules, 0, 0, withscores=True))
        if not head or not math.isfinite(head[0][1]):
            return None
        return head[0][1]

    def _one(self, token: str, member: bytes, score: float, now_ms: int) -> None:
        """``score``: the schedule's next due time as read, checked by the first script
        call (a score not of whole milliseconds, written by hand, is fired as its floor)."""
        due = int(score)
        try:
            schedule_id = member.decode()
        except UnicodeDecodeError:
            self._aside(aside.UNREADABLE, member, due, "not a schedule id (not UTF-8)")
            return
        raw = as_bytes_dict(self.client.hgetall(self.keys.schedule(schedule_id)))
        if not raw:
            self._aside(aside.UNUSABLE, member, due, f"schedule {schedule_id!r} is in the"
                        " index but has no record")
            return
        try:
            record = ScheduleRecord.parse(schedule_id, raw, due)
        except ScheduleError as exc:
            self._aside(aside.UNUSABLE, member, due, str(exc))
            return
        p = plan(record.schedule, due, now_ms, self.window_ms, FIRE_LIMIT)
        if p.skipped and not self._skip(token, record, p, score):
            return
        for at in p.fire:
            try:
                run = instantiate(record, at, now_ms, self.settings)
            except ScheduleError as exc:
                self._aside(aside.UNUSABLE, member, at, str(exc))
                return
            done = self.scripts.schedule_fire(token, schedule_id, score if at == due else at,
                                              p.after(at), record.version, run)
            if not self._done(done, schedule_id):
                return
            log.info("schedule=%s fired flow=%s name=%s for due=%s (%d ms late)",
                     schedule_id, run.flow_id, record.flow_name, shown(at), now_ms - at)
        if p.fire and p.after(p.fire[-1]) is None:
            log.info("schedule=%s ended: no due time after %s", schedule_id,
                     shown(p.fire[-1]))

    def _skip(self, token: str, record: ScheduleRecord, p: Plan, score: float) -> bool:
        done = self.scripts.schedule_fire(token, record.id, score, p.skip_to, record.version,
                                          skipped=p.skipped)
        if self._done(done, record.id):
            log.warning("schedule=%s skipped %d due times from %s (older than the catch-up"
                        " window of %gs, BALANCER_SCHEDULE_CATCHUP); next due %s", record.id,
                        p.skipped, shown(p.due), self.settings.schedule_catchup,
                        shown(p.skip_to) if p.skip_to is not None else "never (ended)")
            return True
        return False

    def _done(self, code: int, schedule_id: str) -> bool:
        if code == -1:
            raise NotLeader()
        if code == 0:  # removed, registered again or fired meanwhile: read it anew
            log.info("schedule=%s changed while being fired; read again next time",
                     schedule_id)
            return False
        return True

    def _aside(self, kind: str, member: bytes, due: int, detail: str) -> None:
        self.set_aside.move(kind, self.keys.schedules, "zset", member,
                            f"{detail}; taken out of the schedules (due {shown(due)})",
                            score=due)
