"""A Redis that may delete our keys under memory pressure (any maxmemory-policy but
noeviction) is said at once: `balancer serve` warns when it starts, `balancer status` and
the dashboard show it, /metrics serves it. Real processes on a private redis-server."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
import redis
from balancer.common.settings import Settings
from prometheus_client.parser import text_string_to_metric_families

from balancer.dashboard.server import Dashboard
from tests.conftest import Processes, RedisServer, wait_for
from tests.integration.secure import base_env, need, run

pytestmark = pytest.mark.integration


def _risk(app: Dashboard) -> dict[str, float]:
    with urllib.request.urlopen(app.url + "metrics", timeout=30) as resp:
        text = resp.read().decode()
    return {s.labels["policy"]: s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == "balancer_redis_eviction_risk"}


def test_a_redis_that_may_evict_our_keys_is_warned_of_until_it_is_set_to_noeviction(
        namespace: str, tmp_path: Path) -> None:
    need("redis-server")
    server = RedisServer("--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru").start()
    procs = Processes(base_env(server.url, namespace), tmp_path)
    client = redis.Redis.from_url(server.url)
    app = Dashboard(client, Settings(namespace=namespace), "127.0.0.1", 0)
    app.start()
    try:
        serve = procs.serve()
        wait_for(lambda: "maxmemory-policy is allkeys-lru" in procs.log(serve), timeout=30)
        assert "queued tasks, leases and flow records may vanish" in procs.log(serve)
        assert "maxmemory is 67108864 bytes" in procs.log(serve)

        shown = run(procs.env, "balancer.cli", "status")
        assert shown.returncode == 0, shown.stderr
        assert "WARNING: Redis maxmemory-policy is allkeys-lru" in shown.stdout
        data = json.loads(run(procs.env, "balancer.cli", "status", "--json").stdout)
        assert data["eviction"] == {"policy": "allkeys-lru", "maxmemory": 64 << 20}
        assert "noeviction" in data["eviction_warning"]
        with urllib.request.urlopen(app.url + "api/overview", timeout=30) as resp:
            assert "allkeys-lru" in json.loads(resp.read())["eviction_warning"]
        assert _risk(app) == {"allkeys-lru": 2.0}

        client.config_set("maxmemory-policy", "volatile-ttl")
        assert _risk(app) == {"volatile-ttl": 1.0}
        assert "results of finished tasks" in run(procs.env, "balancer.cli", "status").stdout

        client.config_set("maxmemory-policy", "noeviction")
        assert "WARNING" not in run(procs.env, "balancer.cli", "status").stdout
        assert json.loads(run(procs.env, "balancer.cli", "status", "--json").stdout)[
            "eviction_warning"] is None
        assert _risk(app) == {"noeviction": 0.0}
        assert serve.poll() is None
    finally:
        app.stop()
        procs.cleanup()
        client.close()
        server.cleanup()


def test_serve_on_a_redis_that_does_not_evict_says_nothing_of_it(
        namespace: str, tmp_path: Path) -> None:
    need("redis-server")
    server = RedisServer("--maxmemory-policy", "noeviction").start()
    procs = Processes(base_env(server.url, namespace), tmp_path)
    try:
        serve = procs.serve()
        wait_for(lambda: "starting on namespace" in procs.log(serve), timeout=30)
        assert "maxmemory-policy" not in procs.log(serve)
    finally:
        procs.cleanup()
        server.cleanup()
