"""Redis behind Sentinel: serve, workers and clients given a ``redis+sentinel://`` URL ride
out a SIGKILL of the master. Real processes; a private master, replicas and three
sentinels on loopback ports."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest
from balancer.common.connection import connect
from balancer.common.keys import Keys

from tests.conftest import Processes, wait_for
from tests.integration.stream import Stream, dispatch_gap
from tests.integration.topologies import SentinelSet, need_redis_server

pytestmark = pytest.mark.integration


@pytest.fixture
def sentinels(request: pytest.FixtureRequest) -> Iterator[SentinelSet]:
    need_redis_server()
    topology = SentinelSet(replicas=getattr(request, "param", 1))
    try:
        yield topology.start()
    finally:
        topology.cleanup()


def _run_through_failover(procs: Processes, sentinels: SentinelSet, namespace: str,
                          monkeypatch: pytest.MonkeyPatch, **env: str
                          ) -> tuple[Stream, float, float]:
    """serve and two workers on the Sentinel URL, a stream of flows, the master killed
    mid-stream: (the stream, settled; when the master died; the dispatch gap, s). ``env``
    goes to every process, this one's submits included."""
    procs.env.update(BALANCER_REDIS_URL=sentinels.url, BALANCER_WORKER_TIMEOUT="5.0", **env)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    client = connect(sentinels.url)
    keys = Keys(namespace)
    serve = procs.serve()
    workers = [procs.worker("--concurrency", "2", "--pool", pool, "--name", pool)
               for pool in ("thread", "process")]
    wait_for(lambda: client.zcard(keys.workers) >= 2, timeout=30)
    old_master = sentinels.master_port()
    stream = Stream(client, namespace).start()
    time.sleep(2)
    killed_at = time.monotonic()
    sentinels.kill_master()
    wait_for(lambda: sentinels.master_port() != old_master, timeout=30, interval=0.1)
    # The cluster carries on: flows submitted after the failover complete.
    wait_for(lambda: stream.accepted_since(killed_at) >= 20, timeout=30, interval=0.1)
    time.sleep(1)
    stream.stop()
    outcome = stream.settle(timeout=60)
    gap = dispatch_gap(client, namespace, [run for _, run, _ in stream.runs])
    print(f"\nsentinel failover: accepted={len(stream.runs)} completed={outcome.completed}"
          f" lost={len(outcome.lost)} refused={len(outcome.refused)}"
          f" unconfirmed={len(outcome.unconfirmed)} dispatch gap={gap:.2f}s"
          + (f"; a refused submit: {outcome.refused[0]}" if outcome.refused else ""))
    assert serve.poll() is None and all(w.poll() is None for w in workers)
    for proc in (serve, *workers):
        assert procs.stop(proc, signal.SIGTERM) == 0, procs.log(proc)
        assert "Traceback" not in procs.log(proc), procs.log(proc)
    return stream, killed_at, gap


def test_a_master_killed_mid_stream_fails_over_and_every_flow_completes_or_is_reported_lost(
        procs: Processes, sentinels: SentinelSet, namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    stream, _, gap = _run_through_failover(procs, sentinels, namespace, monkeypatch)
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
    stream, _, _ = _run_through_failover(procs, sentinels, namespace, monkeypatch,
                                         BALANCER_MIN_REPLICAS="1",
                                         BALANCER_REPLICA_TIMEOUT="2.0")
    outcome = stream.outcome
    assert outcome.lost == [] and outcome.other == []
    assert outcome.completed == len(stream.runs)
