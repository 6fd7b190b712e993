"""Registering a schedule and firing it (balancer.schedule_store, balancer.schedule_fire,
schedule_put.lua, schedule_fire.lua) on fakeredis: what a run is made of, and the fences
that keep a due time from firing twice. Processes and leader kills: the integration
tests (tests/integration/test_schedules.py)."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from balancer.common import codec, signing
from balancer.common.codec import UpstreamRef
from balancer.common.keys import Keys
from balancer.common.scripts import Scripts
from balancer.common.settings import Settings

from balancer import Flow, Parameter, task
from balancer.parameter import bind
from balancer.schedule_fire import Firer, NotLeader
from balancer.schedule_store import ScheduleRecord, instantiate, read_all, register, remove
from balancer.schedules import IntervalSchedule, from_ms
from balancer.scheduling import task_score
from balancer.setaside import SetAside
from balancer.submit import submit_flow

KEY = "a-signing-key-of-enough-length"


@task
def fetch(n: int) -> int:
    return n


@task(priority=3, queue_name="cpu")
def crunch(x: int, scale: int = 1) -> int:
    return x * scale


@task
def report(*values: Any) -> None:
    return None


def a_flow() -> Flow:
    with Flow("nightly") as flow:
        n = Parameter("n", default=1)
        x = fetch(n)
        y = crunch(x, scale=n)
        report([x, {"y": y}], upstream_tasks=[fetch])
    return flow


class Setup:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self.scripts = Scripts(client, self.keys)
        self.token = self.scripts.lead("d1", 60_000).token or ""
        self.firer = Firer(client, self.keys, self.scripts, settings,
                           SetAside(self.scripts, lambda: 0.0))

    def register(self, flow: Flow | None = None, seconds: float = 1, **params: Any
                 ) -> tuple[str, int]:
        sid, due, _ = register(self.client, self.settings, flow or a_flow(),
                               IntervalSchedule(interval=seconds), None, params or None)
        return sid, due

    def record(self, sid: str) -> ScheduleRecord:
        score = self.client.zscore(self.keys.schedules, sid)
        return ScheduleRecord.parse(sid, self.client.hgetall(self.keys.schedule(sid)),
                                    float(score if score is not None else "nan"))

    def runs(self) -> list[dict[str, Any]]:
        """Every flow run of the namespace, as its record's fields."""
        out = []
        for flow_id in self.client.zrange(self.keys.flows, 0, -1):
            raw = self.client.hgetall(self.keys.flow(flow_id.decode()))
            out.append({k.decode(): v for k, v in raw.items()})
        return out

    def task(self, task_id: str) -> dict[str, bytes]:
        return {k.decode(): v for k, v in self.client.hgetall(self.keys.task(task_id)).items()}


@pytest.fixture
def setup(fake: redis.Redis) -> Setup:
    return Setup(fake, Settings(namespace="ns", schedule_catchup=10))


def test_a_fired_run_is_the_flows_records_with_new_ids_and_scores_of_its_time(
        setup: Setup) -> None:
    sid, due = setup.register(n=7)
    template_ids = [str(t[0]) for t in codec.unpack(setup.record(sid).template)["tasks"]]
    now = due + 250
    assert setup.firer.fire_due(setup.token, now) == due + 1000

    [run] = setup.runs()
    assert run["schedule"] == b"nightly" and int(run["scheduled"]) == due
    assert int(run["created"]) == now and run["state"] == b"running"
    flow_id = run["id"].decode()
    tasks = {name: tid for tid, name in codec.unpack(run["tasks"])}
    assert set(tasks) == {"fetch", "crunch", "report"}
    assert not set(tasks.values()) & set(template_ids)
    fetched, crunched, reported = (setup.task(tasks[n]) for n in ("fetch", "crunch", "report"))
    for record in (fetched, crunched, reported):
        assert record["flow"].decode() == flow_id
        for tid in template_ids:  # in no field: every id in it is this run's
            assert all(tid.encode() not in v for v in record.values())
    # the parameter was bound at registration; upstream references name this run's tasks
    assert codec.unpack(fetched["args"]) == [[7], {}]
    assert codec.unpack(crunched["args"]) == [[UpstreamRef(tasks["fetch"])], {"scale": 7}]
    assert codec.unpack(reported["args"]) == [[[UpstreamRef(tasks["fetch"]),
                                                {"y": UpstreamRef(tasks["crunch"])}]], {}]
    children = {c[0]: c for c in codec.unpack(fetched["children"])}
    assert set(children) == {tasks["crunch"], tasks["report"]}
    aging = setup.settings.aging_seconds * 1000
    assert float(crunched["score"]) == task_score(now, 3, aging)
    assert children[tasks["crunch"]][1:] == ["cpu", task_score(now, 3, aging)]
    # ready tasks queued, the dispatcher told, the schedule's history written
    assert setup.client.zrange(setup.keys.queue("default"), 0, -1) == [tasks["fetch"].encode()]
    assert setup.client.lrange(setup.keys.wake, 0, -1)[-1] == b"s|cpu default"
    record = setup.record(sid)
    assert record.fired == 1 and record.last_flow == flow_id and record.last_due == due


def test_a_run_has_every_field_a_submit_of_the_same_flow_writes(setup: Setup) -> None:
    """A field someone adds to the submit reaches scheduled runs through the template;
    one holding ids would show up above as a template id left in a run."""
    setup.register()
    flow = a_flow()
    submit_flow(setup.client, setup.settings, flow, bind(flow.name, flow.parameters, None))
    due = setup.client.zscore(setup.keys.schedules, "nightly")
    setup.firer.fire_due(setup.token, int(due or 0))
    by_name: dict[str, dict[str, set[str]]] = {}
    for run in setup.runs():
        kind = "scheduled" if "schedule" in run else "submitted"
        for tid, name in codec.unpack(run["tasks"]):
            by_name.setdefault(name, {})[kind] = set(setup.task(tid))
        fields = set(run) - {"schedule", "scheduled"}
        by_name.setdefault("(flow)", {}).setdefault(kind, fields)
    assert set(by_name) == {"fetch", "crunch", "report", "(flow)"}
    for name, kinds in by_name.items():
        assert kinds["scheduled"] == kinds["submitted"], name


def test_a_run_keeps_its_flow_s_reference_tasks_and_parameters(setup: Setup) -> None:
    """A scheduled run of a flow judged by its reference tasks is judged so too (the
    template kept only the tasks: its runs failed with any task), and its tasks read the
    parameters bound at registration."""
    flow = a_flow()
    flow.set_reference_tasks([fetch])
    _, due = setup.register(flow, n=7)
    setup.firer.fire_due(setup.token, due)
    [run] = setup.runs()
    assert run["refs"] == b"1"
    assert codec.unpack(run["params"]) == {"n": 7}


def test_a_due_time_fires_once_whoever_tries_it_again(setup: Setup) -> None:
    sid, due = setup.register()
    record = setup.record(sid)
    run = instantiate(record, due, due, setup.settings)
    assert setup.scripts.schedule_fire(setup.token, sid, due, due + 1000, record.version,
                                       run) == 1
    # a second leader that read the schedule before the first fired it: refused
    again = instantiate(record, due, due, setup.settings)
    assert setup.scripts.schedule_fire(setup.token, sid, due, due + 1000, record.version,
                                       again) == 0
    assert not setup.client.exists(setup.keys.flow(again.flow_id))
    assert len(setup.runs()) == 1


def test_a_dispatcher_that_lost_the_lead_fires_nothing(setup: Setup) -> None:
    sid, due = setup.register()
    setup.client.delete(setup.keys.leader)
    setup.scripts.lead("d2", 60_000)
    with pytest.raises(NotLeader):
        setup.firer.fire_due(setup.token, due + 10)
    assert setup.runs() == [] and setup.client.zscore(setup.keys.schedules, sid) == due


def test_a_schedule_registered_again_meanwhile_is_read_anew_before_it_fires(
        setup: Setup) -> None:
    sid, due = setup.register(n=1)
    stale = setup.record(sid)
    setup.register(n=2)  # same clocks: the due time is kept, the version moves on
    run = instantiate(stale, due, due, setup.settings)
    assert setup.scripts.schedule_fire(setup.token, sid, due, due + 1000, stale.version,
                                       run) == 0
    setup.firer.fire_due(setup.token, due)
    [run_record] = setup.runs()
    fetch_id = next(t for t, n in codec.unpack(run_record["tasks"]) if n == "fetch")
    assert codec.unpack(setup.task(fetch_id)["args"]) == [[2], {}]


def test_registering_the_same_clocks_keeps_the_due_time_and_other_clocks_reset_it(
        setup: Setup) -> None:
    sid, due = setup.register(seconds=3600)
    setup.client.zadd(setup.keys.schedules, {sid: due - 5})  # as a fire would leave it
    assert setup.register(seconds=3600)[1] == due - 5
    assert setup.register(seconds=60)[1] != due - 5


def test_due_times_older_than_the_window_are_skipped_and_the_rest_fire(setup: Setup) -> None:
    sid, due = setup.register()
    now = due + 30_000  # 30 s later, with a 10 s window
    setup.firer.fire_due(setup.token, now)
    fired = sorted(int(r["scheduled"]) for r in setup.runs())
    assert fired == list(range(due + 20_000, now + 1, 1000))
    record = setup.record(sid)
    assert record.skipped == 20 and record.fired == 11 and record.next_due == now + 1000


def test_a_schedule_past_its_end_date_stays_listed_as_ended(setup: Setup) -> None:
    now_s, _ = setup.client.time()
    end = from_ms((now_s + 3) * 1000)
    sid, due, _ = register(setup.client, setup.settings, a_flow(),
                           IntervalSchedule(interval=1, end_date=end))
    setup.firer.fire_due(setup.token, due + 60_000)
    assert setup.record(sid).next_due == float("inf")
    assert setup.firer.fire_due(setup.token, due + 120_000) is None
    assert len(setup.runs()) <= 4
    [(listed, record)] = read_all(setup.client, setup.keys)
    assert listed == sid and isinstance(record, ScheduleRecord)


def test_with_signing_runs_are_signed_and_a_changed_template_is_set_aside(
        fake: redis.Redis) -> None:
    setup = Setup(fake, Settings(namespace="ns", signing_keys=KEY))
    sid, due = setup.register()
    setup.firer.fire_due(setup.token, due)
    signer = signing.signer(KEY)
    assert signer is not None
    [run] = setup.runs()
    for tid, _ in codec.unpack(run["tasks"]):
        r = setup.task(tid)
        timeout = float(r["timeout"]) if "timeout" in r else None
        message = signing.spec_message(tid, r["flow"].decode(), r["queue"].decode(), timeout,
                                       r["fn"].decode(), r["name"].decode(),
                                       r.get("children", b""), r["args"])
        assert signer.verify(message, r["sig"])
    # someone without the key rewrites the template: never fired, set aside
    template = codec.unpack(fake.hget(setup.keys.schedule(sid), "template") or b"")
    template["tasks"][0][2]["fn"] = "os:system"
    fake.hset(setup.keys.schedule(sid), "template", codec.pack(template))
    setup.firer.fire_due(setup.token, due + 1000)
    assert len(setup.runs()) == 1
    assert fake.zscore(setup.keys.schedules, sid) is None
    [entry] = fake.hvals(setup.keys.aside)
    assert b"does not match its template" in entry


def test_a_dispatcher_without_the_key_does_not_fire_a_signed_schedule_unsigned(
        fake: redis.Redis) -> None:
    signed = Setup(fake, Settings(namespace="ns", signing_keys=KEY))
    sid, due = signed.register()
    fake.hset(signed.keys.schedule(sid), "sig", "")
    signed.firer.fire_due(signed.token, due)
    assert signed.runs() == []
    assert b"carries no signature" in fake.hvals(signed.keys.aside)[0]


def test_a_schedule_without_a_record_is_set_aside_and_the_others_fire(setup: Setup) -> None:
    _, due = setup.register()
    setup.client.zadd(setup.keys.schedules, {"ghost": due - 100})
    setup.firer.fire_due(setup.token, due)
    assert len(setup.runs()) == 1
    assert setup.client.zscore(setup.keys.schedules, "ghost") is None
    assert b"has no record" in setup.client.hvals(setup.keys.aside)[0]


def test_removing_a_schedule_says_whether_there_was_one(setup: Setup) -> None:
    sid, _ = setup.register()
    assert remove(setup.client, setup.keys, sid)
    assert not remove(setup.client, setup.keys, sid)
    assert read_all(setup.client, setup.keys) == []


def test_registering_refuses_what_it_cannot_run_before_writing_anything(setup: Setup) -> None:
    from balancer import FlowError
    from balancer.schedules import ScheduleError

    with pytest.raises(FlowError, match="no parameter m"):
        setup.register(m=1)
    with pytest.raises(ScheduleError, match="schedule id 'a b'"):
        register(setup.client, setup.settings, a_flow(), IntervalSchedule(interval=1), "a b")
    with pytest.raises(ScheduleError, match="must be an IntervalSchedule"):
        register(setup.client, setup.settings, a_flow(), "*/5 * * * *")  # type: ignore[arg-type]
    with pytest.raises(ScheduleError, match="no due time after now"):
        register(setup.client, setup.settings, a_flow(),
                 IntervalSchedule(from_ms(0), 1, from_ms(1000)))
    assert setup.client.zcard(setup.keys.schedules) == 0
    with pytest.raises(FlowError, match="has no schedule"):
        a_flow().register_schedule(client=setup.client, namespace="ns")


def test_prefect_1s_register_hands_a_scheduled_flow_to_the_cluster(setup: Setup) -> None:
    """flow.register(project_name=..., labels=...), as a Prefect 1 script ends: the
    flow's schedule is registered (before: AttributeError); one with none is refused."""
    from balancer import FlowError

    scheduled = a_flow()
    scheduled.schedule = IntervalSchedule(interval=60)
    sid = scheduled.register(project_name="etl", labels=["prod"], client=setup.client,
                             namespace="ns")
    assert sid == "nightly" and setup.client.zscore(setup.keys.schedules, sid) is not None
    with pytest.raises(FlowError, match=r"run it with flow\.run"):
        a_flow().register(project_name="etl", client=setup.client, namespace="ns")


def test_the_dispatcher_learns_of_a_new_schedule_from_its_signal_and_fires_it_when_due(
        fake: redis.Redis) -> None:
    from balancer.dispatcher import Dispatcher

    settings = Settings(namespace="ns", dispatch_tick=0.01)
    dispatcher = Dispatcher(fake, settings, dispatcher_id="d1")
    dispatcher.step()  # leads, and finds no schedule
    assert dispatcher.token is not None and dispatcher._schedules_due is None
    sid, due, _ = register(fake, settings, a_flow(), IntervalSchedule(interval=3600))
    dispatcher.step()  # the signal: read the schedules again, at once
    assert dispatcher._schedules_due == due
    # due now, at a time not of whole milliseconds (as by hand): fired all the same
    fake.zadd(Keys("ns").schedules, {sid: dispatcher.redis_now_ms() - 5.5})
    dispatcher._schedules_at = None
    dispatcher.step()
    assert fake.zcard(Keys("ns").flows) == 1
    [(_, record)] = read_all(fake, Keys("ns"))
    assert isinstance(record, ScheduleRecord) and record.fired == 1


def test_a_leader_stopped_between_deciding_and_writing_leaves_the_due_time_to_the_next(
        setup: Setup) -> None:
    sid, due = setup.register()
    record = setup.record(sid)
    decided = instantiate(record, due, due, setup.settings)  # then it stalls, or dies
    setup.client.delete(setup.keys.leader)  # its lease ran out
    successor = setup.scripts.lead("d2", 60_000).token or ""
    setup.firer.fire_due(successor, due + 1500)
    assert sorted(int(r["scheduled"]) for r in setup.runs()) == [due, due + 1000]
    # the first leader wakes and writes what it had decided: refused, nothing written
    assert setup.scripts.schedule_fire(setup.token, sid, due, due + 1000, record.version,
                                       decided) == -1
    assert not setup.client.exists(setup.keys.flow(decided.flow_id))
    assert len(setup.runs()) == 2


def test_a_schedule_whose_record_is_a_key_of_the_wrong_type_is_set_aside(
        setup: Setup) -> None:
    _, due = setup.register()
    setup.client.zadd(setup.keys.schedules, {"broken": due - 100})
    setup.client.set(setup.keys.schedule("broken"), "not a hash")
    setup.firer.fire_due(setup.token, due)
    assert len(setup.runs()) == 1
    assert setup.client.zscore(setup.keys.schedules, "broken") is None
    assert b"firing it failed" in setup.client.hvals(setup.keys.aside)[0]


def test_a_run_fired_while_its_queue_key_is_of_another_type_waits_parked(
        setup: Setup) -> None:
    """The due time fires once, its run is written whole, and its ready task waits in the
    delayed set until the queue key is fixed (promote.lua), instead of the script
    stopping after the records, the due time spent and the run never started."""
    sid, due = setup.register()
    record = setup.record(sid)
    run = instantiate(record, due, due, setup.settings)
    setup.client.set(setup.keys.queue("default"), "a string, not a queue")
    assert setup.scripts.schedule_fire(setup.token, sid, due, due + 1000, record.version,
                                       run) == 1
    [flow] = setup.runs()
    ready = [t.decode() for t in setup.client.zrange(setup.keys.delayed, 0, -1)]
    assert len(ready) == 1 and setup.task(ready[0])[
        "flow"].decode() == flow["id"].decode()
    assert b"r" in setup.client.lrange(setup.keys.wake, 0, -1)
    setup.client.delete(setup.keys.queue("default"))  # the operator fixes it
    setup.client.zadd(setup.keys.delayed, {ready[0]: 0})
    assert setup.scripts.promote([(ready[0], "default")]) == 1
    assert setup.client.zrange(setup.keys.queue("default"), 0, -1) == [ready[0].encode()]
