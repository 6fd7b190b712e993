"""heartbeat.lua, and the light beat (a single ZADD) that dates a worker between
full beats.
"""

from __future__ import annotations

from balancer.common import signals
from balancer.common.models import WorkerInfo
from balancer.common.protocol import WAKE_CAP

from tests.common.lua.db import TTL, Db, Q, W


def test_heartbeat_registers_worker_and_signals_with_parseable_blob(db: Db) -> None:
    info = WorkerInfo("w9", (Q, "other"), 4, cpu=0.5, host="h|ost")
    assert db.scripts.heartbeat("w9", info.to_blob(), TTL)[:2] == (False, 0)
    existed, leased, redis_ms = db.scripts.heartbeat("w9", info.to_blob(), TTL)
    assert (existed, leased) == (True, 0)
    assert abs(redis_ms - db.now_ms()) < 1_000  # Redis time, for dating light beats
    assert db.client.zscore(db.keys.workers, "w9") == redis_ms
    assert 0 < db.client.pttl(db.keys.worker("w9")) <= TTL
    signal = signals.parse(db.client.lindex(db.keys.wake, -1))  # type: ignore[arg-type]
    assert signal is not None
    assert (signal.kind, signal.worker, signal.leased) == (signals.HEARTBEAT, "w9", 0)
    assert WorkerInfo.from_blob(signal.blob) == info


def test_heartbeat_reports_how_many_tasks_the_worker_holds(db: Db) -> None:
    db.put_task("a")
    db.put_task("b")
    db.lease("a", "b")
    assert db.scripts.heartbeat(W, b"info", TTL)[:2] == (True, 2)
    assert db.wake()[-1] == f"h|{W}|2|info"


def test_a_light_beat_dates_the_worker_without_a_signal(db: Db) -> None:
    db.scripts.heartbeat(W, b"info", TTL)
    wake = db.wake()
    assert db.scripts.keep_alive(W, 123_456) is True
    assert db.client.zscore(db.keys.workers, W) == 123_456
    assert db.wake() == wake


def test_a_light_beat_of_a_reaped_worker_says_it_must_register_again(db: Db) -> None:
    db.client.zrem(db.keys.workers, W)  # reaped
    assert db.scripts.keep_alive(W, 1) is False


def test_heartbeat_trims_the_wake_list_to_its_cap(db: Db) -> None:
    db.client.rpush(db.keys.wake, *["s"] * WAKE_CAP)
    db.scripts.heartbeat(W, b"info", TTL)
    assert db.client.llen(db.keys.wake) == WAKE_CAP
    assert db.client.lindex(db.keys.wake, -1) == f"h|{W}|0|info".encode()
