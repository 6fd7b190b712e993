"""What a client or anyone who can write to Redis can make a worker do: run registered
tasks of allowed modules only, never an inbox entry without its lease, and (with signing
keys) never a spec without a client's signature. Real `balancer serve` and `worker start`
processes on a real Redis."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest
import redis
from balancer.common import codec
from balancer.common.keys import Keys

from balancer import Flow, task
from tests.conftest import Processes, wait_for
from tests.integration import tasks

KEY_1 = "first-signing-key-0123456789"
KEY_2 = "second-signing-key-0123456789"


def _script_task(folder: Path, marker: Path) -> str:
    """A @task in a script outside the worker's folder; it leaves ``marker`` if it runs."""
    script = folder / "outside.py"
    script.write_text(textwrap.dedent(f"""
        from balancer import task

        @task
        def touch() -> str:
            open({str(marker)!r}, "w").close()
            return "ran"
    """))
    return f"{script}:touch"


def _tamper(client: redis.Redis, keys: Keys, run, node, **fields: object) -> None:  # type: ignore[no-untyped-def]
    client.hset(keys.task(run.ids[node]), mapping=fields)  # type: ignore[arg-type]


def _paused(client: redis.Redis, keys: Keys, paused: bool) -> None:
    client.hset(keys.queue_conf("default"), "paused", "1" if paused else "0")
    if not paused:
        client.rpush(keys.wake, "q")


def _workers(client: redis.Redis, keys: Keys, n: int = 1) -> None:
    wait_for(lambda: client.zcard(keys.workers) >= n, timeout=30)


@pytest.mark.parametrize("pool", ["process", "thread"])
def test_a_worker_runs_only_registered_tasks_of_allowed_modules(
    procs: Processes, real: redis.Redis, namespace: str, tmp_path: Path, pool: str
) -> None:
    keys = Keys(namespace)
    procs.serve()
    worker = procs.worker("--concurrency", "2", "--pool", pool)
    _workers(real, keys)
    marker = tmp_path / "ran"
    _paused(real, keys, True)
    with Flow("attacks") as flow:
        shell = task(os.system)(f"touch {marker}")  # any callable, as a client may write
        exec_ = tasks.constant(1)
        script = tasks.constant(2)
        plain = tasks.constant(3)
        good = tasks.constant(4)
    run = flow.submit(real, namespace=namespace)
    _tamper(real, keys, run, exec_, fn="builtins:exec",
            args=codec.pack([[f"open({str(marker)!r}, 'w')"], {}]))
    _tamper(real, keys, run, script, fn=_script_task(tmp_path, marker))
    # A module the worker may import, but an attribute of it that is no @task.
    _tamper(real, keys, run, plain, fn="tests.integration.tasks:os.system",
            args=codec.pack([[f"touch {marker}"], {}]))
    _paused(real, keys, False)

    wait_for(lambda: run.task_state(good) == "completed", timeout=30)
    for node in (shell, exec_, script, plain):
        wait_for(lambda node=node: run.task_state(node) == "failed", timeout=30)
        error = run.error(node)
        assert error is not None and error.type == "balancer.TaskNotAllowed", error
        # It says how to allow it.
        assert ("not a @task" if node is plain else "--allow") in error.message
        assert real.hget(keys.task(run.ids[node]), "failures") == b"1"  # not retried
    assert not marker.exists()
    assert worker.poll() is None


def test_allow_lets_a_worker_run_tasks_of_another_folder(
    procs: Processes, real: redis.Redis, namespace: str, tmp_path: Path
) -> None:
    keys = Keys(namespace)
    procs.serve()
    procs.worker("--concurrency", "1", "--pool", "process", "--allow", str(tmp_path))
    _workers(real, keys)
    marker = tmp_path / "ran"
    _paused(real, keys, True)
    with Flow("allowed") as flow:
        node = tasks.constant(1)
    run = flow.submit(real, namespace=namespace)
    _tamper(real, keys, run, node, fn=_script_task(tmp_path, marker), args=codec.pack([[], {}]))
    _paused(real, keys, False)
    assert run.wait(timeout=30) == "completed"
    assert run.result(node) == "ran" and marker.exists()


def test_an_inbox_entry_without_its_lease_is_dropped_and_never_run(
    procs: Processes, real: redis.Redis, namespace: str, tmp_path: Path
) -> None:
    keys = Keys(namespace)
    procs.serve()
    worker = procs.worker("--concurrency", "1", "--pool", "process", "--name", "target",
                          "--allow", str(tmp_path))
    _workers(real, keys)
    marker = tmp_path / "ran"
    fn = _script_task(tmp_path, marker).encode()
    fields = [b"default", b"f", b"", fn, b"touch", b"", codec.pack([[], {}])]
    forged = b"forged|1.1.1|" + b"".join(b"%d:%s" % (len(f), f) for f in fields)
    real.rpush(keys.inbox("target"), forged)
    with Flow("after") as flow:
        node = tasks.constant(5)
    run = flow.submit(real, namespace=namespace)
    assert run.wait(timeout=30) == "completed" and run.result(node) == 5
    wait_for(lambda: "holds no lease" in procs.log(worker), timeout=10)
    assert not marker.exists()
    assert real.llen(keys.inbox("target")) == 0


def test_with_signing_keys_workers_run_only_specs_a_client_signed(
    procs: Processes, real: redis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = Keys(namespace)
    procs.env["BALANCER_SIGNING_KEYS"] = f"{KEY_1},{KEY_2}"  # KEY_2 rotates in
    procs.serve()
    worker = procs.worker("--concurrency", "2", "--pool", "process")
    _workers(real, keys)

    monkeypatch.setenv("BALANCER_SIGNING_KEYS", KEY_2)  # a client already on the new key
    _paused(real, keys, True)
    with Flow("signed") as flow:
        fine = tasks.constant(1)
        changed = tasks.constant(2)
        renamed = tasks.constant(3)
        after = tasks.add(fine, 10)
    run = flow.submit(real, namespace=namespace)
    _tamper(real, keys, run, changed, args=codec.pack([[99], {}]))
    _tamper(real, keys, run, renamed, fn="tests.integration.tasks:square")
    monkeypatch.delenv("BALANCER_SIGNING_KEYS")  # a client without the keys
    with Flow("unsigned") as unsigned_flow:
        unsigned = tasks.constant(4)
    unsigned_run = unsigned_flow.submit(real, namespace=namespace)
    _paused(real, keys, False)

    wait_for(lambda: run.task_state(after) == "completed", timeout=30)
    assert run.result(after) == 11
    for r, node, why in ((run, changed, "does not match"), (run, renamed, "does not match"),
                         (unsigned_run, unsigned, "carries no signature")):
        wait_for(lambda r=r, node=node: r.task_state(node) == "dead", timeout=30)
        error = r.error(node)
        assert error is not None and error.type == "balancer.BadSignature", error
        assert why in error.message
    assert real.zcard(keys.dlq) == 3  # quarantined where `balancer dlq ls` shows them
    assert worker.poll() is None


def test_with_signing_keys_a_maps_children_run_signed_by_the_dispatcher(
    procs: Processes, real: redis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dispatcher writes a map's children: with the cluster's keys it signs them,
    and workers that refuse unsigned specs run them."""
    keys = Keys(namespace)
    procs.env["BALANCER_SIGNING_KEYS"] = KEY_1
    procs.serve()
    procs.worker("--concurrency", "2", "--pool", "process")
    _workers(real, keys)
    monkeypatch.setenv("BALANCER_SIGNING_KEYS", KEY_1)
    with Flow("signed-map") as flow:
        mapped = tasks.double.map(tasks.numbers(5))
    run = flow.submit(real, namespace=namespace)
    assert run.wait(timeout=60) == "completed", run.first_failure()
    assert run.result(mapped) == [0, 2, 4, 6, 8]
    assert real.zcard(keys.dlq) == 0
