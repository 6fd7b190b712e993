"""Prefect's ``wait`` and ``as_completed`` over the futures of a @flow function, on a real
Redis with a worker of threads: futures in the order their tasks end, and what is done
when a timeout passes."""

from __future__ import annotations

import pytest

from balancer import TaskFailed, flow
from balancer.futures import as_completed, wait
from tests.integration import tasks
from tests.integration.conftest import ThreadCluster

pytestmark = pytest.mark.integration


def test_as_completed_yields_futures_as_their_tasks_end_and_wait_says_what_is_done(
        cluster: ThreadCluster, redis_url: str, namespace: str) -> None:
    cluster.add_worker(concurrency=3)

    @flow(redis_url=redis_url, namespace=namespace)
    def race() -> dict[str, object]:
        slow, quick, middle = (tasks.sleep_for.submit(s) for s in (2.0, 0.1, 1.0))
        order = [f.result() for f in as_completed([slow, quick, middle], timeout=30)]
        late = tasks.sleep_for.submit(3.0)
        done, not_done = wait([quick, late], timeout=0.5)
        with pytest.raises(TimeoutError, match=r"1 of the tasks not finished after 0\.2s"):
            list(as_completed([late], timeout=0.2))
        return {"order": order, "done": done == {quick}, "not_done": not_done == {late},
                "all": wait([late]).not_done == set()}

    assert race() == {"order": [0.1, 1.0, 2.0], "done": True, "not_done": True, "all": True}


def test_a_task_submitted_outside_any_flow_is_a_run_of_its_own_and_waits_for_its_inputs(
        cluster: ThreadCluster, redis_url: str, namespace: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect 3's task.submit / task.delay outside a flow: the future at once; a future
    given as an argument is waited for and its result passed."""
    cluster.add_worker(concurrency=2)
    monkeypatch.setenv("BALANCER_REDIS_URL", redis_url)
    monkeypatch.setenv("BALANCER_NAMESPACE", namespace)
    first = tasks.add.submit(1, 2)
    second = tasks.multiply.delay(first, 10)
    assert second.result(timeout=30) == 30 and first.state.is_completed()
    assert tasks.total.submit([first, second, 4]).result(timeout=30) == 37  # in a list too
    with pytest.raises(TypeError, match="wait_for takes futures"):
        tasks.add.submit(1, 2, wait_for=[42])
    failed = tasks.always_fails.submit(1)
    assert failed.wait(timeout=30) is not None and failed.state.is_failed()
    with pytest.raises(TaskFailed):
        tasks.add.submit(failed, 1)  # its input failed: nothing is submitted
