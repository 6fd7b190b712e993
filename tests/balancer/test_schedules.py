"""balancer.schedules: Prefect 1's schedules and the pure rule of which due times fire.

No Redis: times are integers of milliseconds, as the dispatcher reads them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from balancer.schedules import (
    CronSchedule,
    IntervalSchedule,
    Schedule,
    ScheduleError,
    from_ms,
    plan,
    to_ms,
)

UTC = timezone.utc
T0 = to_ms(datetime(2026, 1, 1, tzinfo=UTC))
S = 1000


def every(seconds: float, start_ms: int = T0, end_ms: int | None = None) -> Schedule:
    return IntervalSchedule(from_ms(start_ms), timedelta(seconds=seconds),
                            from_ms(end_ms) if end_ms is not None else None)


# -- due times ---------------------------------------------------------------------------


def test_an_interval_is_due_on_its_grid_from_the_start_date_strictly_after_a_time() -> None:
    sched = every(5)
    assert sched.next_after(T0 - 1) == T0
    assert sched.next_after(T0) == T0 + 5 * S
    assert sched.next_after(T0 + 4_999) == T0 + 5 * S
    assert sched.next_after(T0 + 5_000) == T0 + 10 * S


def test_an_interval_without_a_start_date_is_anchored_where_prefect_anchors_it() -> None:
    hourly = IntervalSchedule(interval=timedelta(hours=1))
    due = hourly.next_after(to_ms(datetime(2026, 3, 4, 10, 17, tzinfo=UTC)))
    assert from_ms(due or 0) == datetime(2026, 3, 4, 11, tzinfo=UTC)


def test_an_interval_ends_at_its_end_date() -> None:
    sched = every(1, end_ms=T0 + 2 * S)
    assert sched.next(5, after=from_ms(T0 - 1)) == [from_ms(T0), from_ms(T0 + S),
                                                    from_ms(T0 + 2 * S)]
    assert sched.next_after(T0 + 2 * S) is None


def test_cron_is_read_in_utc_by_default() -> None:
    sched = CronSchedule("*/5 * * * *")
    assert sched.next_after(T0 + 1) == T0 + 5 * 60 * S
    assert sched.next_after(T0 - 1) == T0


def test_cron_with_seconds_has_six_fields() -> None:
    sched = CronSchedule("*/2 * * * * *")
    assert sched.next_after(T0) == T0 + 2 * S


def test_cron_in_a_time_zone_follows_its_daylight_saving_time() -> None:
    nine = CronSchedule("0 9 * * *", tz="Europe/Paris")
    winter = nine.next_after(to_ms(datetime(2026, 1, 10, tzinfo=UTC)))
    summer = nine.next_after(to_ms(datetime(2026, 7, 10, tzinfo=UTC)))
    assert from_ms(winter or 0) == datetime(2026, 1, 10, 8, tzinfo=UTC)
    assert from_ms(summer or 0) == datetime(2026, 7, 10, 7, tzinfo=UTC)


def test_cron_takes_the_time_zone_of_an_aware_start_date() -> None:
    start = datetime(2026, 7, 1, tzinfo=ZoneInfo("America/New_York"))
    sched = CronSchedule("0 9 * * *", start_date=start)
    assert from_ms(sched.next_after(to_ms(start)) or 0) == datetime(2026, 7, 1, 13,
                                                                    tzinfo=UTC)


def test_cron_is_not_due_before_its_start_date_and_may_be_due_at_it() -> None:
    start = datetime(2026, 1, 1, 0, 10, tzinfo=UTC)
    sched = CronSchedule("*/5 * * * *", start_date=start)
    assert sched.next_after(T0) == to_ms(start)


def test_a_naive_datetime_is_taken_as_utc() -> None:
    assert to_ms(datetime(2026, 1, 1)) == T0


def test_a_schedule_of_several_clocks_is_due_when_any_is_and_once_for_a_shared_time() -> None:
    both = Schedule(clocks=every(2).clocks + every(3).clocks)
    times = [d for d in (to_ms(x) for x in both.next(5, after=from_ms(T0)))]
    assert times == [T0 + 2 * S, T0 + 3 * S, T0 + 4 * S, T0 + 6 * S, T0 + 8 * S]


def test_the_clocks_survive_the_trip_through_the_cluster() -> None:
    for sched in (every(7, end_ms=T0 + 100 * S), CronSchedule("0 9 * * 1-5", tz="Asia/Tokyo")):
        back = Schedule.from_spec(sched.spec())
        assert back.spec() == sched.spec()
        assert back.next(3, after=from_ms(T0)) == sched.next(3, after=from_ms(T0))


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("cron, says", [
    ("bad cron", "Wrong number of fields"),
    ("61 * * * *", "Bad minute"),
    ("* * 32 * *", "Bad day-of-month"),
    ("", "needs a cron string"),
])
def test_a_bad_cron_string_is_refused_naming_it(cron: str, says: str) -> None:
    with pytest.raises(ScheduleError, match=says) as err:
        CronSchedule(cron)
    assert repr(cron) in str(err.value)


@pytest.mark.parametrize("interval, says", [
    (timedelta(0), "greater than 0"),
    (timedelta(seconds=-5), "greater than 0"),
    (timedelta(milliseconds=500), "at least 1s"),
    (float("nan"), "finite"),
    ("10", "must be a timedelta"),
])
def test_an_interval_that_is_not_positive_is_refused(interval: object, says: str) -> None:
    with pytest.raises(ScheduleError, match=says):
        IntervalSchedule(interval=interval)  # type: ignore[arg-type]


def test_other_bad_schedules_are_refused_with_what_is_wrong() -> None:
    with pytest.raises(ScheduleError, match="needs an interval"):
        IntervalSchedule(datetime(2026, 1, 1))
    with pytest.raises(ScheduleError, match="unknown time zone 'Mars/Olympus'"):
        CronSchedule("* * * * *", tz="Mars/Olympus")
    with pytest.raises(ScheduleError, match="end_date is before start_date"):
        IntervalSchedule(datetime(2026, 2, 1), timedelta(hours=1), datetime(2026, 1, 1))
    with pytest.raises(ScheduleError, match="filters and adjustments are not supported"):
        Schedule(clocks=every(1).clocks, filters=[lambda d: True])
    with pytest.raises(ScheduleError, match="one or more clocks"):
        Schedule(clocks=[])
    with pytest.raises(ScheduleError, match="unreadable"):
        Schedule.from_spec(b"\xc1")


# -- the rule ------------------------------------------------------------------------------

WINDOW = 60 * S


def test_a_due_time_in_the_future_does_nothing_yet() -> None:
    p = plan(every(1), T0 + 5 * S, T0 + 4_999, WINDOW, 100)
    assert p.fire == () and p.skipped == 0 and p.next_due == T0 + 5 * S


def test_a_due_time_that_has_come_fires_once_and_the_next_one_follows() -> None:
    p = plan(every(1), T0, T0 + 10, WINDOW, 100)
    assert p.fire == (T0,) and p.next_due == T0 + S and p.skipped == 0
    assert p.after(T0) == T0 + S


def test_due_times_missed_within_the_window_all_fire_oldest_first() -> None:
    p = plan(every(1), T0, T0 + 3_500, WINDOW, 100)
    assert p.fire == (T0, T0 + S, T0 + 2 * S, T0 + 3 * S)
    assert [p.after(d) for d in p.fire] == [T0 + S, T0 + 2 * S, T0 + 3 * S, T0 + 4 * S]


def test_at_most_limit_due_times_fire_in_one_call_and_the_rest_stay_due() -> None:
    p = plan(every(1), T0, T0 + 10 * S, WINDOW, 3)
    assert p.fire == (T0, T0 + S, T0 + 2 * S) and p.next_due == T0 + 3 * S


def test_due_times_older_than_the_window_are_skipped_and_counted() -> None:
    now = T0 + 100 * S + 500
    p = plan(every(1), T0, now, 10 * S, 100)
    assert p.skipped == 91  # T0 .. T0+90s are older than now - 10 s
    assert p.skip_to == T0 + 91 * S
    assert p.fire == tuple(T0 + k * S for k in range(91, 101))
    assert p.next_due == T0 + 101 * S


def test_a_due_time_exactly_at_the_window_edge_still_fires() -> None:
    p = plan(every(1), T0, T0 + 10 * S, 10 * S, 100)
    assert p.skipped == 0 and p.fire[0] == T0


def test_skipped_cron_due_times_are_counted_too() -> None:
    p = plan(CronSchedule("* * * * * *"), T0, T0 + 30 * S, 5 * S, 100)
    assert p.skipped == 25 and p.skip_to == T0 + 25 * S and len(p.fire) == 6


def test_a_schedule_that_ended_while_skipping_fires_nothing_and_has_no_next() -> None:
    p = plan(every(1, end_ms=T0 + 5 * S), T0, T0 + 100 * S, 10 * S, 100)
    assert p.skipped == 6 and p.skip_to is None and p.fire == () and p.next_due is None


def test_the_last_due_time_fires_and_then_the_schedule_has_ended() -> None:
    p = plan(every(1, end_ms=T0 + S), T0, T0 + 5 * S, WINDOW, 100)
    assert p.fire == (T0, T0 + S) and p.next_due is None


def test_every_due_time_is_fired_or_skipped_exactly_once_across_calls() -> None:
    """Applying the rule call after call, as a leader (or its successor) does, covers the
    due times with no gap and no repeat, whatever the calls' times."""
    sched, due = every(1), T0
    seen: list[int] = []
    for now in (T0 + 500, T0 + 2_100, T0 + 2_100, T0 + 40 * S, T0 + 41 * S, T0 + 90 * S):
        p = plan(sched, due, now, 10 * S, 5)
        if p.skipped:
            seen += [due + k * S for k in range(p.skipped)]
            assert p.skip_to is not None
            due = p.skip_to
        for d in p.fire:
            seen.append(d)
            due = p.after(d) or 0
    assert seen == list(range(T0, seen[-1] + 1, S))


def test_a_flow_refuses_a_schedule_that_is_not_one() -> None:
    from balancer import Flow

    with pytest.raises(TypeError, match="schedule must be an IntervalSchedule"):
        Flow("f", schedule="*/5 * * * *")
    assert Flow("f", schedule=CronSchedule("*/5 * * * *")).schedule is not None
