"""A bad Redis URL or an unreachable Redis is one line on stderr, never a traceback, from
every command and from client code, with the URL's password hidden."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import redis
from balancer.common.keys import Keys

from bench.redis_servers import free_port
from tests.conftest import ROOT

SECRET = "s3cret-pw"
COMMANDS = [
    ["balancer", "serve"],
    ["balancer", "status"],
    ["balancer", "flows"],
    ["balancer", "flow", "abc123"],
    ["balancer", "flow", "cancel", "abc123"],
    ["balancer", "dlq", "ls"],
    ["balancer", "dlq", "aside"],
    ["balancer", "dlq", "retry", "abc123"],
    ["balancer", "queue", "set", "q1", "--priority", "1"],
    ["balancer", "queue", "pause", "q1"],
    ["balancer", "queue", "rm", "q1"],
    ["worker", "start", "--queue", "q1"],
]
MODULES = {"balancer": "balancer.cli", "worker": "balancer.worker.cli"}
CLIENT = """
import sys
from balancer import Flow
from tests.integration.tasks import constant
flow = Flow("unreached")
flow.add_task(constant)
flow.run(redis_url=sys.argv[1], quiet=True)
"""


def _urls() -> dict[str, str]:
    return {"bad scheme": f"http://admin:{SECRET}@127.0.0.1:6379/0",
            "closed port": f"redis://admin:{SECRET}@127.0.0.1:{free_port()}/0"}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _one_line(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr and SECRET not in out.stderr + out.stdout
    return lines[0]


@pytest.mark.parametrize("kind", ["bad scheme", "closed port"])
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_says_what_is_wrong_in_one_line(command: list[str], kind: str) -> None:
    url = _urls()[kind]
    out = subprocess.run([sys.executable, "-m", MODULES[command[0]], *command[1:],
                          "--redis-url", url], cwd=ROOT, env=_env(), capture_output=True,
                         text=True, timeout=60)
    line = _one_line(out)
    assert "admin:***@127.0.0.1" in line
    assert ("must start with redis://" in line) if kind == "bad scheme" else (
        "cannot reach Redis" in line)


@pytest.mark.parametrize("kind", ["bad scheme", "closed port"])
def test_the_environment_url_is_checked_the_same_way(kind: str) -> None:
    env = _env() | {"BALANCER_REDIS_URL": _urls()[kind]}
    out = subprocess.run([sys.executable, "-m", "balancer.cli", "status"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert "admin:***@127.0.0.1" in _one_line(out)


@pytest.mark.parametrize("kind", ["bad scheme", "closed port"])
def test_client_code_gets_one_clear_exception_without_redis_internals(kind: str) -> None:
    out = subprocess.run([sys.executable, "-c", CLIENT, _urls()[kind]], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert SECRET not in out.stderr
    assert "site-packages/redis" not in out.stderr, out.stderr
    if kind == "bad scheme":
        assert last.startswith("balancer.common.connection.BadRedisURL: the Redis URL"
                               " http://admin:***@127.0.0.1:6379/0 must start with redis://")
    else:
        assert last.startswith("balancer.common.connection.Unreachable: cannot reach Redis at"
                               " redis://admin:***@127.0.0.1:")


@pytest.mark.parametrize("command", [["flows"], ["dlq", "ls"]], ids=" ".join)
def test_a_key_of_the_wrong_type_is_named_in_one_line_by_the_commands_that_read_it(
        command: list[str], real: redis.Redis, redis_url: str, namespace: str) -> None:
    """Redis's WRONGTYPE names no key: the operator's tools, run because something is
    wrong, must say which key it is instead of printing a traceback."""
    keys = Keys(namespace)
    real.set(keys.flows, "not the recent flows")
    real.set(keys.dlq, "not the quarantine")
    out = subprocess.run([sys.executable, "-m", "balancer.cli", *command, "--redis-url",
                          redis_url, "--namespace", namespace], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=60)
    line = _one_line(out)
    assert f"{keys.flows} holds a string, not a zset" in line or (
        f"{keys.dlq} holds a string, not a zset" in line), line
    assert f"redis-cli DEL {keys.flows} {keys.dlq}" in line


def test_status_names_a_key_of_the_wrong_type_and_shows_the_rest(
        real: redis.Redis, redis_url: str, namespace: str) -> None:
    """`balancer status` is what an operator runs when something is wrong: it reads such
    keys as empty, names them with the fix, and shows everything else."""
    keys = Keys(namespace)
    real.set(keys.flows, "not the recent flows")
    real.set(keys.dlq, "not the quarantine")
    out = subprocess.run([sys.executable, "-m", "balancer.cli", "status", "--redis-url",
                          redis_url, "--namespace", namespace], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"{keys.flows} holds a string, not a zset" in out.stdout
    assert f"{keys.dlq} holds a string, not a zset" in out.stdout
    assert f"redis-cli DEL {keys.flows} {keys.dlq}" in out.stdout
    assert "queues (" in out.stdout and "Traceback" not in out.stderr
