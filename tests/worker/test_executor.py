"""Running one task function: every failure becomes an error record, never a crash."""

from __future__ import annotations

from balancer.common import codec
from balancer.worker.executor import Outcome, execute

LIMIT = 1 << 20


def call(*args: object, **kwargs: object) -> bytes:
    return codec.pack([list(args), kwargs])


def test_a_result_is_returned_packed() -> None:
    outcome = execute("tests.worker.tasks:echo", call(1, "a", k=[2]), LIMIT)
    assert outcome.ok
    assert codec.unpack(outcome.payload) == [[1, "a"], {"k": [2]}]


def test_an_exception_becomes_a_retryable_error_with_its_traceback() -> None:
    outcome = execute("tests.worker.tasks:boom", call(), LIMIT)
    error = codec.unpack_error(outcome.payload)
    assert not outcome.ok and outcome.retryable and not outcome.crashed
    assert error is not None and error.type == "KeyError" and "'missing'" in error.message
    assert "in boom" in error.traceback


def test_an_unknown_task_is_a_task_not_found_error() -> None:
    error = codec.unpack_error(execute("tests.worker.tasks:nothing", call(), LIMIT).payload)
    assert error is not None and error.type == "balancer.common.importpath.TaskNotFound"


def test_undecodable_arguments_fail_without_retry() -> None:
    outcome = execute("tests.worker.tasks:echo", b"\xc1", LIMIT)
    assert not outcome.ok and not outcome.retryable
    assert codec.unpack_error(outcome.payload).type == "balancer.BadPayload"  # type: ignore[union-attr]


def test_a_result_msgpack_cannot_carry_fails_without_retry() -> None:
    outcome = execute("tests.worker.tasks:unstorable", call(), LIMIT)
    assert not outcome.ok and not outcome.retryable
    assert codec.unpack_error(outcome.payload).type == "balancer.ResultNotSerializable"  # type: ignore[union-attr]


def test_a_result_over_the_limit_fails_without_retry() -> None:
    outcome = execute("tests.worker.tasks:big", call(100), 50)
    error = codec.unpack_error(outcome.payload)
    assert not outcome.ok and not outcome.retryable
    assert error is not None and error.type == "balancer.ResultTooLarge" and "50" in error.message


def test_an_outcome_round_trips_through_bytes() -> None:
    outcome = Outcome(False, b"\x01\x02", retryable=False)
    assert Outcome.from_bytes(outcome.to_bytes()) == Outcome(False, b"\x01\x02", False)


def test_an_async_task_runs_to_its_value_on_this_threads_loop() -> None:
    first = execute("tests.worker.tasks:async_nap", call(0), LIMIT)
    second = execute("tests.worker.tasks:async_nap", call(0), LIMIT)
    assert first.ok and second.ok
    assert codec.unpack(first.payload) == codec.unpack(second.payload)  # one loop per slot


def test_an_async_task_past_its_timeout_is_cancelled_as_a_timeout() -> None:
    import time

    t0 = time.monotonic()
    outcome = execute("tests.worker.tasks:async_nap", call(30), LIMIT, timeout=0.1)
    assert time.monotonic() - t0 < 10  # cancelled, not slept out
    error = codec.unpack_error(outcome.payload)
    assert not outcome.ok and error is not None and error.type == "TimeoutError"
