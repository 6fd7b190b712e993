"""Redis Cluster: serve, workers, clients and the CLIs given a ``redis+cluster://`` URL
run flows on a local cluster of three masters and three replicas, ride out the
namespace's slot moving to another master (live resharding, as `redis-cli --cluster
reshard` does it), and a SIGKILL of the master holding it (its replica takes over). No
command may span slots: a CROSSSLOT error in any log fails the test."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import redis
from balancer.common import acl, partitions
from balancer.common.connection import connect
from balancer.common.keys import Keys
from redis.crc import key_slot

from balancer import (
    ConcurrencyLimit,
    ConcurrencyTimeout,
    Flow,
    concurrency_limits,
    set_concurrency_limit,
)
from balancer.concurrency import concurrency
from bench.redis_servers import ClusterServer, LocalCluster
from tests.conftest import ROOT, Processes, wait_for
from tests.integration import tasks
from tests.integration.stream import run_through_failover

pytestmark = pytest.mark.integration


def _cli(procs: Processes, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "balancer.cli", *args], cwd=ROOT,
                          env=procs.env, capture_output=True, text=True, timeout=60)


def test_each_role_runs_on_the_cluster_under_its_least_privilege_user(
        procs: Processes, local_cluster: LocalCluster, namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The users of `balancer acl`, on every node: the cluster client's own commands
    (CLUSTER SLOTS, COMMAND) are granted, and nothing is refused (ACL LOG stays empty)."""
    for node in local_cluster.nodes:
        admin = redis.Redis(port=node.port)
        admin.execute_command("ACL", "LOG", "RESET")
        for line in acl.setuser_lines(namespace):
            admin.execute_command(*line.split())
            admin.execute_command("ACL", "SETUSER", line.split()[2], ">pw-test-1234")
    hosts = local_cluster.url.partition("://")[2]

    def url(role: str) -> str:
        return f"redis+cluster://{namespace}-{role}:pw-test-1234@{hosts}"

    serve = procs.start("balancer.cli", "serve", "--redis-url", url("dispatcher"),
                        name="serve")
    worker = procs.start("balancer.worker.cli", "start", "--redis-url", url("worker"),
                         "--concurrency", "2", name="worker")
    monkeypatch.setenv("BALANCER_NAMESPACE", namespace)
    client = connect(url("client"))
    for width in (1, 30):  # a small submit (a script) and a large one (MULTI/EXEC)
        with Flow("acl") as flow:
            parts = [tasks.square(i) for i in range(width)]
            tasks.total(parts)
        run = flow.submit(client)
        assert run.wait(timeout=60) == "completed"
        assert run.results()["total"] == sum(i * i for i in range(width))
    for proc in (serve, worker):
        assert procs.stop(proc) == 0, procs.log(proc)
        assert "Traceback" not in procs.log(proc), procs.log(proc)
    for node in local_cluster.nodes:
        assert redis.Redis(port=node.port).execute_command("ACL", "LOG") == [], node.port


def test_three_partitions_spread_over_the_three_masters_and_run_a_stream_of_flows(
        procs: Processes, local_cluster: LocalCluster, namespace: str) -> None:
    """A namespace whose 3 partitions' tags fall on the 3 masters, 2 serves and 2 workers
    (a process and a thread pool) on the cluster: every flow completes in its partition,
    no command crosses a slot, and every master serves its share of the commands."""
    ns = local_cluster.spread_namespace(namespace, 3)
    procs.env.update(BALANCER_REDIS_URL=local_cluster.url, BALANCER_NAMESPACE=ns,
                     BALANCER_LEADER_TTL="2")
    local_cluster.reset_stats()
    serves = [procs.serve("--partitions", "3") for _ in range(2)]
    client = connect(local_cluster.url)
    wait_for(lambda: client.get(Keys(ns).partitions) == b"3", timeout=30)
    workers = [procs.worker("--pool", pool, "--concurrency", "2")
               for pool in ("process", "thread")]
    wait_for(lambda: all(client.zcard(Keys(ns, p).workers) >= 2 for p in range(3)),
             timeout=60)
    runs = []
    for i in range(60):
        with Flow(f"spread-{i}") as flow:
            tasks.total([tasks.square(i), tasks.square(i + 1)])
        runs.append((i, flow.submit(client, namespace=ns)))
    for i, run in runs:
        assert run.wait(timeout=60) == "completed"
        assert run.results()["total"] == i * i + (i + 1) ** 2
    assert {partitions.of_flow(run.id) for _, run in runs} == {0, 1, 2}
    calls = local_cluster.commands_per_master()
    print(f"\ncommands per master, 3 partitions, {len(runs)} flows of 3 tasks:", calls)
    assert all(calls.values())
    for proc in (*workers, *serves):
        assert procs.stop(proc) == 0, procs.log(proc)
        log = procs.log(proc)
        assert "CROSSSLOT" not in log and "Traceback" not in log, log


BATCH = 20  # keys per MIGRATE; a pause between batches keeps the slot migrating a while
PAUSE = 0.05


def move_slot(cluster: LocalCluster, slot: int, src: ClusterServer,
              dst: ClusterServer) -> None:
    source, target = redis.Redis(port=src.port), redis.Redis(port=dst.port)
    src_id = source.execute_command("CLUSTER MYID").decode()
    dst_id = target.execute_command("CLUSTER MYID").decode()
    target.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", src_id)
    source.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", dst_id)
    while keys := source.execute_command("CLUSTER GETKEYSINSLOT", slot, BATCH):
        source.execute_command("MIGRATE", "127.0.0.1", dst.port, "", 0, 5000, "KEYS", *keys)
        time.sleep(PAUSE)
    for node in cluster.masters():
        redis.Redis(port=node.port).execute_command("CLUSTER SETSLOT", slot, "NODE", dst_id)


def test_concurrency_slots_are_held_and_renewed_on_the_cluster(
        local_cluster: LocalCluster, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A block's slots are taken, kept past two leases (renewed) and given back on a Redis
    Cluster."""
    monkeypatch.setenv("BALANCER_CONCURRENCY_LEASE", "0.3")
    client = connect(local_cluster.url)
    set_concurrency_limit("db", 1, client, namespace=namespace)
    with concurrency("db", client=client, namespace=namespace):
        time.sleep(0.7)  # past two leases: held only if renewed
        assert concurrency_limits(client, namespace=namespace) == [
            ConcurrencyLimit("db", 1, 1)]
        with (pytest.raises(ConcurrencyTimeout),
              concurrency("db", timeout_seconds=0.2, client=client, namespace=namespace)):
            pass
    assert concurrency_limits(client, namespace=namespace)[0].held == 0


def test_flows_ride_out_the_namespace_slot_moving_to_another_master(
        procs: Processes, local_cluster: LocalCluster, namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    owner = local_cluster.owner_of(namespace)
    dest = next(n for n in local_cluster.masters() if n is not owner)
    slot = key_slot(("{" + namespace + "}").encode())
    stream, _ = run_through_failover(
        procs, local_cluster.url, namespace, lambda: move_slot(local_cluster, slot, owner, dest),
        lambda: local_cluster.owner_of(namespace) is dest, monkeypatch, "slot migration")
    outcome = stream.outcome
    assert outcome.other == [] and outcome.lost == []
    assert outcome.completed == len(stream.runs)
    assert outcome.refused == []


def test_flows_ride_out_a_manual_failover_of_the_master_holding_the_namespace_slot(
        procs: Processes, local_cluster: LocalCluster, namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """CLUSTER FAILOVER on its replica, as an operator takes a master down for
    maintenance: the replica catches up while the master holds its clients, then the two
    swap roles, and connections to the old master are answered MOVED (or UNBLOCKED, those
    blocked on it)."""
    owner = local_cluster.owner_of(namespace)
    replica = next(n for n in local_cluster.nodes if n.port != owner.port
                   and redis.Redis(port=n.port).execute_command("ROLE")[0] == b"slave"
                   and int(redis.Redis(port=n.port).execute_command("ROLE")[2])
                   == owner.port)
    stream, _ = run_through_failover(
        procs, local_cluster.url, namespace,
        lambda: redis.Redis(port=replica.port).execute_command("CLUSTER FAILOVER"),
        lambda: local_cluster.owner_of(namespace) is replica, monkeypatch,
        "cluster manual failover")
    outcome = stream.outcome
    assert outcome.other == [] and outcome.lost == [] and outcome.refused == []
    assert outcome.completed == len(stream.runs)


def test_flows_ride_out_a_kill_of_the_master_holding_the_namespace_slot(
        procs: Processes, local_cluster: LocalCluster, namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    owner = local_cluster.owner_of(namespace)
    others = [n for n in local_cluster.nodes if n is not owner]
    assert all(n.proc is not None for n in others)

    def failed_over() -> bool:
        return local_cluster.owner_of(namespace) is not owner

    stream, gap = run_through_failover(
        procs, local_cluster.url, namespace, lambda: owner.stop(kill=True), failed_over,
        monkeypatch, "cluster failover")
    outcome = stream.outcome
    assert outcome.other == []
    assert outcome.completed + len(outcome.lost) == len(stream.runs)
    assert len(outcome.lost) <= 5, outcome.lost
    assert gap > 0

    # After the failover: a large submit (MULTI/EXEC), the CLIs' pipelines and transactions.
    client = connect(local_cluster.url)
    with Flow("wide") as flow:
        parts = [tasks.square(i) for i in range(40)]
        tasks.total(parts)
    serve = procs.serve()
    worker = procs.worker("--concurrency", "2", "--pool", "thread")
    run = flow.submit(client, namespace=namespace)
    assert run.wait(timeout=60) == "completed"
    assert run.results()["total"] == sum(i * i for i in range(40))
    queue = _cli(procs, "queue", "set", "default", "--priority", "3")
    assert queue.returncode == 0, queue.stderr
    status = _cli(procs, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["workers"]
    flows = _cli(procs, "flows", "-n", "5")
    assert flows.returncode == 0 and "wide" in flows.stdout, flows.stderr
    one = _cli(procs, "flow", run.id)
    assert one.returncode == 0 and "completed" in one.stdout, one.stderr
    dlq = _cli(procs, "dlq", "ls")
    assert dlq.returncode == 0, dlq.stderr
    assert run.why() == {}  # its pipeline (with a keyless TIME) runs on the cluster
    for proc in (serve, worker):
        assert procs.stop(proc) == 0
        assert "CROSSSLOT" not in procs.log(proc) and "Traceback" not in procs.log(proc)


def test_deployments_variables_and_artifacts_work_on_the_cluster(
        procs: Processes, local_cluster: LocalCluster, namespace: str) -> None:
    """A served deployment (due times claimed, requests taken), variables and artifacts, in
    a namespace of 3 partitions on 3 masters: none of their commands crosses a slot."""
    from balancer import run_deployment
    from balancer.artifacts import Artifact
    from balancer.deployments import DeploymentRun
    from balancer.variables import Variable
    from tests.integration import artifact_tasks

    ns = local_cluster.spread_namespace(namespace, 3)
    procs.env.update(BALANCER_REDIS_URL=local_cluster.url, BALANCER_NAMESPACE=ns,
                     BALANCER_LEADER_TTL="2")
    serve = procs.serve("--partitions", "3")
    client = connect(local_cluster.url)
    wait_for(lambda: client.get(Keys(ns).partitions) == b"3", timeout=30)
    worker = procs.worker("--import", "tests.integration.deployed_flows",
                          "--import", "tests.integration.artifact_tasks")
    wait_for(lambda: all(client.zcard(Keys(ns, p).workers) >= 1 for p in range(3)),
             timeout=60)
    served = procs.start("tests.integration.deployed_flows", "clustered", "1", name="deploy")
    runs: list[DeploymentRun] = []
    # A run's partition is a hash of its id: ask until runs are in every partition (six
    # runs missed partition 0 about one time in eleven).
    while len({partitions.of_flow(run.id) for run in runs}) < 3 and len(runs) < 40:
        runs.append(run_deployment("etl/clustered", {"n": len(runs)}, timeout=0,
                                   client=client, namespace=ns))
    for n, run in enumerate(runs):
        assert run.wait(60) == "completed" and run.flow_run().result("double") == 2 * n
    assert {partitions.of_flow(run.id) for run in runs} == {0, 1, 2}
    wait_for(lambda: "starts (scheduled for" in procs.log(served), timeout=30)
    Variable.set("region", "eu", client=client, namespace=ns)
    assert Variable.get("region", client=client, namespace=ns) == "eu"
    reporting = artifact_tasks.reporting.with_options(redis_url=local_cluster.url,
                                                      namespace=ns)
    for _ in range(3):  # runs in several partitions
        assert reporting([{"x": 1}, {"x": 2}]) == 2
    made = Artifact.get("daily-report", client=client, namespace=ns)
    assert made is not None and made.data.endswith("2 rows loaded")
    for proc in (served, worker, serve):
        assert procs.stop(proc) == 0, procs.log(proc)
        log = procs.log(proc)
        assert "CROSSSLOT" not in log and "Traceback" not in log, log
