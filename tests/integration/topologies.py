"""Private Redis topologies for tests: a master with a replica behind three sentinels, or
behind one address that moves (the Redis Cluster of three masters and three replicas is
``bench.redis_servers.LocalCluster``, which the benchmarks share). Every server runs on a
free loopback port in a temporary folder, and ``cleanup`` kills each by its own process
(never by name).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import redis

from bench.redis_servers import RedisServer, Topology, online_replicas, wait_until

SERVICE = "balancer-test"
T = TypeVar("T", bound=Topology)


def need_redis_server() -> None:
    """Skip when redis-server is missing, except in CI, where that fails the run."""
    if shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but redis-server or redis-cli is not on PATH")
    pytest.skip("redis-server and redis-cli are needed to start private topologies")


def running(topology: T) -> Iterator[T]:
    """A fixture's body: ``topology`` started (the test skipped, or failed in CI, without
    redis-server), and cleaned up after the test."""
    need_redis_server()
    try:
        yield topology.start()
    finally:
        topology.cleanup()


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


class SentinelSet(Topology):
    """A master, ``replicas`` replicas and three sentinels."""

    def __init__(self, replicas: int = 1) -> None:
        self.master = RedisServer("--repl-diskless-sync-delay", "0")
        self.replica_count = replicas
        self.replicas: list[RedisServer] = []
        self.sentinels: list[SentinelServer] = []

    def _start(self) -> None:
        self.master.start()
        for _ in range(self.replica_count):
            self.replicas.append(RedisServer("--replicaof", "127.0.0.1",
                                             str(self.master.port)).start())
        self.sentinels = [SentinelServer(self.master.port) for _ in range(3)]
        for sentinel in self.sentinels:
            sentinel.start()
        master = redis.Redis(port=self.master.port)
        n = self.replica_count
        wait_until(lambda: online_replicas(master) >= n, "the replicas sync")
        # Every sentinel must know the replicas and its peers before a failover can happen.
        for sentinel in self.sentinels:
            client = redis.Redis(port=sentinel.port)
            wait_until(lambda c=client: (
                c.sentinel_master(SERVICE)["num-slaves"] >= n
                and c.sentinel_master(SERVICE)["num-other-sentinels"] >= 2),
                "the sentinels meet")

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


class OneAddress(Topology):
    """A master and its replica behind one address that moves, as a managed Redis service
    or a DNS name fails over: a TCP proxy that connects each new connection to the server
    it names now (``move_to``), and leaves the connections made before where they are."""

    def __init__(self) -> None:
        self.master = RedisServer()
        self.replica = RedisServer()
        self.target = 0  # the port new connections go to
        self._listener = socket.socket()
        self._open: list[socket.socket] = []

    def _start(self) -> None:
        self.master.start()
        self.replica.start()
        redis.Redis(port=self.replica.port).replicaof("127.0.0.1", self.master.port)
        wait_until(lambda: online_replicas(redis.Redis(port=self.master.port)) >= 1,
                   "the replica syncs")
        self.target = self.master.port
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self._listener.getsockname()[1]}/0"

    def fail_over(self) -> None:
        """Redis's own coordinated FAILOVER (the master waits for its replica, then the two
        swap roles), then the address moves to the new master."""
        old = redis.Redis(port=self.master.port)
        old.execute_command("FAILOVER")
        wait_until(lambda: old.execute_command("ROLE")[0] == b"slave", "the failover")
        self.target = self.replica.port

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self._listener.accept()
                far = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                return  # closed by cleanup (or the server is gone: the client sees it)
            self._open += [near, far]
            for a, b in ((near, far), (far, near)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def cleanup(self) -> None:
        self._listener.close()
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.close()
        for server in (self.master, self.replica):
            server.stop(kill=True)
            shutil.rmtree(server.dir, ignore_errors=True)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy bytes one way until either side closes, then close both ways."""
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    for sock in (source, sink):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
