"""Private Redis topologies for tests: a master with a replica behind three sentinels, and
a Redis Cluster of three masters and three replicas. Every server runs on a free loopback
port in a temporary folder, and ``cleanup`` kills each by its own process (never by name).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from tests.conftest import RedisServer, free_port

SERVICE = "balancer-test"


def need_redis_server() -> None:
    """Skip when redis-server is missing, except in CI, where that fails the run."""
    if shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but redis-server or redis-cli is not on PATH")
    pytest.skip("redis-server and redis-cli are needed to start private topologies")


def _wait(predicate, what: str, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout}s")
        time.sleep(0.1)


def _online_replicas(client: redis.Redis) -> int:
    info = client.info("replication")
    return sum(1 for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
               and v.get("state") == "online")


def _synced(client: redis.Redis) -> bool:
    """A master has its replica online; a replica has its link up."""
    info = client.info("replication")
    if info["role"] == "master":
        return _online_replicas(client) >= 1
    return info.get("master_link_status") == "up"


class SentinelServer(RedisServer):
    """A sentinel watching ``master_port`` as SERVICE, with quick failover settings."""

    def __init__(self, master_port: int) -> None:
        super().__init__()
        self.master_port = master_port

    def command(self) -> list[str]:
        conf = Path(self.dir) / "sentinel.conf"
        conf.write_text("\n".join([
            f"port {self.port}", "bind 127.0.0.1", f"dir {self.dir}",
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master_port} 2",
            f"sentinel down-after-milliseconds {SERVICE} 1000",
            f"sentinel failover-timeout {SERVICE} 4000",
            f"sentinel parallel-syncs {SERVICE} 1", ""]))
        return ["redis-server", str(conf), "--sentinel"]


class SentinelSet:
    """A master, ``replicas`` replicas and three sentinels."""

    def __init__(self, replicas: int = 1) -> None:
        self.master = RedisServer("--repl-diskless-sync-delay", "0")
        self.replica_count = replicas
        self.replicas: list[RedisServer] = []
        self.sentinels: list[SentinelServer] = []

    def start(self) -> SentinelSet:
        try:
            return self._start()
        except BaseException:
            self.cleanup()
            raise

    def _start(self) -> SentinelSet:
        self.master.start()
        for _ in range(self.replica_count):
            self.replicas.append(RedisServer("--replicaof", "127.0.0.1",
                                             str(self.master.port)).start())
        self.sentinels = [SentinelServer(self.master.port) for _ in range(3)]
        for sentinel in self.sentinels:
            sentinel.start()
        master = redis.Redis(port=self.master.port)
        n = self.replica_count
        _wait(lambda: _online_replicas(master) >= n, "the replicas sync")
        # Every sentinel must know the replicas and its peers before a failover can happen.
        for sentinel in self.sentinels:
            client = redis.Redis(port=sentinel.port)
            _wait(lambda c=client: (
                c.sentinel_master(SERVICE)["num-slaves"] >= n
                and c.sentinel_master(SERVICE)["num-other-sentinels"] >= 2),
                "the sentinels meet")
        return self

    def kill_master(self) -> None:
        """SIGKILL the server that is the master now."""
        port = self.master_port()
        next(s for s in (self.master, *self.replicas) if s.port == port).stop(kill=True)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def master_port(self) -> int:
        client = redis.Redis(port=self.sentinels[0].port)
        return int(client.sentinel_get_master_addr_by_name(SERVICE)[1])

    def cleanup(self) -> None:
        for server in [*self.sentinels, self.master, *self.replicas]:
            server.stop(kill=True)
            shutil.rmtree(server.dir, ignore_errors=True)


class ClusterServer(RedisServer):
    """A cluster node; its bus on a free port of its own (not port + 10000, which may be
    taken, or past 65535)."""

    def __init__(self) -> None:
        super().__init__("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                         "--cluster-node-timeout", "1000", "--appendonly", "no",
                         "--cluster-port", str(free_port()), "--repl-diskless-sync-delay", "0")


class LocalCluster:
    """Three masters and three replicas, slots spread by ``redis-cli --cluster create``."""

    def __init__(self) -> None:
        self.nodes = [ClusterServer() for _ in range(6)]

    def start(self) -> LocalCluster:
        try:
            return self._start()
        except BaseException:
            self.cleanup()
            raise

    def _start(self) -> LocalCluster:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        out = subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, "--cluster-replicas", "1",
             "--cluster-yes"], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout}{out.stderr}")
        for node in self.nodes:
            client = redis.Redis(port=node.port)
            _wait(lambda c=client: c.cluster("info")["cluster_state"] == "ok"
                  and len(c.cluster("nodes")) == 6, "the cluster forms")
        # A replica takes over only once it has synced with its master.
        for node in self.nodes:
            client = redis.Redis(port=node.port)
            _wait(lambda c=client: _synced(c), "the replicas sync")
        return self

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])

    def owner_of(self, namespace: str) -> ClusterServer:
        """The node that serves the namespace's slot now, as the nodes still up see it."""
        slot = key_slot(("{" + namespace + "}").encode())
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                ranges = redis.Redis(port=node.port).execute_command("CLUSTER SLOTS")
            except redis.RedisError:
                continue
            for start, end, master, *_ in ranges:
                if int(start) <= slot <= int(end):
                    port = int(master[1])
                    return next(n for n in self.nodes if n.port == port)
        raise RuntimeError("no node serves the slot")

    def cleanup(self) -> None:
        for node in self.nodes:
            node.stop(kill=True)
            shutil.rmtree(node.dir, ignore_errors=True)
