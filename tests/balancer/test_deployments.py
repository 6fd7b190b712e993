"""What ``flow.to_deployment`` / ``flow.serve`` take and refuse, before anything runs
(balancer/deployments.py), and a run request as it travels."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis
from balancer.common import codec
from balancer.common.importpath import importing_tasks
from balancer.common.keys import Keys
from balancer.common.settings import Settings

from balancer import DeploymentError, flow
from balancer.deployments import Request, Served, check_name, served
from balancer.schedules import CronSchedule
from balancer.serving import Server


@flow
def etl(day: str = "mon", n: int = 1) -> int:
    return n


@flow(name="open")
def takes_any(**options: object) -> None:
    return None


def test_a_deployment_is_named_after_its_flow_and_keeps_its_schedule_and_parameters() -> None:
    dep = etl.to_deployment("nightly", cron="0 2 * * *", parameters={"day": "tue"})
    assert dep.full_name == "etl/nightly" and dep.parameters == {"day": "tue"}
    assert dep.schedule is not None and dep.describe() == "cron '0 2 * * *'"
    assert etl.to_deployment().full_name == "etl/etl"  # Prefect 3's default name
    assert etl.to_deployment(interval=timedelta(minutes=5)).describe() == "every 300s"
    assert etl.to_deployment(interval=[60, 90]).schedule is not None
    assert etl.to_deployment(schedule=CronSchedule("*/5 * * * *")).schedule is not None
    paused = etl.to_deployment("p", interval=60, paused=True)
    assert paused.describe().startswith("paused: ")
    assert etl.to_deployment("asked").describe() == "no schedule"
    assert takes_any.to_deployment(parameters={"whatever": 1}).parameters == {"whatever": 1}


@pytest.mark.parametrize("options, said", [
    ({"cron": "not a cron"}, "deployment etl/x: "),
    ({"cron": "* * * * *", "interval": 60}, "give one of interval, cron"),
    ({"interval": float("nan")}, "interval must be seconds"),
    ({"interval": "60"}, "interval must be seconds"),
    ({"rrule": "FREQ=DAILY"}, "rrule schedules are not taken"),
    ({"parameters": {"nope": 1}}, "takes no parameter nope .it takes day, n."),
    ({"parameters": {"day": object()}}, "must travel as msgpack"),
    ({"paused": "yes"}, "paused must be True or False"),
    ({"work_pool_name": "k8s"}, "work_pool_name not taken here"),
    ({"schedules": ["0 2 * * *"]}, "schedule.s. must be balancer.schedules' Schedule"),
])
def test_what_a_deployment_cannot_be_is_refused_naming_it(options: dict[str, object],
                                                          said: str) -> None:
    with pytest.raises(DeploymentError, match=said):
        etl.to_deployment("x", **options)


@pytest.mark.parametrize("name", ["etl", "a/b/c", "/x", "x/", "a|b/c", "etl/" + "x" * 300,
                                  "etl/new\nline"])
def test_a_deployment_name_is_flow_slash_name(name: str) -> None:
    with pytest.raises(DeploymentError, match="flow-name/deployment-name"):
        check_name(name)


def test_deploy_is_refused_saying_to_serve() -> None:
    with pytest.raises(NotImplementedError, match=r"etl.serve\(name=..., cron=...\)"):
        etl.deploy(name="k8s", work_pool_name="pool")


def test_serve_is_ignored_while_a_worker_imports_the_module(
        caplog: pytest.LogCaptureFixture) -> None:
    with importing_tasks():
        etl.serve(name="never", interval=1)  # returns at once: a worker must not block
    assert "serve ignored while a worker imports its module" in caplog.text


def test_a_run_request_round_trips_and_anything_else_is_no_request() -> None:
    request = Request("a" * 24, {"day": "wed"}, 123, "sig")
    assert Request.decode(request.encode()) == request
    for raw in (b"junk", codec.pack([1, 2]), codec.pack(["id", [1], 1, ""]),
                codec.pack(["id", {1: 2}, 1, ""])):
        with pytest.raises(ValueError, match="not a run request"):
            Request.decode(raw)


def test_a_serve_process_beats_what_it_serves_and_forgets_processes_long_gone(
        fake: redis.Redis) -> None:
    keys = Keys("ns")
    gone = Served("etl/old", "gone:1:abc", "etl", "every 60s", {}, "h", 1, seen_ms=1000)
    fake.hset(keys.deployments, "etl/old|gone:1:abc", gone.encode())
    server = Server([etl.to_deployment("x", interval=60, parameters={"n": 2},
                                       tags=["nightly"], version="3")], fake,
                    Settings(namespace="ns"))
    server._beat()
    [beat] = served(fake, keys)
    assert (beat.deployment, beat.server, beat.schedule, beat.parameters, beat.about) == (
        "etl/x", server.id, "every 60s", {"n": 2}, {"tags": ["nightly"], "version": "3"})
    with pytest.raises(ValueError, match="limit must be a whole number of runs"):
        Server([etl.to_deployment("x")], fake, Settings(namespace="ns"), limit=0)
    with pytest.raises(ValueError, match="distinct names"):
        Server([etl.to_deployment("x"), etl.to_deployment("x")], fake, Settings())


def test_prefect_3_s_cron_and_interval_schedules_are_taken() -> None:
    from datetime import datetime

    from balancer.schedules import Cron, Interval, ScheduleError

    dep = etl.to_deployment("tz", schedules=[Cron("0 9 * * *", timezone="Europe/Paris"),
                                             Interval(3600)])
    assert dep.describe() == "cron '0 9 * * *' Europe/Paris + every 3600s"
    hourly = Interval(timedelta(hours=1), anchor_date=datetime(2026, 1, 1, 0, 30),
                      timezone="Europe/Paris")
    assert [d.minute for d in hourly.next(2, after=datetime(2026, 6, 1))] == [30, 30]
    with pytest.raises(ScheduleError, match="day_or=False"):
        Cron("0 9 * * 1", day_or=False)
