"""The dispatcher's gate on fakeredis: Prefect 1's trigger and skip rules (``decide``), and
maps expanded and gathered exactly once, whatever crashes or repeats in between."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from balancer.common import codec
from balancer.common.keys import Keys
from balancer.common.scripts import Scripts
from balancer.common.settings import Settings

from balancer import Flow, task, unmapped
from balancer.gates import FIELDS, Decision, Gated, Gates, child_ids, decide
from balancer.submit import submit_flow


@task
def inc(x: int, y: int = 1) -> int:
    return x + y


@pytest.mark.parametrize("gated, verdict", [
    (Gated("t", "pending", upstream=2), "queue"),
    (Gated("t", "pending", upstream=2, failed=1), "fail"),
    (Gated("t", "pending", upstream=2, skipped=1), "skip"),
    (Gated("t", "pending", upstream=2, skipped=1, skip_on_upstream_skip=False), "queue"),
    (Gated("t", "pending", trigger="all_finished", upstream=2, failed=2), "queue"),
    (Gated("t", "pending", trigger="any_failed", upstream=2), "fail"),
    (Gated("t", "pending", trigger="any_failed", upstream=2, failed=1), "queue"),
    (Gated("t", "pending", trigger="any_successful", upstream=2, failed=2), "fail"),
    (Gated("t", "pending", trigger="any_successful", upstream=2, failed=1), "queue"),
    (Gated("t", "pending", trigger="not_all_skipped", upstream=2, skipped=2,
           skip_on_upstream_skip=False), "skip"),
    (Gated("t", "pending", trigger="not_all_skipped", upstream=2, skipped=1,
           skip_on_upstream_skip=False), "queue"),
    (Gated("t", "pending", upstream=1, is_map=True), "expand"),
    (Gated("t", "running", upstream=1, is_map=True), "gather"),
    (Gated("t", "completed"), "drop"),
])
def test_decide_applies_prefect_1s_skip_rule_then_the_trigger(gated: Gated,
                                                              verdict: str) -> None:
    assert decide(gated).verdict == verdict


def test_a_failed_trigger_says_which_and_how_many_upstreams_failed() -> None:
    assert decide(Gated("t", "pending", upstream=3, failed=2)) == Decision(
        "fail", 'trigger was "all_successful": 2 of 3 upstream task(s) did not succeed')


@pytest.fixture
def env(fake: redis.Redis, settings: Settings) -> Any:
    keys = Keys(settings.namespace)
    return fake, keys, Scripts(fake, keys), settings


def _submit_map(fake: redis.Redis, settings: Settings, items: list[int]) -> tuple[str, str]:
    with Flow("m") as flow:
        node = inc.map(items, y=unmapped(10))
    run = submit_flow(fake, settings, flow)
    return run.id, run.ids[node]


def _queued(fake: redis.Redis, keys: Keys) -> list[str]:
    return [m.decode() for m in fake.zrange(keys.queue("default"), 0, -1)]


def test_a_map_over_a_list_given_in_code_expands_into_one_queued_child_per_item(
        env: Any) -> None:
    fake, keys, scripts, settings = env
    flow_id, map_id = _submit_map(fake, settings, [1, 2, 3])
    assert fake.zrange(keys.gate, 0, -1) == [map_id.encode()]
    Gates(fake, keys, scripts, settings).run()
    ids = child_ids(map_id, 3)
    assert _queued(fake, keys) == ids
    assert fake.zcard(keys.gate) == 0
    for i, child in enumerate(ids):
        record = fake.hgetall(keys.task(child))
        assert record[b"state"] == b"queued"
        assert codec.decode_call(record[b"args"]) == ([[1, 2, 3][i]], {"y": 10})
        assert codec.unpack(record[b"children"]) == [[map_id, "default", pytest.approx(
            float(fake.hget(keys.task(map_id), "score"))), 1]]
    assert fake.hmget(keys.task(map_id), ["state", "deps", "mapped"]) == [
        b"running", b"3", b"3"]
    assert fake.hmget(keys.flow(flow_id), ["total", "remaining"]) == [b"4", b"4"]


def test_a_crash_between_writing_the_children_and_queueing_them_expands_once(
        env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, keys, scripts, settings = env
    flow_id, map_id = _submit_map(fake, settings, [5, 6])
    real_gate = scripts.gate

    def crash(*args: Any, **kwargs: Any) -> bool:
        raise ConnectionError("the dispatcher died here")

    monkeypatch.setattr(scripts, "gate", crash)
    with pytest.raises(ConnectionError):
        Gates(fake, keys, scripts, settings).run()
    ids = child_ids(map_id, 2)
    assert fake.exists(*(keys.task(c) for c in ids)) == 2  # written, nobody acts on them
    assert all(fake.hget(keys.task(c), "state") is None for c in ids)
    assert _queued(fake, keys) == []
    monkeypatch.setattr(scripts, "gate", real_gate)
    Gates(fake, keys, scripts, settings).run()  # a new dispatcher decides again
    assert _queued(fake, keys) == ids
    assert fake.hmget(keys.flow(flow_id), ["total", "remaining"]) == [b"3", b"3"]


def test_a_second_dispatcher_expanding_the_same_map_changes_nothing(env: Any) -> None:
    fake, keys, scripts, settings = env
    flow_id, map_id = _submit_map(fake, settings, [1, 2])
    # A stale dispatcher read the map as pending before another one expanded it.
    raw = dict(zip(FIELDS, fake.hmget(keys.task(map_id), list(FIELDS))))
    Gates(fake, keys, scripts, settings).run()
    ids = child_ids(map_id, 2)
    fake.hset(keys.task(ids[0]), "state", "completed")  # a child already ran
    fake.zrem(keys.queue("default"), ids[0])
    Gates(fake, keys, scripts, settings)._expand(
        Gated(map_id, "pending", "inc", is_map=True), raw, flow_id, "default", 0.0)
    assert fake.hget(keys.task(ids[0]), "state") == b"completed"
    assert _queued(fake, keys) == [ids[1]]
    assert fake.hmget(keys.flow(flow_id), ["total", "remaining"]) == [b"3", b"3"]


def test_a_map_past_the_limit_fails_with_a_clear_error_and_writes_no_child(
        env: Any) -> None:
    fake, keys, scripts, settings = env
    settings = settings.replace(max_map_children=2)
    flow_id, map_id = _submit_map(fake, settings, [1, 2, 3])
    Gates(fake, keys, scripts, settings).run()
    state, error = fake.hmget(keys.task(map_id), ["state", "error"])
    assert state == b"failed"
    info = codec.unpack_error(error)
    assert info is not None and info.type == "balancer.MapError"
    assert "mapping over 3 items, more than the limit of 2 children per map" in info.message
    assert "BALANCER_MAX_MAP_CHILDREN" in info.message
    assert fake.exists(*(keys.task(c) for c in child_ids(map_id, 3))) == 0
    assert fake.hget(keys.flow(flow_id), "state") == b"failed"


def test_a_map_over_nothing_gathers_an_empty_list_and_completes(env: Any) -> None:
    fake, keys, scripts, settings = env
    flow_id, map_id = _submit_map(fake, settings, [])
    gates = Gates(fake, keys, scripts, settings)
    gates.run()  # expands into nothing, and puts it back in the gate
    gates.run()  # gathers
    assert fake.hget(keys.task(map_id), "state") == b"completed"
    assert codec.unpack(fake.hget(keys.task(map_id), "result")) == []
    assert fake.hget(keys.flow(flow_id), "state") == b"completed"


def test_bad_gate_entries_are_set_aside_and_the_others_decided(env: Any) -> None:
    fake, keys, scripts, settings = env
    _, map_id = _submit_map(fake, settings, [1])
    fake.zadd(keys.gate, {b"\xff\xfe": 0})
    fake.set(keys.task("wrongtype"), "a string, not a hash")
    fake.zadd(keys.gate, {"wrongtype": 0})
    Gates(fake, keys, scripts, settings).run()
    assert fake.zcard(keys.gate) == 0
    assert fake.hlen(keys.aside) == 2
    assert _queued(fake, keys) == child_ids(map_id, 1)


def test_an_entry_for_a_task_not_gated_or_not_ready_is_set_aside_not_run(env: Any) -> None:
    """Anyone who can write the gate cannot make the dispatcher queue a task before its
    upstreams settled: only gated tasks with nothing left to wait for are decided."""
    fake, keys, scripts, settings = env
    with Flow("plain") as flow:
        first = inc(1)
        second = inc(first)
    run = submit_flow(fake, settings, flow)
    fake.zadd(keys.gate, {run.ids[second]: 0, run.ids[first]: 0})
    Gates(fake, keys, scripts, settings).run()
    assert fake.zcard(keys.gate) == 0 and fake.hlen(keys.aside) == 2
    assert fake.hget(keys.task(run.ids[second]), "state") == b"pending"
    assert _queued(fake, keys) == [run.ids[first]]  # queued by the submit, once


def test_a_map_over_a_map_expands_with_it_item_by_item(env: Any) -> None:
    fake, keys, scripts, settings = env
    with Flow("chain") as flow:
        first = inc.map([1, 2])
        second = inc.map(first)
        after = inc(second)
    run = submit_flow(fake, settings, flow)
    a, b = run.ids[first], run.ids[second]
    Gates(fake, keys, scripts, settings).run()
    a_children, b_children = child_ids(a, 2), child_ids(b, 2)
    assert _queued(fake, keys) == a_children
    for a_child, b_child in zip(a_children, b_children):
        dependents = codec.unpack(fake.hget(keys.task(a_child), "children"))
        assert [d[0] for d in dependents] == [a, b_child]
        assert fake.hmget(keys.task(b_child), ["state", "deps"]) == [b"pending", b"1"]
        args, _ = codec.decode_call(fake.hget(keys.task(b_child), "args"))
        assert args == [codec.UpstreamRef(a_child)]
    assert codec.unpack(fake.hget(keys.task(a), "children")) == []  # b stands on its own
    assert fake.hmget(keys.task(b), ["state", "deps", "mapped"]) == [b"running", b"2", b"2"]
    assert codec.unpack(fake.hget(keys.task(b), "children"))[0][0] == run.ids[after]
    assert fake.hmget(keys.flow(run.id), ["total", "remaining"]) == [b"7", b"7"]


def test_a_map_whose_record_claims_a_billion_runs_fails_instead_of_being_read(
        env: Any) -> None:
    fake, keys, scripts, settings = env
    _, map_id = _submit_map(fake, settings, [1])
    gates = Gates(fake, keys, scripts, settings)
    gates.run()
    fake.hset(keys.task(map_id), mapping={"mapped": 10**9, "deps": 0})  # a Redis writer
    fake.zadd(keys.gate, {map_id: 0})
    gates.run()
    state, error = fake.hmget(keys.task(map_id), ["state", "error"])
    info = codec.unpack_error(error)
    assert state == b"failed" and info is not None and info.type == "balancer.MapError"
    assert "says 1000000000 mapped runs" in info.message


def test_with_signing_keys_a_map_changed_without_them_is_not_expanded(env: Any) -> None:
    """The dispatcher signs a map's children: it must not sign what someone without the
    keys wrote. A map whose record no longer matches its signature fails, unexpanded."""
    fake, keys, scripts, settings = env
    settings = settings.replace(signing_keys="a-signing-key-0123456789")
    _, good = _submit_map(fake, settings, [1, 2])
    _, bad = _submit_map(fake, settings, [3, 4])
    fake.hset(keys.task(bad), "args", codec.encode_call(
        "inc", ([5, 6, 7],), {"y": 10, "__balancer_map__": [[0], [], []]}, 1 << 20))
    Gates(fake, keys, scripts, settings).run()
    state, error = fake.hmget(keys.task(bad), ["state", "error"])
    info = codec.unpack_error(error)
    assert state == b"failed" and info is not None and info.type == "balancer.BadSignature"
    assert fake.exists(*(keys.task(c) for c in child_ids(bad, 3))) == 0
    assert all(fake.hget(keys.task(c), "sig") for c in child_ids(good, 2))


def test_a_cancelled_map_in_the_gate_is_dropped_quietly_never_expanded_or_set_aside(
        env: Any) -> None:
    from balancer.cancel import cancel_flow

    fake, keys, scripts, settings = env
    flow_id, map_id = _submit_map(fake, settings, [1, 2])
    raw = dict(zip(FIELDS, fake.hmget(keys.task(map_id), list(FIELDS))))
    assert cancel_flow(fake, keys, flow_id, 60_000).cancelled == 1
    assert fake.zcard(keys.gate) == 0  # the cancel took it out
    # A stale entry (a dispatcher that read the map before the cancel, a late writer)
    # with its upstreams unsettled: dropped, not set aside as bad, and never expanded.
    fake.hset(keys.task(map_id), "deps", 1)
    fake.zadd(keys.gate, {map_id: 1})
    Gates(fake, keys, scripts, settings).run()
    assert fake.zcard(keys.gate) == 0 and fake.hlen(keys.aside) == 0
    Gates(fake, keys, scripts, settings)._expand(
        Gated(map_id, "pending", "inc", is_map=True), raw, flow_id, "default", 0.0)
    assert fake.hmget(keys.task(map_id), ["state", "mapped"]) == [b"cancelled", None]
    assert _queued(fake, keys) == []
    assert fake.hmget(keys.flow(flow_id), ["total", "remaining", "cancelled"]) == [
        b"1", b"0", b"1"]
