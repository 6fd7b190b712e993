"""A process pool's forkserver, forked from the supervisor rather than started as a new
interpreter.

multiprocessing starts its forkserver as a fresh interpreter, which imports redis-py, the
worker's modules and click once more: memory the pool processes forked from it share with
it, but not with the supervisor, which holds the same modules already. Forked from the
supervisor, the forkserver and every pool process it forks share the supervisor's pages
instead, and a worker of one slot can fork its pool process too (spawned, it was a whole
interpreter of its own).

Forked before the supervisor starts a thread or opens a pipe to a pool process: a fork
copies the locks other threads hold, and the forkserver would hold a copy of each pipe's
ends (a pool process would never see its supervisor's end close). The forked process then
runs multiprocessing's own server loop (``multiprocessing.forkserver.main``) with the
pool's preload (``worker.preload``), so pool processes are started, watched and reaped as
before, and ``ensure_running`` finds it running. Where that cannot be done (the supervisor
runs other threads, as in a test's process, or a Python whose forkserver takes other
arguments than CPython 3.10 to 3.13's), ``start`` says so and multiprocessing starts its
own.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import logging
import os
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from multiprocessing import connection, forkserver, resource_tracker, util
from typing import Any, NoReturn

log = logging.getLogger("worker")

# CPython 3.14's forkserver also reads an authentication key from a pipe it is given.
_SUPPORTED = list(inspect.signature(forkserver.main).parameters) == [
    "listener_fd", "alive_r", "preload", "main_path", "sys_path"]


def running() -> bool:
    """Whether this process has started its pool's forkserver (forked or not)."""
    server: Any = forkserver._forkserver
    return server._forkserver_pid is not None


def start(preload: list[str]) -> bool:
    """Fork this process into the pool's forkserver, importing ``preload`` there, unless
    one runs already; whether one runs now. False where it cannot be forked safely."""
    server: Any = forkserver._forkserver
    with server._lock:
        if server._forkserver_pid is not None:
            return True
        if not _SUPPORTED or threading.active_count() > 1:
            return False
        util._flush_std_streams()  # type: ignore[attr-defined]  # else written twice
        gc.freeze()  # what the forked processes share is not written to by a collection
        tracker: Any = resource_tracker._resource_tracker
        tracker_fds = os.pipe() if tracker._fd is None else None
        with socket.socket(socket.AF_UNIX) as listener:
            address = connection.arbitrary_address("AF_UNIX")  # type: ignore[attr-defined]
            listener.bind(address)
            if not util.is_abstract_socket_namespace(address):
                os.chmod(address, 0o600)
            listener.listen()
            # Every process that starts pool processes holds the write end of the "alive"
            # pipe: the forkserver ends when its read end says they all did.
            alive_r, alive_w = os.pipe()
            try:
                pid = os.fork()
            except OSError:  # this host's limit: multiprocessing tries its own, and says
                for fd in (alive_r, alive_w, *(tracker_fds or ())):
                    os.close(fd)
                return False
            if pid == 0:  # the supervisor's handlers stop the worker: not this process
                signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as worker.preload says
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                os.close(alive_w)  # the supervisor's: its exit must close the last one
                _run(_serve, listener.fileno(), alive_r, preload, tracker_fds)
            os.close(alive_r)
            if tracker_fds is not None:  # the forkserver's child: not this process's to wait
                os.close(tracker_fds[0])
                tracker._fd, tracker._pid = tracker_fds[1], None
        server._forkserver_address = address
        server._forkserver_alive_fd = alive_w
        server._forkserver_pid = pid
    log.debug("pool forkserver pid=%s forked from the supervisor", pid)
    return True


def _serve(listener_fd: int, alive_r: int, preload: list[str],
           tracker_fds: tuple[int, int] | None) -> None:
    """The forkserver: its preload imported (as multiprocessing would: a module that
    cannot be imported is left out), then multiprocessing's server loop. multiprocessing's
    resource tracker (it unlinks the semaphores and shared memory of pool processes that
    died) is forked from it in between, once its pages are the ones the pool processes
    will share (a new interpreter, it held 6 MB of its own; forked from the supervisor,
    which goes on writing to its pages, 5). The tracker ends when every process holding
    its pipe's write end has: the supervisor and the pool processes."""
    for name in preload:
        with contextlib.suppress(ImportError):
            __import__(name)
    if tracker_fds is not None:
        read, write = tracker_fds
        os.close(write)
        if os.fork() == 0:
            os.close(listener_fd)
            os.close(alive_r)
            _run(resource_tracker.main, read)
        os.close(read)
    forkserver.main(listener_fd, alive_r, [])


def _run(main: Callable[..., object], *args: object) -> NoReturn:
    """A forked process's whole life: ``main``, then exit, never returning into the
    supervisor's code that forked it."""
    code = 0
    try:
        main(*args)
    except SystemExit as exc:  # the forkserver's, once its "alive" pipe closed
        code = exc.code if isinstance(exc.code, int) else 0
    except BaseException:
        code = 1
        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)
