"""Least-privilege ACL users (``balancer acl``): a cluster runs with each process under
its role's user, on a private redis-server whose default user is disabled, and each role
is refused what it has no business doing."""

from __future__ import annotations

import contextlib
import json
import shlex
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from balancer.common import codec, partitions
from balancer.common.keys import Keys
from balancer.common.settings import Settings

from balancer import Flow, concurrency_limits, set_concurrency_limit
from balancer.cancel import CancelError, cancel_flow
from balancer.concurrency import concurrency
from balancer.dashboard.server import Dashboard
from tests.conftest import Processes, RedisServer, wait_for
from tests.integration import secure_tasks
from tests.integration.secure import base_env, need, run, run_client, wait_logged

pytestmark = pytest.mark.integration

ROLES = ("worker", "dispatcher", "client")


@dataclass
class AclServer:
    server: RedisServer
    namespace: str
    admin: redis.Redis
    urls: dict[str, str]  # role -> URL with its user and password

    def as_role(self, role: str) -> redis.Redis:
        return redis.Redis.from_url(self.urls[role])

    def denials(self) -> list[dict[str, str]]:
        """ACL LOG entries, but for redis-py's CLIENT SETINFO (refused on Redis 7.2+)."""
        entries = [{k: v.decode() if isinstance(v, bytes) else v for k, v in e.items()}
                   for e in self.admin.acl_log()]
        return [e for e in entries if e.get("object") != "client|setinfo"]


@pytest.fixture
def acl_server(namespace: str) -> Iterator[AclServer]:
    """A private redis-server with the users `balancer acl` prints (given passwords), an
    admin user for the test, and the default user disabled."""
    need("redis-server")
    server = RedisServer().start()
    try:
        lines = run(base_env(server.url, namespace), "balancer.cli", "acl").stdout.splitlines()
        assert len(lines) == len(ROLES), lines
        setup = redis.Redis(port=server.port)
        admin_password = uuid.uuid4().hex
        setup.acl_setuser("admin", enabled=True, passwords=[f"+{admin_password}"],
                          keys=["*"], channels=["*"], commands=["+@all"])
        urls = {}
        for line in lines:
            setup.execute_command(*shlex.split(line))
        for role in ROLES:
            user, password = f"{namespace}-{role}", uuid.uuid4().hex
            setup.execute_command("ACL", "SETUSER", user, f">{password}")
            urls[role] = f"redis://{user}:{password}@127.0.0.1:{server.port}/0"
        setup.execute_command("ACL", "SETUSER", "default", "off")
        setup.close()
        admin = redis.Redis(port=server.port, username="admin", password=admin_password)
        yield AclServer(server, namespace, admin, urls)
        admin.close()
    finally:
        server.cleanup()


def refused(client: redis.Redis, *command: str | int) -> None:
    """Refused by ACL: at once (NOPERM), or inside a script (a script runs under its
    caller's permissions)."""
    with pytest.raises(redis.ResponseError, match=r"no permissions|can.t run this command"):
        client.execute_command(*command)


def test_a_cluster_runs_with_each_role_under_its_own_least_privilege_user(
        acl_server: AclServer, tmp_path: Path) -> None:
    ns = acl_server.namespace
    env = {role: base_env(url, ns) for role, url in acl_server.urls.items()}
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=acl_server.server.port).ping()  # the default user is off
    procs = Processes(env["dispatcher"], tmp_path)
    try:
        serve = procs.serve()
        procs.env = env["worker"]
        workers = [procs.worker("--import", "tests.integration.secure_tasks", "--concurrency",
                                "2", *pool) for pool in ((), ("--pool", "thread"))]
        for worker in workers:
            wait_logged(procs, worker, "started:")
        # Operators act as the dispatcher's user: a queue set up beforehand gets a
        # standing offer as soon as the dispatcher finds it empty.
        done = run(env["dispatcher"], "balancer.cli", "queue", "set", "default",
                   "--priority", "1")
        assert done.returncode == 0, done.stdout + done.stderr
        wait_for(lambda: acl_server.admin.exists(f"{{{ns}}}:offer:default"), timeout=30)
        acl_server.admin.acl_log_reset()

        report = run_client(env["client"], "full", str(tmp_path / "flaky-marker"))
        assert report["state"] == "failed"
        assert report["states"] == {"first": "completed", "second": "completed",
                                    "failed": "failed", "skipped": "upstream_failed",
                                    "last": "completed"}
        assert report["last"] == 15 and report["error"] == "ValueError"
        assert report["singles"] == [["completed", 2], ["completed", 4]]
        assert report["delayed"] == ["completed", 10]
        assert report["dynamic"] == {"later": 6, "failed": "Failed",
                                     "skipped": "UpstreamFailed", "mapped": [2, 4]}
        # It held the dispatcher's standing offer, which its user may not take.
        assert "may not take standing offers" in report["stderr"]

        for command in (("status", "--json"), ("dlq", "ls"), ("queue", "pause", "default"),
                        ("queue", "resume", "default"), ("events", "-n", "100")):
            done = run(env["dispatcher"], "balancer.cli", *command)
            assert done.returncode == 0, done.stdout + done.stderr
        # The operators see Redis's eviction policy (INFO is theirs to read).
        shown = json.loads(run(env["dispatcher"], "balancer.cli", "status", "--json").stdout)
        assert shown["eviction"]["policy"] == "noeviction", shown["eviction"]
        # The dashboard too: every page, its events feed and /metrics.
        flows = json.loads(run(env["dispatcher"], "balancer.cli", "flows", "--json").stdout)
        app = Dashboard(acl_server.as_role("dispatcher"), Settings(namespace=ns),
                        "127.0.0.1", 0)
        app.start()
        try:
            for path in ("api/overview", f"api/flow/{flows[0]['id']}", "metrics", ""):
                with urllib.request.urlopen(app.url + path, timeout=30) as resp:
                    assert resp.status == 200, path
            wait_for(lambda: app.feed.reader.last not in ("$", "0-0"), timeout=10)
        finally:
            app.stop()

        for proc in (*workers, serve):
            assert procs.stop(proc) == 0, procs.log(proc)
            assert "NOPERM" not in procs.log(proc), procs.log(proc)
    finally:
        procs.cleanup()
    # The only refusal of the whole run: the client's one attempt at an offer.
    denials = acl_server.denials()
    assert denials, "the client never tried the standing offer"
    assert {e["username"] for e in denials} == {f"{ns}-client"}, denials
    assert {e["object"] for e in denials} == {f"{{{ns}}}:leader"}, denials


def test_the_dispatchers_user_may_set_aside_what_it_finds_wrong(
        acl_server: AclServer, tmp_path: Path) -> None:
    """A fixed key of the wrong type is noted where operators look (`balancer dlq aside`)
    by the dispatcher under its own user: the note is its own command (HSETNX), which the
    role must allow."""
    ns = acl_server.namespace
    env = base_env(acl_server.urls["dispatcher"], ns)
    procs = Processes(env, tmp_path)
    try:
        serve = procs.serve()
        wait_logged(procs, serve, "leads with epoch")
        acl_server.admin.acl_log_reset()
        acl_server.admin.set(f"{{{ns}}}:wake", "not a list")  # a writer clobbers it

        def listed() -> bool:
            done = run(env, "balancer.cli", "dlq", "aside")
            return done.returncode == 0 and f"{{{ns}}}:wake" in done.stdout
        wait_for(listed, timeout=30)
        acl_server.admin.delete(f"{{{ns}}}:wake")
        assert procs.stop(serve) == 0, procs.log(serve)
        assert "NOPERM" not in procs.log(serve), procs.log(serve)
    finally:
        procs.cleanup()
    assert acl_server.denials() == []


def test_each_role_is_refused_what_it_has_no_business_doing(acl_server: AclServer) -> None:
    ns, other = acl_server.namespace, "someone-else"
    client, worker, dispatcher = (acl_server.as_role(r) for r in ("client", "worker",
                                                                  "dispatcher"))
    for user in (client, worker, dispatcher):
        refused(user, "FLUSHALL")
        refused(user, "KEYS", "*")
        refused(user, "CONFIG", "SET", "appendonly", "no")
        refused(user, "SET", f"{{{other}}}:leader", "x")  # another namespace
        refused(user, "EVAL", "return redis.call('FLUSHALL')", 0)  # scripts: same rights
    refused(dispatcher, "SCAN", 0)
    refused(dispatcher, "ACL", "SETUSER", f"{ns}-client", "+@all")

    # The client submits and reads; it cannot register, fake or disturb workers.
    assert client.zrange(f"{{{ns}}}:workers", 0, -1) == []
    refused(client, "ZADD", f"{{{ns}}}:workers", 1, "fake")
    refused(client, "EVAL", "return redis.call('ZADD', KEYS[1], 1, 'fake')", 1,
            f"{{{ns}}}:workers")
    refused(client, "HSET", f"{{{ns}}}:worker:fake", "info", "x")
    refused(client, "RPUSH", f"{{{ns}}}:inbox:w1", "task|token")
    refused(client, "DEL", f"{{{ns}}}:leader")
    refused(client, "LPOP", f"{{{ns}}}:wake")

    # A worker runs what it is given; it cannot lead, configure queues or list flows.
    refused(worker, "SET", f"{{{ns}}}:leader", "1|w")
    refused(worker, "HSET", f"{{{ns}}}:queue-conf:default", "paused", "1")
    refused(worker, "ZRANGE", f"{{{ns}}}:flows", 0, -1)
    refused(worker, "SET", f"{{{ns}}}:offer:default", "x")


def test_cancelling_a_run_needs_the_operators_user(acl_server: AclServer) -> None:
    keys = Keys(acl_server.namespace)
    admin = acl_server.admin
    admin.hset(keys.flow("f1"), mapping={"name": "f", "state": "running", "total": 1,
                                         "remaining": 1, "failed": 0,
                                         "tasks": codec.pack([["t1", "t"]])})
    admin.hset(keys.task("t1"), mapping={"state": "queued", "queue": "default", "flow": "f1"})
    admin.zadd(keys.queue("default"), {"t1": 1})
    with pytest.raises(CancelError, match="needs the operators' Redis user"):
        cancel_flow(acl_server.as_role("client"), keys, "f1", 60_000)
    assert admin.hget(keys.task("t1"), "state") == b"queued"
    done = cancel_flow(acl_server.as_role("dispatcher"), keys, "f1", 60_000)
    assert (done.state, done.cancelled) == ("cancelled", 1)
    assert admin.hget(keys.task("t1"), "state") == b"cancelled"


def test_a_cluster_of_2_partitions_runs_under_the_least_privilege_users(
        acl_server: AclServer, tmp_path: Path) -> None:
    """The users' patterns cover every partition's keys ({ns:p}) and the count: serve,
    workers (both pools, on their doorbell) and clients run flows in both partitions with
    nothing refused."""
    ns = acl_server.namespace
    env = {role: base_env(url, ns) for role, url in acl_server.urls.items()}
    procs = Processes(env["dispatcher"], tmp_path)
    try:
        serve = procs.serve("--partitions", "2")
        wait_for(lambda: acl_server.admin.get(Keys(ns).partitions) == b"2", timeout=30)
        # A short lease: the blocks of the guarded tasks below renew theirs (and check
        # that it was not swept) under the worker's user.
        procs.env = env["worker"] | {"BALANCER_CONCURRENCY_LEASE": "0.6"}
        workers = [procs.worker("--import", "tests.integration.secure_tasks", "--concurrency",
                                "2", *pool) for pool in ((), ("--pool", "thread"))]
        for worker in workers:
            wait_logged(procs, worker, "started:")
        acl_server.admin.acl_log_reset()
        client = acl_server.as_role("client")
        runs = []
        for i in range(12):
            with Flow(f"acl-{i}") as flow:
                doubled = secure_tasks.double(secure_tasks.plus(i, 1))
            runs.append((i, flow.submit(client, namespace=ns), doubled))
        for i, run_, doubled in runs:
            assert run_.wait(timeout=60) == "completed"
            assert run_.results()["double"] == 2 * (i + 1)
            # named by its worker, under the worker's user (name_run.lua)
            task_key = partitions.flow_keys(Keys(ns), run_.id).task(run_.ids[doubled])
            assert acl_server.admin.hget(task_key, "run_name") == f"double-{i + 1}".encode()
        assert {partitions.of_flow(run_.id) for _, run_, _ in runs} == {0, 1}
        # Concurrency limits: set by the operators, held by the client's and the worker's
        # users (in a task, on both pools).
        set_concurrency_limit("db", 1, acl_server.as_role("dispatcher"), namespace=ns)
        with concurrency("db", timeout_seconds=30, client=client, namespace=ns):
            assert concurrency_limits(client, namespace=ns)[0].held == 1
        with Flow("acl-guarded") as flow:
            guarded = [secure_tasks.guarded(i, hold=0.5) for i in range(4)]
        guarded_run = flow.submit(client, namespace=ns)
        assert guarded_run.wait(timeout=60) == "completed"
        assert [guarded_run.result(g) for g in guarded] == [0, 2, 4, 6]
        report = run_client(env["client"], "full", str(tmp_path / "flaky-marker"))
        assert report["state"] == "failed" and report["last"] == 15
        for command in (("status", "--json"), ("flows", "--json"), ("dlq", "ls"),
                        ("queue", "pause", "default"), ("queue", "resume", "default"),
                        ("flow", runs[-1][1].id)):
            done = run(env["dispatcher"], "balancer.cli", *command)
            assert done.returncode == 0, done.stdout + done.stderr
        for proc in (*workers, serve):
            assert procs.stop(proc) == 0, procs.log(proc)
            assert "NOPERM" not in procs.log(proc), procs.log(proc)
    finally:
        procs.cleanup()
    assert acl_server.denials() == []


@contextlib.contextmanager
def _roles_cluster(acl_server: AclServer, tmp_path: Path, *imports: str
                   ) -> Iterator[tuple[Processes, dict[str, dict[str, str]]]]:
    """`balancer serve` under the dispatcher's user and a worker importing ``imports``
    under the worker's, until the block ends (which the worker lives through without a
    refusal); the processes and each role's environment."""
    env = {role: base_env(url, acl_server.namespace) for role, url in acl_server.urls.items()}
    procs = Processes(env["dispatcher"], tmp_path)
    try:
        procs.serve()
        procs.env = env["worker"]
        worker = procs.worker(*[arg for module in imports for arg in ("--import", module)])
        wait_logged(procs, worker, "started:")
        yield procs, env
        assert "NOPERM" not in procs.log(worker), procs.log(worker)
    finally:
        procs.cleanup()


def test_a_deployment_is_served_and_asked_for_under_the_client_s_user(
        acl_server: AclServer, tmp_path: Path) -> None:
    """`flow.serve` and `run_deployment` (balancer/serving.py) need only the client's
    rights: a due time claimed, a request taken, beats listed."""
    from balancer import run_deployment

    ns = acl_server.namespace
    with _roles_cluster(acl_server, tmp_path, "tests.integration.deployed_flows") as (
            procs, env):
        procs.env = env["client"]
        served = procs.start("tests.integration.deployed_flows", "acl", "1", name="deploy")
        client = acl_server.as_role("client")
        wait_for(lambda: "starts (scheduled for" in procs.log(served), timeout=30)
        run_ = run_deployment("etl/acl", parameters={"n": 4}, timeout=60, client=client,
                              namespace=ns)
        assert run_.state == "completed" and run_.flow_run().result("double") == 8
        listed = run(env["client"], "balancer.cli", "deployment", "ls", "--json")
        assert json.loads(listed.stdout)[0]["deployment"] == "etl/acl", listed.stderr
        assert procs.stop(served) == 0, procs.log(served)
        assert "NOPERM" not in procs.log(served), procs.log(served)
    assert acl_server.denials() == []


def test_variables_and_artifacts_under_the_worker_s_and_the_client_s_users(
        acl_server: AclServer, tmp_path: Path) -> None:
    """A task reads and sets variables and makes artifacts under the worker's user; a
    @flow function and a client do under the client's."""
    from balancer.artifacts import Artifact
    from balancer.variables import Variable
    from tests.integration import artifact_tasks, variable_tasks

    ns = acl_server.namespace
    with _roles_cluster(acl_server, tmp_path, "tests.integration.variable_tasks",
                        "tests.integration.artifact_tasks"):
        client = acl_server.as_role("client")
        reporting = artifact_tasks.reporting.with_options(
            redis_url=acl_server.urls["client"], namespace=ns)
        assert reporting([{"x": 1}]) == 1
        made = Artifact.get("daily-report", client=client, namespace=ns)
        assert made is not None and made.data.endswith("1 rows loaded")
        Variable.set("greeting", "hi", client=client, namespace=ns)
        with Flow("greetings") as flow:
            greeted = variable_tasks.greet("ada")
        run_ = flow.run(timeout=60, client=client, namespace=ns, quiet=True)
        assert run_.result(greeted) == "hi, ada"
        assert Variable.get("last-greeted", client=client, namespace=ns) == "ada"
        assert Variable.unset("greeting", client=client, namespace=ns)
    assert acl_server.denials() == []


def test_a_run_pauses_and_is_resumed_under_the_client_s_user(
        acl_server: AclServer, tmp_path: Path) -> None:
    import threading

    from balancer import flow, pause_flow_run, resume_flow_run

    ns = acl_server.namespace
    client = acl_server.as_role("client")

    @flow(redis_url=acl_server.urls["client"], namespace=ns)
    def waits() -> object:
        return pause_flow_run(timeout=60)

    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(waits()), daemon=True)
    thread.start()
    keys = Keys(ns)

    def paused() -> str | None:
        for flow_id in client.zrange(keys.flows, 0, -1):
            if client.hget(keys.flow(flow_id.decode()), "paused"):
                return str(flow_id.decode())
        return None

    run_id = wait_for(paused, timeout=30)
    resume_flow_run(run_id, {"ok": 1}, client=client, namespace=ns)
    thread.join(30)
    assert out == [{"ok": 1}]
    assert acl_server.denials() == []


def test_cached_results_are_kept_under_the_worker_s_user_and_deleted_under_the_operators(
        acl_server: AclServer, tmp_path: Path) -> None:
    """A worker stores a cached result and its index member under its own user;
    `balancer cache ls` and `rm` work under the operators' (the dispatcher's)."""
    from tests.integration import cached_tasks

    ns = acl_server.namespace
    log = tmp_path / "runs.log"
    with _roles_cluster(acl_server, tmp_path, "tests.integration.cached_tasks") as (_, env):
        client = acl_server.as_role("client")
        for _ in range(2):
            with Flow("kept") as flow:
                squared = cached_tasks.slow_square(str(log), 4)
            assert flow.run(timeout=60, client=client, namespace=ns,
                            quiet=True).result(squared) == 16
        assert log.read_text().splitlines() == ["square 4"]
        listed = run(env["dispatcher"], "balancer.cli", "cache", "ls", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [r["key"] for r in json.loads(listed.stdout)] == [
            "tests.integration.cached_tasks:slow_square#slow_square"], listed
        done = run(env["dispatcher"], "balancer.cli", "cache", "rm", "--all")
        assert "deleted 1 cached result" in done.stdout, done
    assert acl_server.denials() == []
