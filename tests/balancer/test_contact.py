"""The dispatcher's record of its own silences, and the grace they earn the workers."""

from __future__ import annotations

from balancer.contact import STREAK_MAX, Contact


def contact() -> Contact:
    return Contact(worker_timeout=3.0, tolerance=1.0)


def test_a_call_that_answers_within_its_wait_and_tolerance_earns_no_grace() -> None:
    c = contact()
    c.call(10.0, 10.9, meant=0.5)  # a blocking read of 0.5 s answered 0.4 s after it
    c.step(10.0, 11.4, meant=0.5)
    assert c.may_reap(11.5)


def test_a_late_answer_keeps_every_worker_until_they_had_the_timeout_to_beat() -> None:
    c = contact()
    c.call(10.0, 15.5, meant=0.5)  # Redis stalled five seconds
    assert not c.may_reap(15.5)
    assert not c.may_reap(18.4)
    assert c.may_reap(18.5)


def test_failed_steps_keep_every_worker_until_contact_is_back_and_the_timeout_passed() -> None:
    c = contact()
    c.failed()
    assert not c.may_reap(100.0)  # however long Redis stays away
    c.succeeded(130.0)
    assert not c.may_reap(132.9)
    assert c.may_reap(133.0)


def test_a_success_without_failure_before_it_earns_nothing() -> None:
    c = contact()
    c.succeeded(5.0)
    assert c.may_reap(5.0)


def test_a_slow_step_earns_a_grace_but_not_its_own_cpu_or_wait() -> None:
    c = contact()
    c.step(0.0, 4.0, meant=3.5)  # 3.5 s waiting for signals or computing: 0.5 s on Redis
    assert c.may_reap(4.0)
    c.step(4.0, 6.0, meant=0.5)
    assert not c.may_reap(6.0)
    assert c.may_reap(9.0)


def test_slow_steps_back_to_back_stop_earning_graces_so_a_dead_worker_is_reaped() -> None:
    c = contact()
    now = 0.0
    while now < STREAK_MAX * 3.0 + 10:  # every step waits 2 s on Redis, for ever
        c.step(now, now + 2.0, meant=0.0)
        now += 2.0
    assert c.may_reap(now)
    c.call(now, now + 2.0)  # a slow way to the reaping, in such a streak: no grace either
    assert c.may_reap(now + 2.0)
    c.step(now, now + 0.1, meant=0.0)  # a normal step ends the streak: graces again
    c.step(now + 0.1, now + 2.1, meant=0.0)
    assert not c.may_reap(now + 2.1)
