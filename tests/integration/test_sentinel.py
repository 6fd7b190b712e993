"""Redis behind Sentinel: serve, workers and clients given a ``redis+sentinel://`` URL ride
out a SIGKILL of the master. Real processes; a private master, replicas and three
sentinels on loopback ports."""

from __future__ import annotations

import time

import pytest
import redis
from balancer.common.connection import connect
from balancer.common.sentinelpool import RECHECK

from balancer import Flow, FlowLost, FlowRun, NotReplicated
from tests.conftest import Processes, wait_for
from tests.integration import tasks
from tests.integration.stream import Stream, run_through_failover
from tests.integration.topologies import SERVICE, SentinelSet

pytestmark = pytest.mark.integration


def _run_through_failover(procs: Processes, sentinels: SentinelSet, namespace: str,
                          monkeypatch: pytest.MonkeyPatch, **env: str) -> tuple[Stream, float]:
    old_master = sentinels.master_port()
    return run_through_failover(
        procs, sentinels.url, namespace, sentinels.kill_master,
        lambda: sentinels.master_port() != old_master, monkeypatch, "sentinel failover", **env)


def _through_a_manual_failover(procs: Processes, sentinels: SentinelSet, namespace: str,
                               monkeypatch: pytest.MonkeyPatch, what: str,
                               **env: str) -> Stream:
    """The stream through a SENTINEL FAILOVER, carried on until the old master is demoted
    (so that what it held alone is gone when the runs are settled)."""
    old_master = sentinels.master_port()
    old = redis.Redis(port=old_master)
    sentinel = redis.Redis(port=sentinels.sentinels[0].port)
    stream, _ = run_through_failover(
        procs, sentinels.url, namespace, lambda: sentinel.execute_command(
            "SENTINEL", "FAILOVER", SERVICE),
        lambda: sentinels.master_port() != old_master, monkeypatch, what,
        until=lambda: old.execute_command("ROLE")[0] == b"slave", **env)
    return stream


def test_a_master_killed_mid_stream_fails_over_and_every_flow_completes_or_is_reported_lost(
        procs: Processes, sentinels: SentinelSet, namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    stream, gap = _run_through_failover(procs, sentinels, namespace, monkeypatch)
    outcome = stream.outcome
    assert outcome.other == []  # each run completed, or FlowLost said it was lost
    assert outcome.completed + len(outcome.lost) == len(stream.runs)
    # Asynchronous replication loses at most the master's last moments: a few flows.
    assert len(outcome.lost) <= 5, outcome.lost
    assert gap > 0


@pytest.mark.parametrize("sentinels", [2], indirect=True)
def test_with_min_replicas_1_no_accepted_flow_is_lost_in_a_failover(
        procs: Processes, sentinels: SentinelSet, namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Two replicas: after the failover one replicates the new master, so submits and
    acknowledgements keep being confirmed."""
    stream, _ = _run_through_failover(procs, sentinels, namespace, monkeypatch,
                                         BALANCER_MIN_REPLICAS="1",
                                         BALANCER_REPLICA_TIMEOUT="2.0")
    outcome = stream.outcome
    assert outcome.lost == [] and outcome.other == []
    assert outcome.completed == len(stream.runs)


def test_a_submit_the_failover_lost_is_reported_as_lost_not_waited_on(
        sentinels: SentinelSet, namespace: str) -> None:
    """A write the replica never got: the master drops its replica's link (and, with a
    password set, refuses it back), takes a submit, and dies. The run is gone from the new
    master, and waiting on it says so (FlowLost) instead of waiting out its timeout."""
    client = connect(sentinels.url)
    with Flow("kept") as flow:
        tasks.constant(1)
    kept = flow.submit(client, namespace=namespace)
    master = redis.Redis(port=sentinels.master_port())
    wait_for(lambda: master.info("replication")["slave0"]["offset"]
             >= master.info("replication")["master_repl_offset"], timeout=10)
    old_master = sentinels.master_port()
    master.config_set("requirepass", "replica-kept-out")  # connected clients stay in
    master.client_kill_filter(_type="replica")
    with Flow("lost") as flow:
        tasks.constant(2)
    lost = flow.submit(client, namespace=namespace)  # accepted by the master alone
    sentinels.kill_master()
    wait_for(lambda: sentinels.master_port() != old_master, timeout=30, interval=0.1)
    started = time.monotonic()
    with pytest.raises(FlowLost, match=f"{lost.id}.*no record in Redis"):
        lost.wait(timeout=60)
    assert time.monotonic() - started < 30  # said, not waited out
    assert wait_for(lambda: _state(kept), timeout=30) == "running"  # replicated: still there


def test_with_min_replicas_1_the_submit_a_failover_would_lose_is_never_accepted(
        sentinels: SentinelSet, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same certain loss with BALANCER_MIN_REPLICAS=1: the submit no replica holds
    raises NotReplicated, so no accepted flow is lost."""
    monkeypatch.setenv("BALANCER_MIN_REPLICAS", "1")
    monkeypatch.setenv("BALANCER_REPLICA_TIMEOUT", "0.2")
    client = connect(sentinels.url)
    with Flow("kept") as flow:
        tasks.constant(1)
    kept = flow.submit(client, namespace=namespace)  # a replica holds it: it returns
    master = redis.Redis(port=sentinels.master_port())
    master.config_set("requirepass", "replica-kept-out")
    master.client_kill_filter(_type="replica")
    with Flow("unconfirmed") as flow:
        tasks.constant(2)
    with pytest.raises(NotReplicated, match="0 of the 1 replicas"):
        flow.submit(client, namespace=namespace)
    old_master = sentinels.master_port()
    sentinels.kill_master()
    wait_for(lambda: sentinels.master_port() != old_master, timeout=30, interval=0.1)
    assert wait_for(lambda: _state(kept), timeout=30) == "running"


def _state(run: FlowRun) -> str | None:
    """The run's state, or None while the sentinels name no master yet (a failover under
    way: they flag the new one usable a moment after they name it)."""
    try:
        return run.state
    except redis.ConnectionError:
        return None


def test_a_manual_failover_moves_every_process_off_the_old_master_at_once(
        procs: Processes, sentinels: SentinelSet, namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """SENTINEL FAILOVER, as an operator runs it for maintenance, leaves the old master a
    writable master for about ten seconds after the sentinels name the new one: what is
    written there meanwhile is lost when it is demoted. Every process (serve, the workers,
    this client) moves to the new master within common.sentinelpool.RECHECK of its naming,
    so every flow submitted after that completes; one submitted in the moment before
    (promoted, not yet named) may be lost with the old master's writes, and says so
    (FlowLost)."""
    stream = _through_a_manual_failover(procs, sentinels, namespace, monkeypatch,
                                        "manual failover")
    outcome = stream.outcome
    assert outcome.other == [] and outcome.refused == []
    assert outcome.completed + len(outcome.lost) == len(stream.runs)
    moved_by = stream.failed_over_at + RECHECK + 1.0  # the naming, seen late by a margin
    lost_late = [run.id for at, run, _ in stream.runs if at > moved_by and run.id in
                 outcome.lost]
    assert lost_late == []
    assert stream.accepted_since(moved_by) >= 50  # the ten seconds the old master wrote


@pytest.mark.parametrize("sentinels", [2], indirect=True)
def test_with_min_replicas_at_every_replica_a_manual_failover_loses_no_accepted_flow(
        procs: Processes, sentinels: SentinelSet, namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The second between the promotion and the naming, whose submits the test above may
    lose: the old master has lost the replica that was promoted, so a submit there that
    every replica must confirm is not confirmed (NotReplicated: not accepted, so not lost).
    With N=1 of two replicas, 18-19 accepted runs were lost all the same: the other
    replica confirmed them and dropped them when it turned to follow the new master. Until
    the old master rejoins as a replica, submits to the new one are not confirmed either
    (they stand there, and run)."""
    stream = _through_a_manual_failover(procs, sentinels, namespace, monkeypatch,
                                        "manual failover, min replicas 2 of 2",
                                        BALANCER_MIN_REPLICAS="2",
                                        BALANCER_REPLICA_TIMEOUT="0.5")
    outcome = stream.outcome
    assert outcome.other == [] and outcome.lost == [] and outcome.refused == []
    assert outcome.completed == len(stream.runs)
    assert outcome.unconfirmed  # the moment it covered


def test_an_idle_worker_takes_work_from_the_new_master_while_the_old_still_writes(
        procs: Processes, sentinels: SentinelSet, namespace: str) -> None:
    """An idle worker's slots wait on its inbox for up to 30 s; after a manual failover
    that wait was on the old master, and work given to it on the new one waited until the
    old master's demotion (about ten seconds). Now the wait is cut off once the sentinels
    name the new master: a flow submitted once every process has asked them again
    completes, on the new master, while the old one is still a writable master."""
    procs.env.update(BALANCER_REDIS_URL=sentinels.url)
    client = connect(sentinels.url)
    procs.serve_and_worker(client, namespace, "--concurrency", "2")
    with Flow("before") as flow:
        tasks.constant(1)
    assert flow.submit(client, namespace=namespace).wait(timeout=30) == "completed"
    old_master, new_master = sentinels.master_port(), sentinels.replicas[0].port
    old = redis.Redis(port=old_master)
    redis.Redis(port=sentinels.sentinels[0].port).execute_command(
        "SENTINEL", "FAILOVER", SERVICE)
    wait_for(lambda: all(_named(s.port) == new_master for s in sentinels.sentinels),
             timeout=30, interval=0.05)
    time.sleep(RECHECK + 0.5)  # each process asks them again within RECHECK
    with Flow("after") as flow:
        tasks.add(tasks.constant(2), tasks.constant(3))
    run = flow.submit(client, namespace=namespace)
    assert run.wait(timeout=60) == "completed" and run.results()["add"] == 5
    assert old.execute_command("ROLE")[0] == b"master"  # not yet demoted: no wait for it
    assert redis.Redis(port=new_master).exists(run.keys.flow(run.id))


def _named(sentinel_port: int) -> int:
    """The master's port as one sentinel names it."""
    return int(redis.Redis(port=sentinel_port).sentinel_get_master_addr_by_name(SERVICE)[1])
