"""TLS: a real cluster (`balancer serve`, `worker start` with its pool children, client
code, `balancer status`) over rediss:// to a private redis-server speaking only TLS, with
certificates made by openssl: one-way (a CA file, and a password), and mutual (a client
certificate). Without the CA, or without the client certificate, each entry point fails
with one clear line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Processes
from tests.integration.secure import (
    Certs,
    TlsRedisServer,
    base_env,
    need,
    run,
    run_client,
    wait_logged,
)

pytestmark = pytest.mark.integration

PASSWORD = "tls-pa55word-42"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    need("openssl")
    return Certs.make(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_server(certs: Certs) -> Iterator[TlsRedisServer]:
    """TLS only, no client certificate asked, a password."""
    need("redis-server")
    server = TlsRedisServer(certs, password=PASSWORD)
    try:
        yield server.start()
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def mtls_server(certs: Certs) -> Iterator[TlsRedisServer]:
    """TLS only, and a client certificate signed by the CA required."""
    need("redis-server")
    server = TlsRedisServer(certs, client_certs=True)
    try:
        yield server.start()
    finally:
        server.cleanup()


def run_cluster(url: str, namespace: str, tmp_path: Path) -> list[str]:
    """serve, a process-pool worker, a client flow and `balancer status`, all over
    ``url``; what they printed."""
    env = base_env(url, namespace)
    procs = Processes(env, tmp_path)
    try:
        serve = procs.serve()
        worker = procs.worker("--import", "tests.integration.secure_tasks", "--concurrency",
                              "2")
        wait_logged(procs, worker, "started:")
        report = run_client(env, "chain")
        assert (report["state"], report["result"]) == ("completed", 6)
        status = run(env, "balancer.cli", "status")
        assert status.returncode == 0, status.stderr
        assert "secure-chain" in status.stdout
        for proc in (worker, serve):
            assert procs.stop(proc) == 0, procs.log(proc)
        return [procs.log(serve), procs.log(worker), report["stderr"], status.stdout]
    finally:
        procs.cleanup()


def test_a_cluster_runs_over_tls_with_a_ca_file_and_a_password(
        tls_server: TlsRedisServer, namespace: str, tmp_path: Path) -> None:
    printed = run_cluster(tls_server.url, namespace, tmp_path)
    assert f"balancer serve on rediss://:***@127.0.0.1:{tls_server.port}/0?ssl_ca_certs=" \
        in printed[0]
    assert not any(PASSWORD in text for text in printed)


def test_a_cluster_runs_over_mutual_tls(mtls_server: TlsRedisServer, namespace: str,
                                        tmp_path: Path) -> None:
    run_cluster(mtls_server.url, namespace, tmp_path)


def one_line_error(url: str, namespace: str, *command: str) -> str:
    done = run(base_env(url, namespace), *command)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_without_the_ca_or_the_client_certificate_each_entry_point_fails_in_one_line(
        tls_server: TlsRedisServer, mtls_server: TlsRedisServer, namespace: str) -> None:
    no_ca = tls_server.url_with(ca=False)
    for command in (("balancer.cli", "status"), ("balancer.cli", "serve"),
                    ("balancer.worker.cli", "start")):
        line = one_line_error(no_ca, namespace, *command)
        assert line.startswith(f"Error: cannot reach Redis at rediss://:***@127.0.0.1:"
                               f"{tls_server.port}/0: "), line
        assert "certificate verify failed" in line and "?ssl_ca_certs=PATH" in line, line
        assert PASSWORD not in line
    client = run(base_env(no_ca, namespace), "tests.integration.secure_client", "run")
    assert client.returncode != 0
    assert "certificate verify failed" in client.stderr.strip().splitlines()[-1]
    assert PASSWORD not in client.stderr

    no_cert = mtls_server.url_with(client_cert=False)
    line = one_line_error(no_cert, namespace, "balancer.cli", "status")
    assert "may require a client certificate" in line, line
