"""balancer.submit.submit_flow on fakeredis: the records a flow becomes, or nothing at all.

Tasks live at module level: a submit names each by its importable ``module:qualname``.
Dependencies are declared on the flow (never with a bare ``set_upstream`` outside one,
which would stick to these shared tasks).
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from balancer.common import codec, protocol, signals
from balancer.common.codec import UpstreamRef
from balancer.common.keys import Keys
from balancer.common.settings import Settings

from balancer import Flow, FlowError, FlowRun, NotReplicated, Queue, submit, task
from balancer.scheduling import task_score
from balancer.submit import submit_flow


@task
def extract(source: Any = None) -> Any:
    return source


@task(queue_name="cpu", priority=2, retries=3, retry_delay=0.5, timeout=9)
def transform(rows: Any = None, **options: Any) -> Any:
    return rows


@task(queue_name="io")
def load(*parts: Any, **named: Any) -> None:
    return None


def fields(client: redis.Redis, key: str) -> dict[str, bytes]:
    return {k.decode(): v for k, v in client.hgetall(key).items()}


def all_keys(client: redis.Redis, namespace: str) -> list[bytes]:
    return list(client.scan_iter(match=Keys(namespace).prefix + "*"))


def etl_flow() -> tuple[Flow, dict[str, Any]]:
    """extract -> transform (functional argument) -> load (set_upstream with a key)."""
    with Flow("etl") as flow:
        raw = extract("s3://bucket/file")
        rows = transform(raw, mode="fast")
        sink = flow.add_task(load, queue=Queue("io", priority=5, concurrency_limit=2))
        sink.set_upstream(rows, key="table")
    return flow, {"extract": raw, "transform": rows, "load": sink}


@pytest.fixture
def keys(namespace: str) -> Keys:
    return Keys(namespace)


def test_submit_writes_the_flow_hash(fake: redis.Redis, settings: Settings, keys: Keys) -> None:
    flow, nodes = etl_flow()
    run = submit_flow(fake, settings, flow)
    assert isinstance(run, FlowRun)
    record = fields(fake, keys.flow(run.id))
    assert record["id"].decode() == run.id
    assert record["name"] == b"etl"
    assert record["state"] == b"running"
    assert (record["total"], record["remaining"], record["failed"]) == (b"3", b"3", b"0")
    listed = codec.unpack(record["tasks"])
    assert sorted(listed) == sorted([run.ids[n], name] for name, n in nodes.items())
    assert fake.zscore(keys.flows, run.id) is not None
    assert run.state == "running"


def test_submit_writes_one_task_hash_per_node_as_the_scripts_expect(
        fake: redis.Redis, settings: Settings, keys: Keys) -> None:
    flow, nodes = etl_flow()
    run = submit_flow(fake, settings, flow)
    ids = {name: run.ids[n] for name, n in nodes.items()}

    t = fields(fake, keys.task(ids["transform"]))
    assert t["name"] == b"transform"
    assert t["fn"] == f"{__name__}:transform".encode()
    assert t["flow"].decode() == run.id
    assert t["queue"] == b"cpu"
    assert t["state"] == b"pending"
    assert t["deps"] == b"1"
    assert (t["retries"], float(t["retry_delay"]), float(t["timeout"])) == (b"3", 0.5, 9.0)
    assert "failures" not in t and "lost" not in t  # defaults are left out: the scripts read 0
    assert t["nchildren"] == b"1"
    ((child, queue, score),) = codec.unpack(t["children"])
    assert (child, queue) == (ids["load"], "io")
    assert score == float(fake.hget(keys.task(ids["load"]), "score"))
    assert codec.decode_call(t["args"]) == ([UpstreamRef(ids["extract"])], {"mode": "fast"})

    e = fields(fake, keys.task(ids["extract"]))
    assert (e["state"], e["queue"]) == (b"queued", b"default")
    assert "deps" not in e and "timeout" not in e
    assert codec.decode_call(e["args"]) == (["s3://bucket/file"], {})
    assert [c[:2] for c in codec.unpack(e["children"])] == [[ids["transform"], "cpu"]]

    sink = fields(fake, keys.task(ids["load"]))
    assert sink["state"] == b"pending"
    assert "nchildren" not in sink and "children" not in sink
    assert codec.decode_call(sink["args"]) == ([], {"table": UpstreamRef(ids["transform"])})


def test_submit_queues_only_tasks_without_upstream(
        fake: redis.Redis, settings: Settings, keys: Keys) -> None:
    flow, nodes = etl_flow()
    run = submit_flow(fake, settings, flow)
    root = run.ids[nodes["extract"]]
    score = float(fake.hget(keys.task(root), "score"))  # type: ignore[arg-type]
    assert fake.zrange(keys.queue("default"), 0, -1, withscores=True) == [
        (root.encode(), score)]
    assert fake.zcard(keys.queue("cpu")) == 0
    assert fake.zcard(keys.queue("io")) == 0
    assert fake.smembers(keys.queues) == {b"default", b"cpu", b"io"}


def test_submit_records_queue_priority_and_limit_and_signals_the_change(
        fake: redis.Redis, settings: Settings, keys: Keys) -> None:
    flow, _ = etl_flow()
    submit_flow(fake, settings, flow)
    assert fields(fake, keys.queue_conf("io")) == {"priority": b"5", "concurrency_limit": b"2"}
    assert not fake.exists(keys.queue_conf("cpu"))
    assert fake.lrange(keys.wake, 0, -1) == [signals.QUEUES.encode()]


def test_a_submit_while_no_dispatcher_reads_keeps_the_wake_list_at_its_cap(
        fake: redis.Redis, settings: Settings, keys: Keys) -> None:
    fake.rpush(keys.wake, *["s"] * protocol.WAKE_CAP)  # no dispatcher for a long while
    flow, _ = etl_flow()
    submit_flow(fake, settings, flow)
    assert fake.llen(keys.wake) == protocol.WAKE_CAP
    assert fake.lindex(keys.wake, -1) == signals.QUEUES.encode()


def test_submit_leaves_unset_queue_settings_to_the_cluster(
        fake: redis.Redis, settings: Settings, keys: Keys) -> None:
    fake.hset(keys.queue_conf("io"), mapping={"priority": 9, "concurrency_limit": 4})
    flow = Flow("f")
    flow.add_task(load, queue=Queue("io", priority=1))
    submit_flow(fake, settings, flow)
    assert fields(fake, keys.queue_conf("io")) == {"priority": b"1", "concurrency_limit": b"4"}


def test_submit_without_explicit_queues_sends_the_submitted_signal_naming_its_queues(
        fake: redis.Redis, settings: Settings, keys: Keys) -> None:
    flow = Flow("f")
    flow.add_task(extract)
    submit_flow(fake, settings, flow)
    (raw,) = fake.lrange(keys.wake, 0, -1)
    signal = signals.parse(raw)
    assert signal is not None and signal.kind == signals.SUBMITTED
    assert signal.queues == ("default",)
    assert not fake.exists(keys.queue_conf("default"))


def test_task_priority_moves_its_score_ahead_by_aging_periods(
        fake: redis.Redis, settings: Settings, keys: Keys) -> None:
    flow = Flow("f")
    flow.add_task(extract)
    flow.add_task(transform)  # priority 2
    run = submit_flow(fake, settings, flow)
    low, high = (float(fake.hget(keys.task(run.ids[flow.node_of(t)]), "score"))  # type: ignore[arg-type]
                 for t in (extract, transform))
    created = int(fake.hget(keys.flow(run.id), "created"))  # type: ignore[arg-type]
    assert low == task_score(created, 0, settings.aging_seconds * 1000)
    assert low - high == 2 * settings.aging_seconds * 1000


def test_empty_flow_is_completed_at_once(fake: redis.Redis, settings: Settings,
                                         keys: Keys) -> None:
    run = submit_flow(fake, settings, Flow("nothing"))
    assert fields(fake, keys.flow(run.id))["state"] == b"completed"
    assert fake.lrange(keys.flow_done(run.id), 0, -1) == [b"completed"]


def test_submit_keeps_each_flow_under_its_own_id(fake: redis.Redis, settings: Settings,
                                                 keys: Keys) -> None:
    first = submit_flow(fake, settings, etl_flow()[0])
    second = submit_flow(fake, settings, etl_flow()[0])
    assert first.id != second.id
    assert fake.zcard(keys.flows) == 2
    assert fake.zcard(keys.queue("default")) == 2


def test_small_submits_trim_the_recent_flows_once_in_a_while(
        fake: redis.Redis, settings: Settings, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.zadd(keys.flows, {f"old{i}": i for i in range(submit.RECENT_FLOWS)})
    draws = iter([0.5, 0.0])  # the first submit does not trim, the second does
    monkeypatch.setattr(submit._trim, "random", lambda: next(draws))
    for kept in (submit.RECENT_FLOWS + 1, submit.RECENT_FLOWS):
        with Flow("one") as flow:
            extract(1)
        submit_flow(fake, settings, flow)
        assert fake.zcard(keys.flows) == kept
    assert fake.zscore(keys.flows, "old1") is None and fake.zscore(keys.flows, "old2")


# -- refusals: a FlowError, and nothing written ---------------------------------------------


def test_unencodable_argument_raises_naming_task_and_position_and_writes_nothing(
        fake: redis.Redis, settings: Settings, namespace: str) -> None:
    with Flow("bad") as flow:
        first = extract("fine")
        extract.copy(name="mixed")([first, object()])
    with pytest.raises(FlowError) as info:
        submit_flow(fake, settings, flow)
    message = str(info.value)
    assert "'mixed'" in message
    assert "position 0" in message
    assert all_keys(fake, namespace) == []


def test_unencodable_keyword_raises_naming_task_and_keyword_and_writes_nothing(
        fake: redis.Redis, settings: Settings, namespace: str) -> None:
    with Flow("bad") as flow:
        extract("fine")
        load(conn=object())
    with pytest.raises(FlowError) as info:
        submit_flow(fake, settings, flow)
    message = str(info.value)
    assert "'load'" in message
    assert "keyword 'conn'" in message
    assert all_keys(fake, namespace) == []


def test_an_argument_msgpack_cannot_carry_raises_flow_error_naming_the_task_and_writes_nothing(
        fake: redis.Redis, settings: Settings, namespace: str) -> None:
    with Flow("bad") as flow:
        extract(1 + 2j)
    with pytest.raises(FlowError, match=r"'extract'.*complex"):
        submit_flow(fake, settings, flow)
    assert all_keys(fake, namespace) == []


@pytest.mark.parametrize(("args", "kwargs", "where"), [
    (("ok", 1j), {}, "position 1"),
    ((), {"tags": {"a": [2j]}}, "keyword 'tags'"),
])
def test_an_argument_error_names_the_argument(
        fake: redis.Redis, settings: Settings, args: tuple[Any, ...], kwargs: dict[str, Any],
        where: str) -> None:
    with Flow("bad") as flow:
        load(*args, **kwargs)
    with pytest.raises(FlowError, match=where):
        submit_flow(fake, settings, flow)


def test_payload_over_the_limit_raises_naming_task_and_limit_and_writes_nothing(
        fake: redis.Redis, settings: Settings, namespace: str) -> None:
    small = settings.replace(max_payload_bytes=100)
    with Flow("big") as flow:
        extract(b"x" * 200)
    with pytest.raises(FlowError) as info:
        submit_flow(fake, small, flow)
    message = str(info.value)
    assert "'extract'" in message
    assert "limit of 100" in message
    assert "BALANCER_MAX_PAYLOAD_BYTES" in message
    assert all_keys(fake, namespace) == []


def test_payload_under_the_limit_is_accepted(fake: redis.Redis, settings: Settings,
                                             keys: Keys) -> None:
    with Flow("ok") as flow:
        extract(b"x" * 50)
    run = submit_flow(fake, settings.replace(max_payload_bytes=100), flow)
    assert fake.exists(keys.task(run.ids[flow.node_of(extract)]))


def test_keyword_given_twice_raises_and_writes_nothing(
        fake: redis.Redis, settings: Settings, namespace: str) -> None:
    with Flow("twice") as flow:
        rows = extract()
        sink = load(table="literal")
        sink.set_upstream(rows, key="table")
    with pytest.raises(FlowError, match=r"'load'.*'table' is given twice"):
        submit_flow(fake, settings, flow)
    assert all_keys(fake, namespace) == []


def _local_function() -> Any:
    @task
    def nested() -> None:
        return None

    return nested


def test_task_defined_inside_a_function_raises_and_writes_nothing(
        fake: redis.Redis, settings: Settings, namespace: str) -> None:
    flow = Flow("local")
    flow.add_task(extract)
    flow.add_task(_local_function())
    with pytest.raises(FlowError, match="module level"):
        submit_flow(fake, settings, flow)
    assert all_keys(fake, namespace) == []


def test_cycle_raises_and_writes_nothing(fake: redis.Redis, settings: Settings,
                                         namespace: str) -> None:
    flow = Flow("loop")
    transform.set_upstream(extract, flow=flow)
    extract.set_upstream(transform, flow=flow)
    with pytest.raises(FlowError, match="cycle"):
        submit_flow(fake, settings, flow)
    assert all_keys(fake, namespace) == []


def small_flow() -> tuple[Flow, Any, Any]:
    """Two tasks of one queue, the second after the first: a small submit (one script)."""
    with Flow("small") as flow:
        first = extract("a")
        second = extract(first)
    return flow, first, second


def test_a_small_submit_writes_what_a_large_one_writes_in_one_script(
        fake: redis.Redis, settings: Settings, keys: Keys) -> None:
    flow, first, second = small_flow()
    run = submit_flow(fake, settings, flow)
    record = fields(fake, keys.flow(run.id))
    assert (record["name"], record["state"], record["total"], record["remaining"]) == (
        b"small", b"running", b"2", b"2")
    a, b = fields(fake, keys.task(run.ids[first])), fields(fake, keys.task(run.ids[second]))
    assert (a["state"], a["queue"], a["nchildren"]) == (b"queued", b"default", b"1")
    assert (b["state"], b["deps"]) == (b"pending", b"1")
    assert codec.decode_call(b["args"]) == ([UpstreamRef(run.ids[first])], {})
    assert fake.zrange(keys.queue("default"), 0, -1, withscores=True) == [
        (run.ids[first].encode(), float(a["score"]))]
    assert fake.smembers(keys.queues) == {b"default"}
    assert fake.zscore(keys.flows, run.id) == float(record["created"])
    assert fake.lrange(keys.wake, 0, -1) == [f"S|default|{run.ids[first]}".encode()]


def test_a_small_submit_to_a_redis_that_lost_its_scripts_loads_them_and_writes_once(
        fake: redis.Redis, settings: Settings, keys: Keys) -> None:
    submit_flow(fake, settings, small_flow()[0])
    fake.script_flush()  # as a restarted Redis
    flow, first, _ = small_flow()
    run = submit_flow(fake, settings, flow)
    assert fake.hget(keys.task(run.ids[first]), "state") == b"queued"
    assert fake.zcard(keys.queue("default")) == 2 and fake.llen(keys.wake) == 2


def test_a_client_keeps_the_standing_offer_of_each_partition_apart(
        fake: redis.Redis, settings: Settings, keys: Keys) -> None:
    """A small submit remembers the offer its script read for the next submit to take, per
    partition: a flow placed in another partition must not take (nor forget) this one's."""
    fake.set(keys.partitions, 2)
    for p in (0, 1):
        fake.set(keys.of(p).offer("default"), f"offer of partition {p}".encode())
    placed: set[int] = set()
    while placed != {0, 1}:  # flows are placed by a hash of their random id
        with Flow("placed") as flow:
            extract("x")
        run = submit_flow(fake, settings, flow)
        placed.add(run.keys.partition)
    for p in (0, 1):
        assert submit.seen_offer(fake, keys.of(p), "default") == (
            f"offer of partition {p}".encode())


def test_a_delayed_submit_puts_its_first_tasks_in_the_delayed_set_and_tells_its_queues(
        fake: redis.Redis, settings: Settings) -> None:
    """Nothing is queued: the first tasks wait, scheduled, until the start; the wake list
    names the queues (a dispatcher that never saw them knows them at the start, instead of
    at its next look at the queues) and asks for the delayed set to be read again."""
    keys = Keys(settings.namespace)
    with Flow("later") as flow:
        rows = extract()
        load(transform(rows))
    start_ms = 2_000_000_000_000
    run = submit_flow(fake, settings, flow, start_ms=start_ms)
    first = run.ids[rows]
    assert fake.zrange(keys.delayed, 0, -1, withscores=True) == [(first.encode(), start_ms)]
    assert fake.zcard(keys.queue("default")) == 0
    assert fields(fake, keys.task(first))["state"] == b"scheduled"
    assert fields(fake, keys.flow(run.id))["scheduled"] == str(start_ms).encode()
    assert run.states() == {"extract": "scheduled", "transform": "pending", "load": "pending"}
    assert fake.lrange(keys.wake, 0, -1) == [b"s|cpu default io", signals.RETRY.encode()]


def test_a_delay_counts_from_redis_clock_not_the_clients(
        fake: redis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dispatcher starts a delayed run by Redis's clock: a client whose own clock is
    an hour ahead still starts a run delayed 60 s in 60 s (an eta is a time, and is
    written as given)."""
    import importlib
    import time as real_time
    from datetime import datetime, timedelta, timezone
    from types import SimpleNamespace

    flow_module = importlib.import_module("balancer.flow")  # the module, not @flow
    skewed = SimpleNamespace(time=lambda: real_time.time() + 3600)
    monkeypatch.setattr(flow_module, "time", skewed)
    with Flow("later") as later:
        extract(1)
    run = later.submit(fake, namespace=keys.namespace, delay=60)
    seconds, micros = fake.time()
    redis_now_ms = seconds * 1000 + micros / 1000
    [(_, start)] = fake.zrange(keys.delayed, 0, -1, withscores=True)
    assert abs(start - (redis_now_ms + 60_000)) < 5_000
    assert int(fake.hget(keys.flow(run.id), "scheduled")) == int(start)

    eta = datetime.now(timezone.utc) + timedelta(hours=2)
    with Flow("at") as at:
        extract(2)
    run = at.submit(fake, namespace=keys.namespace, eta=eta)
    assert int(fake.hget(keys.flow(run.id), "scheduled")) == round(eta.timestamp() * 1000)


class _Submits:
    """A submit's one call, failing as told: ``faults`` are raised in turn, each after the
    write when ``ran`` says so (a reply lost to a dropped connection)."""

    def __init__(self, *faults: tuple[Exception, bool]) -> None:
        self.faults = list(faults)
        self.sent = self.written = 0

    def send(self) -> str:
        self.sent += 1
        if self.faults:
            fault, ran = self.faults.pop(0)
            self.written += ran
            raise fault
        self.written += 1
        return "worker-1"

    def landed(self) -> bool:
        return self.written > 0


def test_a_submit_whose_connection_was_lost_is_sent_again_only_if_it_did_not_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submit.time, "sleep", lambda _: None)
    lost = redis.ConnectionError("Connection closed by server.")
    not_run = _Submits((lost, False), (lost, False))
    assert submit._sent_through_failovers(not_run.send, "f1", not_run.landed) == "worker-1"
    assert (not_run.sent, not_run.written) == (3, 1)
    ran = _Submits((lost, True))
    assert submit._sent_through_failovers(ran.send, "f1", ran.landed) is None
    assert (ran.sent, ran.written) == (1, 1)  # written once, never again


def test_a_submit_that_timed_out_or_never_reached_redis_is_not_sent_again() -> None:
    timed_out = _Submits((redis.TimeoutError("Timeout reading from socket"), False))
    with pytest.raises(redis.TimeoutError):  # Redis may still run it: never twice
        submit._sent_through_failovers(timed_out.send, "f1", timed_out.landed)
    first = _Submits((redis.ConnectionError("Error 111 connecting. Connection refused."),
                      False))
    with pytest.raises(redis.ConnectionError):  # no landed(): a wrong URL, said at once
        submit._sent_through_failovers(first.send, "f1", None)
    assert timed_out.sent == first.sent == 1


def test_a_submit_replicas_must_confirm_is_sent_again_but_one_that_ran_is_unconfirmed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submit.time, "sleep", lambda _: None)
    lost = redis.ConnectionError("Connection closed by server.")
    not_run = _Submits((lost, False))  # sent again: its WAIT then asks on its connection
    assert submit._sent_through_failovers(not_run.send, "f1", not_run.landed, 1) == "worker-1"
    ran = _Submits((lost, True))
    with pytest.raises(NotReplicated, match="connection was lost before the 1 replicas"):
        submit._sent_through_failovers(ran.send, "f1", ran.landed, 1)
    assert ran.written == 1


def test_a_cluster_mid_failover_when_the_submit_is_looked_for_is_looked_at_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The read that tells whether a lost submit ran may itself meet CLUSTERDOWN: not known
    yet, read again; never taken for a refused write (which would undo the flow)."""
    monkeypatch.setattr(submit.time, "sleep", lambda _: None)
    lost = redis.ConnectionError("Connection closed by server.")
    ran = _Submits((lost, True))
    looks = [redis.exceptions.ClusterDownError("CLUSTERDOWN The cluster is down")]

    def landed() -> bool:
        if looks:
            raise submit.SlotMoved(str(looks.pop()))
        return ran.landed()

    assert submit._sent_through_failovers(ran.send, "f1", landed) is None
    assert (ran.sent, ran.written) == (1, 1)
