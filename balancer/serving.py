"""Serving deployments: Prefect 2/3's ``flow.serve(...)`` and ``serve(*deployments)``.

    if __name__ == "__main__":
        etl.serve(name="nightly", cron="0 2 * * *")

A serve process runs until it is stopped (Ctrl-C, SIGTERM). For each deployment it
fires the schedule's due times and takes the runs asked of it (``run_deployment``,
``balancer deployment run``), each run in a thread of its own, so that a long run does
not hold up the next one; ``limit`` bounds how many run at once (5 unless given, as
Prefect's runner's ``PREFECT_RUNNER_PROCESS_LIMIT``: a flood of requests must not start a
thread each; a due time or a request
then waits for a run to end). The flow function is this process's code, so the runs go
where its tasks go: the cluster's workers.

Several processes may serve the same deployment, on any hosts, for availability: each due
time is fired once, by the one that claims it in Redis first (``deployment-due``, a SET
NX), and each request is taken by one (a list pop). Due times follow Redis's clock (its
offset read at each beat), so that processes on hosts whose clocks differ agree. Due
times missed while no process served (or this one could not keep up) are not made up
for: the next one after now is fired, and the skip logged. Every 5 s each process beats
in ``deployments`` what it serves, for ``balancer deployment ls``.

On stop it fires nothing more, takes no request, and waits for its runs to end; a second
Ctrl-C ends them as crashed (their functions close their runs as failed, on_crashed hooks
called), so that no record stays "running".
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis

from balancer.common import asyncraise, logs, partitions, signing
from balancer.common.connection import Direct, server_time_ms
from balancer.common.keys import Keys
from balancer.common.models import new_id
from balancer.common.redisclock import RedisClock
from balancer.common.replies import as_bytes, as_bytes_list, as_list
from balancer.common.retry import RETRYABLE_ON_CLUSTER as RETRYABLE
from balancer.common.retry import Backoff, describe, persist
from balancer.common.settings import Settings
from balancer.deployments import Deployment, Request, Served, beats, request_message
from balancer.flowfn import assigned_id

log = logging.getLogger("balancer.serve")

BEAT = 5.0  # seconds between beats in `deployments` (deployments.GONE_AFTER_MS: 3 missed)
LISTEN = 1.0  # seconds a wait for requests blocks (so that a stop is seen soon)
TICK = 0.5  # longest sleep of the scheduler between looks at the clock and the stop
DEFAULT_LIMIT = 5  # runs at once, unless serve is given another limit
FORGET_AFTER_MS = 3_600_000  # a beat this old is removed: its process is long gone
DUE_CLAIM_MS = 600_000  # how long a fired due time's claim stays (a late one is not fired)
CRASH_GRACE = 10.0  # seconds the runs get to close themselves as crashed on a second Ctrl-C
_RUN_ID = re.compile(r"[0-9a-f]{24}(-p[1-9][0-9]{0,3})?")


class ServeStopped(BaseException):
    """Raised in a run's thread when its serve process is stopped without waiting for it
    (a BaseException, as KeyboardInterrupt: no ``except Exception`` in a flow swallows it)."""


class Server:
    def __init__(self, deployments: Sequence[Deployment], client: redis.Redis,
                 settings: Settings, limit: int = DEFAULT_LIMIT) -> None:
        names = [d.full_name for d in deployments]
        if not deployments or len(set(names)) != len(names):
            raise ValueError(f"serve takes deployments of distinct names, got {names}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"serve: limit must be a whole number of runs, at least 1, got"
                             f" {limit!r}")
        self.deployments = {d.full_name: d for d in deployments}
        self.client = client
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self.id = f"{socket.gethostname()}:{os.getpid()}:{new_id()[-6:]}"
        self.stopping = threading.Event()
        self.limit = limit
        self._room = threading.Condition()  # guards _active, the runs going on
        self._active = 0
        self.signer = signing.signer(settings.signing_keys)
        # Due times follow Redis's clock, read at each beat.
        self.clock = RedisClock(lambda: server_time_ms(client, self.keys.deployments))
        self.next_due: dict[str, int | None] = {}
        # The runs' threads going on; notified as each ends. Waits go through it, not
        # Thread.join: a join that Ctrl-C interrupts can leave a live thread reading as
        # ended (CPython's tstate lock), and the process would exit under its run.
        self._runs: set[threading.Thread] = set()
        self._runs_lock = threading.Condition()
        self._by_list = {self.keys.deployment_runs(n): n for n in self.deployments}
        self._beats = 0

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> None:
        """Serve until ``stopping`` is set, then wait for the runs started."""
        self.clock.sync()
        now = int(self.clock.now_ms())
        for name, dep in self.deployments.items():
            self.next_due[name] = (dep.schedule.next_after(now)
                                   if dep.schedule is not None and not dep.paused else None)
            log.info("serving deployment %s (%s) as %s; next run: %s", name, dep.describe(),
                     self.id, _when(self.next_due[name]))
        self._beat()
        listener = threading.Thread(target=self._listen, name="serve-requests", daemon=True)
        listener.start()
        beat_at = time.monotonic() + BEAT
        backoff = Backoff()
        while not self.stopping.is_set():
            now = int(self.clock.now_ms())
            for name, due in list(self.next_due.items()):
                if due is not None and due <= now:
                    try:
                        self._due(name, due, now)
                    except Exception:  # that due time is lost; the next ones are not
                        log.exception("deployment %s: the run due at %s was not fired", name,
                                      _when(due))
            if time.monotonic() >= beat_at:
                try:
                    self._beat()
                    if backoff.recovered():
                        log.info("serve %s: Redis answers again", self.id)
                except RETRYABLE as exc:
                    if backoff.failed():
                        log.error("serve %s: cannot beat (%s); its schedules go on by this"
                                  " host's clock", self.id, describe(exc))
                except Exception:  # not said in `deployment ls` for now; it serves on
                    log.exception("serve %s: its beat failed", self.id)
                beat_at = time.monotonic() + BEAT
            wake = min([d for d in self.next_due.values() if d is not None], default=None)
            sleep = TICK if wake is None else max(0.0, min(TICK, (wake - now) / 1000))
            self.stopping.wait(sleep)
        listener.join(LISTEN + 1)
        self._leave()

    def stop(self) -> None:
        self.stopping.set()

    def wait_for_runs(self, timeout: float | None = None) -> int:
        """Wait until every run started has ended, or ``timeout``; how many go on."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._runs_lock:
            if self._runs and timeout is None:
                log.info("serve %s: waiting for %d run(s) to end (Ctrl-C again ends them"
                         " as crashed)", self.id, len(self._runs))
            while self._runs:
                left = TICK if deadline is None else min(TICK, deadline - time.monotonic())
                if left <= 0:
                    break
                self._runs_lock.wait(left)
            return len(self._runs)

    def crash_runs(self, grace: float = CRASH_GRACE) -> None:
        """End the runs going on as crashed (a second Ctrl-C): ServeStopped is raised in
        each run's thread, where its flow function closes its run as failed (its
        on_crashed hooks called), so that no record is left "running" for good. A thread
        blocked outside Python meets it when that call returns: each gets ``grace``
        seconds in all."""
        with self._runs_lock:
            runs = list(self._runs)
        for thread in runs:
            if thread.ident is not None:
                asyncraise.raise_in(thread.ident, ServeStopped)
        left = self.wait_for_runs(grace)
        log.warning("serve %s: %d run(s) ended as crashed%s", self.id, len(runs) - left,
                    f"; {left} did not end in {grace:g}s and stay running" if left else "")

    # -- schedules ---------------------------------------------------------------------

    def _due(self, name: str, due: int, now: int) -> None:
        """Fire ``due`` of ``name``'s schedule if this process claims it, and plan the
        next due time after now (those missed between are skipped, and said so)."""
        dep = self.deployments[name]
        assert dep.schedule is not None
        following = dep.schedule.next_after(max(due, now))
        skipped = dep.schedule.count(due + 1, now + 1) if now > due else 0  # (due, now]
        self.next_due[name] = following
        if skipped:
            log.warning("deployment %s: %d due time(s) missed while busy or unable to reach"
                        " Redis were skipped", name, skipped)
        try:
            claimed = self.client.set(self.keys.deployment_due(name, due), self.id, nx=True,
                                      px=DUE_CLAIM_MS)
        except RETRYABLE as exc:
            log.error("deployment %s: the run due at %s was not fired: Redis did not answer"
                      " (%s)", name, _when(due), describe(exc))
            return
        if not claimed:
            log.debug("deployment %s: the run due at %s was fired by another serve process",
                      name, _when(due))
            return
        run_id = self._new_run_id()
        if run_id is not None:
            self._start(dep, dict(dep.parameters), run_id, f"scheduled for {_when(due)}")

    def _new_run_id(self) -> str | None:
        from balancer.dynamic import new_run_id

        try:
            return new_run_id(self.client, self.keys)
        except RETRYABLE as exc:
            log.error("serve %s: cannot place a run (%s)", self.id, describe(exc))
            return None

    # -- requests ----------------------------------------------------------------------

    def _listen(self) -> None:
        """Take the runs asked of the deployments, one at a time (none while ``limit``
        runs go on), until the stop."""
        backoff = Backoff()
        lists = list(self._by_list)
        # Its own connection, which waits past the block for the reply whatever the
        # client's socket timeout (every list is in partition 0: one slot).
        direct = Direct(self.client, read_timeout=LISTEN + 5.0, route=lists[0])
        while not self.stopping.is_set():
            if not self._has_room():  # at its limit: take no request until a run ends
                with self._room:
                    self._room.wait(TICK)
                continue
            try:
                reply = direct.call("BLMPOP", LISTEN, len(lists), *lists, "LEFT")
                if backoff.recovered():
                    log.info("serve %s: takes requests again", self.id)
            except RETRYABLE as exc:
                if backoff.failed():
                    log.error("serve %s: cannot take requests (%s)", self.id, describe(exc))
                self.stopping.wait(backoff.delay)
                continue
            if not reply:
                continue
            try:
                key, entries = as_list(reply)
                self._asked(self._by_list[as_bytes(key).decode()], as_bytes_list(entries)[0])
            except Exception:  # one bad request must not stop the taking of the others
                log.exception("serve %s: a run request could not be handled", self.id)

    def _asked(self, name: str, raw: bytes) -> None:
        """Start the run asked for, unless the request is not one this process may run
        (logged, dropped)."""
        try:
            request = Request.decode(raw)
        except ValueError as exc:
            log.error("deployment %s: a run request was dropped: %s", name, exc)
            return
        # Checked until Redis answers: the request is out of its list, in this process only.
        refusal = persist(f"check a run asked of {name}", request.run_id,
                          lambda: self._refusal(name, request), log)
        if refusal is not None:
            log.error("deployment %s: a run request was dropped: %s", name, refusal)
            return
        dep = self.deployments[name]
        self._start(dep, {**dep.parameters, **request.parameters}, request.run_id,
                    "asked for")

    def _refusal(self, name: str, request: Request) -> str | None:
        if self.signer is not None and not self.signer.verify(
                request_message(name, request.run_id, request.parameters, request.asked_ms),
                request.sig.encode()):
            return (f"run {request.run_id} is not signed with one of this process's"
                    " BALANCER_SIGNING_KEYS")
        if not _RUN_ID.fullmatch(request.run_id):
            return f"{request.run_id!r} is not a flow run id"
        from balancer.common import clusterfacts

        count = clusterfacts.count_to_write(self.client, self.keys)
        if partitions.of_flow(request.run_id) >= count:
            return f"run {request.run_id} names a partition the cluster has not ({count})"
        if self.client.exists(partitions.flow_keys(self.keys, request.run_id).flow(
                request.run_id)):
            return f"a run {request.run_id} exists already"
        return None

    # -- runs --------------------------------------------------------------------------

    def _has_room(self) -> bool:
        with self._room:
            return self._active < self.limit

    def _take_room(self) -> bool:
        """Count a run in, once fewer than ``limit`` run; False when stopping first."""
        with self._room:
            while self._active >= self.limit:
                if self.stopping.is_set():
                    return False
                self._room.wait(TICK)
            self._active += 1
            return True

    def _free_room(self) -> None:
        with self._room:
            self._active -= 1
            self._room.notify_all()

    def _start(self, dep: Deployment, parameters: dict[str, Any], run_id: str,
               why: str) -> None:
        """Run in a thread of its own, once ``limit`` allows (a request taken while a due
        time took the last room waits for it here; a stop drops it, logged)."""
        if not self._take_room():
            log.warning("deployment %s: run %s (%s) not started: serve is stopping",
                        dep.full_name, run_id, why)
            return
        thread = threading.Thread(target=self._run, args=(dep, parameters, run_id, why),
                                  name=f"run-{run_id}", daemon=True)
        with self._runs_lock:
            self._runs.add(thread)
        thread.start()

    def _run(self, dep: Deployment, parameters: dict[str, Any], run_id: str, why: str) -> None:
        log.info("deployment %s: run %s starts (%s)", dep.full_name, run_id, why)
        try:
            with assigned_id(run_id, dep.full_name):
                outcome: Any = dep.flow(**parameters, return_state=True)
                if inspect.iscoroutine(outcome):
                    outcome = asyncio.run(outcome)
            log.info("deployment %s: run %s ended %s%s", dep.full_name, run_id,
                     outcome.name, f": {outcome.message}" if outcome.is_failed() else "")
        except Exception as exc:  # the run could not even begin (Redis, its name...)
            log.error("deployment %s: run %s did not run: %s", dep.full_name, run_id,
                      describe(exc))
        except ServeStopped:  # its function closed the run as crashed on its way out
            log.warning("deployment %s: run %s crashed: serve was stopped", dep.full_name,
                        run_id)
        finally:
            self._free_room()
            with self._runs_lock:
                self._runs.discard(threading.current_thread())
                self._runs_lock.notify_all()

    # -- what it serves ----------------------------------------------------------------

    def _beat(self) -> None:
        self.clock.sync()
        now = int(self.clock.now_ms())
        fields = {f"{name}|{self.id}": Served(
            name, self.id, dep.flow.name, dep.describe(), dep.parameters,
            socket.gethostname(), os.getpid(), now, self.next_due.get(name),
            dep.about()).encode()
            for name, dep in self.deployments.items()}
        self.client.hset(self.keys.deployments, mapping=fields)  # type: ignore[arg-type]
        self._beats += 1
        if self._beats % 12 == 1:  # about each minute: forget processes long gone
            old = [f"{s.deployment}|{s.server}" for s in beats(self.client, self.keys)
                   if now - s.seen_ms > FORGET_AFTER_MS]
            if old:
                self.client.hdel(self.keys.deployments, *old)

    def _leave(self) -> None:
        try:
            self.client.hdel(self.keys.deployments,
                             *[f"{name}|{self.id}" for name in self.deployments])
        except RETRYABLE as exc:
            log.warning("serve %s: its beats stay in Redis (%s)", self.id, describe(exc))


def _when(ms: int | None) -> str:
    if ms is None:
        return "none (no schedule, or paused)"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def serve(*deployments: Deployment, limit: int | None = None,
          print_starting_message: bool = True, pause_on_shutdown: bool = True,
          redis_url: str | None = None, namespace: str | None = None) -> None:
    """Serve ``deployments`` until this process is stopped (Prefect's ``serve``), at most
    ``limit`` runs at once (None: DEFAULT_LIMIT). The cluster: ``redis_url``, else the
    first deployment's flow's, else ``BALANCER_REDIS_URL`` (else the embedded one, which
    only this process sees)."""
    del pause_on_shutdown  # nothing to pause: a stopped process fires nothing
    if not deployments:
        raise ValueError("serve: give at least one deployment (flow.to_deployment(...))")
    first = deployments[0].flow
    if redis_url:  # not the flow's cluster first: that may start the embedded one for nothing
        from balancer.client import resolve_url

        client, settings = resolve_url(None, redis_url, namespace or first.options.namespace)
    else:
        client, settings = first._cluster(None)
    server = Server(deployments, client, settings,
                    DEFAULT_LIMIT if limit is None else limit)
    _show_logs()
    if print_starting_message:
        names = ", ".join(repr(d.full_name) for d in deployments)
        print(f"Serving {names} as {server.id}: scheduled runs fire here.", flush=True)
        if settings.redis_url or redis_url or first.options.redis_url:
            print(f"To ask for a run:\n\n    $ balancer deployment run"
                  f" {deployments[0].full_name!r}\n", flush=True)
        else:
            print("On the embedded cluster, which only this process sees: set"
                  " BALANCER_REDIS_URL to serve a cluster's deployments.\n", flush=True)
    previous = _on_sigterm(server)
    try:
        try:
            server.run()
        except KeyboardInterrupt:
            server.stop()
            server._leave()
        try:
            server.wait_for_runs()
        except KeyboardInterrupt:
            server.crash_runs()
        log.info("serve %s: stopped", server.id)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _show_logs() -> None:
    """A serve process says what it fires and how each run ends (and the runs' own
    lines, ``get_run_logger``): when the program configured no logging, the project's
    lines go to stderr, as the CLI's do."""
    project = logging.getLogger("balancer")
    if logging.getLogger().handlers or project.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logs.ScrubbingFormatter(logs.FORMAT))
    project.addHandler(handler)
    if project.level == logging.NOTSET:
        project.setLevel(logging.INFO)


def _on_sigterm(server: Server) -> Any:
    """SIGTERM stops the server as Ctrl-C does (in the main thread only); the handler it
    replaced."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, lambda *_: server.stop())


__all__ = ["Server", "serve"]
