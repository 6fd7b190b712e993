"""Benchmark mapping on a real cluster: `balancer serve` plus two `worker start` processes.

One flow: ``numbers(N)`` returns a list of N items, ``double.map`` over it runs N
children, ``total`` sums their results. Printed, from the records in Redis:

- submit: how long ``flow.submit`` took (three records: the map is expanded later);
- expand: from ``numbers`` finishing to the map's children being queued (the dispatcher
  reads the list, writes N records, and one gate.lua call queues them);
- run: from the expansion to the last child finishing, and children per second;
- gather: from the last child finishing to the map storing its list of results;
- end to end: submit to ``total`` done, and tasks per second over it.

Also a map over a list of N given in code (expanded when submitted). Figures only, never
an assertion of speed:

    python bench/map_bench.py [--children N] [--quick] [--pool process] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # workers import the tasks as bench.tasks, so must we

import redis  # noqa: E402
from balancer.common.keys import Keys  # noqa: E402

from balancer import Flow  # noqa: E402
from bench.cluster_bench import Cluster, drop_namespace, running_workers  # noqa: E402
from bench.tasks import double, numbers, total  # noqa: E402


@dataclass
class MapFigures:
    children: int
    submit_s: float
    expand_s: float
    run_s: float
    children_per_s: float
    gather_s: float
    end_to_end_s: float
    tasks_per_s: float
    literal_submit_s: float
    literal_end_to_end_s: float


def _ms(client: redis.Redis, keys: Keys, task_id: str, field: str) -> float:
    value = client.hget(keys.task(task_id), field)
    if value is None:
        raise RuntimeError(f"task {task_id} has no {field}")
    return float(value)


def measure(client: redis.Redis, namespace: str, n: int, timeout: float) -> MapFigures:
    keys = Keys(namespace)
    with Flow(f"map-bench-{n}") as flow:
        source = numbers(n)
        mapped = double.map(source)
        summed = total(mapped)
    t0 = time.monotonic()
    run = flow.submit(client, namespace=namespace)
    submit_s = time.monotonic() - t0
    state = run.wait(timeout=timeout)
    end_to_end = time.monotonic() - t0
    if state != "completed" or run.result(summed) != n * (n - 1):
        raise RuntimeError(f"map flow {state}: {run.first_failure()}")
    source_done = _ms(client, keys, run.ids[run.flow.node_of(numbers)], "finished")
    map_id = run.ids[mapped]
    expanded = _ms(client, keys, map_id, "started")
    gathered = _ms(client, keys, map_id, "finished")
    pipe = client.pipeline(transaction=False)
    width = len(str(max(n - 1, 0)))
    for i in range(n):
        pipe.hget(keys.task(f"{map_id}-{i:0{width}d}"), "finished")
    last_child = max(float(x) for x in pipe.execute())
    run_s = (last_child - expanded) / 1000
    with Flow(f"map-literal-{n}") as literal:
        double.map(list(range(n)))
    t1 = time.monotonic()
    lit = literal.submit(client, namespace=namespace)
    literal_submit = time.monotonic() - t1
    if lit.wait(timeout=timeout) != "completed":
        raise RuntimeError(f"literal map flow failed: {lit.first_failure()}")
    literal_end = time.monotonic() - t1
    return MapFigures(
        children=n, submit_s=submit_s, expand_s=(expanded - source_done) / 1000,
        run_s=run_s, children_per_s=n / run_s if run_s > 0 else 0.0,
        gather_s=(gathered - last_child) / 1000, end_to_end_s=end_to_end,
        tasks_per_s=(n + 3) / end_to_end, literal_submit_s=literal_submit,
        literal_end_to_end_s=literal_end)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--children", type=int, default=10_000, help="N, items mapped over")
    parser.add_argument("--quick", action="store_true", help="smoke run: N=500")
    parser.add_argument("--pool", default="process", help="the workers' pool")
    parser.add_argument("--concurrency", type=int, default=4, help="slots per worker")
    parser.add_argument("--timeout", type=float, default=900.0, help="longest wait, s")
    parser.add_argument("--log-level", default="WARNING", help="of the cluster processes")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.children = 500
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    namespace = f"bench-{uuid.uuid4().hex[:10]}"
    os.environ["BALANCER_NAMESPACE"] = namespace
    client = redis.Redis.from_url(args.redis_url, socket_timeout=60)
    with tempfile.TemporaryDirectory(prefix="map-bench-") as logdir:
        cluster = Cluster(args.redis_url, namespace, Path(logdir), args.log_level)
        cluster.env["BALANCER_MAX_MAP_CHILDREN"] = str(max(args.children, 1))
        try:
            cluster.serve()
            with running_workers(cluster, args.pool, args.concurrency):
                figures = measure(client, namespace, args.children, args.timeout)
        finally:
            cluster.stop_all()
            drop_namespace(client, namespace)
    print(f"map of {figures.children} children, 2 workers x {args.concurrency}"
          f" ({args.pool} pool):")
    print(f"  submit          {figures.submit_s * 1000:9.1f} ms")
    print(f"  expand          {figures.expand_s * 1000:9.1f} ms  (source done -> children"
          " queued)")
    print(f"  run children    {figures.run_s:9.2f} s   {figures.children_per_s:9.0f}"
          " children/s")
    print(f"  gather          {figures.gather_s * 1000:9.1f} ms  (last child -> list stored)")
    print(f"  end to end      {figures.end_to_end_s:9.2f} s   {figures.tasks_per_s:9.0f}"
          " tasks/s")
    print(f"  literal list:   submit {figures.literal_submit_s * 1000:.1f} ms, end to end"
          f" {figures.literal_end_to_end_s:.2f} s")
    if args.json:
        args.json.write_text(json.dumps(asdict(figures), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
