"""Prefect 2/3 snippets, written as Prefect's documentation writes them, with only the
import changed (``from prefect import flow, task, unmapped`` -> ``from balancer ...``).

``main()`` runs each and prints what it gave as JSON, for tests/integration/
test_prefect_dynamic.py to check against Prefect's documented results, once on the
embedded cluster and once on a real one. Workers import this module for its tasks.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import sys
import time
from typing import Any

import redis

from balancer import (
    allow_failure,
    flow,
    get_run_context,
    get_run_logger,
    quote,
    runtime,
    task,
    unmapped,
)
from balancer.states import Completed, Failed
from balancer.tasks import task_input_hash

# -- tasks ---------------------------------------------------------------------------------


@task
def add_one(x: int) -> int:
    get_run_logger().info("adding one to %s", x)
    return x + 1


@task
def add(x: int, y: int) -> int:
    return x + y


@task
def is_even(x: int) -> bool:
    return x % 2 == 0


@task
def double(x: int) -> int:
    return 2 * x


@task
def total(values: list[int]) -> int:
    return sum(values)


@task
def fails(message: str) -> None:
    raise ValueError(message)


@task(retries=2, retry_delay_seconds=[0.01, 0.02])  # a list: one delay per retry
def flaky(url: str, key: str) -> int:
    """Fails on its first two runs (counted in Redis), then returns the count."""
    runs = redis.Redis.from_url(url).incr(key)
    if runs < 3:
        raise RuntimeError(f"run {runs} fails")
    return int(runs)


@task
def record(url: str, key: str, label: str) -> str:
    redis.Redis.from_url(url).rpush(key, label)
    return label


@task(timeout_seconds=0.5)
def too_slow() -> None:
    time.sleep(3)


@task
async def fetch(x: int) -> int:
    await asyncio.sleep(0.01)
    return x * 10


# -- flows ---------------------------------------------------------------------------------


@flow
def plain_call() -> int:
    logger = get_run_logger()
    result = add_one(1)
    logger.info("result: %s", result)
    return result


@flow(name="submit-and-result")
def submit_and_result() -> int:
    future = add_one.submit(1)
    return future.result()


@flow
def futures_as_arguments() -> int:
    a = add_one.submit(1)
    b = add_one.submit(a)  # waits for a, receives its result
    return add(a, b)  # plain call with futures: 2 + 3


@flow
def map_flow(nums: list[int]) -> list[int]:
    return add_one.map(nums).result()


@flow
def returns_futures(nums: list[int]) -> Any:
    return add_one.map(nums)  # the flow's value: the results


@flow
def returns_a_failed_future() -> Any:
    return {"bad": fails.submit("returned")}


@flow
def map_each_result(nums: list[int]) -> list[int]:
    futures = add_one.map(nums)
    return [f.result() for f in futures]


@flow
def map_unmapped() -> list[int]:
    return add.map([1, 2, 3], unmapped(10)).result()


@flow
def map_of_map() -> int:
    plus_one = add_one.map([1, 2, 3])
    plus_two = add_one.map(plus_one)
    return total(plus_two)  # a list of futures as an argument: their results, in order


@flow
def branching(x: int) -> int:
    if is_even(x):
        return double(x)
    return add_one(x)


@flow
def loop_until(target: int) -> list[int]:
    seen = []
    value = 0
    while value < target:
        value = add_one.submit(value).result()
        seen.append(value)
    return seen


@flow
def wait_for_order(url: str, key: str) -> list[str]:
    first = record.submit(url, key, "first")
    second = record.submit(url, key, "second", wait_for=[first])
    record.submit(url, key, "third", wait_for=[second]).wait()
    return [x.decode() for x in redis.Redis.from_url(url).lrange(key, 0, -1)]


@flow
def failure_as_state() -> dict[str, Any]:
    future = fails.submit("boom")
    state = future.wait()
    downstream = add_one.submit(future)
    down = downstream.wait()
    called = fails("again", return_state=True)
    return {"name": state.name if state else None, "failed": bool(state and state.is_failed()),
            "message": future.state.message, "downstream": down.name if down else None,
            "called": called.is_failed(),
            "raised": _raises(lambda: future.result())}


@task
def ends_failed() -> Any:
    return Failed(message="the task says no")


@task
def ends_completed() -> Any:
    return Completed(message="fine", data=7)


@flow
def returns_state_manually(ok: bool) -> Any:
    """Prefect's tutorial: a flow (and its tasks) returning the state to end in."""
    done = ends_completed.submit()
    refused = ends_failed(return_state=True)
    if ok:
        return Completed(message="I am happy with this result",
                         data=[done.result(), refused.is_failed(), refused.message])
    return Failed(message="How did this happen!?")


@flow
def quoted() -> Any:
    """quote(...): the argument is passed whole, never searched for futures."""
    squares = [i * i for i in range(3)]
    return [total(quote(squares)), total.submit(quote(squares)).result()]


@flow
def typo_in_a_call() -> Any:
    return add_one(1, 2)  # add_one takes one argument: refused at the call


@flow
def done_callbacks() -> Any:
    """future.add_done_callback(fn): fn(future) once the task has ended, failed ones
    too; one added to an ended future is called at once; one that raises is logged."""
    seen: list[Any] = []
    futures = [add_one.submit(1), fails.submit("no"), add_one.submit(10)]
    for future in futures:
        future.add_done_callback(lambda f: 1 / 0)  # logged; the others still called
        future.add_done_callback(lambda f: seen.append(f.state.name))
    for future in futures:
        future.wait()
    deadline = time.monotonic() + 10
    while len(seen) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    futures[0].add_done_callback(lambda f: seen.append("at once"))
    return sorted(seen[:3]) + seen[3:]


def _raises(fn: Any) -> str:
    try:
        fn()
    except Exception as exc:
        return type(exc).__name__
    return "nothing"


@flow
def raising_flow() -> None:
    add_one(1)
    raise KeyError("flow body failed")


ATTEMPTS = {"n": 0}


@flow(retries=2)
def flow_retries() -> int:
    ATTEMPTS["n"] += 1
    if ATTEMPTS["n"] < 3:
        raise RuntimeError(f"attempt {ATTEMPTS['n']}")
    return add_one(ATTEMPTS["n"])


@flow
def task_retries(url: str, key: str) -> int:
    return flaky(url, key)


@flow
def timed_out() -> str:
    return too_slow(return_state=True).message


@flow
def child(x: int) -> int:
    return add_one(x)


@flow(name="parent")
def parent() -> int:
    return child(1) + child(10)


@flow
def async_task_in_flow() -> list[int]:
    return [fetch(1), *fetch.map([2, 3]).result()]


@task
def pair(x: Any, y: Any) -> list[Any]:
    return [x, y]


@flow
def allow_failure_flow() -> dict[str, Any]:
    bad = fails.submit("boom")
    good = add_one.submit(1)
    both = pair.submit(allow_failure(bad), good)  # runs; the failed upstream gives None
    after = add_one.submit(10, wait_for=[allow_failure(bad)])
    blocked = add_one.submit(20, wait_for=[bad])
    state = blocked.wait()
    return {"both": both.result(), "after": after.result(),
            "blocked": state.name if state else None}


@flow
async def async_flow(n: int) -> list[int]:
    return list(await asyncio.gather(*[fetch(i) for i in range(1, n + 1)]))


@task(task_run_name="hello-{name}-on-{date:%A}")
def my_task(name: str, date: datetime.datetime) -> str | None:
    return runtime.task_run.name


@flow(flow_run_name="{name}-on-{date:%A}")
def named_runs(name: str, date: datetime.datetime) -> dict[str, Any]:
    return {"flow": runtime.flow_run.name, "task": my_task(name=name, date=date),
            "id": runtime.flow_run.id}


def static_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    # return a constant
    return "static cache key"


@task(cache_key_fn=static_cache_key)
def cached_task(url: str, key: str) -> int:
    """Prefect's documented static key: every call after the first reuses its result
    (the runs that happened are counted in Redis)."""
    return int(redis.Redis.from_url(url).incr(key))


@flow
def test_caching(url: str, key: str) -> list[int]:
    return [cached_task(url, key), cached_task(url, key), cached_task(url, key)]


def cache_within_flow_run(context: Any, parameters: dict[str, Any]) -> str:
    return f"{context.task_run.flow_run_id}-{task_input_hash(context, parameters)}"


@task(cache_key_fn=cache_within_flow_run)
def cached_within_run(url: str, key: str, x: int) -> int:
    redis.Redis.from_url(url).incr(key)
    return x * 2


@flow
def within_one_run(url: str, key: str) -> list[int]:
    return [cached_within_run(url, key, 1), cached_within_run(url, key, 1),
            cached_within_run(url, key, 2)]


@task
def context_of_task(x: int) -> list[Any]:
    ctx = get_run_context()
    return [ctx.task.name, ctx.task_run.id is not None, ctx.parameters]  # type: ignore[union-attr]


@flow
def run_context() -> dict[str, Any]:
    ctx = get_run_context()
    return {"flow": ctx.flow.name, "has_id": ctx.flow_run.id is not None,  # type: ignore[union-attr]
            "task": context_of_task(3)}


# -- the driver ----------------------------------------------------------------------------


def main() -> None:
    url = os.environ["TEST_REDIS_URL"]
    prefix = os.environ["TEST_KEY_PREFIX"]
    out: dict[str, Any] = {}
    out["plain_call"] = plain_call()
    out["submit_and_result"] = submit_and_result()
    out["futures_as_arguments"] = futures_as_arguments()
    out["map_flow"] = map_flow([1, 2, 3])
    out["map_each_result"] = map_each_result([10, 20])
    out["returns_futures"] = returns_futures([1, 2, 3])
    out["returns_a_failed_future"] = _raises(returns_a_failed_future)
    out["map_unmapped"] = map_unmapped()
    out["map_of_map"] = map_of_map()
    out["branching"] = [branching(4), branching(5)]
    state = loop_until(5, return_state=True)
    out["loop_until"] = {"result": state.result(), "id": state.flow_run_id,
                         "state": state.name}
    out["wait_for_order"] = wait_for_order(url, f"{prefix}order")
    out["failure_as_state"] = failure_as_state()
    out["raising_flow"] = _raises(raising_flow)
    failed = raising_flow(return_state=True)
    out["raising_state"] = {"failed": failed.is_failed(), "id": failed.flow_run_id,
                            "message": failed.message}
    out["flow_retries"] = [flow_retries(), ATTEMPTS["n"]]
    out["task_retries"] = task_retries(url, f"{prefix}flaky")
    out["timed_out"] = timed_out()
    state = parent(return_state=True)
    out["parent"] = {"result": state.result(), "id": state.flow_run_id}
    out["renamed"] = plain_call.with_options(name="renamed")(return_state=True).flow_run_id
    out["async"] = async_task_in_flow()
    out["outside"] = [add_one(41), add_one.submit(1).result(), add_one.delay(2).result()]
    out["allow_failure"] = allow_failure_flow()
    out["async_flow"] = asyncio.run(async_flow(3))
    out["named_runs"] = named_runs(name="marvin", date=datetime.datetime(2026, 12, 3))
    out["static_cache_key"] = test_caching(url, f"{prefix}static")
    within = [within_one_run(url, f"{prefix}within") for _ in range(2)]
    out["cache_within_flow_run"] = [within, int(redis.Redis.from_url(url).get(
        f"{prefix}within") or 0)]
    out["run_context"] = run_context()
    out["quoted"] = quoted()
    out["typo"] = _raises(typo_in_a_call)
    out["done_callbacks"] = done_callbacks()
    happy = returns_state_manually(True, return_state=True)
    sad = returns_state_manually(False, return_state=True)
    out["returned_states"] = {
        "happy": [happy.is_completed(), happy.message, happy.result()],
        "called": returns_state_manually(True),
        "sad": [sad.is_failed(), sad.message, _raises(lambda: returns_state_manually(False))]}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
