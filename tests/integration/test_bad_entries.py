"""One bad entry in Redis never stops dispatching, and Redis error replies never stop the
dispatcher: real `balancer serve` and `worker start` processes on a real Redis.

Each bad entry is injected before the dispatcher starts; then flows on another queue and
on the queue the bad entry touches must complete, the bad entry must be listed by
`balancer dlq aside` (and counted by `balancer status`), and the dispatcher must say so in
its log once, however many times it meets the entry again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import redis
from balancer.common.keys import Keys

from balancer import Flow, Queue
from balancer.run import FlowRun
from tests.conftest import ROOT, Processes, RedisServer, wait_for
from tests.integration import tasks

QUEUES = ("default", "other", "broken")


def _cli(procs: Processes, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "balancer.cli", *args], cwd=ROOT,
                          env=procs.env, capture_output=True, text=True, timeout=30)


def _start(procs: Processes, client: redis.Redis, keys: Keys
           ) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    serve = procs.serve()
    worker = procs.worker(*(a for q in QUEUES for a in ("--queue", q)), "--concurrency", "2",
                          "--pool", "thread")
    wait_for(lambda: client.zcard(keys.workers) >= 1, timeout=30)
    return serve, worker


def _submit(client: redis.Redis, namespace: str, queue: str) -> FlowRun:
    """A two-task flow (one depending on the other) on ``queue``: to ``default`` a small
    submit (one script call), elsewhere a transaction."""
    with Flow(f"on-{queue}") as flow:
        first = tasks.constant(20)
        second = tasks.add(first, 22)
    if queue != "default":
        first.queue = second.queue = Queue(queue)
    return flow.submit(client, namespace=namespace)


def _completes(client: redis.Redis, namespace: str, *queues: str) -> None:
    runs = [_submit(client, namespace, q) for q in queues]
    assert [r.wait(timeout=30) for r in runs] == ["completed"] * len(runs)


def _aside(procs: Processes) -> list[dict[str, object]]:
    listing = _cli(procs, "dlq", "aside", "--json")
    assert listing.returncode == 0, listing.stderr
    return json.loads(listing.stdout)


def _meet_again(client: redis.Redis, keys: Keys) -> None:
    """Make the dispatcher read its queue list, queue configs and queues a few more times
    (a queue signal forces the reads it otherwise does every few seconds)."""
    for _ in range(3):
        client.rpush(keys.wake, "q", "s", "c")
        time.sleep(0.3)


@dataclass(frozen=True)
class Bad:
    """A bad entry: how to inject it, the key it is listed under, and the queue it touches."""

    inject: Callable[[redis.Redis, Keys], None]
    key: Callable[[Keys], str]
    kind: str
    queue: str = "default"


def _queue_member(client: redis.Redis, keys: Keys) -> None:
    client.sadd(keys.queues, "default")
    client.zadd(keys.queue("default"), {b"\xff\xfe-not-utf8": 0})


def _queue_name(client: redis.Redis, keys: Keys) -> None:
    client.sadd(keys.queues, b"\xff\xfe-not-utf8")


def _cascade_member(client: redis.Redis, keys: Keys) -> None:
    client.rpush(keys.cascade, b"\xff\xfe-not-utf8")
    client.rpush(keys.wake, "c")


def _task_wrong_type(client: redis.Redis, keys: Keys) -> None:
    client.sadd(keys.queues, "default")
    client.set(keys.task("tampered"), "a string, not a hash")
    client.zadd(keys.queue("default"), {"tampered": 0})


def _priority_not_a_number(client: redis.Redis, keys: Keys) -> None:
    client.sadd(keys.queues, "default")
    client.hset(keys.queue_conf("default"), "priority", "urgent")


def _worker_name(client: redis.Redis, keys: Keys) -> None:
    client.zadd(keys.workers, {b"\xff\xfe-not-utf8": time.time() * 1000})


def _epoch_not_a_number(client: redis.Redis, keys: Keys) -> None:
    client.set(keys.epoch, b"\xff-not-a-counter")


BAD_ENTRIES = {
    "queue-member-not-utf8": Bad(_queue_member, lambda k: k.queue("default"), "unreadable"),
    "queue-name-not-utf8": Bad(_queue_name, lambda k: k.queues, "unreadable"),
    "cascade-member-not-utf8": Bad(_cascade_member, lambda k: k.cascade, "unreadable"),
    "task-record-wrong-type": Bad(_task_wrong_type, lambda k: k.queue("default"), "wrong-type"),
    "queue-priority-not-a-number": Bad(_priority_not_a_number,
                                       lambda k: k.queue_conf("default"), "bad-config"),
    "worker-name-not-utf8": Bad(_worker_name, lambda k: k.workers, "unreadable"),
    "epoch-not-a-number": Bad(_epoch_not_a_number, lambda k: k.epoch, "bad-epoch"),
}


@pytest.mark.parametrize("name", list(BAD_ENTRIES))
def test_a_bad_entry_is_set_aside_once_and_every_queue_keeps_flowing(
    procs: Processes, real: redis.Redis, namespace: str, name: str
) -> None:
    bad, keys = BAD_ENTRIES[name], Keys(namespace)
    bad.inject(real, keys)
    serve, _ = _start(procs, real, keys)
    _completes(real, namespace, "other", bad.queue)
    _meet_again(real, keys)
    _completes(real, namespace, bad.queue, "other")

    (entry,) = [e for e in _aside(procs) if e["key"] == bad.key(keys)]
    assert entry["kind"] == bad.kind
    status = json.loads(_cli(procs, "status", "--json").stdout)
    assert [e["id"] for e in status["set_aside"]] == [entry["id"]]
    assert procs.log(serve).count(f"entry={entry['id']}") == 1
    assert "unexpected error" not in procs.log(serve)
    assert serve.poll() is None


def test_a_bad_cascade_member_leaves_the_failures_behind_it_cascading(
    procs: Processes, real: redis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    _cascade_member(real, keys)
    _start(procs, real, keys)
    with Flow("fails") as flow:
        doomed = tasks.always_fails(1)
        after = tasks.add(doomed, 1)
    run = flow.submit(real, namespace=namespace)
    assert run.wait(timeout=30) == "failed"
    assert run.task_state(after) == "upstream_failed"
    assert real.lrange(keys.cascade, 0, -1) == []
    (entry,) = _aside(procs)
    assert entry["member"] == "\\xff\\xfe-not-utf8"  # as it was, for an operator to restore


def test_bad_members_of_the_delayed_set_leave_retries_and_later_starts_behind_them_going(
    procs: Processes, real: redis.Redis, namespace: str
) -> None:
    """The delayed set is read a batch at a time from its earliest: a member that is not
    UTF-8, or a task whose record is not a hash, stalled every retry and delayed start
    behind it, for good."""
    keys = Keys(namespace)
    real.zadd(keys.delayed, {b"\xff\xfe-not-utf8": 0, "tampered": 1})
    real.set(keys.task("tampered"), "a string, not a hash")
    serve, _ = _start(procs, real, keys)
    with Flow("later") as flow:
        node = tasks.always_fails(1)  # two retries, through the delayed set too
        tasks.constant(1)
    run = flow.submit(real, namespace=namespace, delay=0.2)
    assert run.wait(timeout=30) == "failed"
    assert run.error(node) is not None and real.hget(keys.task(run.ids[node]), "failures") == b"3"
    assert real.zcard(keys.delayed) == 0
    entries = sorted(_aside(procs), key=lambda e: str(e["kind"]))
    assert [(e["key"], e["kind"]) for e in entries] == [
        (keys.delayed, "unreadable"), (keys.delayed, "wrong-type")]
    assert entries[0]["member"] == "\\xff\\xfe-not-utf8"
    assert entries[1]["member"] == "tampered"
    for entry in entries:
        assert procs.log(serve).count(f"entry={entry['id']}") == 1


def test_a_count_of_leases_that_is_no_number_holds_its_queue_alone_until_fixed(
    procs: Processes, real: redis.Redis, namespace: str
) -> None:
    """It stopped every queue's dispatching. Its queue's limit must not be passed while the
    count cannot be read: that queue waits, reported, and goes once the count is fixed."""
    keys = Keys(namespace)
    real.sadd(keys.queues, "broken")
    real.hset(keys.queue_conf("broken"), "concurrency_limit", 2)
    real.hset(keys.inflight, "broken", "garbage")
    serve, _ = _start(procs, real, keys)
    held = _submit(real, namespace, "broken")
    _completes(real, namespace, "default", "other")
    (entry,) = _aside(procs)
    assert (entry["key"], entry["kind"], entry["member"]) == (keys.inflight, "bad-config",
                                                               "broken")
    assert held.state == "running" and set(held.states().values()) <= {"queued", "pending"}
    real.hset(keys.inflight, "broken", 0)  # what an operator does, as the entry says
    assert held.wait(timeout=30) == "completed"
    wait_for(lambda: _aside(procs) == [], timeout=10)
    assert procs.log(serve).count(f"entry={entry['id']}") == 2  # set aside, then cleared


def test_a_queue_key_of_the_wrong_type_is_skipped_and_reported_until_fixed(
    procs: Processes, real: redis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    real.sadd(keys.queues, "broken")
    real.set(keys.queue("broken"), "operator data, not a queue")
    serve, _ = _start(procs, real, keys)
    _completes(real, namespace, "other", "default")
    _meet_again(real, keys)
    _completes(real, namespace, "default")

    (entry,) = _aside(procs)
    assert (entry["kind"], entry["key"]) == ("wrong-type", keys.queue("broken"))
    assert real.get(keys.queue("broken")) == b"operator data, not a queue"  # left alone
    assert procs.log(serve).count(f"entry={entry['id']}") == 1

    real.delete(keys.queue("broken"))  # the operator fixes it
    _meet_again(real, keys)
    _completes(real, namespace, "broken")
    wait_for(lambda: _aside(procs) == [], timeout=20)
    assert serve.poll() is None


def test_a_dismissed_entry_leaves_the_set_aside_list(
    procs: Processes, real: redis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    _queue_member(real, keys)
    _start(procs, real, keys)
    _completes(real, namespace, "default")
    (entry,) = _aside(procs)
    assert real.zcard(keys.queue("default")) == 0
    done = _cli(procs, "dlq", "dismiss", str(entry["id"]))
    assert done.returncode == 0, done.stderr
    assert _aside(procs) == []


def test_the_dispatcher_rides_out_redis_refusing_writes_and_resumes(
    procs: Processes, namespace: str
) -> None:
    server = RedisServer("--maxmemory-policy", "noeviction").start()
    try:
        procs.env["BALANCER_REDIS_URL"] = server.url
        client, keys = redis.Redis.from_url(server.url), Keys(namespace)
        serve, worker = _start(procs, client, keys)
        with Flow("through-oom") as flow:
            slow = [tasks.sleep_for(0.5) for _ in range(4)]
            [tasks.add(s, 1) for s in slow]
        during = flow.submit(client, namespace=namespace)
        wait_for(lambda: any(during.task_state(s) == "running" for s in slow), timeout=20)
        client.config_set("maxmemory", 1)  # every write that may grow memory is refused
        try:
            time.sleep(3)
        finally:
            client.config_set("maxmemory", 0)
        assert during.wait(timeout=60) == "completed"
        _completes(client, namespace, "default", "other")
        assert serve.poll() is None and worker.poll() is None
        log = procs.log(serve)
        assert log.count("Redis refuses") == 1, log
        assert "unexpected error" not in log
        wait_for(lambda: "Redis serves again" in procs.log(serve), timeout=30)
    finally:
        server.cleanup()


def test_a_standing_offer_of_the_wrong_type_costs_no_submit(
    procs: Processes, real: redis.Redis, namespace: str
) -> None:
    """A small submit reads the queue's standing offer, and the keys it checks, in its
    script: one of another type (written by hand) must refuse the offer, as a failed
    check does, and the task go through the queue; it made every small submit fail."""
    keys = Keys(namespace)
    _start(procs, real, keys)
    _completes(real, namespace, "default")  # the client has seen the offer
    for _ in range(3):
        by_hand = real.pipeline(transaction=True)  # the dispatcher may set it in between
        by_hand.delete(keys.offer("default"))
        by_hand.hset(keys.offer("default"), "written", "by hand")
        by_hand.execute()
        _completes(real, namespace, "default")


def test_a_queue_key_turned_wrong_under_a_running_flow_loses_none_of_its_tasks(
    procs: Processes, real: redis.Redis, redis_url: str, namespace: str
) -> None:
    """The ack that makes a dependent ready while the dependent's queue is a key of another
    type is applied whole, and the dependent waits, parked in the delayed set, until the
    key is fixed: before, the script stopped at that queue, the first task completed and
    its dependent was in no queue, and the flow ran for ever."""
    keys = Keys(namespace)
    _start(procs, real, keys)
    started, gate = f"{namespace}:started", f"{namespace}:gate"
    with Flow("under-a-broken-queue") as flow:
        first = tasks.note_then_wait_for_gate(redis_url, started, gate, 60)
        second = tasks.add(20, 22, upstream_tasks=[first])
    first.queue = second.queue = Queue("broken")
    run = flow.submit(real, namespace=namespace)
    assert real.blpop([started], timeout=30) is not None
    real.set(keys.queue("broken"), "operator data, not a queue")
    real.rpush(gate, 1)
    second_id = run.ids[second]
    wait_for(lambda: run.task_state(first) == "completed", timeout=30)
    wait_for(lambda: real.zscore(keys.delayed, second_id) is not None, timeout=30)
    parked = real.zscore(keys.delayed, second_id)
    # The dispatcher tries it again while the key is still wrong, and parks it anew: it
    # must look again later (it did not, and the task stayed parked once fixed).
    wait_for(lambda: real.zscore(keys.delayed, second_id) not in (None, parked), timeout=30)
    _meet_again(real, keys)
    wait_for(lambda: [e["key"] for e in _aside(procs)] == [keys.queue("broken")], timeout=30)
    assert run.state == "running"
    assert "its queue broken cannot take it" in run.why()["add"]
    real.delete(keys.queue("broken"))  # the operator fixes it
    assert run.wait(timeout=60) == "completed" and run.result(second) == 42


def test_a_count_of_leases_fixed_while_no_dispatcher_ran_is_cleared_by_the_next_leader(
    procs: Processes, real: redis.Redis, namespace: str
) -> None:
    """The report a dead leader wrote is the next leader's to clear: it met the count as a
    number and knew nothing of the report, which stayed listed for good."""
    keys = Keys(namespace)
    real.sadd(keys.queues, "broken")
    real.hset(keys.queue_conf("broken"), "concurrency_limit", 2)
    real.hset(keys.inflight, "broken", "garbage")
    serve, _ = _start(procs, real, keys)
    wait_for(lambda: len(_aside(procs)) == 1, timeout=30)
    serve.kill()
    serve.wait(10)
    real.delete(keys.leader)  # as its lease runs out
    real.hset(keys.inflight, "broken", 0)  # fixed while no dispatcher ran
    procs.serve()
    held = _submit(real, namespace, "broken")
    assert held.wait(timeout=30) == "completed"
    wait_for(lambda: _aside(procs) == [], timeout=20)


def test_a_wake_list_of_the_wrong_type_costs_signals_never_tasks_and_is_reported(
    procs: Processes, real: redis.Redis, namespace: str
) -> None:
    """Signals are hints: a wake list a Redis writer clobbered stopped the dispatcher at
    every step (no queue dispatched), refused every submit, and made a script that
    signals halfway stop there. Now submits and scripts go on without their signal, the
    dispatcher reads the queues without waiting for one, and the key is reported until
    fixed."""
    keys = Keys(namespace)
    _start(procs, real, keys)
    real.delete(keys.wake)
    real.set(keys.wake, "operator data, not a list")
    _completes(real, namespace, "default", "other")
    wait_for(lambda: [(e["kind"], e["key"]) for e in _aside(procs)] == [
        ("wrong-type", keys.wake)], timeout=20)
    # A worker that starts meanwhile (its registration's signal is lost too) gets work.
    procs.worker("--queue", "late", "--pool", "thread")
    wait_for(lambda: real.zcard(keys.workers) >= 2, timeout=30)
    _completes(real, namespace, "late")
    real.delete(keys.wake)  # the operator fixes it
    _completes(real, namespace, "default")
    wait_for(lambda: _aside(procs) == [], timeout=20)


def test_a_fixed_key_of_another_type_is_reported_where_an_operator_looks(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    """The delayed set clobbered by a Redis writer: retries would fail to be scheduled.
    `balancer dlq aside` and `balancer status` name the key at once, and flows go on."""
    keys = Keys(namespace)
    real.set(keys.delayed, "not a sorted set")
    _start(procs, real, keys)
    wait_for(lambda: any(row["key"] == keys.delayed for row in _aside(procs)), timeout=30)
    [row] = [row for row in _aside(procs) if row["key"] == keys.delayed]
    assert "holds a string, not a zset" in str(row["detail"])
    assert keys.delayed in _cli(procs, "status").stdout
    _completes(real, namespace, "default")
