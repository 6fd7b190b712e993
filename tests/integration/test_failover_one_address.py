"""A failover behind one address (a managed Redis service's, a DNS name's, Redis's own
FAILOVER): the old master becomes a replica and answers every write READONLY for as long
as a connection stays open to it. Every process leaves it for the address's new master.
Real processes; a private master and replica behind a TCP proxy that moves."""

from __future__ import annotations

import pytest
import redis
from balancer.common.connection import Direct, connect
from balancer.common.demoted import Demoted

from tests.conftest import Processes
from tests.integration.stream import run_through_failover
from tests.integration.topologies import OneAddress

pytestmark = pytest.mark.integration


def test_every_process_follows_the_address_to_the_new_master_and_no_flow_is_lost(
        procs: Processes, one_address: OneAddress, namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: serve retried READONLY for ever, the workers could not beat, and every
    submit after the failover was refused (153 of 153), until each process was restarted."""
    stream, _ = run_through_failover(procs, one_address.url, namespace,
                                     one_address.fail_over, lambda: True, monkeypatch,
                                     "failover behind one address")
    outcome = stream.outcome
    assert outcome.other == [] and outcome.lost == [] and outcome.refused == []
    assert outcome.completed == len(stream.runs)
    new = redis.Redis(port=one_address.replica.port)
    assert all(new.exists(run.keys.flow(run.id)) for _, run, _ in stream.runs)


def test_a_call_answered_by_a_demoted_server_is_made_again_on_the_new_master(
        one_address: OneAddress) -> None:
    client = connect(one_address.url)
    direct = Direct(client)
    assert client.set("k", "before") and direct.call("SET", "d", "before") == b"OK"
    one_address.fail_over()
    # Both connections are still open to the old master, a replica now: each write is
    # answered READONLY, the connection closed, and the write made on a new one.
    assert client.set("k", "after")
    assert direct.call("SET", "d", "after") == b"OK"
    new = redis.Redis(port=one_address.replica.port)
    assert new.mget("k", "d") == [b"after", b"after"]


def test_a_url_that_names_a_replica_says_so(one_address: OneAddress) -> None:
    client = connect(one_address.replica.url)
    with pytest.raises(Demoted, match=r"read-only replica now .* or the URL names a replica"):
        client.set("k", "v")
    assert client.get("k") is None  # reads are served
