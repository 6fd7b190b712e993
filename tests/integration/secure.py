"""Helpers of the security tests: private servers (TLS, ACL), certificates made with
openssl, an environment per process, and client code run as a process of its own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Processes, RedisServer, wait_for


def base_env(url: str, namespace: str) -> dict[str, str]:
    """The environment of a test's processes: this cluster, fast timers, no other
    BALANCER_* variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALANCER_")}
    env.update(BALANCER_REDIS_URL=url, BALANCER_NAMESPACE=namespace,
               BALANCER_HEARTBEAT_INTERVAL="0.2", BALANCER_WORKER_TIMEOUT="2.0",
               BALANCER_DISPATCH_TICK="0.1", BALANCER_SHUTDOWN_GRACE="5",
               PYTHONPATH=str(ROOT))
    return env


def run(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """A command (``python -m ARGS``) run to its end, its output kept."""
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def run_client(env: dict[str, str], mode: str, *args: str) -> dict[str, Any]:
    """Client code (``tests.integration.secure_client``), as a process; its report."""
    done = run(env, "tests.integration.secure_client", mode, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    report["stderr"] = done.stderr
    return report


def wait_logged(procs: Processes, proc: subprocess.Popen[bytes], text: str,
                timeout: float = 30) -> None:
    """Wait until ``proc`` logged ``text`` (failing with its log if it exits first)."""
    def seen() -> bool:
        assert proc.poll() is None, procs.log(proc)
        return text in procs.log(proc)
    wait_for(seen, timeout=timeout)


def need(tool: str) -> None:
    """Skip without ``tool`` on PATH; in CI (CI=true) fail instead: .ci/run installs it."""
    if shutil.which(tool) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {tool} is not on PATH (.ci/run must install it)")
        pytest.skip(f"{tool} is not on PATH")


@dataclass(frozen=True)
class Certs:
    """A CA, a server certificate for 127.0.0.1 and localhost, a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @classmethod
    def make(cls, folder: Path) -> Certs:
        def openssl(*args: str) -> None:
            subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True,
                           timeout=60)

        openssl("req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-days", "2",
                "-subj", "/CN=balancer test CA", "-keyout", "ca.key", "-out", "ca.crt")
        for name, cn, ext in (
                ("server", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                        "extendedKeyUsage=serverAuth\n"),
                ("client", "balancer client", "extendedKeyUsage=clientAuth\n")):
            (folder / f"{name}.ext").write_text("basicConstraints=CA:FALSE\n"
                                                "keyUsage=digitalSignature,keyEncipherment\n"
                                                + ext)
            openssl("req", "-new", "-nodes", "-newkey", "rsa:2048", "-subj", f"/CN={cn}",
                    "-keyout", f"{name}.key", "-out", f"{name}.csr")
            openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                    "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext",
                    "-out", f"{name}.crt")
        return cls(folder / "ca.crt", folder / "server.crt", folder / "server.key",
                   folder / "client.crt", folder / "client.key")


class TlsRedisServer(RedisServer):
    """A private redis-server speaking only TLS; with ``client_certs`` it requires a
    client certificate signed by the CA (mutual TLS). ``url`` trusts the CA and, for
    mutual TLS, presents the client certificate."""

    def __init__(self, certs: Certs, *extra: str, client_certs: bool = False,
                 password: str = "") -> None:
        super().__init__(*extra)
        self.certs = certs
        self.client_certs = client_certs
        self.password = password

    def command(self) -> list[str]:
        c = self.certs
        auth = ("--requirepass", self.password) if self.password else ()
        return ["redis-server", "--port", "0", "--tls-port", str(self.port), "--bind",
                "127.0.0.1", "--dir", self.dir, "--save", "", "--tls-cert-file",
                str(c.server_cert), "--tls-key-file", str(c.server_key), "--tls-ca-cert-file",
                str(c.ca), "--tls-auth-clients", "yes" if self.client_certs else "no",
                *auth, *self.extra]

    def url_with(self, ca: bool = True, client_cert: bool | None = None) -> str:
        """The server's URL; without the CA, or the client certificate, on demand."""
        client_cert = self.client_certs if client_cert is None else client_cert
        options = [f"ssl_ca_certs={self.certs.ca}"] if ca else []
        if client_cert:
            options += [f"ssl_certfile={self.certs.client_cert}",
                        f"ssl_keyfile={self.certs.client_key}"]
        auth = f":{self.password}@" if self.password else ""
        query = "?" + "&".join(options) if options else ""
        return f"rediss://{auth}127.0.0.1:{self.port}/0{query}"

    @property
    def url(self) -> str:
        return self.url_with()

    def start(self) -> TlsRedisServer:
        try:
            super().start()
        except RuntimeError as exc:
            if "tls" in str(exc).lower() and os.environ.get("CI") != "true":
                pytest.skip(f"this redis-server cannot serve TLS: {str(exc)[-300:]}")
            raise
        return self
