"""When the dispatcher calls a silent worker dead: after its worker timeout, or after as
many of a slower worker's own beats (a worker configured apart from its dispatcher)."""

from __future__ import annotations

from balancer.common.models import WorkerInfo

from balancer.view import ClusterView, allowed_silence


def _view_of(beats: dict[str, float]) -> ClusterView:
    view = ClusterView(worker_timeout=3.0, heartbeat_interval=1.0)
    for wid, beat_s in beats.items():
        info = WorkerInfo(wid, ("default",), 1, beat_s=beat_s)
        view.heartbeat(wid, 0, info.to_blob(), now=100.0)
    return view


def test_a_worker_beating_slower_than_the_dispatcher_gets_as_many_of_its_beats() -> None:
    view = _view_of({"slow": 5.0, "usual": 1.0, "older-release": 0.0, "fast": 0.2})
    assert [w.id for w in view.overdue(104.0)] == ["usual", "older-release", "fast"]
    assert view.overdue(114.0) != [] and "slow" not in {w.id for w in view.overdue(114.0)}
    assert "slow" in {w.id for w in view.overdue(115.5)}


def test_the_silence_allowed_is_never_below_the_worker_timeout_nor_past_ten() -> None:
    assert allowed_silence(0.0, 3.0, 1.0) == 3.0
    assert allowed_silence(0.5, 3.0, 1.0) == 3.0
    assert allowed_silence(2.0, 3.0, 1.0) == 6.0
    # Saying it beats once an hour keeps a dead (or forged) worker's leases 30 s at most.
    assert allowed_silence(3600.0, 3.0, 1.0) == 30.0


def test_a_slow_beater_is_said_once_when_it_registers(caplog) -> None:  # type: ignore[no-untyped-def]
    view = _view_of({"slow": 5.0})
    info = WorkerInfo("slow", ("default",), 1, beat_s=5.0)
    view.heartbeat("slow", 0, info.to_blob(), now=101.0)
    said = [r.getMessage() for r in caplog.records if "beats every" in r.getMessage()]
    assert said == ["worker=slow beats every 5s, this dispatcher every 1s with a worker"
                    " timeout of 3s: it is called dead after 15s of silence; give the cluster"
                    " one BALANCER_HEARTBEAT_INTERVAL and BALANCER_WORKER_TIMEOUT"]


def test_a_worker_beating_past_the_bound_is_told_it_will_be_called_dead_between_beats(
        caplog) -> None:  # type: ignore[no-untyped-def]
    _view_of({"hourly": 3600.0})
    (said,) = [r.getMessage() for r in caplog.records if "beats every" in r.getMessage()]
    assert "called dead after 30s of silence (less than its beats take" in said
