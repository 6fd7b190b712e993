"""When a pool child's watch thread looks at it on its own rather than sleeping until told
(worker/childwatch.py: Awake)."""

from __future__ import annotations

from balancer.common.prefetch import LONG_RUN_S
from balancer.worker.childwatch import STAY_AWAKE, Awake
from balancer.worker.record import IDLE, RUNNING, Snapshot


def snap(gen: int, phase: int = IDLE) -> Snapshot:
    return Snapshot(phase, gen, 0.0, 0, None)


def test_an_idle_child_that_never_took_a_lease_lets_the_watch_sleep_until_told() -> None:
    assert Awake().delay(snap(0), None, now=100.0) is None


def test_after_a_lease_the_watch_looks_each_horizon_then_sleeps_once_it_stays_idle() -> None:
    awake = Awake()
    assert awake.delay(snap(1, RUNNING), 0.02, now=100.0) == 0.02  # the run's own look
    assert awake.delay(snap(1), None, now=100.01) == LONG_RUN_S  # idle: not told of more
    assert awake.delay(snap(3), None, now=100.5) == LONG_RUN_S  # two more taken meanwhile
    assert awake.delay(snap(3), None, now=100.5 + STAY_AWAKE / 2) == LONG_RUN_S
    assert awake.delay(snap(3), None, now=100.5 + STAY_AWAKE) is None
