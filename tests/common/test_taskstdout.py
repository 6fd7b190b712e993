"""log_stdout's capture: a task run's prints become log lines; nobody else's do."""

from __future__ import annotations

import logging
import sys
import threading

import pytest
from balancer.common import taskstdout


def test_printed_lines_go_to_the_logger_a_line_at_a_time_and_the_rest_at_close(
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("balancer.task")
    with caplog.at_level(logging.INFO, "balancer.task"):
        lines = taskstdout.capture(logger)
        print("one", 1)
        print("two\nthree\n\n   ")
        sys.stdout.write("par")
        sys.stdout.write("tial")
        lines.close()
        print("after the run")
    assert [r.getMessage() for r in caplog.records] == ["one 1", "two", "three", "partial"]
    assert capsys.readouterr().out == "after the run\n"


def test_another_threads_prints_are_not_taken(caplog: pytest.LogCaptureFixture,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("balancer.task")
    printed = threading.Event()
    done = threading.Event()

    def other() -> None:
        printed.wait(5)
        print("from another slot")
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with caplog.at_level(logging.INFO, "balancer.task"):
        lines = taskstdout.capture(logger)
        printed.set()
        done.wait(5)
        print("mine")
        lines.close()
    thread.join(5)
    assert [r.getMessage() for r in caplog.records] == ["mine"]
    assert capsys.readouterr().out == "from another slot\n"


def test_text_without_a_newline_is_logged_once_it_grows_past_the_line_limit(
        caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("balancer.task")
    with caplog.at_level(logging.INFO, "balancer.task"):
        lines = taskstdout.capture(logger)
        for _ in range(3):
            sys.stdout.write("x" * (taskstdout.MAX_LINE // 2 + 1))
        lines.close()
    assert [len(r.getMessage()) for r in caplog.records] == [
        taskstdout.MAX_LINE + 2, taskstdout.MAX_LINE // 2 + 1]
