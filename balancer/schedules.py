"""Schedules, as Prefect 1 spells them, and the rule that says which due times to fire.

    from balancer.schedules import IntervalSchedule, CronSchedule
    flow = Flow("etl", schedule=CronSchedule("*/5 * * * *"))
    flow.register_schedule()        # the cluster's leader fires it from now on

``IntervalSchedule(start_date, interval, end_date)`` and ``CronSchedule(cron, start_date,
end_date)`` return a ``Schedule`` of one clock, as in Prefect 1; ``Schedule(clocks=[...])``
merges several (Prefect's filters and adjustments are not supported). Every time is an
integer of milliseconds since the epoch here, as the dispatcher reads Redis's clock; the
datetimes users give are converted once (naive ones are taken as UTC, as Prefect does).

Cron expressions are read by ``cronsim`` (5 fields, or 6 with seconds first), in UTC unless
``tz`` (an IANA name) or an aware ``start_date`` says otherwise; DST is handled as Debian's
cron does. Nothing here touches Redis: ``plan`` is the pure rule the dispatcher applies.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from balancer.common import codec

UTC = timezone.utc
# Prefect 1's anchor for an interval without a start date: an hourly schedule fires on
# the hour, a 5 s one on every fifth second.
DEFAULT_START = datetime(2019, 1, 1, tzinfo=UTC)
MIN_INTERVAL = timedelta(seconds=1)  # the dispatcher's clock is not finer than its tick
COUNT_CAP = 100_000  # due times counted one by one when skipped (cron), at most


class ScheduleError(ValueError):
    """A schedule that cannot be built or read: a bad cron string, interval or date."""


def to_ms(value: datetime) -> int:
    """Milliseconds since the epoch; a naive datetime is taken as UTC."""
    if not isinstance(value, datetime):
        raise ScheduleError(f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return math.floor(value.timestamp() * 1000)


def from_ms(ms: int, tz: tzinfo = UTC) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"unknown time zone {name!r}") from exc


class Clock:
    """Emits due times; ``next_after`` is all the dispatcher needs of it."""

    kind = ""

    def __init__(self, start_date: datetime | None = None,
                 end_date: datetime | None = None) -> None:
        self.start_ms = to_ms(start_date) if start_date is not None else None
        self.end_ms = to_ms(end_date) if end_date is not None else None
        if self.start_ms is not None and self.end_ms is not None and self.end_ms < self.start_ms:
            raise ScheduleError("end_date is before start_date")
        self.start_date, self.end_date = start_date, end_date

    def next_after(self, after_ms: int) -> int | None:
        """The first due time strictly after ``after_ms``; None once the clock has ended."""
        due = self._next(after_ms)
        if due is None or (self.end_ms is not None and due > self.end_ms):
            return None
        return due

    def _next(self, after_ms: int) -> int | None:
        raise NotImplementedError

    def spec(self) -> list[Any]:
        """What the cluster stores of it (``from_spec`` reads it back)."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def count(self, from_ms: int, until_ms: int) -> int:
        """How many due times lie in [from_ms, until_ms), up to COUNT_CAP."""
        n, due = 0, self.next_after(from_ms - 1)
        while due is not None and due < until_ms and n < COUNT_CAP:
            n, due = n + 1, self.next_after(due)
        return n


class IntervalClock(Clock):
    """Due at ``start_date + k * interval``, k = 0, 1, 2...: a fixed grid, so a schedule
    registered again, or fired by another leader, keeps the same due times."""

    kind = "interval"

    def __init__(self, interval: timedelta | float, start_date: datetime | None = None,
                 end_date: datetime | None = None) -> None:
        if isinstance(interval, (int, float)) and not isinstance(interval, bool):
            if not math.isfinite(interval):
                raise ScheduleError(f"interval must be a finite number of seconds, got"
                                    f" {interval}")
            interval = timedelta(seconds=interval)
        if not isinstance(interval, timedelta):
            raise ScheduleError(f"interval must be a timedelta (or seconds), got"
                                f" {type(interval).__name__}")
        if interval <= timedelta(0):
            raise ScheduleError(f"interval must be greater than 0, got {interval}")
        if interval < MIN_INTERVAL:
            raise ScheduleError(f"interval must be at least {MIN_INTERVAL.total_seconds():g}s,"
                                f" got {interval.total_seconds():g}s")
        super().__init__(start_date, end_date)
        self.interval = interval
        self.interval_ms = round(interval.total_seconds() * 1000)
        self.anchor_ms = self.start_ms if self.start_ms is not None else to_ms(DEFAULT_START)

    def _next(self, after_ms: int) -> int | None:
        if after_ms < self.anchor_ms:
            return self.anchor_ms
        steps = (after_ms - self.anchor_ms) // self.interval_ms + 1
        return self.anchor_ms + steps * self.interval_ms

    def count(self, from_ms: int, until_ms: int) -> int:
        first, last = self.next_after(from_ms - 1), until_ms - 1
        if first is None or first > last:
            return 0
        if self.end_ms is not None:
            last = min(last, self.end_ms)
        return (last - first) // self.interval_ms + 1

    def spec(self) -> list[Any]:
        return [self.kind, self.interval_ms, "", self.start_ms, self.end_ms]

    def describe(self) -> str:
        return f"every {_seconds(self.interval_ms)}"


class CronClock(Clock):
    """Due at every time the cron expression matches, in ``tz`` (default: the time zone of
    an aware ``start_date`` that is a ZoneInfo, else UTC)."""

    kind = "cron"

    def __init__(self, cron: str, start_date: datetime | None = None,
                 end_date: datetime | None = None, tz: str | None = None) -> None:
        if not isinstance(cron, str) or not cron.strip():
            raise ScheduleError(f"a cron schedule needs a cron string, got {cron!r}")
        super().__init__(start_date, end_date)
        if tz is None and start_date is not None and isinstance(start_date.tzinfo, ZoneInfo):
            tz = start_date.tzinfo.key
        self.tz = tz or "UTC"
        self.zone = _zone(self.tz)
        self.cron = " ".join(cron.split())
        try:
            CronSim(self.cron, datetime(2020, 1, 1, tzinfo=self.zone))
        except CronSimError as exc:
            raise ScheduleError(f"invalid cron string {cron!r}: {exc}") from None

    def _next(self, after_ms: int) -> int | None:
        if self.start_ms is not None and after_ms < self.start_ms - 1:
            after_ms = self.start_ms - 1  # the start itself may be due
        try:
            return to_ms(next(CronSim(self.cron, from_ms(after_ms, self.zone))))
        except StopIteration:  # no date ever matches (February 30th)
            return None

    def spec(self) -> list[Any]:
        return [self.kind, self.cron, self.tz, self.start_ms, self.end_ms]

    def describe(self) -> str:
        return f"cron {self.cron!r}" + (f" {self.tz}" if self.tz != "UTC" else "")


def _seconds(ms: int) -> str:
    return f"{ms / 1000:g}s"


class Schedule:
    """Due whenever any of its clocks is (a time two clocks share is due once)."""

    def __init__(self, clocks: Sequence[Clock], filters: Iterable[Any] | None = None,
                 or_filters: Iterable[Any] | None = None,
                 not_filters: Iterable[Any] | None = None,
                 adjustments: Iterable[Any] | None = None) -> None:
        if filters or or_filters or not_filters or adjustments:
            raise ScheduleError("schedule filters and adjustments are not supported; use a"
                                " cron expression instead")
        clocks = list(clocks) if isinstance(clocks, Iterable) else []
        if not clocks or not all(isinstance(c, Clock) for c in clocks):
            raise ScheduleError("a Schedule needs a list of one or more clocks")
        self.clocks = clocks

    @property
    def start_date(self) -> datetime | None:
        return min((c.start_date for c in self.clocks if c.start_date), default=None,
                   key=to_ms)

    @property
    def end_date(self) -> datetime | None:
        return max((c.end_date for c in self.clocks if c.end_date), default=None, key=to_ms)

    def next_after(self, after_ms: int) -> int | None:
        """The first due time strictly after ``after_ms``, None when every clock ended."""
        return min((d for c in self.clocks if (d := c.next_after(after_ms)) is not None),
                   default=None)

    def count(self, from_ms: int, until_ms: int) -> int:
        if len(self.clocks) == 1:
            return self.clocks[0].count(from_ms, until_ms)
        n, due = 0, self.next_after(from_ms - 1)
        while due is not None and due < until_ms and n < COUNT_CAP:
            n, due = n + 1, self.next_after(due)
        return n

    def next(self, n: int, after: datetime | None = None) -> list[datetime]:
        """The next ``n`` due times after ``after`` (default: now), as Prefect 1's
        ``Schedule.next``; in UTC."""
        at = to_ms(after) if after is not None else to_ms(datetime.now(UTC))
        out: list[datetime] = []
        while len(out) < n:
            due = self.next_after(at)
            if due is None:
                break
            out.append(from_ms(due))
            at = due
        return out

    def spec(self) -> bytes:
        """The clocks as the cluster stores them; equal specs mean the same due times."""
        return codec.pack([c.spec() for c in self.clocks])

    @classmethod
    def from_spec(cls, blob: bytes) -> Schedule:
        """Read back ``spec``; ScheduleError if it is not one."""
        try:
            items = codec.unpack(blob)
            return cls([_clock(item) for item in items])
        except (codec.CodecError, TypeError, ValueError) as exc:
            raise ScheduleError(f"unreadable schedule clocks: {exc}") from None

    def describe(self) -> str:
        return " + ".join(c.describe() for c in self.clocks)

    def __repr__(self) -> str:
        return f"<Schedule {self.describe()}>"


def _clock(item: Any) -> Clock:
    kind, spec, tz, start, end = item
    start_date = from_ms(start) if start is not None else None
    end_date = from_ms(end) if end is not None else None
    if kind == IntervalClock.kind:
        return IntervalClock(timedelta(milliseconds=spec), start_date, end_date)
    if kind == CronClock.kind:
        return CronClock(spec, start_date, end_date, tz=tz)
    raise ScheduleError(f"unknown clock kind {kind!r}")


def IntervalSchedule(start_date: datetime | None = None,
                     interval: timedelta | float | None = None,
                     end_date: datetime | None = None) -> Schedule:
    """Due every ``interval`` from ``start_date`` (default: 2019-01-01 UTC, as Prefect 1),
    until ``end_date``. ``start_date`` comes first, as in Prefect 1."""
    if interval is None:
        raise ScheduleError("IntervalSchedule needs an interval (a timedelta)")
    return Schedule([IntervalClock(interval, start_date, end_date)])


def CronSchedule(cron: str, start_date: datetime | None = None,
                 end_date: datetime | None = None, tz: str | None = None) -> Schedule:
    """Due whenever ``cron`` matches, in UTC unless ``tz`` (an IANA name such as
    ``"Europe/Paris"``) or an aware ``start_date`` in a ZoneInfo zone says otherwise."""
    return Schedule([CronClock(cron, start_date, end_date, tz)])


def Cron(cron: str, timezone: str | None = None, day_or: bool = True) -> Schedule:
    """Prefect 3's ``prefect.schedules.Cron`` (for ``flow.serve(schedules=[...])``): due
    whenever ``cron`` matches in ``timezone`` (an IANA name; default UTC). ``day_or=False``
    (a day matching both day fields) is refused: cron's own rule, either, is the one kept."""
    if day_or is not True:
        raise ScheduleError("Cron(day_or=False) is not taken: a day matches when either day"
                            " field does, as cron has it")
    return Schedule([CronClock(cron, tz=timezone)])


def Interval(interval: timedelta | float, anchor_date: datetime | None = None,
             timezone: str | None = None) -> Schedule:
    """Prefect 3's ``prefect.schedules.Interval``: due every ``interval`` (a timedelta or
    seconds) from ``anchor_date`` (a naive one is in ``timezone``, default UTC; none: on
    the grid from 2019-01-01 UTC)."""
    if anchor_date is not None and anchor_date.tzinfo is None and timezone:
        anchor_date = anchor_date.replace(tzinfo=_zone(timezone))
    return Schedule([IntervalClock(interval, anchor_date)])


# -- the firing rule ---------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What to do with a schedule whose next due time is ``due``, at ``now``.

    ``skipped`` due times, from ``due`` on, are older than the catch-up window: the
    schedule moves past them without a run (``skip_to``: its next due time after them,
    None when it ended meanwhile). Then each of ``fire`` gets one run, oldest first, and
    ``next_due`` follows the last (None: the schedule has ended)."""

    due: int
    skipped: int
    skip_to: int | None
    fire: tuple[int, ...]
    next_due: int | None

    def after(self, due: int) -> int | None:
        """The due time that follows ``due``, one of ``fire``."""
        i = self.fire.index(due)
        return self.fire[i + 1] if i + 1 < len(self.fire) else self.next_due


def plan(schedule: Schedule, due: int, now: int, window_ms: int, limit: int) -> Plan:
    """The rule: every due time at most ``window_ms`` old fires once, oldest first (at most
    ``limit`` in one call: the rest wait for the next); older ones are skipped. A due time
    in the future does nothing yet."""
    skipped, skip_to = 0, None
    nxt: int | None = due
    oldest = now - window_ms
    if due < oldest:
        kept = schedule.next_after(oldest - 1)
        skipped = schedule.count(due, kept if kept is not None else now + 1)
        skip_to = nxt = kept
    fire: list[int] = []
    while nxt is not None and nxt <= now and len(fire) < limit:
        fire.append(nxt)
        nxt = schedule.next_after(nxt)
    return Plan(due, skipped, skip_to, tuple(fire), nxt)
