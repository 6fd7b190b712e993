"""The Prefect 1 corpus (``prefect1_corpus``) run as users run it: each snippet on the
embedded cluster (no Redis configured), and all of them on a real cluster of a
``balancer serve`` and two ``worker start`` processes (a process pool and a thread pool)."""

from __future__ import annotations

import pytest
import redis
from balancer.common.keys import Keys

from tests.conftest import Processes, wait_for
from tests.integration import prefect1_corpus


def _ctx(redis_url: str, namespace: str, mode: str) -> prefect1_corpus.Ctx:
    return prefect1_corpus.Ctx(redis_url, f"{{{namespace}}}:corpus:{mode}:")


@pytest.mark.parametrize("name", sorted(prefect1_corpus.SNIPPETS))
def test_snippet_runs_on_the_embedded_cluster(name: str, monkeypatch: pytest.MonkeyPatch,
                                              real: redis.Redis, redis_url: str,
                                              namespace: str) -> None:
    monkeypatch.delenv("BALANCER_REDIS_URL", raising=False)
    flow, check = prefect1_corpus.SNIPPETS[name](_ctx(redis_url, namespace, name))
    state = flow.run(timeout=60, quiet=True)
    check(state)


def test_every_snippet_runs_on_a_real_cluster(procs: Processes, real: redis.Redis,
                                               redis_url: str, namespace: str) -> None:
    procs.serve()
    procs.worker("--queue", "default", "--concurrency", "2")
    procs.worker("--queue", "default", "--concurrency", "2", "--pool", "thread")
    wait_for(lambda: real.zcard(Keys(namespace).workers) >= 2, timeout=30)
    runs = []
    for name, build in sorted(prefect1_corpus.SNIPPETS.items()):
        flow, check = build(_ctx(redis_url, namespace, name))
        runs.append((name, flow.submit(real, namespace=namespace), check))
    for name, run, check in runs:
        run.wait(timeout=120)
        try:
            check(run)
        except AssertionError as exc:
            raise AssertionError(f"snippet {name}: {exc}") from exc
