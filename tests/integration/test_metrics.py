"""/metrics of `balancer dashboard`, parsed with prometheus_client's own parser after a
real cluster (a dispatcher and a worker process) ran known tasks."""

from __future__ import annotations

import dataclasses
import signal
import urllib.request
from collections.abc import Iterator

import pytest
import redis
from balancer.common.keys import Keys
from balancer.common.settings import Settings
from prometheus_client.parser import text_string_to_metric_families

from balancer import Flow
from balancer.dashboard.metrics import METRICS
from balancer.dashboard.server import Dashboard
from tests.conftest import Processes, wait_for
from tests.integration import tasks


@pytest.fixture
def dashboard(real: redis.Redis, settings: Settings) -> Iterator[Dashboard]:
    app = Dashboard(real, settings, "127.0.0.1", 0)
    app.start()
    yield app
    app.stop()


def scrape(app: Dashboard) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(app.url + "metrics", timeout=30) as resp:
        text = resp.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_metrics_count_what_a_real_cluster_ran(procs: Processes, real: redis.Redis,
                                               namespace: str, dashboard: Dashboard) -> None:
    keys = Keys(namespace)
    procs.serve()
    worker = procs.worker("--concurrency", "2", "--name", "m-w1")
    wait_for(lambda: real.get(keys.leader) and real.zcard(keys.workers) == 1, timeout=30)
    wait_for(lambda: value(scrape(dashboard), "balancer_workers", state="alive") == 1)

    with Flow("measured") as flow:
        for i in range(5):
            tasks.constant(i)
        tasks.sleep_for(0.2)
        tasks.always_fails(3)  # retries=2: two retries, then failed
    assert flow.submit(real, namespace=namespace).wait(timeout=60) == "failed"

    def settled() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
        s = scrape(dashboard)
        return s if value(s, "balancer_flows_finished_total", state="failed") == 1 else None

    s = wait_for(settled, timeout=20)
    assert value(s, "balancer_tasks_completed_total", queue="default", task="constant") == 5
    assert value(s, "balancer_tasks_completed_total", queue="default", task="sleep_for") == 1
    assert value(s, "balancer_tasks_retried_total", queue="default",
                 task="always_fails") == 2
    assert value(s, "balancer_tasks_failed_total", queue="default", task="always_fails") == 1
    # Run and wait times of the 7 tasks that completed or failed for good.
    assert value(s, "balancer_task_run_seconds_count", queue="default") == 7
    assert value(s, "balancer_task_wait_seconds_count", queue="default") == 7
    assert value(s, "balancer_task_run_seconds_bucket", queue="default", le="0.1") == 6
    assert (value(s, "balancer_task_run_seconds_sum", queue="default") or 0) >= 0.2
    # 7 tasks and 2 retries leased, and perhaps a task handed back (prefetched behind the
    # long one) leased again.
    assert (value(s, "balancer_tasks_dispatched_total", queue="default",
                  via="dispatcher") or 0) >= 9
    # Gauges read at scrape time.
    assert value(s, "balancer_worker_capacity", worker="m-w1") == 2
    assert value(s, "balancer_queue_depth", queue="default") == 0
    assert value(s, "balancer_dispatchers") == 1

    # A worker killed outright is reaped, and counted.
    procs.stop(worker, signal.SIGKILL)
    wait_for(lambda: value(scrape(dashboard), "balancer_workers_reaped_total") == 1,
             timeout=30)


def test_queue_gauges_show_a_paused_queue_and_how_long_its_head_waits(
        procs: Processes, real: redis.Redis, namespace: str, dashboard: Dashboard) -> None:
    keys = Keys(namespace)
    real.hset(keys.queue_conf("default"), "paused", "1")
    real.sadd(keys.queues, "default")
    procs.serve()
    with Flow("waiting") as flow:
        for i in range(3):
            tasks.constant(i)
    flow.submit(real, namespace=namespace)
    s = wait_for(lambda: (s := scrape(dashboard))
                 and (value(s, "balancer_queue_ready_age_seconds", queue="default") or 0) >= 1
                 and s, timeout=20)
    assert value(s, "balancer_queue_depth", queue="default") == 3
    assert value(s, "balancer_queue_paused", queue="default") == 1
    assert value(s, "balancer_dead_letters") == 0


def test_every_metric_served_is_documented_and_every_documented_one_is_served(
        real: redis.Redis, namespace: str, dashboard: Dashboard) -> None:
    keys = Keys(namespace)
    real.sadd(keys.queues, "q")
    with urllib.request.urlopen(dashboard.url + "metrics", timeout=30) as resp:
        families = {f.name for f in text_string_to_metric_families(resp.read().decode())}
    # The parser names counters without _total; gauges with no sample are not served.
    served = {n + "_total" if n + "_total" in METRICS else n for n in families}
    assert served <= set(METRICS)
    assert {n for n, (kind, _, _) in METRICS.items() if kind != "gauge"} <= served


def test_task_names_past_the_label_cap_are_counted_under_other_and_said_once(
        procs: Processes, real: redis.Redis, namespace: str, settings: Settings,
        caplog: pytest.LogCaptureFixture) -> None:
    """A client naming a copy per call (``with_options(name=...)`` in a loop) made a
    series per call: each name was a label value, without bound."""
    app = Dashboard(real, dataclasses.replace(settings, metrics_task_labels=2),
                    "127.0.0.1", 0)
    app.start()
    try:
        procs.serve()
        procs.worker("--concurrency", "2")
        with Flow("many names") as flow:
            for i in range(5):
                tasks.constant.with_options(name=f"load-{i}")(i)
        assert flow.submit(real, namespace=namespace).wait(timeout=60) == "completed"
        s = wait_for(lambda: (s := scrape(app)) and value(
            s, "balancer_flows_finished_total", state="completed") == 1 and s, timeout=20)
    finally:
        app.stop()
    completed = {dict(labels)["task"]: v for (name, labels), v in s.items()
                 if name == "balancer_tasks_completed_total"}
    assert len(completed) == 3 and completed.pop("(other)") == 3
    assert set(completed.values()) == {1} and set(completed) <= {f"load-{i}" for i in range(5)}
    said = [r for r in caplog.records if "task names seen" in r.getMessage()]
    assert len(said) == 1
