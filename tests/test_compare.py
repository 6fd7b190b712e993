"""The side-by-side benchmark: its arithmetic (arrival schedules, medians, ratios to the
best peer, memory over a process tree, layouts) and one end-to-end run on our system.

It asserts that figures come out, never how fast they are. The end-to-end run starts its
own redis-servers, so it needs ``redis-server`` on PATH (in CI a missing one fails).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import psutil
import pytest

from bench.compare import interleaved, procs, summary
from bench.compare.base import Job, Layout, parse_layouts
from bench.compare.loadgen import poisson_arrivals
from bench.compare.run import QUICK_WARNING, parse_args, plan

ROOT = Path(__file__).resolve().parent.parent

# workload -> a figure it must report as a number
EXPECTED = {
    "throughput@2x1": "tasks_per_s",
    "throughput@2x2": "redis_cpu_ms_per_task",
    "load50@2x1": "p99_ms",
    "load80@2x1": "p50_ms",
    "load80@2x2": "p99_ms",
    "memory@2x1": "dispatcher_mb",
    "memory@2x2": "mb_per_slot",
    "submit": "calls_per_s",
    "latency": "p50_ms",
    "prefetch_trap": "over_reference",
    "makespan": "over_greedy",
    "uneven": "makespan_s",
    "priority": "worst_low_wait_s",
    "priority_aging": "worst_low_wait_s",
    "layered": "redis_cmds_per_task",
    "idle": "cmds_per_s",
    "dispatcher_scale": "assignments_per_s",
}


@pytest.mark.integration
def test_quick_comparison_of_our_system_reports_every_workload(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but redis-server is not on PATH; the benchmark starts its own")
        pytest.skip("redis-server is not on PATH; the benchmark starts private servers")
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("workload 4 pins a worker per core and needs 2 cores")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BALANCER_", "BENCH_"))}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [sys.executable, "-m", "bench.compare.run", "--quick", "--systems", "ours",
         "--layouts", "2x1,2x2", "--runs", "1", "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [out] = tmp_path.glob("*.json")
    results = json.loads(out.read_text())["results"]["ours"]
    for workload, figure in EXPECTED.items():
        figures = results.get(workload)
        assert figures is not None, f"no {workload} in {sorted(results)}"
        assert "error" not in figures, (workload, figures.get("traceback"))
        assert isinstance(figures.get(figure), (int, float)), (workload, figures)
        assert not figures.get("partial"), (workload, figures)
    assert "ours/best" in proc.stdout and "1 2x1 throughput, tasks/s" in proc.stdout
    assert "goal (issue 17)" in proc.stdout
    assert QUICK_WARNING in proc.stdout  # its ratios are not to be read as measurements
    [md] = tmp_path.glob("*.md")
    assert "| throughput 2x2, tasks/s |" in md.read_text() and QUICK_WARNING in md.read_text()


# -- the open-loop arrival schedule ------------------------------------------------------


def test_poisson_arrivals_are_ordered_inside_the_window_and_reproducible() -> None:
    times = poisson_arrivals(500.0, 4.0, random.Random(1))
    assert times == sorted(times) and len(set(times)) == len(times)
    assert times[0] > 0 and times[-1] < 4.0
    assert times == poisson_arrivals(500.0, 4.0, random.Random(1))
    assert times != poisson_arrivals(500.0, 4.0, random.Random(2))


def test_poisson_arrivals_have_the_rate_and_exponential_gaps() -> None:
    rate, seconds = 1000.0, 20.0
    times = poisson_arrivals(rate, seconds, random.Random(7))
    # 20,000 expected, standard deviation sqrt(20,000) ~ 141: 5 sigmas either side.
    assert abs(len(times) - rate * seconds) < 5 * math.sqrt(rate * seconds)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    mean = statistics.fmean(gaps)
    assert mean == pytest.approx(1 / rate, rel=0.05)
    # Exponential gaps: the deviation equals the mean (a fixed pace would have none),
    # and about 1 - 1/e of them are shorter than the mean.
    assert statistics.pstdev(gaps) / mean == pytest.approx(1.0, abs=0.05)
    assert sum(g < mean for g in gaps) / len(gaps) == pytest.approx(1 - 1 / math.e, abs=0.02)


@pytest.mark.parametrize(("rate", "seconds"), [(0.0, 1.0), (-5.0, 1.0), (10.0, 0.0)])
def test_poisson_arrivals_reject_a_rate_or_window_that_is_not_positive(
        rate: float, seconds: float) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        poisson_arrivals(rate, seconds, random.Random(0))


# -- layouts ---------------------------------------------------------------------------


def test_layouts_parse_in_the_order_given() -> None:
    assert parse_layouts("2x1,2x4, 4X2") == [Layout(2, 1), Layout(2, 4), Layout(4, 2)]
    assert [lay.label for lay in parse_layouts("4x2,2x1")] == ["4x2", "2x1"]


@pytest.mark.parametrize(("text", "says"), [
    ("2x", "not WORKERSxSLOTS"), ("x2", "not WORKERSxSLOTS"), ("2*4", "not WORKERSxSLOTS"),
    ("2x-1", "not WORKERSxSLOTS"), ("0x4", "at least 1 worker"), ("2x0", "at least 1"),
    ("2x1,2x1", "given twice"), (" , ", "no layout"),
])
def test_a_bad_layout_is_an_error_naming_it(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_layouts(text)


def test_the_command_line_defaults_to_three_layouts_and_three_runs() -> None:
    args = parse_args([])
    assert [lay.label for lay in args.layouts] == ["2x1", "2x4", "4x2"] and args.runs == 3
    with pytest.raises(SystemExit):
        parse_args(["--layouts", "2x1,four"])
    with pytest.raises(SystemExit):
        parse_args(["--runs", "0"])


def test_every_layout_gets_throughput_then_its_loads_then_memory() -> None:
    steps = plan([Layout(2, 4), Layout(2, 1)], (0.5, 0.8))
    keys = [s.key for s in steps]
    # 2 x 1 first (its block, then the single-task workloads on the same workers).
    assert keys[:8] == ["throughput@2x1", "load50@2x1", "load80@2x1", "memory@2x1",
                        "latency", "submit", "prefetch_trap", "throughput@2x4"]
    assert keys.index("load80@2x4") < keys.index("memory@2x4") < keys.index("makespan")
    assert all(s.layout == Layout(2, 4) for s in steps if s.key.endswith("@2x4"))
    # Without 2 x 1 among the layouts, the single-task workloads still run on 2 x 1.
    singles = [s for s in plan([Layout(4, 2)], (0.5,)) if s.name in ("latency", "submit")]
    assert [s.layout for s in singles] == [Layout(2, 1)] * 2


# -- medians and ratios to the best peer ----------------------------------------------


def test_medians_skip_failed_runs_and_recurse_into_breakdowns() -> None:
    runs: list[summary.Results] = [
        {"ours": {"t": {"tasks_per_s": 100.0, "by": {"get": 2.0}, "mode": "single"}}},
        {"ours": {"t": {"error": "RuntimeError: boom"}}},
        {"ours": {"t": {"tasks_per_s": 300.0, "by": {"get": 4.0, "set": 1.0}, "mode": "single"}}},
        {"ours": {"t": {"tasks_per_s": 200.0, "by": {"get": 9.0}, "mode": "single"}}},
    ]
    t = summary.median_results(runs)["ours"]["t"]
    assert t["tasks_per_s"] == 200.0 and t["by"] == {"get": 4.0, "set": 1.0}
    assert t["mode"] == "single" and (t["runs_ok"], t["runs"]) == (3, 4)
    failed = summary.median_results([{"ours": {"t": {"error": "a"}}},
                                     {"ours": {"t": {"error": "b"}}}])
    assert failed["ours"]["t"] == {"error": "a"}


def test_a_median_of_an_even_count_is_the_middle_two_averaged() -> None:
    assert summary.median_of([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert summary.median_of([None, 5, None]) == 5
    assert summary.median_of([None, None]) is None


def _results() -> summary.Results:
    return {"ours": {"latency": {"p99_ms": 2.0, "p50_ms": 0.5},
                     "throughput@2x1": {"tasks_per_s": 4000.0, "redis_cpu_ms_per_task": 0.1}},
            "huey": {"latency": {"p99_ms": 1.0, "p50_ms": 0.7},
                     "throughput@2x1": {"tasks_per_s": 2000.0, "redis_cpu_ms_per_task": 0.2}},
            "celery": {"latency": {"p99_ms": 4.0, "p50_ms": 0.6},
                       "throughput@2x1": {"error": "RuntimeError: boom"}}}


def test_ratios_are_to_the_best_peer_in_the_direction_of_each_goal() -> None:
    goals = {g.label: g for g in summary.goals([Layout(2, 1), Layout(2, 4)], (0.5,))}
    vs = {v.goal.label: v for v in summary.verdicts(
        _results(), ["ours", "huey", "celery"], list(goals.values()))}
    p99 = vs["p99 single task, idle, ms"]
    assert (p99.peer, p99.best, p99.ratio, p99.status) == ("huey", 1.0, 2.0, "not met")
    p50 = vs["p50 single task, idle, ms"]  # best peer: the lowest, celery's 0.6
    assert p50.peer == "celery" and p50.ratio == pytest.approx(0.5 / 0.6)
    assert p50.status == "not met"  # the goal is 0.8x
    # A failed peer is no peer; the highest throughput is the best; 2 x 1 wants 3x.
    tp = vs["throughput 2x1, tasks/s"]
    assert (tp.peer, tp.ratio, tp.status) == ("huey", 2.0, "not met")
    assert goals["throughput 2x4, tasks/s"].target == 2.0
    assert vs["throughput 2x4, tasks/s"].status == "n/a"  # nobody ran 2 x 4
    cpu = vs["Redis CPU/task 2x1, ms"]  # reported, no target
    assert (cpu.ratio, cpu.status) == (0.5, "-")


def test_a_goal_is_met_at_its_target_and_a_zero_best_gives_no_division_error() -> None:
    goal = summary.Goal("p50", "latency", "p50_ms", "low", 0.8)
    results = {"ours": {"latency": {"p50_ms": 0.8}}, "huey": {"latency": {"p50_ms": 1.0}}}
    [v] = summary.verdicts(results, ["ours", "huey"], [goal])
    assert v.status == "met" and v.as_dict()["best_peer"] == "huey"
    assert summary.ratio(0.0, 0.0) == 1.0 and summary.ratio(1.0, 0.0) == math.inf


def test_the_goals_table_prints_every_goal_with_its_target() -> None:
    vs = summary.verdicts(_results(), ["ours", "huey", "celery"],
                          summary.goals([Layout(2, 1)], (0.5, 0.8)))
    text = summary.goals_table(vs)
    assert "throughput 2x1, tasks/s" in text and ">= 3x" in text and "huey 2,000" in text
    assert "load 80% 2x1 p99, ms" in text and "memory/slot 2x1, MB" in text
    md = summary.markdown(summary.GOALS_HEAD, summary.goals_rows(vs))
    assert md.splitlines()[0].startswith("| goal (issue 17) |")


# -- memory and CPU over a process tree -------------------------------------------------

# A parent that starts two children; the first holds 64 MB it has written to (resident),
# the second spins on the CPU for 0.5 s. Each prints its pid; all wait for stdin to close.
TREE = r"""
import subprocess, sys, time
ready = "print('ok', flush=True); sys.stdin.read()"
hold = "x = bytearray(64 * 1024 * 1024); x[::4096] = b'1' * len(x[::4096]); " + ready
spin = "t = time.process_time()\nwhile time.process_time() - t < 0.5: pass\n" + ready
kids = [subprocess.Popen([sys.executable, "-c", "import sys, time\n" + code],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE) for code in (hold, spin)]
for k in kids:
    k.stdout.readline()
print(" ".join(str(k.pid) for k in kids), flush=True)
sys.stdin.read()
for k in kids:
    k.stdin.close(); k.wait()
"""


@pytest.fixture
def tree() -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    proc = subprocess.Popen([sys.executable, "-c", TREE], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        kids = [int(pid) for pid in proc.stdout.readline().split()]
        assert len(kids) == 2, "the children did not start"
        yield proc, kids
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the session this test started
        proc.wait(10)


def test_memory_of_a_process_tree_counts_every_child(
        tree: tuple[subprocess.Popen[str], list[int]]) -> None:
    proc, kids = tree
    alone = psutil.Process(proc.pid).memory_info().rss
    holder = psutil.Process(kids[0]).memory_info().rss
    total = procs.tree_rss(proc.pid)
    assert holder > 60 * procs.MB  # the child's 64 MB are resident
    assert total > alone + holder  # the parent, the holder and the spinner
    each = sum(psutil.Process(p).memory_info().rss for p in [proc.pid, *kids])
    assert total == pytest.approx(each, rel=0.05)
    assert procs.total_rss([proc.pid, kids[0]]) > total  # two trees add up
    assert procs.tree_rss(kids[1]) < holder  # a child's tree is itself alone


SHARED = """
import os, sys
blob = bytearray(64 * 1024 * 1024)
for i in range(0, len(blob), 4096):
    blob[i] = 1
child = os.fork()
if child == 0:  # shares the 64 MB with its parent, writing none of it
    sys.stdin.read()
    os._exit(0)
print(child, flush=True)
sys.stdin.read()
os.waitpid(child, 0)
"""


def test_pss_of_a_process_tree_counts_pages_a_forked_child_shares_once() -> None:
    proc = subprocess.Popen([sys.executable, "-c", SHARED], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        assert int(proc.stdout.readline())
        rss, pss = procs.tree_rss(proc.pid), procs.tree_pss(proc.pid)
        assert rss > 128 * procs.MB  # the 64 MB in each process's RSS
        assert 64 * procs.MB < pss < rss - 48 * procs.MB  # once in PSS, split between them
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the session this test started
        proc.wait(10)


def test_cpu_of_a_process_tree_counts_its_children(
        tree: tuple[subprocess.Popen[str], list[int]]) -> None:
    proc, _ = tree
    own = sum(psutil.Process(proc.pid).cpu_times()[:2])
    assert procs.tree_cpu(proc.pid) >= own + 0.45  # the spinner's 0.5 s


def test_a_process_that_is_gone_holds_no_memory_and_no_cpu() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(30)
    deadline = time.monotonic() + 5
    while psutil.pid_exists(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert procs.tree_rss(proc.pid) == 0 and procs.tree_cpu(proc.pid) == 0.0


# -- the interleaved latency benchmark ----------------------------------------------------


def _copy(system: str, index: int, rounds: list[list[float]]) -> interleaved.Copy:
    return interleaved.Copy(system, index, rounds=rounds)


def test_interleaved_ratios_compare_each_round_with_the_same_round_of_the_peer() -> None:
    # The machine slows down 3x in the second round: each round's ratio stays 2.
    copies = [_copy("ours", 0, [[2.0, 2.0], [6.0, 6.0]]), _copy("huey", 0, [[1.0], [3.0]]),
              _copy("ours", 1, [[2.0], [6.0]]), _copy("huey", 1, [[1.0, 1.0], [3.0]])]
    assert interleaved.round_ratios(copies, "ours", "huey") == [2.0, 2.0]
    results = interleaved.summarize(copies, ["ours", "huey"])
    assert results["ours"]["tasks"] == 6 and results["huey"]["tasks"] == 5
    assert results["ours/best"]["best"] == "huey"
    assert results["ours/best"]["round_p50_median"] == 2.0
    assert results["ours"]["copies_p50_ms"] == [2.0, 2.0]


def test_interleaved_refuses_an_unknown_system_and_empty_rounds() -> None:
    with pytest.raises(SystemExit):
        interleaved.parse_args(["--systems", "ours,nosuch"])
    with pytest.raises(SystemExit):
        interleaved.parse_args(["--rounds", "0"])


def test_interleaved_checkout_needs_a_new_label_and_an_interpreter(tmp_path: Path) -> None:
    for given in ("nolabel", "=python", "huey=" + sys.executable, "a/b=" + sys.executable,
                  "old=" + str(tmp_path / "missing")):
        with pytest.raises(SystemExit):
            interleaved.parse_args(["--checkout", given])
    args = interleaved.parse_args(["--checkout", "old=" + sys.executable])
    assert args.checkout == {"old": sys.executable}


def test_interleaved_ratios_of_a_checkout_are_to_ours() -> None:
    copies = [_copy("ours", 0, [[2.0], [4.0]]), _copy("old", 0, [[3.0], [6.0]])]
    results = interleaved.summarize(copies, ["ours"], ["old"])
    assert results["old/ours"]["round_p50_median"] == 1.5
    assert "ours/best" not in results
    assert "old / ours: p50 1.50" in interleaved.table(results, ["ours", "old"])


def test_interleaved_submit_table_adds_calls_per_second_from_the_mean_call() -> None:
    copies = [_copy("ours", 0, [[1.0, 3.0]]), _copy("huey", 0, [[0.5, 0.5]])]
    results = interleaved.summarize(copies, ["ours", "huey"])
    table = interleaved.table(results, ["ours", "huey"], "submit").splitlines()
    assert "calls/s" in table[0]
    assert table[1].split()[5] == "500" and table[2].split()[5] == "2000"  # 1000 / mean ms
    assert "calls/s" not in interleaved.table(results, ["ours", "huey"])


def _harness_env() -> dict[str, str]:
    """The environment a benchmark run gets here (skipped without redis-server: it starts
    private servers), none of this process's BALANCER_ or BENCH_ settings."""
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but redis-server is not on PATH; the benchmark starts its own")
        pytest.skip("redis-server is not on PATH; the benchmark starts private servers")
    return interleaved.agent_env(ROOT)


def _marked(env: dict[str, str]) -> dict[str, str]:
    """``env`` with a mark of this test's own, which every process the run starts
    inherits: another test's benchmark, running beside this one, is not counted as left
    behind by this one."""
    return {**env, "TEST_RUN_MARK": uuid.uuid4().hex}


def _left_behind(env: dict[str, str]) -> list[psutil.Process]:
    """The processes still running with ``env``'s mark."""
    mark = env["TEST_RUN_MARK"]
    left = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("TEST_RUN_MARK") == mark:
                left.append(proc)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return left


@pytest.mark.integration
@pytest.mark.parametrize("measure", ["latency", "submit"])
def test_interleaved_run_of_our_system_and_a_checkout_reports_their_figures(
        tmp_path: Path, measure: str) -> None:
    """Two agents, ours and a "checkout" run by this very interpreter, in turns: the
    latencies of single tasks, or the times of back-to-back submit calls (whose tasks
    all ran before the next turn: the records were waited for)."""
    env = _marked(_harness_env())
    proc = subprocess.run(
        [sys.executable, "-m", "bench.compare.interleaved", "--systems", "ours",
         "--checkout", f"again={sys.executable}", "--copies", "1", "--rounds", "3",
         "--per", "4", "--warm", "2", "--measure", measure, "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [out] = tmp_path.glob("interleaved-*.json")
    figures = json.loads(out.read_text())
    assert figures["meta"]["measure"] == measure
    results = figures["results"]
    for name in ("ours", "again"):
        assert results[name]["tasks"] == 3 * 4
        assert 0 < results[name]["p50_ms"] <= results[name]["p90_ms"] <= results[name]["p99_ms"]
    assert results["again/ours"]["round_p50_median"] > 0
    assert "again / ours: p50" in proc.stdout
    assert ("calls/s" in proc.stdout) == (measure == "submit")
    # Every agent stopped its workers and servers.
    assert _left_behind(env) == []


@pytest.mark.integration
def test_interleaved_signing_gives_our_client_and_workers_one_key_and_nothing_else_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent's environment holds a signing key only when the harness gives one; with
    one, its client signs every task and its workers run them (they check each one)."""
    _harness_env()
    monkeypatch.setenv("BALANCER_SIGNING_KEYS", "from-the-shell")
    assert "BALANCER_SIGNING_KEYS" not in interleaved.agent_env(ROOT)
    assert interleaved.agent_env(ROOT, "given")["BALANCER_SIGNING_KEYS"] == "given"
    monkeypatch.setenv("BALANCER_SIGNING_KEYS", "a-signing-key-for-the-test")  # as an agent
    with interleaved.running("ours") as (session, rec, _):
        key = rec.new_key("signed")
        session.system.submit([Job("noop", key, "0")])
        rec.pop(key, 30.0)
        assert session.broker is not None
        tasks = list(session.broker.scan_iter(match="*:task:*"))
        assert tasks and all(session.broker.hget(t, "sig") for t in tasks)


@pytest.mark.integration
def test_split_of_one_task_s_time_reports_every_process_for_ours_and_a_checkout(
        tmp_path: Path) -> None:
    """Our system, our system signing every task, then a "checkout" run by this very
    interpreter: each one's split of a single task's time, CPU per process and script
    times, and no process left behind."""
    env = _marked(_harness_env())
    proc = subprocess.run(
        [sys.executable, "-m", "bench.compare.split", "--tasks", "20", "--warm", "5",
         "--runs", "1", "--checkout", f"again={sys.executable}", "--signing",
         "--out", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [out] = tmp_path.glob("split-*.json")
    results = json.loads(out.read_text())["results"]
    for label in ("ours", "ours signed", "again"):
        [run] = results[label]
        assert run["tasks"] == 20
        assert run["split"]["submit to record seen"] > 0
        assert {"client", "pool child", "Redis (broker)"} <= set(run["cpu"])
        assert {"submit_small", "ack"} <= set(run["scripts"])
    assert "in Redis, per call: submit_small" in proc.stdout
    assert _left_behind(env) == []


@pytest.mark.integration
def test_split_after_idle_spells_shows_the_first_task_after_each_pause_apart(
        tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.compare.split", "--tasks", "20", "--warm", "5",
         "--runs", "1", "--idle", "0.02", "--every", "5", "--out", str(tmp_path)],
        cwd=ROOT, env=_harness_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [out] = tmp_path.glob("split-*.json")
    saved = json.loads(out.read_text())
    assert (saved["idle"], saved["every"]) == (0.02, 5)
    [run] = saved["results"]["ours"]
    assert run["after idle"]["submit to record seen"] > 0
    assert run["split"]["submit to record seen"] > 0
    assert "after idle: submit to record seen" in proc.stdout


def test_split_refuses_a_checkout_it_cannot_run() -> None:
    from bench.compare import split

    for bad in ("nolabel", "ours=/bin/sh", "ours signed=/bin/sh", "x=/no/such/python"):
        with pytest.raises(SystemExit):
            split.parse_args(["--checkout", bad])
