"""A network partition: a worker in its own network namespace is cut off mid-task, reaped,
its task re-run on a worker on the host, and when the link comes back its late
acknowledgement is refused.

The namespace reaches a private ``redis-server`` over a veth pair with a link-local /30
(169.254.x.y) that exists on that link only. Cutting the link (``ip link set ... down``)
leaves the worker's TCP connections open but silent, as a real partition does: its
heartbeat and its acknowledgement sit in retransmission until the link is restored.

Needs root, ``ip`` and network namespaces; skips with the reason where they are missing.
The namespace and the veth pair are always deleted afterwards.
"""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from balancer.common.keys import Keys

from balancer import Flow
from bench.chaos import tasks as chaos_tasks
from bench.chaos.tasks import WORKER_ENV
from tests.conftest import ROOT, Processes, RedisServer, wait_for

TASK_SECONDS = 5.0  # long enough to start a second worker while the first runs it


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done


@dataclass(frozen=True)
class Link:
    netns: str
    host_dev: str
    host_addr: str  # the host side of the veth: Redis listens here too
    ns_addr: str

    def cut(self) -> None:
        _ip("link", "set", self.host_dev, "down")

    def restore(self) -> None:
        _ip("link", "set", self.host_dev, "up")


def _free_link_subnet() -> ipaddress.IPv4Network:
    """A /30 of 169.254.0.0/16 (link-local: never routed) that no interface uses yet."""
    used = [ipaddress.ip_interface(line.split()[3]).network
            for line in _ip("-o", "-4", "addr", "show").stdout.splitlines()
            if len(line.split()) > 3]
    rng = random.Random()
    for _ in range(50):
        third = rng.choice([n for n in range(100, 250) if n != 169])
        net = ipaddress.IPv4Network(f"169.254.{third}.{4 * rng.randrange(1, 63)}/30")
        if not any(net.overlaps(u) for u in used):
            return net
    raise RuntimeError("no free link-local /30")


def _why_no_namespaces() -> str | None:
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    if shutil.which("ip") is None:
        return "no `ip` command (iproute2) on PATH"
    return None


@contextmanager
def veth_namespace() -> Iterator[Link]:
    """A network namespace joined to the host by a veth pair on a private /30."""
    reason = _why_no_namespaces()
    if reason:
        pytest.skip(reason)
    suffix = uuid.uuid4().hex[:6]
    netns, host_dev, ns_dev = f"balancer-{suffix}", f"vb{suffix}h", f"vb{suffix}n"
    net = _free_link_subnet()
    host_addr, ns_addr = (str(a) for a in list(net.hosts())[:2])
    made_ns = False
    try:
        try:
            _ip("netns", "add", netns)
            made_ns = True
            _ip("link", "add", host_dev, "type", "veth", "peer", "name", ns_dev)
            _ip("link", "set", ns_dev, "netns", netns)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            pytest.skip(f"cannot make a network namespace with a veth pair here: {exc}")
        _ip("addr", "add", f"{host_addr}/30", "dev", host_dev)
        _ip("link", "set", host_dev, "up")
        _ip("-n", netns, "addr", "add", f"{ns_addr}/30", "dev", ns_dev)
        _ip("-n", netns, "link", "set", ns_dev, "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        yield Link(netns, host_dev, host_addr, ns_addr)
    finally:
        if made_ns:
            _ip("netns", "del", netns, check=False)  # takes its end of the veth pair along
        if _ip("link", "show", host_dev, check=False).returncode == 0:
            _ip("link", "del", host_dev, check=False)


def _reachable_from(link: Link, port: int) -> str | None:
    """None if Redis answers from inside the namespace, else what went wrong."""
    probe = (f"import redis; redis.Redis(host={link.host_addr!r}, port={port},"
             f" socket_connect_timeout=3, socket_timeout=3).ping()")
    done = subprocess.run(["ip", "netns", "exec", link.netns, sys.executable, "-c", probe],
                          capture_output=True, text=True, timeout=30)
    return None if done.returncode == 0 else done.stderr.strip()[-300:]


def _start_in_namespace(procs: Processes, link: Link, url: str, name: str, log_dir: Path
                        ) -> subprocess.Popen[bytes]:
    """``worker start`` inside the namespace (``ip netns exec`` keeps the pid), registered
    with ``procs`` so that it is killed after the test whatever happens."""
    env = {**procs.env, "BALANCER_REDIS_URL": url, WORKER_ENV: name}
    log = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        ["ip", "netns", "exec", link.netns, sys.executable, "-m", "balancer.worker.cli", "start",
         "--name", name, "--concurrency", "1", "--pool", "thread"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log_path = log.name  # type: ignore[attr-defined]
    procs.procs.append(proc)
    return proc


def test_a_partitioned_worker_is_reaped_and_its_late_ack_refused(
    procs: Processes, namespace: str, tmp_path: Path
) -> None:
    with veth_namespace() as link:
        server = RedisServer("--bind", "127.0.0.1", link.host_addr,
                             "--protected-mode", "no").start()
        try:
            if (why := _reachable_from(link, server.port)) is not None:
                pytest.skip(f"Redis on the veth is not reachable from the namespace: {why}")
            client = redis.Redis.from_url(server.url)
            keys = Keys(namespace)
            procs.env["BALANCER_REDIS_URL"] = server.url
            procs.serve()
            island = _start_in_namespace(
                procs, link, f"redis://{link.host_addr}:{server.port}/0", "island", tmp_path)
            wait_for(lambda: client.zscore(keys.workers, "island") is not None, timeout=30)

            with Flow("partition") as flow:
                slow = chaos_tasks.sleep_then_name(TASK_SECONDS)
                after = chaos_tasks.echo(slow)
            run = flow.submit(client, namespace=namespace)
            task_key = keys.task(run.ids[slow])
            wait_for(lambda: client.hmget(task_key, ["state", "worker"])
                     == [b"running", b"island"], timeout=20)
            started = time.monotonic()

            procs.env[WORKER_ENV] = "mainland"
            procs.worker("--name", "mainland", "--concurrency", "1", "--pool", "thread")
            wait_for(lambda: client.zscore(keys.workers, "mainland") is not None, timeout=30)
            assert client.hmget(task_key, ["state", "worker"]) == [b"running", b"island"], (
                "the task left the island before the partition; the test's timing is off")

            link.cut()
            # Missed heartbeats: the dispatcher reaps the island and the task runs here.
            wait_for(lambda: client.hget(task_key, "worker") == b"mainland", timeout=30)
            assert client.zscore(keys.workers, "island") is None
            # Let the island finish its run while cut off: its ack waits in TCP.
            time.sleep(max(0.0, started + TASK_SECONDS + 0.5 - time.monotonic()))
            link.restore()

            wait_for(lambda: "outcome refused" in procs.log(island), timeout=90)
            assert run.wait(timeout=60) == "completed"
            assert run.result(slow) == "mainland"
            assert run.result(after) == "mainland"
            assert client.hget(task_key, "worker") == b"mainland"
            island_log = procs.log(island)
            assert f"task={run.ids[slow]}" in island_log
            assert island.poll() is None, "the partitioned worker died"
            # It comes back as a worker again, with nothing of the old lease left over.
            wait_for(lambda: client.zscore(keys.workers, "island") is not None, timeout=60)
            assert not any(m.decode().startswith(run.ids[slow])
                           for m in client.smembers(keys.leases("island")))
        finally:
            for proc in procs.procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
            server.cleanup()
