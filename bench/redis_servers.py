"""Private redis-server processes for tests and benchmarks: a single server, and a local
Redis Cluster of three masters and three replicas.

Every server runs on a free loopback port in a temporary folder and is stopped by its own
process (never by name). The tests (``tests/conftest.py``, ``tests/integration/
topologies.py``) and the benchmarks (``bench/cluster_partitions_bench.py``) start them
from here, so that there is one way to build a cluster.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import redis
from balancer.common.keys import Keys
from redis.crc import key_slot

_handed_out: set[int] = set()


def free_port() -> int:
    """A port free now, and not handed out before by this process: once the probing socket
    is closed the kernel may offer the same port again, and two servers (a cluster node
    and another's bus) would then race for it, the second failing to start."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def wait_until(predicate: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    """Poll ``predicate`` (a Redis error counts as not yet) until it holds."""
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


def online_replicas(client: redis.Redis) -> int:
    info = client.info("replication")
    return sum(1 for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
               and v.get("state") == "online")


def synced(client: redis.Redis) -> bool:
    """A master has its replica online; a replica has its link up."""
    info = client.info("replication")
    if info["role"] == "master":
        return online_replicas(client) >= 1
    return info.get("master_link_status") == "up"


class RedisServer:
    """A redis-server of our own, in a temporary folder, on a free port."""

    def __init__(self, *extra: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="balancer-redis-")
        self.port = free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        """The server's command line; a subclass may listen otherwise (TLS)."""
        return ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
                self.dir, "--save", "", *self.extra]

    @property
    def output(self) -> Path:
        """What the server printed (its log)."""
        return Path(self.dir) / "redis-server.out"

    def start(self, answering: bool = True) -> RedisServer:
        """Start it and wait until it answers PING (not with ``answering`` False: a server
        loading a large dataset answers LOADING for a while)."""
        with open(self.output, "ab") as out:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while answering and not answers(self.url):
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}): "
                                   + self.output.read_text(errors="replace")[-2000:])
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        return self

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            self.proc.wait(10)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class ClusterServer(RedisServer):
    """A cluster node; its bus on a free port of its own (not port + 10000, which may be
    taken, or past 65535)."""

    def __init__(self, *extra: str) -> None:
        super().__init__("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                         "--cluster-node-timeout", "1000", "--appendonly", "no",
                         "--cluster-port", str(free_port()), "--repl-diskless-sync-delay", "0",
                         *extra)


T = TypeVar("T", bound="Topology")


class Topology:
    """Servers started together: if one fails to start, every one is stopped."""

    def start(self: T) -> T:
        try:
            self._start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def _start(self) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError


class LocalCluster(Topology):
    """Three masters and three replicas, slots spread by ``redis-cli --cluster create``.

    ``full_coverage``: Redis's default, ``cluster-require-full-coverage yes``, has every
    master refuse every command (CLUSTERDOWN) while any slot has no master, as during a
    failover; ``False`` lets the other masters serve their slots meanwhile."""

    def __init__(self, full_coverage: bool = True) -> None:
        coverage = () if full_coverage else ("--cluster-require-full-coverage", "no")
        self.nodes = [ClusterServer(*coverage) for _ in range(6)]

    def _start(self) -> None:
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
            wait_until(lambda c=client: c.cluster("info")["cluster_state"] == "ok"  # type: ignore[misc]
                       and len(c.cluster("nodes")) == 6, "the cluster forms")
        # A replica takes over only once it has synced with its master.
        for node in self.nodes:
            client = redis.Redis(port=node.port)
            wait_until(lambda c=client: synced(c), "the replicas sync")  # type: ignore[misc]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[:3])

    def masters_by_slot(self) -> dict[int, int]:
        """slot -> the port of the master serving it, as the nodes still up see it."""
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                ranges = redis.Redis(port=node.port).execute_command("CLUSTER SLOTS")
            except redis.RedisError:
                continue
            return {slot: int(master[1]) for start, end, master, *_ in ranges
                    for slot in range(int(start), int(end) + 1)}
        raise RuntimeError("no node of the cluster answers")

    def owner_of_key(self, key: str) -> ClusterServer:
        """The node that serves ``key``'s slot now."""
        port = self.masters_by_slot()[key_slot(key.encode())]
        return next(n for n in self.nodes if n.port == port)

    def owner_of(self, namespace: str) -> ClusterServer:
        """The node that serves the namespace's slot (its partition 0) now."""
        return self.owner_of_key("{" + namespace + "}")

    def masters(self) -> list[ClusterServer]:
        """The nodes serving slots now."""
        ports = set(self.masters_by_slot().values())
        return [n for n in self.nodes if n.port in ports]

    def spread_namespace(self, base: str, count: int) -> str:
        """The first of ``base-0``, ``base-1``... whose ``count`` partitions' hash tags
        fall on as many masters as they can (each on another, for 3 partitions): a
        namespace that uses every master."""
        owners = self.masters_by_slot()
        want = min(count, len(set(owners.values())))
        for i in range(100_000):
            namespace = f"{base}-{i}"
            if len({owners[key_slot(Keys(namespace, p).prefix.encode())]
                    for p in range(count)}) == want:
                return namespace
        raise RuntimeError("no namespace spreads over the masters")

    def commands_per_master(self) -> dict[int, int]:
        """Port -> the commands each master has run since its stats were reset (INFO
        commandstats, those called from scripts included)."""
        out = {}
        for node in self.masters():
            stats = redis.Redis(port=node.port).info("commandstats")
            out[node.port] = sum(int(v["calls"]) for k, v in stats.items()
                                 if k.startswith("cmdstat_"))
        return out

    def reset_stats(self) -> None:
        for node in self.masters():
            redis.Redis(port=node.port).config_resetstat()

    def cleanup(self) -> None:
        for node in self.nodes:
            node.stop(kill=True)
            shutil.rmtree(node.dir, ignore_errors=True)
