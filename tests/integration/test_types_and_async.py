"""Arguments and results beyond plain msgpack (datetime, date, time, timedelta, Decimal,
UUID, dataclasses, NamedTuples, registered types) and ``async def`` tasks, through a real
dispatcher and real worker processes of both pools."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import redis

from balancer import Flow, FlowError
from tests.conftest import Processes
from tests.integration import typed_tasks as tt

VALUES = {
    "naive datetime": (dt.datetime(2024, 2, 29, 23, 59, 58, 123456), "datetime"),
    "aware datetime": (dt.datetime(2024, 7, 1, 12, 0, tzinfo=ZoneInfo("Europe/Paris")),
                       "datetime"),
    "utc datetime": (dt.datetime(2024, 7, 1, 12, 0, tzinfo=dt.timezone.utc), "datetime"),
    "date": (dt.date(1999, 12, 31), "date"),
    "time": (dt.time(23, 1, 2, 3), "time"),
    "timedelta": (dt.timedelta(days=-2, seconds=7, microseconds=11), "timedelta"),
    "decimal": (Decimal("12345678901234567890.000000001"), "Decimal"),
    "uuid": (uuid.UUID("12345678-1234-5678-1234-567812345678"), "UUID"),
    "registered dataclass": (tt.Money(Decimal("9.99"), "EUR"), "Money"),
    "set": ({3, "a", (1, ("b", 2))}, "set"),
    "frozenset": (frozenset({dt.date(2024, 1, 1), frozenset({1})}), "frozenset"),
}


@pytest.fixture(params=["process", "thread"])
def cluster(request: pytest.FixtureRequest, procs: Processes) -> Iterator[str]:
    procs.serve()
    procs.worker("--pool", request.param, "--concurrency", "2",
                 "--import", "tests.integration.typed_tasks")
    yield request.param


def _run(flow: Flow, real: redis.Redis, namespace: str):  # type: ignore[no-untyped-def]
    return flow.run(timeout=60, client=real, namespace=namespace, quiet=True)


def test_each_type_reaches_the_worker_as_itself_and_comes_back(
        cluster: str, real: redis.Redis, namespace: str) -> None:
    with Flow("types") as flow:
        calls = {label: tt.echo(value) for label, (value, _) in VALUES.items()}
    run = _run(flow, real, namespace)
    assert run.state == "completed", run.first_failure()
    for label, (value, type_name) in VALUES.items():
        back, seen_as = run.result(calls[label])
        assert seen_as == type_name, label
        assert back == value and type(back) is type(value), label
    aware, _ = run.result(calls["aware datetime"])
    assert aware.utcoffset() == dt.timedelta(hours=2)  # the offset of that instant


def test_dataclasses_and_namedtuples_arrive_as_dicts(
        cluster: str, real: redis.Redis, namespace: str) -> None:
    with Flow("as dicts") as flow:
        pair = tt.echo(tt.Pair(1, "one"))
        point = tt.point(3, 4)
        passed_on = tt.echo(point)  # a result of a dataclass, passed to the next task
    run = _run(flow, real, namespace)
    assert run.result(pair) == [{"left": 1, "right": "one"}, "dict"]
    assert run.result(point) == {"x": 3, "y": 4}
    assert run.result(passed_on) == [{"x": 3, "y": 4}, "dict"]


def test_async_tasks_run_to_their_result_with_timeout_and_errors(
        cluster: str, real: redis.Redis, namespace: str) -> None:
    with Flow("async") as flow:
        doubled = tt.async_double(21)
        chained = tt.async_double(doubled)
        hangs = tt.async_hangs()
        raises = tt.async_raises()
    run = _run(flow, real, namespace)
    assert run.result(doubled) == 42
    assert run.result(chained) == 84
    assert run.task_state(hangs) == "failed"
    error = run.error(hangs)
    assert error is not None and "TimeoutError" in error.type
    error = run.error(raises)
    assert error is not None and error.type == "ValueError" and error.message == "async boom"


def test_a_slot_runs_its_async_tasks_on_one_event_loop(
        cluster: str, real: redis.Redis, namespace: str) -> None:
    """One slot (concurrency 2, tasks one after another): at most two loops for ten tasks."""
    with Flow("loops") as flow:
        previous = None
        loops = []
        for _ in range(10):
            call = tt.same_loop(upstream_tasks=[previous] if previous else [])
            loops.append(call)
            previous = call
    run = _run(flow, real, namespace)
    assert len({run.result(call) for call in loops}) <= 2


def test_an_unknown_type_is_refused_at_submit_naming_the_argument(
        real: redis.Redis, namespace: str) -> None:
    with Flow("bad") as flow:
        tt.echo(value=1 + 2j)
    with pytest.raises(FlowError, match=r"'echo'.*keyword 'value'.*complex"):
        flow.submit(client=real, namespace=namespace)
    assert not real.keys(f"{{{namespace}}}:*")  # nothing written
