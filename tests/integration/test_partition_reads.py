"""Reads that span every partition (docs/scaling.md): tag limits and their leases, the
events streams (the CLI's and the dashboard's, merged by time), and the dashboard's
workers, queues, flows and dispatchers, on the real Redis with 3 partitions; with one
partition, the same reads as before partitions."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis
from balancer.common import events, partitions
from balancer.common.keys import Keys
from balancer.common.models import WorkerInfo
from balancer.common.scripts import Scripts
from balancer.common.settings import Settings
from click.testing import CliRunner

import balancer
from balancer import Flow, eventlog
from balancer.cli import main as cli
from balancer.dashboard.server import Dashboard
from balancer.taglimits import TagLimit
from tests.integration import tasks
from tests.integration.test_dashboard_http import request

pytestmark = pytest.mark.integration

COUNT = 3


@pytest.fixture
def three(real: redis.Redis, namespace: str) -> Keys:
    """A namespace of 3 partitions (as `balancer serve --partitions 3` stores it)."""
    keys = Keys(namespace)
    partitions.claim(real, keys, COUNT)
    return keys


def _cli(redis_url: str, namespace: str, *args: str) -> str:
    result = CliRunner().invoke(cli, [*args, "--redis-url", redis_url, "--namespace",
                                      namespace])
    assert result.exit_code == 0, result.output
    return result.output


def _joined(client: redis.Redis, keys: Keys, worker: str, stream_id: str) -> None:
    """A worker.joined event in ``keys``' partition, at a stream id of our choosing."""
    client.xadd(keys.events, events.encode(events.WORKER_JOINED, worker=worker),
                id=stream_id)


def test_tag_ls_and_tag_limits_sum_every_partitions_leases(
        real: redis.Redis, three: Keys, redis_url: str, namespace: str) -> None:
    balancer.set_tag_limit("db", 4, real, namespace=namespace)  # written to each partition
    real.hset(three.of(1).tag_inflight, "db", 2)
    real.hset(three.of(2).tag_inflight, mapping={"db": 1, "gpu": 3})  # gpu: no limit

    assert balancer.tag_limits(real, namespace=namespace) == [
        TagLimit("db", 4, 3), TagLimit("gpu", None, 3)]
    rows = json.loads(_cli(redis_url, namespace, "tag", "ls", "--json"))
    assert rows == [{"name": "db", "limit": 4, "leased": 3},
                    {"name": "gpu", "limit": None, "leased": 3}]


def test_tag_limits_of_one_partition_read_its_keys_alone(
        real: redis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    balancer.set_tag_limit("db", 2, real, namespace=namespace)
    real.hset(keys.tag_inflight, "db", 1)
    real.hset(Keys(namespace, 1).tag_inflight, "db", 5)  # no such partition: not read
    assert balancer.tag_limits(real, namespace=namespace) == [TagLimit("db", 2, 1)]


def test_balancer_events_merges_every_partitions_stream_by_time(
        real: redis.Redis, three: Keys, redis_url: str, namespace: str) -> None:
    for i, p in enumerate([0, 1, 2, 0, 1]):  # times 1000..1004, over the partitions
        _joined(real, three.of(p), f"w{i}", f"{1000 + i}-0")

    out = _cli(redis_url, namespace, "events", "-n", "3", "--json")
    shown = [json.loads(line) for line in out.splitlines()]
    assert [(e["worker"], e["at_ms"]) for e in shown] == [
        ("w2", 1002), ("w3", 1003), ("w4", 1004)]  # the newest 3 of all, oldest first


def test_a_merged_follower_reads_what_every_partition_writes_next_in_time_order(
        real: redis.Redis, three: Keys) -> None:
    every = partitions.all_keys(three, COUNT)
    _joined(real, three.of(1), "before", "1000-0")
    past, lasts = eventlog.latest_all(real, every, 10)
    assert [e.worker for e in past] == ["before"]
    assert lasts == ["0-0", "1000-0", "0-0"]

    follower = eventlog.follower(real, every, lasts)
    assert isinstance(follower, eventlog.Merged)
    _joined(real, three.of(2), "a", "2000-0")
    _joined(real, three.of(0), "b", "2001-0")
    _joined(real, three.of(2), "c", "2002-0")
    assert [e.worker for e in follower.read(block_ms=100)] == ["a", "b", "c"]
    assert follower.read(block_ms=10) == []
    _joined(real, three.of(1), "d", "3000-0")
    assert [e.worker for e in follower.read(block_ms=100)] == ["d"]


def test_with_one_partition_events_are_read_from_its_one_stream_as_before(
        real: redis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    _joined(real, keys, "only", "1000-0")
    assert eventlog.latest_all(real, [keys], 10) == ([eventlog.latest(real, keys, 10)[0][0]],
                                                      ["1000-0"])
    follower = eventlog.follower(real, [keys], ["1000-0"])
    assert isinstance(follower, eventlog.Reader)  # one blocking XREAD per read
    _joined(real, keys, "next", "2000-0")
    assert [e.worker for e in follower.read(block_ms=100)] == ["next"]


@pytest.fixture
def dashboard(real: redis.Redis, settings: Settings, three: Keys) -> Iterator[Dashboard]:
    app = Dashboard(real, settings.replace(dashboard_token="a-test-token-0123456789"),
                    "127.0.0.1", 0)
    app.start()
    yield app
    app.stop()


def _overview(app: Dashboard) -> dict[str, object]:
    status, data, _ = request(app, "GET", "/api/overview")
    assert status == 200, data
    assert isinstance(data, dict)
    return data


def test_the_dashboard_shows_workers_queues_flows_and_events_of_every_partition(
        real: redis.Redis, three: Keys, namespace: str, dashboard: Dashboard) -> None:
    # A worker registered in every partition, as a real one is.
    for p in range(COUNT):
        Scripts(real, three.of(p)).heartbeat(
            "w-all", WorkerInfo("w-all", ("default",), 2).to_blob(), 60_000)
    # Flows over the partitions (no dispatcher: their tasks wait in their queues).
    runs = []
    while len({partitions.of_flow(r.id) for r in runs}) < COUNT:
        with Flow(f"f{len(runs)}") as flow:
            tasks.square(len(runs))
        runs.append(flow.submit(real, namespace=namespace))
    # A leader for partitions 0 and 2, and events in each partition, the newest in 1.
    real.set(three.of(0).leader, "1|serve-a")
    real.set(three.of(2).leader, "1|serve-a")
    now = int(time.time() * 1000)
    for i, p in enumerate([2, 0, 1]):
        _joined(real, three.of(p), f"ev{p}", f"{now + i}-0")

    def shown() -> dict[str, object]:
        data = _overview(dashboard)
        assert [w["id"] for w in data["workers"]] == ["w-all"]  # type: ignore[index]
        return data

    data = shown()
    assert {f["id"] for f in data["flows"]} == {r.id for r in runs}  # type: ignore[index]
    [queue] = data["queues"]  # type: ignore[misc]
    assert queue["name"] == "default" and queue["ready"] == len(runs)
    [leader] = [d for d in data["dispatchers"] if d["role"] == "leader"]  # type: ignore[attr-defined]
    assert leader["id"] == "serve-a" and leader["partitions"] == [0, 2]
    deadline = time.monotonic() + 10
    while [e["worker"] for e in data["events"]][:3] != ["ev1", "ev0", "ev2"]:  # type: ignore[index]
        assert time.monotonic() < deadline, data["events"]
        time.sleep(0.1)
        data = shown()

    # A flow's page and its cancel find the flow in its partition.
    far = next(r for r in runs if partitions.of_flow(r.id) > 0)
    status, page, _ = request(dashboard, "GET", f"/api/flow/{far.id}")
    assert status == 200 and page["state"] == "running", page
    token = {"X-Balancer-Token": "a-test-token-0123456789"}
    status, reply, _ = request(dashboard, "POST", "/api/action/flow.cancel", {"flow": far.id},
                               token)
    assert status == 200, reply
    assert far.state == "cancelled"
    status, reply, _ = request(dashboard, "POST", "/api/action/queue.pause",
                               {"queue": "default"}, token)
    assert status == 200, reply
    assert [real.hget(three.of(p).queue_conf("default"), "paused") for p in range(COUNT)] == [
        b"1"] * COUNT
