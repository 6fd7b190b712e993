"""A Redis password never appears in what the entry points print or log: `balancer
serve`, `worker start` (and its pool children), `balancer status` and the other CLIs,
and client code; with Redis reachable, unreachable, or refusing the password."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import redis

from bench.redis_servers import free_port
from tests.conftest import Processes, RedisServer
from tests.integration.secure import base_env, need, run, run_client, wait_logged

pytestmark = pytest.mark.integration

# With characters a URL must escape: both its forms must stay hidden, and "s3cr3t"
# catches a fragment of it (as a host name, say).
PASSWORD = "s3cr3t/pa@ss:w0rd"
SHOWN = ("s3cr3t", quote(PASSWORD, safe=""))


def url_at(port: int, password: str = PASSWORD) -> str:
    return f"redis://default:{quote(password, safe='')}@127.0.0.1:{port}/0"


def assert_hidden(*texts: str) -> None:
    for text in texts:
        for secret in SHOWN:
            assert secret not in text, text


@pytest.fixture
def protected() -> Iterator[RedisServer]:
    """A private redis-server whose default user needs PASSWORD."""
    need("redis-server")
    server = RedisServer().start()
    try:
        redis.Redis(port=server.port).config_set("requirepass", PASSWORD)
        yield server
    finally:
        server.cleanup()


def test_no_entry_point_shows_the_password_of_a_reachable_redis(
        protected: RedisServer, namespace: str, tmp_path: Path) -> None:
    url = url_at(protected.port)
    env = base_env(url, namespace)
    procs = Processes(env, tmp_path)
    outputs: list[str] = []
    try:
        serve = procs.serve("--log-level", "DEBUG")
        worker = procs.worker("--import", "tests.integration.secure_tasks", "--concurrency",
                              "1", "--log-level", "DEBUG")
        wait_logged(procs, worker, "started:")
        report = run_client(env, "chain")
        assert (report["state"], report["result"]) == ("completed", 6)
        outputs.append(report["stderr"])
        for command in (("status",), ("status", "--json"), ("dlq", "ls"),
                        ("status", "--redis-url", url)):
            done = run(env, "balancer.cli", *command)
            assert done.returncode == 0, done.stderr
            outputs += [done.stdout, done.stderr]
        wrong = run(env, "balancer.cli", "status", "--redis-url", url_at(protected.port,
                                                                         "n0t-" + PASSWORD))
        assert wrong.returncode == 1 and "invalid username-password pair" in wrong.stderr
        outputs += [wrong.stdout, wrong.stderr]
        for proc in (worker, serve):
            assert procs.stop(proc) == 0
        assert "balancer serve on redis://default:***@127.0.0.1:" in procs.log(serve)
        outputs += [procs.log(serve), procs.log(worker)]
    finally:
        procs.cleanup()
    assert_hidden(*outputs)


def test_no_entry_point_shows_the_password_when_redis_cannot_be_reached(
        namespace: str, tmp_path: Path) -> None:
    url = url_at(free_port())  # nothing listens there
    env = base_env(url, namespace)
    shown = url.split("@")[1]
    for command in (("balancer.cli", "serve"), ("balancer.worker.cli", "start"),
                    ("balancer.cli", "status"), ("balancer.cli", "dlq", "ls")):
        done = run(env, *command)
        assert done.returncode == 1, done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, done.stderr  # one line, no traceback
        assert lines[0].startswith(f"Error: cannot reach Redis at redis://default:***@{shown}:")
        assert_hidden(done.stdout, done.stderr)
    client = run(env, "tests.integration.secure_client", "run")
    assert client.returncode != 0 and "Unreachable: cannot reach Redis" in client.stderr
    assert "site-packages/redis" not in client.stderr  # no traceback from redis-py
    assert_hidden(client.stdout, client.stderr)
