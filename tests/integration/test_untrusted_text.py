"""What clients and tasks choose (a flow's name, a task's error) reaches the operator's
terminal and the logs with its control characters escaped: no escape sequence runs in
the terminal that shows `balancer status`, `flows`, `flow` or a worker's log, and no
newline forges a log line. Real serve and worker processes, the real CLI."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis

from balancer import Flow
from tests.conftest import ROOT, Processes
from tests.integration import tasks

pytestmark = pytest.mark.integration

# OSC 52 (write the operator's clipboard), then clear the screen.
NAME = "nightly\x1b]52;c;ZXZpbA==\x07\x1b[2J"
FORGED = "2026-01-01 00:00:00,000 INFO    worker: task=forged completed"
ERROR = f"boom\n{FORGED}\x1b[31m"


def test_names_and_errors_reach_no_terminal_or_log_as_control_characters(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    procs.serve_and_worker(real, namespace, "--pool", "thread")
    worker = procs.procs[-1]
    with Flow(NAME) as flow:
        tasks.raises(ERROR)
    run = flow.submit(real, namespace=namespace)
    assert run.wait(timeout=60) == "failed"
    shown = {}
    for args in (("status",), ("flows",), ("flow", run.id, "--verbose"), ("dlq", "ls")):
        done = subprocess.run([sys.executable, "-m", "balancer.cli", *args], cwd=ROOT,
                              env=procs.env, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert b"\x1b" not in done.stdout and b"\x07" not in done.stdout, args
        shown[args[0]] = done.stdout.decode()
    assert "nightly\\x1b]52;c;ZXZpbA==\\x07" in shown["flows"]
    assert "nightly\\x1b]52" in shown["status"]
    assert "\\x1b[31m" in shown["flow"]  # the error, as it was, escaped
    log = procs.log(worker)
    assert "\x1b" not in log
    assert not any(line.startswith(FORGED) for line in log.splitlines()), log
    assert "boom\\x0a" + FORGED in log  # on the worker's own line, escaped


def test_an_error_naming_what_was_given_shows_it_escaped(procs: Processes) -> None:
    done = subprocess.run([sys.executable, "-m", "balancer.cli", "flow", "run\x1b[2J"],
                          cwd=ROOT, env=procs.env, capture_output=True, timeout=60)
    assert done.returncode == 1
    assert b"no flow run run\\x1b[2J" in done.stderr and b"\x1b" not in done.stderr
