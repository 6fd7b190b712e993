"""Pool runners with real child processes and threads: timeouts and crashes cost one run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from common import codec
from worker.pool import ProcessRunner, ThreadRunner

LIMIT = 1 << 20


def call(*args: object) -> bytes:
    return codec.pack([list(args), {}])


@pytest.fixture
def process_runner() -> Iterator[ProcessRunner]:
    runner = ProcessRunner([], LIMIT)
    yield runner
    runner.close(kill=True)


def test_a_process_runner_runs_tasks_in_its_child(process_runner: ProcessRunner) -> None:
    import os

    outcome = process_runner.run("tests.worker.tasks:pid", call(), None)
    assert outcome.ok and codec.unpack(outcome.payload) != os.getpid()


def test_a_task_past_its_timeout_is_killed_and_the_child_replaced(
        process_runner: ProcessRunner) -> None:
    first = process_runner.process.pid
    outcome = process_runner.run("tests.worker.tasks:nap", call(30), 0.3)
    assert not outcome.ok and codec.unpack_error(outcome.payload).type == "TimeoutError"  # type: ignore[union-attr]
    assert process_runner.process.pid != first
    again = process_runner.run("tests.worker.tasks:echo", call(1), None)
    assert again.ok


def test_a_task_that_kills_its_child_is_reported_as_a_crash(
        process_runner: ProcessRunner) -> None:
    outcome = process_runner.run("tests.worker.tasks:die", call(), None)
    assert not outcome.ok and outcome.crashed
    error = codec.unpack_error(outcome.payload)
    assert error is not None and "exit code 3" in error.message
    assert process_runner.run("tests.worker.tasks:echo", call(2), None).ok


def test_a_thread_runner_abandons_a_task_past_its_timeout() -> None:
    outcome = ThreadRunner(LIMIT).run("tests.worker.tasks:nap", call(5), 0.2)
    assert not outcome.ok and codec.unpack_error(outcome.payload).type == "TimeoutError"  # type: ignore[union-attr]
