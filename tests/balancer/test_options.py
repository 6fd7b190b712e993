"""Options are refused where they are given (decoration, Queue(...), the CLI, a wait) and
again at submit, before anything is written: a value Redis or Lua cannot take must not
leave half a flow behind it (fakeredis; tests/integration/test_atomic_submit.py does the
same on the real Redis)."""

from __future__ import annotations

import enum
import math
from datetime import datetime, timedelta, timezone
from fractions import Fraction
from typing import Any

import pytest
import redis
from balancer.common.keys import Keys
from balancer.common.settings import Settings
from click.testing import CliRunner

from balancer import Flow, FlowError, Queue, task
from balancer.cli import main as balancer_cli
from balancer.options import PRIORITY_LIMIT, RETRIES_LIMIT, SECONDS_LIMIT, start_ms
from balancer.submit import submit_flow
from balancer.task import Task

NAN, INF = math.nan, math.inf


@task
def step(x: Any = None) -> Any:
    return x


def nothing_written(client: redis.Redis, namespace: str) -> bool:
    return not list(client.scan_iter(match=Keys(namespace).prefix + "*"))


def one_step_flow(node_task: Task = step, n: int = 1) -> Flow:
    with Flow("options") as flow:
        for i in range(n):
            node_task(i)
    return flow


# -- at decoration -------------------------------------------------------------------


@pytest.mark.parametrize(("option", "value"), [
    ("priority", NAN), ("priority", INF), ("priority", -INF), ("priority", 1.5),
    ("priority", True), ("priority", "3"), ("priority", PRIORITY_LIMIT + 1),
    ("priority", -PRIORITY_LIMIT - 1), ("priority", 10**20),
    ("retries", NAN), ("retries", 1.5), ("retries", 2.0), ("retries", True),
    ("retries", RETRIES_LIMIT + 1),
    ("retry_delay", NAN), ("retry_delay", INF), ("retry_delay", True),
    ("retry_delay", SECONDS_LIMIT * 10),
    ("timeout", NAN), ("timeout", INF), ("timeout", -INF), ("timeout", False),
    ("timeout", SECONDS_LIMIT * 10),
], ids=repr)
def test_a_task_option_redis_cannot_take_is_refused_at_decoration_naming_task_and_option(
        option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"task 'fetch': {option} must"):
        task(name="fetch", **{option: value})(lambda: None)


def test_a_non_finite_option_says_it_must_be_finite() -> None:
    with pytest.raises(ValueError, match="priority must be a finite integer, got nan"):
        task(name="fetch", priority=NAN)(lambda: None)
    with pytest.raises(ValueError, match="timeout must be a finite number, got inf"):
        task(name="fetch", timeout=INF)(lambda: None)


@pytest.mark.parametrize("options", [
    {"priority": PRIORITY_LIMIT}, {"priority": -PRIORITY_LIMIT}, {"retries": RETRIES_LIMIT},
    {"retry_delay": SECONDS_LIMIT, "timeout": SECONDS_LIMIT}, {"retry_delay": 0},
    {"timeout": 0.001},
], ids=repr)
def test_options_at_their_bounds_are_accepted(options: dict[str, Any]) -> None:
    made = task(**options)(lambda: None)
    assert all(getattr(made, k) == v for k, v in options.items())


class Level(enum.IntEnum):
    HIGH = 2


def test_numbers_of_other_types_are_stored_as_plain_int_and_float() -> None:
    """redis-py sends an int subclass as its repr ("<Level.HIGH: 2>") and refuses other
    numbers (a numpy int, a Fraction): each is converted."""
    made = task(priority=Level.HIGH, retry_delay=Fraction(1, 4), timeout=Fraction(3))
    made = made(lambda: None)
    assert (made.priority, made.retry_delay, made.timeout) == (2, 0.25, 3.0)
    assert (type(made.priority), type(made.retry_delay), type(made.timeout)) == (
        int, float, float)


# -- queues ----------------------------------------------------------------------------


@pytest.mark.parametrize(("option", "value"), [
    ("priority", NAN), ("priority", INF), ("priority", 2.5), ("priority", True),
    ("priority", PRIORITY_LIMIT + 1), ("concurrency_limit", NAN),
    ("concurrency_limit", INF), ("concurrency_limit", 1.5), ("concurrency_limit", True),
    ("concurrency_limit", 0), ("concurrency_limit", 2**60),
], ids=repr)
def test_a_queue_setting_the_dispatcher_cannot_read_is_refused_naming_queue_and_setting(
        option: str, value: Any) -> None:
    with pytest.raises(ValueError, match=rf"queue 'reports': {option} must"):
        Queue("reports", **{option: value})


@pytest.mark.parametrize("args", [
    ["--priority", "nan"], ["--priority", "inf"], ["--priority", "1.5"],
    ["--priority", str(PRIORITY_LIMIT + 1)], ["--concurrency-limit", "nan"],
    ["--concurrency-limit", "0"],
], ids=" ".join)
def test_balancer_queue_set_refuses_a_setting_out_of_bounds_before_connecting(
        args: list[str]) -> None:
    result = CliRunner().invoke(balancer_cli, ["queue", "set", "reports", *args,
                                               "--redis-url", "redis://127.0.0.1:1/0"])
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output


# -- at submit -------------------------------------------------------------------------


@pytest.mark.parametrize(("option", "value"), [
    ("priority", NAN), ("timeout", NAN), ("retries", 1.5), ("retry_delay", INF),
    ("priority", 10**20), ("queue_name", "has space"),
], ids=repr)
@pytest.mark.parametrize("n", [1, 40], ids=["small-submit", "large-submit"])
def test_an_option_set_after_decoration_is_refused_at_submit_and_nothing_is_written(
        fake: redis.Redis, settings: Settings, option: str, value: Any, n: int) -> None:
    changed = task(name="changed")(step.fn)
    setattr(changed, option, value)
    with pytest.raises(FlowError, match=rf"task 'changed': {option}"):
        submit_flow(fake, settings, one_step_flow(changed, n))
    assert nothing_written(fake, settings.namespace)


@pytest.mark.parametrize(("option", "value"), [
    ("priority", True), ("priority", NAN), ("retries", 1.5), ("timeout", -1.0),
    ("queue_name", "has space"),
], ids=repr)
def test_an_option_changed_after_a_submit_is_checked_again_at_the_next(
        fake: redis.Redis, settings: Settings, option: str, value: Any) -> None:
    """A submit keeps the options it found good (Task.check), so that the next submit of
    the same task need not check them again: one changed since, even to a value equal to
    the good one (True == 1), is checked and refused."""
    changed = task(name="changed", priority=1, retries=1, timeout=1.0)(step.fn)
    submit_flow(fake, settings, one_step_flow(changed))
    before = set(fake.scan_iter(match=Keys(settings.namespace).prefix + "*"))
    setattr(changed, option, value)
    with pytest.raises(FlowError, match=rf"task 'changed': {option}"):
        submit_flow(fake, settings, one_step_flow(changed))
    assert set(fake.scan_iter(match=Keys(settings.namespace).prefix + "*")) == before


def test_a_queue_setting_changed_after_construction_is_refused_at_submit(
        fake: redis.Redis, settings: Settings) -> None:
    queue = Queue("reports", priority=1)
    object.__setattr__(queue, "priority", NAN)  # a frozen dataclass, forced
    flow = Flow("queued")
    flow.add_task(step, queue=queue)
    with pytest.raises(FlowError, match="queue 'reports': priority"):
        submit_flow(fake, settings, flow)
    assert nothing_written(fake, settings.namespace)


def test_a_priority_whose_score_redis_would_round_is_refused_at_submit(
        fake: redis.Redis, settings: Settings) -> None:
    """Within bounds, but with a huge BALANCER_AGING_SECONDS one level is worth more
    than a double counts exactly: tasks a millisecond apart would swap places."""
    urgent = task(name="urgent", priority=PRIORITY_LIMIT)(step.fn)
    with pytest.raises(FlowError, match=r"task 'urgent': priority 1000 .*\(2\*\*53\)"):
        submit_flow(fake, settings.replace(aging_seconds=1e12), one_step_flow(urgent))
    assert nothing_written(fake, settings.namespace)


@pytest.mark.parametrize("timeout", [NAN, INF, -1.0, "10"], ids=repr)
def test_flow_run_refuses_a_timeout_it_cannot_wait_for_before_submitting(
        fake: redis.Redis, settings: Settings, timeout: Any) -> None:
    with pytest.raises(ValueError, match="flow 'options': run: timeout must"):
        one_step_flow().run(timeout, client=fake, namespace=settings.namespace)
    assert nothing_written(fake, settings.namespace)


def test_waiting_on_a_run_with_a_nan_timeout_is_refused_instead_of_waiting_for_ever(
        fake: redis.Redis, settings: Settings) -> None:
    run = submit_flow(fake, settings, one_step_flow())
    with pytest.raises(ValueError, match="wait: timeout must be a finite number"):
        run.wait(NAN)


NOW_MS = 1_800_000_000_000


@pytest.mark.parametrize(("delay", "eta", "start"), [
    (None, None, None),
    (0, None, None),  # no delay: at once
    (1.5, None, NOW_MS + 1500),
    (timedelta(minutes=1), None, NOW_MS + 60_000),
    (None, datetime.fromtimestamp(NOW_MS / 1000 + 30, timezone.utc), NOW_MS + 30_000),
    (None, datetime.fromtimestamp(NOW_MS / 1000 - 30, timezone.utc), None),  # past: at once
])
def test_a_runs_start_is_its_delay_from_now_or_its_eta(
        delay: object, eta: object, start: int | None) -> None:
    assert start_ms("flow 'f'", delay, eta, NOW_MS) == start


def test_an_eta_in_another_zone_is_the_same_instant() -> None:
    paris = datetime.fromtimestamp(NOW_MS / 1000 + 5, timezone(timedelta(hours=1)))
    assert start_ms("flow 'f'", None, paris, NOW_MS) == NOW_MS + 5000
