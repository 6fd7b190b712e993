"""`balancer serve`, `worker start` and the other commands refuse a Redis older than 7.0
at once, with its version and what is missing, instead of failing at their first BLMPOP
deep in a loop. No Redis 6 installs here: a stand-in answers what a connection sends first
(PING, HELLO, CLIENT SETINFO, SELECT) as Redis 6.2.14 does, and refuses anything else."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.secure import base_env, run

pytestmark = pytest.mark.integration


def _bulk(text: str) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(text), text.encode())


HELLO = (b"%7\r\n" + _bulk("server") + _bulk("redis") + _bulk("version") + _bulk("6.2.14")
         + _bulk("proto") + b":3\r\n" + _bulk("id") + b":7\r\n" + _bulk("mode")
         + _bulk("standalone") + _bulk("role") + _bulk("master") + _bulk("modules") + b"*0\r\n")


def _serve(conn: socket.socket, said: list[str]) -> None:
    """Answer each command (read whole from one recv: they are small) as Redis 6.2."""
    with conn:
        while data := conn.recv(65536):
            for command in data.split(b"*")[1:]:
                words = command.split(b"\r\n")[2::2]
                name = words[0].decode().upper() if words else ""
                said.append(name)
                conn.sendall(HELLO if name == "HELLO" else
                             b"+PONG\r\n" if name == "PING" else
                             b"+OK\r\n" if name in ("CLIENT", "SELECT") else
                             b"-ERR unknown command '%s'\r\n" % name.encode())


@pytest.fixture
def redis_6() -> Iterator[tuple[str, list[str]]]:
    listener = socket.create_server(("127.0.0.1", 0))
    said: list[str] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=_serve, args=(conn, said), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0", said
    listener.close()


@pytest.mark.parametrize("command", [("balancer.cli", "serve"),
                                     ("balancer.worker.cli", "start"),
                                     ("balancer.cli", "status")])
def test_a_redis_older_than_7_is_refused_at_once_naming_its_version(
        redis_6: tuple[str, list[str]], command: tuple[str, ...], tmp_path: Path) -> None:
    url, said = redis_6
    done = run(base_env(url, "old"), *command, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert ("Redis 6.2.14 is too old: balancer needs Redis 7.0 or later (BLMPOP"
            in done.stderr), done.stderr
    assert "Traceback" not in done.stderr
    assert "BLMPOP" not in said and "EVALSHA" not in said  # nothing else was tried
