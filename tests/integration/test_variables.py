"""Prefect's Variables on a real cluster: set by a client or the CLI, read and set by a task
on a real worker of either pool (balancer/variables.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis

from balancer import Flow
from balancer.variables import Variable
from tests.conftest import ROOT, Processes
from tests.integration import variable_tasks


def _cli(procs: Processes, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "balancer.cli", "variable", *args], cwd=ROOT,
                          env=procs.env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("pool", ["process", "thread"])
def test_a_task_reads_and_sets_variables_the_client_and_the_cli_see(
        procs: Processes, real: redis.Redis, namespace: str, pool: str) -> None:
    procs.serve_and_worker(real, namespace, "--pool", pool,
                           "--import", "tests.integration.variable_tasks")
    where = {"client": real, "namespace": namespace}
    with Flow("greetings") as flow:
        first = variable_tasks.greet("ada")
    run = flow.run(timeout=60, client=real, namespace=namespace, quiet=True)
    assert run.result(first) == "hello, ada"  # the default: no such variable yet
    assert _cli(procs, "set", "greeting", '"bonjour"', "--tag", "i18n").returncode == 0
    with Flow("greetings") as flow:
        second = variable_tasks.greet("grace")
    run = flow.run(timeout=60, client=real, namespace=namespace, quiet=True)
    assert run.result(second) == "bonjour, grace"
    assert Variable.get("last-greeted", **where) == "grace"  # set on the worker
    refused = _cli(procs, "set", "greeting", "hi")
    assert refused.returncode == 1 and "already exists" in refused.stderr
    listed = json.loads(_cli(procs, "ls", "--json").stdout)
    assert {"name": "greeting", "value": "bonjour", "tags": ["i18n"]} in listed
    assert _cli(procs, "get", "last-greeted").stdout.strip() == '"grace"'
    assert "unset" in _cli(procs, "unset", "greeting").stdout
    missing = _cli(procs, "get", "greeting")
    assert missing.returncode == 1 and "no variable greeting" in missing.stderr
