"""Prefect 2/3's ``pause_flow_run`` and ``resume_flow_run``: a @flow function's body waits
where it is until someone resumes its run, from any process, or a timeout passes.

    @flow
    def release(version: str) -> None:
        build(version)
        approved = pause_flow_run(wait_for_input=Approval, timeout=3600)
        if approved.ok: publish(version)

    # elsewhere:  balancer flow resume <run id> --input ok=true
    #        or:  resume_flow_run(run_id, run_input={"ok": True})

While paused, the run's record holds ``paused`` (a token and since when): ``balancer flow
ID`` says so and how to resume. A resume pushes the token with its input onto
``flow:<id>:resume``; the paused body takes it (a resume of an earlier pause, or a second
one, carries another token, or comes after: it is dropped). Tasks submitted before the
pause go on; the run's ``timeout_seconds`` goes on counting too. Past ``timeout`` the call
raises FlowPauseTimeout, which fails the run unless the body catches it.

Input travels as msgpack (a map of names); ``wait_for_input`` is a class the body gets it
as (a pydantic model, a dataclass: ``cls(**input)``), else the map itself. Like a run's
records, a resume is not signed: whoever can write to Redis can resume a paused run.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from typing import Any

import redis

from balancer import building
from balancer.common import codec, partitions
from balancer.common.codec import CodecError
from balancer.common.keys import Keys
from balancer.common.replies import as_list, as_opt_bytes
from balancer.common.retry import RETRYABLE, describe

log = logging.getLogger("balancer.client")

SLICE = 2.0  # seconds a wait for a resume blocks at a time
RESUME_TTL_MS = 3_600_000  # a resume left unread (its pause ended) is gone after this


class FlowPauseTimeout(TimeoutError):
    """A paused run was not resumed within its ``timeout`` (Prefect's name)."""


def pause_flow_run(wait_for_input: Any = None, timeout: float = 3600,
                   poll_interval: float = 10, key: str | None = None) -> Any:
    """Wait in this @flow function's body until its run is resumed (``resume_flow_run``,
    ``balancer flow resume``); return the input it was resumed with (as
    ``wait_for_input`` if given), or None. ``poll_interval`` and ``key`` are Prefect's and
    change nothing here: the wait is woken at once. In an ``async def`` flow, await it."""
    del poll_interval, key
    run = building.current_run()
    if run is None or not hasattr(run, "scripts"):
        raise RuntimeError("pause_flow_run pauses a @flow function's run: call it in the"
                           " function's body")
    if (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
            or not math.isfinite(timeout) or timeout <= 0):
        raise ValueError(f"pause_flow_run: timeout must be a positive number of seconds,"
                         f" got {timeout!r}")
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _pause(run, wait_for_input, float(timeout))
    return asyncio.to_thread(_pause, run, wait_for_input, float(timeout))


def _pause(run: Any, wait_for_input: Any, timeout: float) -> Any:
    client: redis.Redis = run.client
    keys: Keys = run.keys
    token = secrets.token_hex(8)
    since_ms = run.scripts.now_ms()  # Redis's clock, as every time a record holds
    client.hset(keys.flow(run.id), "paused", f"{token}|{since_ms}|{timeout:g}")
    log.info("flow=%s name=%s paused for at most %gs; resume it with: balancer flow resume"
             " %s", run.id, run.name, timeout, run.id)
    try:
        given = _wait(client, keys, run.id, token, timeout)
    finally:
        pipe = client.pipeline(transaction=False)
        pipe.hdel(keys.flow(run.id), "paused")
        pipe.delete(keys.flow_resume(run.id))
        try:
            pipe.execute()
        except RETRYABLE as exc:
            log.warning("flow=%s: its pause mark stays in its record (%s)", run.id,
                        describe(exc))
    if given is None:
        raise FlowPauseTimeout(f"flow run {run.id} was not resumed within {timeout:g}s")
    log.info("flow=%s name=%s resumed", run.id, run.name)
    if wait_for_input is None:
        return given or None
    return wait_for_input(**given)


def _wait(client: redis.Redis, keys: Keys, flow_id: str, token: str,
          timeout: float) -> dict[str, Any] | None:
    """The input of the first resume of this pause (token), or None past ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            reply = client.blpop([keys.flow_resume(flow_id)], min(SLICE, max(0.01, left)))
        except RETRYABLE as exc:  # Redis away for now: the pause goes on
            log.warning("flow=%s: waiting for a resume, Redis did not answer (%s)", flow_id,
                        describe(exc))
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            continue
        if not reply:
            continue
        raw = as_opt_bytes(as_list(reply)[1]) or b""
        given, _, blob = raw.partition(b"|")
        if given.decode(errors="replace") != token:
            continue  # a resume of an earlier pause
        try:
            values = codec.unpack(blob) if blob else {}
        except CodecError:
            values = None
        if isinstance(values, dict):
            return values
        log.error("flow=%s: a resume with an input that is no map of names was dropped",
                  flow_id)
    return None


def resume_flow_run(flow_run_id: str, run_input: dict[str, Any] | None = None, *,
                    client: redis.Redis | None = None, redis_url: str | None = None,
                    namespace: str | None = None) -> None:
    """Resume the paused run ``flow_run_id`` with ``run_input`` (a map of names, as
    msgpack carries them). ValueError when it is not paused."""
    from balancer.client import resolve_url, talking

    values = dict(run_input or {})
    try:
        blob = codec.pack(values)
    except CodecError as exc:
        raise ValueError(f"flow run {flow_run_id}: its input must travel as msgpack: {exc}"
                         ) from None
    conn, settings = resolve_url(client, redis_url, namespace)
    keys = partitions.flow_keys(Keys(settings.namespace), flow_run_id)
    with talking(conn):
        paused = as_opt_bytes(conn.hget(keys.flow(flow_run_id), "paused"))
        if paused is None:
            raise ValueError(f"flow run {flow_run_id} is not paused")
        token = paused.partition(b"|")[0]
        pipe = conn.pipeline(transaction=False)
        pipe.rpush(keys.flow_resume(flow_run_id), token + b"|" + blob)
        pipe.pexpire(keys.flow_resume(flow_run_id), RESUME_TTL_MS)
        pipe.execute()


def suspend_flow_run(*args: Any, **kwargs: Any) -> None:
    """Prefect's ``suspend_flow_run`` ends the process and runs the flow again from its
    deployment on resume: refused, naming what to do here."""
    raise NotImplementedError("suspend_flow_run is not taken here: pause_flow_run waits in"
                              " the flow's process, and resume_flow_run (or `balancer flow"
                              " resume ID`) resumes it")


def paused_since(raw: bytes | None) -> int | None:
    """Since when (ms) a record's ``paused`` says its run is paused, or None."""
    if raw is None:
        return None
    try:
        _, since, _timeout = raw.decode().split("|")
        return int(since)
    except (UnicodeDecodeError, ValueError):
        return None


__all__ = ["FlowPauseTimeout", "pause_flow_run", "resume_flow_run", "suspend_flow_run"]
