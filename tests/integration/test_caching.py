"""Prefect 1's output caching (``cache_for``/``cache_key``/``cache_validator``) on a real
dispatcher and real worker processes: a cached result is reused by a later flow run
without running the task again, and only while the validator and cache_for allow."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import redis
from balancer.common import cache, codec
from balancer.common.keys import Keys

from balancer import Flow, flowview
from tests.conftest import ROOT, Processes, wait_for
from tests.integration import cached_tasks as ct


@pytest.fixture(params=["thread", "process"])
def cluster(request: pytest.FixtureRequest, procs: Processes) -> Iterator[Processes]:
    procs.serve()
    procs.worker("--pool", request.param, "--concurrency", "2",
                 "--import", "tests.integration.cached_tasks")
    yield procs


def _run(flow: Flow, real: redis.Redis, namespace: str):  # type: ignore[no-untyped-def]
    run = flow.run(timeout=60, client=real, namespace=namespace, quiet=True)
    assert run.state == "completed", run.first_failure()
    return run


def _runs(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_a_second_flow_run_reuses_the_cached_result_without_running_the_task(
        cluster: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    log = str(tmp_path / "runs.log")
    for _ in range(2):
        with Flow("cached") as flow:
            sq = ct.slow_square(log, 7)
            after = ct.plus_one(sq)
        run = _run(flow, real, namespace)
        assert run.result(sq) == 49 and run.result(after) == 50
    assert _runs(tmp_path / "runs.log") == ["square 7"]  # the side effect happened once
    assert real.hget(Keys(namespace).task(run.ids[sq]), "cached") == b"1"
    assert real.hget(Keys(namespace).task(run.ids[after]), "cached") is None
    view = flowview.gather(real, Keys(namespace), run.id)
    assert view is not None and view.counts["cached"] == 1
    shown = "\n".join(flowview.render(view))
    assert "2/2 completed (1 from cache)" in shown, shown
    assert "cached: completed with a cached result, not run" in shown
    assert "tags: io, slow" in shown
    worker_log = "".join(cluster.log(p) for p in cluster.procs)
    assert "completed from its cache" in worker_log


def test_duration_only_reuses_the_result_whatever_the_inputs(
        cluster: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    log = str(tmp_path / "runs.log")
    results = []
    for x in (2, 3):
        with Flow("cached") as flow:
            sq = ct.slow_square(log, x)
        results.append(_run(flow, real, namespace).result(sq))
    assert results == [4, 4]  # Prefect 1's default validator: any inputs
    assert _runs(tmp_path / "runs.log") == ["square 2"]


def test_all_inputs_reruns_for_different_inputs_and_reuses_for_the_same(
        cluster: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    log = str(tmp_path / "runs.log")
    results = []
    for x in (1, 2, 1):
        with Flow("cached") as flow:
            t = ct.by_inputs(log, x=x)  # a keyword here, positional below: the same inputs
        results.append(_run(flow, real, namespace).result(t))
    with Flow("cached") as flow:
        t = ct.by_inputs(log, 2)
    results.append(_run(flow, real, namespace).result(t))
    assert results == [101, 102, 101, 102]
    assert _runs(tmp_path / "runs.log") == ["by_inputs 1", "by_inputs 2"]


def test_all_inputs_compares_upstream_results_too(
        cluster: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    log = str(tmp_path / "runs.log")
    for x in (1, 1, 5):
        with Flow("cached") as flow:
            ct.by_inputs(log, ct.plus_one(x))
        _run(flow, real, namespace)
    assert _runs(tmp_path / "runs.log") == ["by_inputs 2", "by_inputs 6"]


def test_partial_inputs_only_compares_the_named_inputs(
        cluster: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    log = str(tmp_path / "runs.log")
    results = []
    for x, note in ((1, "first"), (1, "second"), (2, "third")):
        with Flow("cached") as flow:
            t = ct.by_x(log, x, note=note)
        results.append(_run(flow, real, namespace).result(t))
    assert results == ["1:first", "1:first", "2:third"]
    assert _runs(tmp_path / "runs.log") == ["by_x 1 first", "by_x 2 third"]


def test_an_expired_entry_makes_the_task_run_again(
        cluster: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    log = str(tmp_path / "runs.log")
    key = Keys(namespace).cache("*")
    for _ in range(2):
        with Flow("cached") as flow:
            ct.short_lived(log, 9)
        _run(flow, real, namespace)
        assert real.keys(key)  # stored, for one second
        wait_for(lambda: not real.keys(key), timeout=30)  # cache_for passed
    assert _runs(tmp_path / "runs.log") == ["short 9", "short 9"]


def test_a_cache_key_shares_entries_across_tasks(
        cluster: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    log = str(tmp_path / "runs.log")
    with Flow("a") as flow:
        a = ct.report_a(log)
    assert _run(flow, real, namespace).result(a) == "made by a"
    with Flow("b") as flow:
        b = ct.report_b(log)
    assert _run(flow, real, namespace).result(b) == "made by a"
    assert _runs(tmp_path / "runs.log") == ["report_a"]


def test_a_planted_entry_is_read_as_data_and_only_its_result_is_used(
        cluster: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    """Without signing keys a Redis writer can choose a cached task's result, and nothing
    more: the entry is msgpack, never unpickled; a malformed one is a miss."""
    log = str(tmp_path / "runs.log")
    spec = cache.CacheSpec(3_600_000, "shared-report", "duration_only")
    key = Keys(namespace).cache(spec.key, cache.ANY_INPUTS)
    real.set(key, b"\x80\x04not msgpack: a pickle")
    with Flow("a") as flow:
        a = ct.report_a(log)
    assert _run(flow, real, namespace).result(a) == "made by a"  # ran: unreadable entry
    planted = cache.Entry(cache.ANY_INPUTS, 2**41, codec.pack("planted"))
    real.set(key, planted.encode())
    with Flow("a") as flow:
        a = ct.report_a(log)
    assert _run(flow, real, namespace).result(a) == "planted"
    assert _runs(tmp_path / "runs.log") == ["report_a"]


def test_a_task_with_nout_unpacks_in_the_flow(
        cluster: Processes, real: redis.Redis, namespace: str) -> None:
    """Prefect 1's ``nout``: ``a, b = t()``; and ``ref[i]`` on any reference."""
    with Flow("unpack") as flow:
        tens, units = ct.split(47)
        total = ct.add(tens, units)
        first = ct.split(93)[0]
    run = _run(flow, real, namespace)
    assert (run.result(tens), run.result(units), run.result(total)) == (4, 7, 11)
    assert run.result(first) == 9


def test_mapped_children_and_flow_function_calls_use_the_cache_too(
        cluster: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    from balancer import flow, unmapped

    log = str(tmp_path / "runs.log")
    for _ in range(2):
        with Flow("mapped") as flow_:
            m = ct.by_inputs.map(unmapped(log), [1, 2])
        assert _run(flow_, real, namespace).result(m) == [101, 102]
    assert sorted(_runs(tmp_path / "runs.log")) == ["by_inputs 1", "by_inputs 2"]

    @flow(redis_url=cluster.env["BALANCER_REDIS_URL"], namespace=namespace)
    def dynamic() -> list[int]:
        return [ct.by_inputs(log, 2), ct.by_inputs(log, 3)]

    assert dynamic() == [102, 103]
    assert sorted(_runs(tmp_path / "runs.log")) == ["by_inputs 1", "by_inputs 2",
                                                    "by_inputs 3"]


def test_prefect_2_cache_key_fn_and_cache_policy_reuse_results_by_inputs(
        cluster: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    """Prefect 2/3's cache_key_fn=task_input_hash and Prefect 3's cache_policy=INPUTS:
    the same inputs reuse the result, other inputs run the task."""
    log = str(tmp_path / "runs.log")
    for x in (1, 1, 2):
        with Flow("prefect-2-cache") as flow:
            hashed = ct.by_input_hash(log, x)
            policy = ct.by_policy(log, x)
        run = _run(flow, real, namespace)
        assert (run.result(hashed), run.result(policy)) == (10 * x, 100 * x)
    assert sorted(_runs(tmp_path / "runs.log")) == [
        "by_input_hash 1", "by_input_hash 2", "by_policy 1", "by_policy 2"]


def test_a_key_function_of_the_task_s_own_keys_its_cache_on_the_worker(
        cluster: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    """Prefect 2's cache_key_fn: keyed by the url alone, whatever the other arguments;
    None from it caches nothing; one that raises leaves the run uncached, and it runs."""
    log = str(tmp_path / "runs.log")
    for url, attempt in (("a.com", 1), ("a.com", 2), ("b.com", 3), ("nocache", 4),
                         ("nocache", 5), ("boom", 6), ("boom", 7)):
        with Flow("keyed") as flow:
            page = ct.fetch_by_url(log, url, attempt)
        assert _run(flow, real, namespace).result(page) == f"page of {url}"
    assert _runs(tmp_path / "runs.log") == [
        "fetch a.com 1", "fetch b.com 3", "fetch nocache 4", "fetch nocache 5",
        "fetch boom 6", "fetch boom 7"]
    worker_log = "".join(cluster.log(p) for p in cluster.procs)
    assert "no cache key (its cache key function url_key raised RuntimeError" in worker_log


def test_a_policy_with_run_id_reuses_results_within_a_flow_run_only(
        cluster: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    """INPUTS + RUN_ID - "log": the second call in a run is cached (its log argument
    left out), a second run runs again, and its entries live no longer than its records."""
    for run_no in range(2):
        log = str(tmp_path / f"runs-{run_no}.log")
        with Flow("within") as flow:
            first = ct.within_run(log, 4)
            second = ct.within_run(str(tmp_path / "other.log"), 4, upstream_tasks=[first])
        run = _run(flow, real, namespace)
        assert run.result(first) == run.result(second) == 12
        assert real.hget(Keys(namespace).task(run.ids[second]), "cached") == b"1"
        assert _runs(tmp_path / f"runs-{run_no}.log") == ["within_run 4"]
    assert not (tmp_path / "other.log").exists()
    entries = list(real.scan_iter(Keys(namespace).cache("*", "*")))
    assert len(entries) == 2 and all(0 < real.pttl(e) <= 7 * 24 * 3600 * 1000 for e in entries)


def test_flow_parameters_key_a_cache_across_runs(
        cluster: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    """FLOW_PARAMETERS + TASK_SOURCE: runs with the same parameters share the result."""
    from balancer import Parameter

    log = str(tmp_path / "runs.log")
    with Flow("by-day") as flow:
        day = Parameter("day", default="mon")
        made = ct.by_parameters(log, upstream_tasks=[day])
    for given in ("mon", "mon", "tue"):
        run = flow.run(parameters={"day": given}, timeout=60, client=real,
                       namespace=namespace, quiet=True)
        assert run.state == "completed" and run.result(made) == "made"
    assert _runs(tmp_path / "runs.log") == ["by_parameters", "by_parameters"]


def test_a_prefect_1_target_runs_the_task_once_per_rendered_target(
        cluster: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    from balancer import Parameter

    log = str(tmp_path / "runs.log")
    results = []
    for day, region in (("mon", "eu"), ("mon", "eu"), ("tue", "eu"), ("mon", "us")):
        with Flow("targeted") as flow:
            Parameter("region", default="eu")
            loaded = ct.loads_day(log, day)
        run = flow.run(timeout=60, client=real, namespace=namespace, quiet=True,
                       parameters={"region": region})
        assert run.state == "completed", run.first_failure()
        results.append(run.result(loaded))
    assert results == ["rows of mon", "rows of mon", "rows of tue", "rows of mon"]
    # The second (mon, eu) run found its target; another day or region is another target.
    assert _runs(tmp_path / "runs.log") == ["load mon", "load tue", "load mon"]


def _cache_cli(procs: Processes, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "balancer.cli", "cache", *argv], cwd=ROOT,
                          env=procs.env, capture_output=True, text=True, timeout=60)


def test_cached_results_are_listed_by_their_target_and_one_deleted_runs_its_task_again(
        cluster: Processes, real: redis.Redis, namespace: str, tmp_path: Path) -> None:
    """`balancer cache ls` lists what runs stored, a target by its rendered name, and
    `balancer cache rm <target>` is Prefect 1's deleting the target's file: the next run
    of that target runs the task again, the others still find theirs."""
    from balancer import Parameter

    log = str(tmp_path / "runs.log")

    def load(day: str) -> None:
        with Flow("targeted") as flow:
            Parameter("region", default="eu")
            loaded = ct.loads_day(log, day)
        assert _run(flow, real, namespace).result(loaded) == f"rows of {day}"

    load("mon")
    load("tue")
    with Flow("kept") as flow:
        ct.slow_square(log, 3)
    _run(flow, real, namespace)
    listed = _cache_cli(cluster, "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    today = datetime.now(timezone.utc).date().isoformat()
    labels = sorted(r["label"] for r in rows)
    assert labels == ["", f"loads_day/eu/mon-{today}", f"loads_day/eu/tue-{today}"], rows
    assert all(r["size"] > 0 for r in rows)
    [square] = [r for r in rows if not r["label"]]
    assert square["key"] == "tests.integration.cached_tasks:slow_square#slow_square"
    shown = _cache_cli(cluster, "ls", "--match", "loads_day/*/mon-*")
    assert shown.returncode == 0 and f"label=loads_day/eu/mon-{today}" in shown.stdout
    assert "tue" not in shown.stdout

    gone = _cache_cli(cluster, "rm", f"loads_day/eu/mon-{today}")
    assert gone.returncode == 0 and "deleted 1 cached result" in gone.stdout, gone
    load("mon")
    load("tue")
    assert _runs(tmp_path / "runs.log") == ["load mon", "load tue", "square 3", "load mon"]

    missing = _cache_cli(cluster, "rm", "no-such-target")
    assert missing.returncode == 1 and "no cached result under 'no-such-target'" in (
        missing.stderr)
    assert _cache_cli(cluster, "rm").returncode == 2  # nothing named: a usage error
    every = _cache_cli(cluster, "rm", "--all")
    assert every.returncode == 0 and "deleted 3 cached results" in every.stdout, every
    assert not list(real.scan_iter(Keys(namespace).cache("*", "*")))
    assert real.zcard(Keys(namespace).cache_index) == 0
    assert "no cached results" in _cache_cli(cluster, "ls").stdout
