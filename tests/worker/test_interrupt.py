"""Stopping a thread-pool task the worker gave up on: ``TaskInterrupted`` raised in its
thread while it runs a task, never outside one, and again until a straggler ends."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from balancer.worker.interrupt import Stragglers, TaskInterrupted, interrupt, running, shielded


def _thread(target: object) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)  # type: ignore[arg-type]
    thread.start()
    return thread


def test_a_task_spinning_in_python_meets_the_interrupt_and_its_finally_runs() -> None:
    inside, seen = threading.Event(), []

    def task() -> None:
        try:
            with running():
                inside.set()
                while True:
                    pass
        except TaskInterrupted:
            seen.append("interrupted")

    thread = _thread(task)
    assert inside.wait(5)
    assert interrupt(thread)
    thread.join(5)
    assert not thread.is_alive() and seen == ["interrupted"]


def test_a_thread_outside_a_task_is_not_interrupted() -> None:
    done, go, seen = threading.Event(), threading.Event(), []

    def after_its_task() -> None:
        with running():
            pass
        done.set()
        go.wait(5)
        seen.append("went on")

    thread = _thread(after_its_task)
    assert done.wait(5)
    assert not interrupt(thread)
    go.set()
    thread.join(5)
    assert seen == ["went on"]


def test_a_straggler_in_a_long_call_is_interrupted_once_it_returns_and_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    inside, seen = threading.Event(), []

    def task() -> None:
        try:
            with running():
                inside.set()
                time.sleep(0.6)  # one C call: the exception waits for its end
                seen.append("not stopped")
        except TaskInterrupted:
            seen.append("interrupted")

    stragglers = Stragglers(again=0.05)
    thread = _thread(task)
    assert inside.wait(5)
    with caplog.at_level(logging.INFO, logger="worker"):
        assert not stragglers.stop(thread, "tests:sleeps", "past its timeout of 0.1s")
        assert stragglers.alive() == 1
        thread.join(5)
        deadline = time.monotonic() + 5
        while "stopped at last" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.02)
    assert seen == ["interrupted"] and stragglers.alive() == 0
    assert "task tests:sleeps (past its timeout of 0.1s) does not stop" in caplog.text
    assert "task tests:sleeps (past its timeout of 0.1s) stopped at last" in caplog.text


def test_a_task_that_swallows_the_interrupt_is_interrupted_again_until_it_ends() -> None:
    inside, caught = threading.Event(), []

    def stubborn() -> None:
        try:
            with running():
                inside.set()
                while len(caught) < 3:
                    try:
                        while True:
                            pass
                    except BaseException as exc:
                        caught.append(type(exc).__name__)
        except TaskInterrupted:
            pass

    stragglers = Stragglers(again=0.05)
    thread = _thread(stubborn)
    assert inside.wait(5)
    stragglers.stop(thread, "tests:stubborn", "cancelled", wait=0)
    thread.join(10)
    assert not thread.is_alive()
    assert caught[:3] == ["TaskInterrupted"] * 3


def test_a_thread_gone_on_to_its_run_s_handlers_is_not_a_straggler(
        caplog: pytest.LogCaptureFixture) -> None:
    """Its task's code ended: what it runs now (``shielded``) is not interrupted, and it
    does not count among the threads that do not stop."""
    inside, release, seen = threading.Event(), threading.Event(), []

    def task() -> None:
        with running():
            try:
                while True:
                    time.sleep(0.01)
            except TaskInterrupted:
                seen.append("interrupted")
            with shielded():
                inside.set()
                for _ in range(500):  # a slow handler, back in Python every 10 ms
                    if release.is_set():
                        break
                    time.sleep(0.01)
                seen.append("handlers done")

    stragglers = Stragglers(again=0.05)
    thread = _thread(task)
    time.sleep(0.05)
    with caplog.at_level(logging.INFO, logger="worker"):
        assert stragglers.stop(thread, "tests:loops", "past its timeout of 0.1s")
        assert inside.wait(5) and stragglers.alive() == 0
        time.sleep(0.2)  # the watch would have interrupted it several times
        release.set()
        thread.join(5)
    assert seen == ["interrupted", "handlers done"]
    assert "its thread calls the run's state handlers" in caplog.text
