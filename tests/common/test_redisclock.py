"""Redis's clock reckoned on the monotonic clock: read once, carried on, read again when due."""

from __future__ import annotations

import time

import pytest
import redis
from balancer.common import redisclock
from balancer.common.redisclock import RedisClock


def test_it_carries_redis_clock_on_whatever_this_hosts_wall_clock_says() -> None:
    reads: list[float] = []

    def read() -> float:
        reads.append(1.0)
        return 5_000_000.0  # Redis's clock: far from this host's
    clock = RedisClock(read)
    clock.sync()
    first = clock.now_ms()
    assert abs(first - 5_000_000.0) < 50
    time.sleep(0.05)
    assert 40 <= clock.now_ms() - first < 1000
    assert len(reads) == 1


def test_before_any_reading_it_says_the_wall_clock() -> None:
    assert abs(RedisClock(lambda: 0.0).now_ms() - time.time() * 1000) < 1000


def test_it_reads_again_when_due_and_keeps_the_last_reading_when_redis_cannot_answer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [1_000.0]

    def read() -> float:
        if not answers:
            raise redis.ConnectionError("down")
        return answers.pop(0)
    clock = RedisClock(read)
    assert clock.due()
    assert abs(clock.fresh_ms() - 1_000.0) < 50
    assert not clock.due()
    monkeypatch.setattr(redisclock, "RESYNC", -1.0)  # due at every call
    assert abs(clock.fresh_ms() - 1_000.0) < 50  # down: the last reading goes on
    answers.append(9_000.0)
    assert abs(clock.fresh_ms() - 9_000.0) < 50


def test_a_reading_heard_with_another_reply_counts_as_a_read() -> None:
    def read() -> float:
        raise AssertionError("no TIME: the heartbeat's reply carried the clock")
    clock = RedisClock(read)
    at = time.monotonic() - 0.5
    clock.heard(7_000_000.0, at)  # as of half a second ago
    assert not clock.due()
    assert 7_000_450 <= clock.fresh_ms() < 7_001_500
