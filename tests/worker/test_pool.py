"""The thread pool's runner: a task past its timeout costs its thread, not the slot, and a
task spinning in Python is stopped."""

from __future__ import annotations

import threading
import time

from balancer.common import codec
from balancer.worker.pool import ThreadRunner

LIMIT = 1 << 20


def call(*args: object) -> bytes:
    return codec.pack([list(args), {}])


def test_a_thread_runner_abandons_a_task_past_its_timeout() -> None:
    outcome = ThreadRunner(LIMIT).run("tests.worker.tasks:nap", call(5), 0.2)
    assert not outcome.ok and codec.unpack_error(outcome.payload).type == "TimeoutError"  # type: ignore[union-attr]


def test_a_thread_runner_stops_a_task_spinning_in_python_past_its_timeout() -> None:
    from tests.worker import tasks

    before = threading.active_count()
    outcome = ThreadRunner(LIMIT).run("tests.worker.tasks:spin", call("timed"), 0.2)
    error = codec.unpack_error(outcome.payload)  # type: ignore[arg-type]
    assert not outcome.ok and error.type == "TimeoutError" and "was stopped" in error.message
    assert "timed: TaskInterrupted" in tasks.SPUN
    assert threading.active_count() == before  # its thread ended: nothing spins on


def test_a_thread_runner_stops_its_task_when_told_its_run_was_cancelled() -> None:
    from tests.worker import tasks

    runner, box = ThreadRunner(LIMIT), []
    slot = threading.Thread(target=lambda: box.append(
        runner.run("tests.worker.tasks:spin", call("cancelled"), None)), daemon=True)
    slot.start()
    while runner._task is None:
        time.sleep(0.01)
    runner.stop_task("its run was cancelled")
    slot.join(5)
    assert not slot.is_alive() and "cancelled: TaskInterrupted" in tasks.SPUN
    assert not box[0].ok
