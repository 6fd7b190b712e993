"""FlowRun.wait across a failover, on fakeredis: Redis not answering for a while is waited
out within the deadline, and a run whose record is gone is reported lost, never waited on
for ever."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from balancer.common.keys import Keys

from balancer import Flow, FlowLost, task
from balancer.run import FlowRun


@task
def step() -> int:
    return 1


def _run(fake: redis.Redis, namespace: str) -> FlowRun:
    with Flow("f") as flow:
        step()
    return flow.submit(fake, namespace=namespace)


def test_a_run_whose_record_a_failover_lost_raises_flow_lost(fake: redis.Redis,
                                                             namespace: str) -> None:
    run = _run(fake, namespace)
    fake.delete(Keys(namespace).flow(run.id))  # as a promoted replica that never got it
    with pytest.raises(FlowLost, match=r"no record in Redis.*BALANCER_MIN_REPLICAS"):
        run.wait(timeout=5, tick=0.05)


def test_wait_rides_out_redis_not_answering_then_returns_the_final_state(
        fake: redis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run(fake, namespace)
    calls = {"n": 0}
    real = FlowRun._wait_slice

    def flaky(self: FlowRun, seconds: float) -> Any:
        calls["n"] += 1
        if calls["n"] <= 3:
            raise redis.ConnectionError("Connection closed by server.")
        if calls["n"] == 4:
            fake.rpush(Keys(namespace).flow_done(run.id), "completed")
        return real(self, seconds)

    monkeypatch.setattr(FlowRun, "_wait_slice", flaky)
    assert run.wait(timeout=10, tick=0.05) == "completed"
    assert calls["n"] == 4


def test_wait_gives_up_at_its_deadline_when_redis_never_answers(
        fake: redis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    run = _run(fake, namespace)

    def down(self: FlowRun, seconds: float) -> Any:
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Refused.")

    monkeypatch.setattr(FlowRun, "_wait_slice", down)
    with pytest.raises(TimeoutError, match=r"Redis did not answer.*Refused"):
        run.wait(timeout=0.5)
