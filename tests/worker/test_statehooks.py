"""Prefect 1's task state handlers where the task runs: the states each handler is given
(Pending or Retrying, Running, then how the run ended, as Redis will settle it), and a
handler's answer settling the run."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from balancer.common import codec
from balancer.common.codec import ErrorInfo
from balancer.common.runsignals import Failed, Retrying, TimedOut
from balancer.worker import statehooks
from balancer.worker.executor import execute
from balancer.worker.outcome import Outcome, Ran
from balancer.worker.pool import ThreadRunner

from balancer.runcontext import RunFacts, bound
from tests.worker import handled

CALL = codec.pack([[], {}])
MAX = 1 << 20


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    handled.SEEN.clear()
    handled.FAILURES.clear()
    handled.CALLS.clear()
    handled.HOOKED.clear()
    yield


def run(name: str, *args: Any, failures: int = 0, retries: int = 0) -> Outcome:
    """Run task ``name`` of tests/worker/handled.py as a worker does, its record saying
    it failed ``failures`` times so far and has ``retries``."""
    facts = RunFacts("t1", name, "f1", "default", "w1",
                     lambda: {"failures": failures, "retries": retries,
                              "task_run_count": failures + 1})
    with bound(facts):
        return execute(f"tests.worker.handled:{name}", codec.pack([list(args), {}]), MAX)


def error(outcome: Outcome) -> ErrorInfo:
    found = codec.unpack_error(outcome.payload)
    assert found is not None
    return found


def test_a_successful_run_goes_pending_running_success_with_its_value() -> None:
    outcome = run("doubles", 21)
    assert outcome.ok and codec.unpack(outcome.payload) == 42
    assert handled.SEEN == [("doubles", "Pending", "Running", None),
                            ("doubles", "Running", "Success", 42)]
    assert handled.FAILURES == []


def test_a_failure_with_retries_left_is_retrying_and_calls_no_on_failure() -> None:
    outcome = run("fails", 1, failures=1, retries=2)
    assert not outcome.ok and outcome.retryable
    assert [s[1:3] for s in handled.SEEN] == [("Retrying", "Running"), ("Running", "Retrying")]
    assert handled.FAILURES == []


def test_the_last_failure_is_failed_with_the_error_and_calls_on_failure_once() -> None:
    outcome = run("fails", 3, failures=2, retries=2)
    assert not outcome.ok and error(outcome).message == "bad 3"
    assert [s[2] for s in handled.SEEN] == ["Running", "Failed"]
    [state] = handled.FAILURES
    assert isinstance(state, Failed) and not isinstance(state, Retrying)
    assert state.message == "ValueError: bad 3" and state.result.type == "ValueError"


def test_fail_is_failed_whatever_retries_are_left_and_a_timeout_is_timed_out() -> None:
    run("gives_up", retries=2)
    assert handled.SEEN[-1][2] == "Failed"
    run("too_slow")
    assert handled.SEEN[-1][2] == "TimedOut" and issubclass(TimedOut, Failed)


def test_a_state_returned_at_the_start_ends_the_run_without_calling_the_task() -> None:
    outcome = run("skipped_by_handler")
    assert outcome.mode == "skip" and handled.CALLS == []
    assert handled.SEEN == [("skipped_by_handler", "Pending", "Skipped", None)]


def test_a_handler_answer_settles_the_run() -> None:
    refused = run("failed_by_handler")
    assert not refused.ok and not refused.retryable and refused.mode == "final"
    assert error(refused).message == "refused by its handler"
    assert handled.SEEN[-1][2] == "Failed"  # the next handler is given the answer
    rescued = run("rescued")
    assert rescued.ok and codec.unpack(rescued.payload) == 5


@pytest.mark.parametrize("name, said", [
    ("handler_raises", "state handler broken raised on Pending -> Running: RuntimeError:"
                       " the handler is broken"),
    ("handler_returns_junk", "state handler not_a_state returned 'done', not a state"),
    ("handler_exits", "a state handler raised SystemExit on Pending -> Running")])
def test_a_handler_that_raises_exits_or_answers_no_state_fails_the_run_for_good(
        name: str, said: str) -> None:
    outcome = run(name)
    assert not outcome.ok and not outcome.retryable
    assert error(outcome).type == "balancer.HandlerFailed" and said in error(outcome).message
    assert handled.CALLS == []


def test_a_task_without_handlers_reads_no_facts() -> None:
    def read() -> dict[str, Any]:
        raise AssertionError("read")

    with bound(RunFacts("t1", "x", "f1", "default", "w1", read)):
        outcome = execute("tests.worker.tasks:my_run_id", CALL, MAX)
    assert outcome.ok


def test_a_record_that_cannot_be_read_reads_as_no_failures_and_the_run_goes_on() -> None:
    def read() -> dict[str, Any]:
        raise ValueError("not a record")

    with bound(RunFacts("t1", "doubles", "f1", "default", "w1", read)):
        outcome = execute("tests.worker.handled:doubles", codec.pack([[4], {}]), MAX)
    assert outcome.ok and handled.SEEN[0][1] == "Pending"


def test_prefect_2_hooks_are_called_once_the_run_ends_so_and_a_raising_one_changes_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    outcome = run("hooked", 1)
    assert outcome.ok and codec.unpack(outcome.payload) == 2
    assert handled.HOOKED == [("hooked", "t1", "Completed", 1, 2)]
    assert "hook hook_raises raised (the run's state stands)" in caplog.text
    handled.HOOKED.clear()
    assert not run("hooked", -1, failures=0, retries=1).ok  # retried: no hook
    assert handled.HOOKED == []
    assert not run("hooked", -1, failures=1, retries=1).ok
    [(name, task_run, state, count, error)] = handled.HOOKED
    assert (name, task_run, state, count) == ("hooked", "t1", "Failed", 2)
    assert error.error.message == "negative"  # the TaskFailed, as Prefect returns it


def test_a_run_of_a_copy_made_with_options_shows_its_handlers_the_copys_name() -> None:
    facts = RunFacts("t1", "doubles-eu", "f1", "default", "w1",
                     lambda: {"failures": 0, "retries": 0, "task_run_count": 1})
    with bound(facts):
        assert execute("tests.worker.handled:doubles", codec.pack([[1], {}]), MAX).ok
    assert {seen[0] for seen in handled.SEEN} == {"doubles-eu"}
    assert handled.doubles.name == "doubles"  # the module's own task is left as it was


def test_a_retry_condition_keeps_or_refuses_the_retry_seeing_the_raised_exception() -> None:
    handled.ASKED.clear()
    kept = run("picky", "connection", failures=0, retries=3)
    assert not kept.ok and kept.retryable  # Redis retries it
    refused = run("picky", "value", failures=1, retries=3)
    assert not refused.ok and not refused.retryable  # fails for good
    assert handled.ASKED == [("picky", 1, "ConnectionError"), ("picky", 2, "ValueError")]
    last = run("picky", "value", failures=3, retries=3)  # no retry left: not asked
    assert not last.ok and len(handled.ASKED) == 2
    assert not run("badly_picky", retries=3).retryable  # a condition that raises: no retry


def test_a_retry_condition_is_asked_once_of_a_run_given_up_past_its_timeout() -> None:
    """Asked on the slot's thread, with a TimeoutError (``timed_out``); never again where
    the given-up run ends, interrupted in its own thread."""
    handled.ASKED.clear()
    facts = RunFacts("t1", "picky", "f1", "default", "w1",
                     lambda: {"failures": 0, "retries": 3, "task_run_count": 1})
    given_up = Outcome.failure(ErrorInfo("TimeoutError", "ran past its timeout of 1s"))
    with bound(facts):
        refused = statehooks.timed_out("tests.worker.handled:picky", given_up)
        interrupted = statehooks._retry_condition(
            handled.picky, Ran(False, error=ErrorInfo("balancer.worker.interrupt"
                                                      ".TaskInterrupted", "")),
            lambda: {"failures": 0, "retries": 3})
    assert not refused.retryable  # picky retries only ConnectionErrors
    assert interrupted.retryable and handled.ASKED == [("picky", 1, "TimeoutError")]
    no_condition = statehooks.timed_out("tests.worker.handled:doubles", given_up)
    assert no_condition is given_up


@pytest.mark.parametrize(("name", "told"), [("overruns_refused", "TimedOut"),
                                             ("overruns_kept", "Retrying")])
def test_a_thread_pool_run_given_up_past_its_timeout_tells_its_handlers_the_slots_answer(
        name: str, told: str) -> None:
    """The slot's thread asks the retry condition; the run's own thread, interrupted,
    tells the handlers what it answered (they were told Retrying whatever it said)."""
    handled.ASKED.clear()
    facts = RunFacts("t1", name, "f1", "default", "w1",
                     lambda: {"failures": 0, "retries": 3, "task_run_count": 1})
    with bound(facts):
        outcome = ThreadRunner(MAX).run(f"tests.worker.handled:{name}", CALL, 0.2)
    assert outcome.retryable == (told == "Retrying")
    deadline = time.monotonic() + 10
    while len(handled.SEEN) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # the run's thread calls them once it met the interrupt
    assert [(old, new) for _, old, new, _ in handled.SEEN] == [("Pending", "Running"),
                                                               ("Running", told)]
    assert [(name, 1, "TimeoutError")] == handled.ASKED


def test_a_killed_process_pool_run_asks_its_retry_condition_and_its_handlers_see_the_answer(
) -> None:
    """What a process of the pool asks for the supervisor (worker.askretry), and the
    state the next child's handlers are given once the condition refused the retry."""
    handled.ASKED.clear()
    killed = statehooks.Killed("t1", "tests.worker.handled:picky", "picky", "f1", "default",
                               "ran past its timeout of 1s", failures=0, retries=3)
    assert killed.retry_left() and not killed.retry_wanted("w1")
    assert handled.ASKED == [("picky", 1, "TimeoutError")]
    refused = killed._replace(refused=True)
    assert not refused.retry_left()
    handled.SEEN.clear()
    killed._replace(fn="tests.worker.handled:doubles", name="doubles").tell_handlers("w1")
    killed._replace(fn="tests.worker.handled:doubles", name="doubles",
                    refused=True).tell_handlers("w1")
    assert [new for _, _, new, _ in handled.SEEN] == ["Retrying", "TimedOut"]
    kept = killed._replace(fn="tests.worker.handled:doubles", name="doubles")
    assert kept.retry_wanted("w1")  # no condition: retried
    assert killed._replace(fn="tests.nowhere:gone").retry_wanted("w1")  # cannot load


def test_a_crashed_process_pool_run_is_retrying_while_put_back_and_failed_once_quarantined(
) -> None:
    """What the next child tells the handlers of a run whose process died: a crash is no
    failure and uses no retry, so it is Retrying while fail.lua puts it back (retries or
    none), Failed once quarantined; its run count counts the crashes."""
    crashed = statehooks.Killed("t1", "tests.worker.handled:doubles", "doubles", "f1",
                                "default", "the process running task doubles died",
                                failures=0, retries=0, crash=statehooks.PUT_BACK, lost=1)
    assert crashed._facts("w1").more()["task_run_count"] == 2
    handled.SEEN.clear()
    crashed.tell_handlers("w1")
    crashed._replace(crash=statehooks.QUARANTINED).tell_handlers("w1")
    assert [(old, new) for _, old, new, _ in handled.SEEN] == [("Running", "Retrying"),
                                                               ("Running", "Failed")]
    assert statehooks.Killed(*codec.unpack(codec.pack([*crashed]))) == crashed


def test_a_looping_thread_pool_run_cancelled_past_one_timeout_is_cancelled_for_its_handlers(
) -> None:
    """Its timeout bounds each iteration (worker/looping.py): a run cancelled after more
    than one timeout in all, each iteration within it, was cancelled, not timed out."""
    handled.SEEN.clear()
    facts = RunFacts("t1", "loops_slowly", "f1", "default", "w1",
                     lambda: {"failures": 0, "retries": 0, "task_run_count": 1})
    runner = ThreadRunner(MAX)
    ran = threading.Thread(target=lambda: bound_run(runner, facts))
    ran.start()
    time.sleep(0.8)  # 5 iterations of 0.15 s under a timeout of 0.3 s
    runner.stop_task("its run was cancelled")
    ran.join(5)
    deadline = time.monotonic() + 10
    while len(handled.SEEN) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [(old, new) for _, old, new, _ in handled.SEEN] == [("Pending", "Running"),
                                                               ("Running", "Cancelled")]


def bound_run(runner: ThreadRunner, facts: RunFacts) -> None:
    with bound(facts):
        runner.run("tests.worker.handled:loops_slowly", CALL, 0.3)
