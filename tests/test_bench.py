"""The cluster benchmark runs end to end and reports figures (never how fast they must be)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from bench.compare.procs import tree
from bench.reap import wait_ended

ROOT = Path(__file__).resolve().parent.parent


def _run(script: str, out: Path, *args: str, timeout: float = 180
         ) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """Run ``bench/<script>`` writing its figures to ``out``: what it printed, the figures.
    Past ``timeout`` the test fails, and the bench goes with every process it started (its
    servers and workers, some in sessions of their own): a bench killed alone would leave
    them running, since its own clean-up never runs."""
    bench = subprocess.Popen([sys.executable, f"bench/{script}", *args, "--json", str(out)],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        stdout, stderr = bench.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        started = tree(bench.pid)  # the bench first, then what it started
        for proc in started:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        wait_ended(started[1:], timeout=10)
        stdout, stderr = bench.communicate()
        pytest.fail(f"bench/{script} ran past {timeout}s:\n{stdout[-3000:]}{stderr[-3000:]}")
    done = subprocess.CompletedProcess(bench.args, bench.returncode, stdout, stderr)
    assert done.returncode == 0, stdout + stderr
    return done, json.loads(out.read_text())


@pytest.mark.integration
def test_quick_benchmark_reports_positive_figures(redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc, figures = _run("cluster_bench.py", out, "--quick", "--redis-url", redis_url)
    assert set(figures["pools"]) == {"process", "thread"}
    for pool, row in figures["pools"].items():
        assert row["tasks"] == 200 and row["singles"] == 30, pool
        for name in ("submit_s", "end_to_end_s", "tasks_per_s", "latency_p50_ms",
                     "latency_p99_ms", "latency_max_ms", "redis_cmds_per_task"):
            assert row[name] > 0, (pool, name, row)
        assert row["latency_p50_ms"] <= row["latency_p99_ms"] <= row["latency_max_ms"], row
    assert "tasks/s" in proc.stdout


@pytest.mark.integration
def test_fetch_check_bench_times_both_checks_and_leaves_no_key(
        redis_url: str, tmp_path: Path) -> None:
    """Each mode's fetcher held every pushed entry, checked (it asserts so), and the
    namespace is gone afterwards."""
    import redis

    out = tmp_path / "fetch.json"
    proc, figures = _run("fetch_check_bench.py", out, "--redis-url", redis_url,
                         "--fetches", "40", "--blocks", "1")
    for mode in ("script", "plain"):
        assert figures["medians"][mode]["held"] > 0 and figures["medians"][mode]["pusher"] > 0
    assert "plain / script" in proc.stdout
    client = redis.Redis.from_url(redis_url)
    assert not list(client.scan_iter(match="{bench-*}:inbox:w", count=1000))


@pytest.mark.integration
def test_refill_bench_reports_each_slot_s_gaps_and_the_makespan_over_greedy(
        tmp_path: Path) -> None:
    """It starts its own redis-server, serve and worker, and stops them all."""
    from tests.integration.topologies import need_redis_server

    need_redis_server()
    out = tmp_path / "refill.json"
    proc, figures = _run("refill_bench.py", out, "--slots", "2", "--tasks", "6", "--min",
                         "0.05", "--max", "0.1", "--runs", "1")
    [row] = figures["runs"]
    assert 0 <= row["gap_ms_p50"] <= row["gap_ms_p90"] <= row["gap_ms_max"], row
    assert row["makespan_s"] > 0 and row["greedy_s"] > 0 and row["over_greedy"] > 0, row
    assert "over greedy" in proc.stdout


@pytest.mark.integration
def test_replace_bench_times_a_killed_pool_child_s_replacement(tmp_path: Path) -> None:
    """It starts its own redis-server, serve and worker, and stops them all; the task it
    kills failed at its timeout (the bench checks the error)."""
    from tests.integration.topologies import need_redis_server

    need_redis_server()
    out = tmp_path / "replace.json"
    proc, figures = _run("replace_bench.py", out, "--slots", "2", "--rounds", "1",
                         "--hold", "1.5", "--runs", "1")
    [row] = figures["runs"]
    assert 0 < row["gap_ms_p50"] <= row["gap_ms_max"] and len(row["gaps_ms"]) == 1, row
    assert "failure to next start" in proc.stdout


@pytest.mark.integration
def test_preload_bench_reports_start_and_memory_with_and_without_the_preload(
        tmp_path: Path) -> None:
    from tests.integration.topologies import need_redis_server

    need_redis_server()
    out = tmp_path / "preload.json"
    proc, figures = _run("preload_bench.py", out, "--slots", "2", "--payload-mb", "8",
                         "--runs", "1")
    for name in ("preload", "no_preload"):
        [registered], [pss] = figures[name]["registered_s"], figures[name]["pss_mb"]
        assert registered > 0 and pss > 0, figures
    assert "PSS without / with preload" in proc.stdout


@pytest.mark.integration
def test_retire_bench_runs_each_bound_on_its_own_cluster(tmp_path: Path) -> None:
    from tests.integration.topologies import need_redis_server

    need_redis_server()
    out = tmp_path / "retire.json"
    proc, figures = _run("retire_bench.py", out, "--bounds", "0,10", "--tasks", "60",
                         "--runs", "1")
    rates = figures["tasks_per_s"]
    assert set(rates) == {"0", "10"} and all(r[0] > 0 for r in rates.values()), rates
    assert "bound     10: median" in proc.stdout


@pytest.mark.integration
@pytest.mark.parametrize("mode", [[], ["--serial"]], ids=["streamed", "serial"])
def test_stream_bench_reports_each_process_s_cpu_per_task_and_the_offers_taken(
        tmp_path: Path, mode: list[str]) -> None:
    """It starts its own redis-server, serve and workers, and stops them all."""
    from tests.integration.topologies import need_redis_server

    need_redis_server()
    out = tmp_path / "stream.json"
    proc, figures = _run("stream_bench.py", out, "--tasks", "200", "--warm", "20", "--runs",
                         "1", "--workers", "2", *mode)
    [row] = figures["runs"]
    assert row["calls_per_s"] > 0 and row["tasks_per_s"] > 0 and 0 <= row["offers_taken"] <= 1
    cpu = row["cpu_us_per_task"]
    assert cpu["client"] > 0 and cpu["pool child"] > 0 and cpu["Redis"] > 0, cpu
    assert "offers" in proc.stdout


@pytest.mark.integration
def test_submit_bench_reports_client_cpu_per_call_and_latency(redis_url: str,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "submit.json"
    proc, figures = _run("submit_bench.py", out, "--redis-url", redis_url, "--calls", "50",
                         "--singles", "10", "--rounds", "2")
    assert len(figures["rounds"]) == 2
    for row in figures["rounds"]:
        assert row["cpu_us_per_call"] > 0 and row["calls_per_s"] > 0, row
        assert 0 < row["p50_ms"] <= row["p99_ms"], row
    assert "median: cpu" in proc.stdout


@pytest.mark.integration
def test_redis_cost_bench_breaks_a_task_down_by_command_and_by_script(tmp_path: Path) -> None:
    from tests.integration.topologies import need_redis_server

    need_redis_server()
    out = tmp_path / "cost.json"
    proc, rounds = _run("redis_cost.py", out, "--flows", "30", "--rounds", "1", "--serial")
    counted, logged = rounds
    assert counted["redis_cpu_ms_per_task"] > 0 and counted["cmds_per_task"] > 0, counted
    assert counted["commands"]["evalsha"]["per_task"] > 0 and not counted["slowlog"]
    # The fetch checks its lease with plain commands (the leases read with it), no script.
    assert {"script submit_small", "script ack", "srandmember"} <= set(logged["slowlog"])
    assert "commands/task" in proc.stdout


@pytest.mark.integration
def test_durability_bench_times_submits_with_and_without_a_replica_wait(tmp_path: Path) -> None:
    from tests.integration.topologies import need_redis_server

    need_redis_server()
    out = tmp_path / "durability.json"
    _, figures = _run("durability_bench.py", out, "--submits", "100", timeout=120)
    for name in ("min_replicas=0", "min_replicas=1"):
        assert figures[name]["submits"] == 100 and figures[name]["p50_ms"] > 0, figures
    assert figures["p50_ratio"] > 0


@pytest.mark.integration
def test_partition_limit_reports_cpu_per_task_of_redis_and_the_dispatcher(
        tmp_path: Path) -> None:
    from tests.integration.topologies import need_redis_server

    need_redis_server()
    out = tmp_path / "limit.json"
    # Enough tasks for the dispatcher to use several of /proc's 10 ms CPU ticks (400 read 0).
    _, figures = _run("partition_limit.py", out, "--tasks", "3000", "--flows", "2",
                      "--workers", "1", "--concurrency", "2", "--pool", "thread")
    assert figures["tasks"] == 3000
    for name in ("tasks_per_s", "redis_cpu_us_per_task", "dispatcher_cpu_us_per_task",
                 "workers_cpu_us_per_task", "redis_cmds_per_task", "ceiling_tasks_per_s"):
        assert figures[name] > 0, (name, figures)


@pytest.mark.integration
def test_quick_dynamic_benchmark_reports_positive_figures(redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / "dynamic.json"
    _, figures = _run("dynamic_bench.py", out, "--quick", "--redis-url", redis_url)
    assert (figures["calls"], figures["map"], figures["chain"]) == (30, 200, 20)
    for name in ("call_p50_ms", "call_p99_ms", "map_submit_s", "map_end_to_end_s",
                 "map_tasks_per_s", "chain_ms_per_link"):
        assert figures[name] > 0, (name, figures)
    assert figures["call_p50_ms"] <= figures["call_p99_ms"]


@pytest.mark.integration
def test_map_benchmark_reports_submit_expand_and_throughput(redis_url: str,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "map.json"
    proc, figures = _run("map_bench.py", out, "--quick", "--redis-url", redis_url, timeout=300)
    assert figures["children"] == 500
    for name in ("submit_s", "expand_s", "run_s", "children_per_s", "end_to_end_s",
                 "tasks_per_s", "literal_submit_s"):
        assert figures[name] > 0, (name, figures)
    assert "children/s" in proc.stdout and "expand" in proc.stdout


def test_a_low_leased_while_a_high_of_its_partition_waits_is_an_inversion() -> None:
    from bench.cluster_partitions_bench import HIGH, LOW, dispatch_inversions

    # A high ready at 100: the low leased at 105 before it is one; a low leased in the
    # same millisecond as the high is not (one round leased both, the high first).
    assert dispatch_inversions([(105, LOW, 1), (110, HIGH, 1)], [100]) == 1
    assert dispatch_inversions([(110, LOW, 2), (110, HIGH, 1)], [100]) == 0
    assert dispatch_inversions([(90, LOW, 3), (101, HIGH, 1), (102, LOW, 1)], [100]) == 0
    assert dispatch_inversions([(105, LOW, 1)], []) == 0


@pytest.mark.integration
def test_cluster_partitions_bench_reports_every_workload_on_a_local_cluster(
        tmp_path: Path) -> None:
    from tests.integration.topologies import need_redis_server

    need_redis_server()
    out = tmp_path / "cluster-partitions.json"
    proc, figures = _run("cluster_partitions_bench.py", out, "--quick", timeout=300)
    throughput = figures["throughput"]
    assert throughput["tasks"] == 600 and throughput["tasks_per_s"] > 0
    assert len(throughput["shards"]) == 3
    assert sorted(p for s in throughput["shards"] for p in s["partitions"]) == [0, 1, 2]
    assert all(s["commands"] > 0 for s in throughput["shards"])
    assert sorted(p for s in throughput["serves"] for p in s["partitions"]) == [0, 1, 2]
    (makespan,) = figures["makespan"]
    assert makespan["tasks"] == 40 and makespan["over_greedy"] > 0
    assert figures["priority"]["highs"] == 3
    assert "makespan:" in proc.stdout and "priority:" in proc.stdout


@pytest.mark.integration
def test_runaway_bench_reports_a_thread_worker_before_and_after_tasks_spin_past_timeouts(
        tmp_path: Path) -> None:
    from tests.integration.topologies import need_redis_server

    need_redis_server()
    out = tmp_path / "runaway.json"
    proc, figures = _run("runaway_bench.py", out, "--tasks", "60", "--spins", "2")
    assert figures["before_per_s"] > 0 and figures["after_per_s"] > 0, figures
    assert "2 tasks spun past their timeout (failed)" in proc.stdout


@pytest.mark.integration
def test_many_queues_bench_reports_figures_per_queue_count(tmp_path: Path) -> None:
    out = tmp_path / "many.json"
    proc, figures = _run("many_queues_bench.py", out, "--queues", "1,30", "--flows", "20")
    assert set(figures["figures"]) == {"1", "30"}
    for count, [row] in figures["figures"].items():
        assert row["first_ms"] > 0 and row["p50_ms"] > 0, count
        assert row["serve_cpu_ms"] >= 0, count  # counted in clock ticks: 0 over a few flows
        assert row["p50_ms"] <= row["p90_ms"], row
    assert "30 queues against 1" in proc.stdout


@pytest.mark.integration
def test_limits_bench_reports_blocks_a_second_and_the_rate_let_through(
        redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / "limits.json"
    proc, figures = _run("limits_bench.py", out, "--redis-url", redis_url, "--blocks", "50",
                         "--limit", "2", "--rate", "50", "--threads", "2", "--calls", "5")
    assert figures["blocks_per_s"] > 0 and figures["rate_per_s"] > 0, figures
    assert 0 < figures["gap_ms"]["min"] <= figures["gap_ms"]["max"], figures
    assert "10 calls through a limit of 2 at 50/s" in proc.stdout


def test_embedded_idle_bench_reports_the_idle_clusters_cpu_and_fetches(tmp_path: Path) -> None:
    out = tmp_path / "idle.json"
    proc, figures = _run("embedded_idle.py", out, "--seconds", "1")
    assert figures["flow"] == "completed", proc.stdout + proc.stderr
    assert figures["idle_cpu_share"] >= 0 and figures["fetches_per_s"] >= 0, figures
    assert "an idle embedded cluster" in proc.stdout


@pytest.mark.integration
def test_slot_scaling_bench_splits_a_tasks_cpu_by_process_and_over_the_pool(
        tmp_path: Path) -> None:
    from tests.integration.topologies import need_redis_server

    need_redis_server()
    out = tmp_path / "slots.json"
    proc, rounds = _run("slot_scaling.py", out, "--slots", "1,2", "--seconds", "1",
                        "--rounds", "1")
    assert [r["slots"] for r in rounds] == [1, 2]
    for r in rounds:
        assert r["tasks"] > 0 and r["tasks_per_s"] > 0, r
        assert r["cpu_us"]["pool processes"] > 0 and r["cpu_us"]["redis"] > 0, r
        assert 1 <= len(r["shares"]) <= r["slots"] and 0.95 <= sum(r["shares"]) <= 1.0, r
    assert "pool shares:" in proc.stdout
