"""The thread pool's runner: a task past its timeout costs its thread, not the slot."""

from __future__ import annotations

from balancer.common import codec
from balancer.worker.pool import ThreadRunner

LIMIT = 1 << 20


def call(*args: object) -> bytes:
    return codec.pack([list(args), {}])


def test_a_thread_runner_abandons_a_task_past_its_timeout() -> None:
    outcome = ThreadRunner(LIMIT).run("tests.worker.tasks:nap", call(5), 0.2)
    assert not outcome.ok and codec.unpack_error(outcome.payload).type == "TimeoutError"  # type: ignore[union-attr]
