"""``wait_out``: a long-lived process's start waits out an outage reply, says so once and
once more when it ends, and raises what waiting would not mend."""

from __future__ import annotations

import logging
import threading

import pytest
import redis
from balancer.common import retry

LOG = logging.getLogger("test-retry")


def _refusing(times: int, error: Exception) -> tuple[list[int], object]:
    calls: list[int] = []

    def call() -> None:
        calls.append(1)
        if len(calls) <= times:
            raise error

    return calls, call


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retry.time, "sleep", lambda _s: None)


def test_an_outage_is_waited_out_and_said_once_at_each_end(
        caplog: pytest.LogCaptureFixture) -> None:
    calls, call = _refusing(3, redis.exceptions.OutOfMemoryError(
        "command not allowed when used memory > 'maxmemory'.", status_code="OOM"))
    with caplog.at_level(logging.INFO, logger="test-retry"):
        assert retry.wait_out(call, LOG, "cannot start yet", "could start") is True
    assert len(calls) == 4
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "cannot start yet", "could start"]


def test_a_refusal_about_data_raises_at_once() -> None:
    calls, call = _refusing(1, redis.ResponseError(
        "WRONGTYPE Operation against a key holding the wrong kind of value"))
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        retry.wait_out(call, LOG, "cannot start yet", "could start")
    assert len(calls) == 1


def test_a_stop_during_the_wait_ends_it_unserved() -> None:
    stop = threading.Event()
    stop.set()
    calls, call = _refusing(100, redis.exceptions.BusyLoadingError(
        "Redis is loading the dataset in memory", status_code="LOADING"))
    assert retry.wait_out(call, LOG, "cannot start yet", "could start", stop) is False
    assert len(calls) == 1
