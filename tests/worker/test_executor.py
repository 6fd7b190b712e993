"""Running one task function: every failure becomes an error record, never a crash."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from balancer.common import codec, importpath
from balancer.worker.executor import execute
from balancer.worker.outcome import Outcome

from balancer.runcontext import RunFacts, bound

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


@pytest.mark.parametrize(("path", "kind", "type_"), [
    ("tests.worker.tasks:raises_base", "exit", "SystemExit"),
    ("tests.worker.tasks:raises_base", "interrupt", "KeyboardInterrupt"),
    ("tests.worker.tasks:raises_base", "unusual", "tests.worker.tasks.Unusual"),
    ("tests.worker.tasks:cancelled_by_itself", None, "asyncio.exceptions.CancelledError"),
])
def test_what_a_task_raises_that_is_not_an_exception_fails_it_and_goes_no_further(
        path: str, kind: str | None, type_: str) -> None:
    outcome = execute(path, call(kind) if kind else call(), LIMIT)
    error = codec.unpack_error(outcome.payload)
    assert not outcome.ok and outcome.retryable and not outcome.crashed
    assert error is not None and error.type == type_, error
    assert "a task cannot stop its worker; it fails instead" in error.message


def test_a_task_module_that_exits_on_import_is_a_task_not_found_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A module that parses sys.argv when imported (argparse exits on what it does not
    know) must not take the slot's thread with it."""
    (tmp_path / "parses_argv.py").write_text(
        "import argparse\nargparse.ArgumentParser().parse_args(['--unknown'])\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importpath.set_policy(importpath.TaskPolicy.of(folder=str(tmp_path)))
    try:
        outcome = execute("parses_argv:anything", call(), LIMIT)
    finally:
        importpath.set_policy(importpath.TaskPolicy.of())
    error = codec.unpack_error(outcome.payload)
    assert error is not None and error.type == "balancer.common.importpath.TaskNotFound"
    assert "SystemExit: 2" in error.message


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


def test_signals_raised_in_a_task_set_how_its_run_ends() -> None:
    skipped = execute("tests.worker.tasks:skips", call("no data"), LIMIT)
    assert not skipped.ok and skipped.mode == "skip"
    assert codec.unpack_error(skipped.payload).message == "no data"  # type: ignore[union-attr]
    retried = execute("tests.worker.tasks:signals_retry", call(), LIMIT)
    assert retried.mode == "again" and retried.retryable
    failed = execute("tests.worker.tasks:signals_fail", call(), LIMIT)
    assert failed.mode == "final" and not failed.retryable
    assert Outcome.from_bytes(skipped.to_bytes()).mode == "skip"


def test_a_task_class_is_built_with_its_constructor_arguments_and_run() -> None:
    outcome = execute("tests.worker.tasks:Scale", call(7, __balancer_init__=[[], {"factor": 3}]),
                      LIMIT)
    assert outcome.ok and codec.unpack(outcome.payload) == 21


def test_a_class_that_is_no_task_is_refused_without_being_built() -> None:
    outcome = execute("tests.worker.tasks:NotATask", call(), LIMIT)
    error = codec.unpack_error(outcome.payload)
    assert not outcome.ok and not outcome.retryable
    assert error is not None and error.type == "balancer.TaskNotAllowed"


def test_a_task_class_outside_the_allowed_modules_is_refused(
        tmp_path: Path) -> None:
    importpath.set_policy(importpath.TaskPolicy.of(folder=str(tmp_path)))
    try:
        outcome = execute("tests.worker.tasks:Scale", call(1), LIMIT)
    finally:
        importpath.set_policy(importpath.TaskPolicy.of())
    error = codec.unpack_error(outcome.payload)
    assert error is not None and error.type == "balancer.TaskNotAllowed"
    assert "not in the worker's folder" in error.message


def test_the_built_in_control_flow_tasks_run_under_any_policy(tmp_path: Path) -> None:
    importpath.set_policy(importpath.TaskPolicy.of(folder=str(tmp_path)))
    try:
        same = execute("balancer.control_flow:compare_value", call(True, True), LIMIT)
        other = execute("balancer.control_flow:compare_value", call(False, True), LIMIT)
    finally:
        importpath.set_policy(importpath.TaskPolicy.of())
    assert same.ok and other.mode == "skip"


@pytest.mark.parametrize(("path", "said"), [
    ("tests.worker.tasks:chatty", ["first words", "no end"]),
    ("tests.worker.tasks:chatty_async", ["async words"]),
    ("tests.worker.tasks:ChattyClass", ["class words"])])
def test_a_log_stdout_task_prints_to_its_logger_with_its_ids(
        path: str, said: list[str], caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    facts = RunFacts("t1", "chatty", "f1", "default", "w1")
    with bound(facts), caplog.at_level(logging.INFO, "balancer.task"):
        assert execute(path, call("words"), LIMIT).ok
    assert [r.getMessage() for r in caplog.records] == [
        f"task=t1 flow=f1 name=chatty: {line}" for line in said]
    assert capsys.readouterr().out == ""


def test_a_task_without_log_stdout_prints_to_stdout(
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    with caplog.at_level(logging.INFO, "balancer.task"):
        assert execute("tests.worker.tasks:plain_print", call("words"), LIMIT).ok
    assert caplog.records == [] and capsys.readouterr().out == "plain words\n"


def test_a_run_name_function_that_exits_fails_the_run_and_the_slot_goes_on() -> None:
    facts = RunFacts("t1", "exits", "f1", "default", "w1")
    with bound(facts):
        outcome = execute("tests.worker.named_exits:exits", call(1), LIMIT)
    assert not outcome.ok and not outcome.retryable
    error = codec.unpack_error(outcome.payload)
    assert error.type == "balancer.RunNameError" and "raised SystemExit" in error.message
    assert facts.run_name is None


def test_a_run_name_that_came_with_the_call_names_the_run_unless_it_reaches_into_values(
        ) -> None:
    from balancer.common.importpath import RUN_NAME_KEYWORD

    facts = RunFacts("t1", "echo", "f1", "default", "w1")
    blob = codec.pack([[7], {RUN_NAME_KEYWORD: "echo-{0}"}])  # positional: refused
    with bound(facts):
        outcome = execute("tests.worker.tasks:echo", blob, LIMIT)
    assert not outcome.ok and not outcome.retryable
    assert codec.unpack_error(outcome.payload).type == "balancer.RunNameError"

    for template, made in (("echo-{a}", "echo-7"), ("echo-{a.__class__}", None)):
        facts = RunFacts("t1", "echo", "f1", "default", "w1")
        blob = codec.pack([[], {"a": 7, RUN_NAME_KEYWORD: template}])
        with bound(facts):
            outcome = execute("tests.worker.tasks:echo", blob, LIMIT)
        assert facts.run_name == made
        assert outcome.ok is (made is not None)
        if made is not None:  # the keyword is taken out before the call
            assert codec.unpack(outcome.payload) == [[], {"a": 7}]


def test_a_returned_state_ends_the_run_in_it_a_failed_one_for_good() -> None:
    completed = execute("tests.worker.tasks:ends_in", call("completed"), LIMIT)
    assert completed.ok and codec.unpack(completed.payload) == 7
    failed = execute("tests.worker.tasks:ends_in", call("failed"), LIMIT)
    error = codec.unpack_error(failed.payload)
    assert not failed.ok and not failed.retryable  # retries=3 left: not retried
    assert error is not None and error.message == "no"
