"""A worker of another release (another version of the formats: common/protocol.py) on
the same cluster is leased nothing, as it would misread what it got: the dispatcher says
so once, `balancer status` and `run.why()` show it, and a worker of this release serves
the queue. Real processes; the other release is this code reporting another version."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis
from balancer.common import protocol
from balancer.common.keys import Keys

from balancer import Flow, ProtocolMismatch
from tests.conftest import ROOT, Processes, wait_for
from tests.integration import tasks

pytestmark = pytest.mark.integration


def test_a_worker_of_another_release_gets_no_task_and_is_shown(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    serve = procs.serve()
    other = procs.start("tests.integration.other_release", "worker", "start",
                        "--pool", "thread", "--name", "old-w1", name="worker")
    wait_for(lambda: real.zcard(keys.workers) == 1, timeout=30)
    wait_for(lambda: "worker=old-w1 runs release 9.9.9" in procs.log(serve), timeout=30)

    with Flow("across-releases") as flow:
        tasks.constant(7)
    run = flow.submit(real, namespace=namespace)
    wait_for(lambda: "only workers of another release serve queue default" in " ".join(
        run.why().values()), timeout=30)
    wait_for(lambda: "only workers of another release serve it (old-w1)" in procs.log(serve),
             timeout=30)
    status = subprocess.run([sys.executable, "-m", "balancer.cli", "status", "--json"],
                            cwd=ROOT, env=procs.env, capture_output=True, text=True,
                            timeout=60)
    [row] = json.loads(status.stdout)["workers"]
    assert (row["release"], row["protocol"]) != ("", 0) and row["release"] == "9.9.9"
    shown = subprocess.run([sys.executable, "-m", "balancer.cli", "status"], cwd=ROOT,
                           env=procs.env, capture_output=True, text=True, timeout=60).stdout
    assert "(release 9.9.9, protocol" in shown and "leases it nothing" in shown
    assert run.state == "running" and real.llen(keys.inbox("old-w1")) == 0

    procs.worker("--pool", "thread", "--name", "new-w1")
    assert run.wait(timeout=60) == "completed"
    assert run.result(next(iter(run.ids))) == 7
    assert "constant" not in procs.log(other)  # the other release ran nothing
    assert procs.log(serve).count("worker=old-w1 runs release") == 1


def test_a_client_refuses_to_submit_to_a_cluster_led_by_another_release_until_it_is_not(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    """What a client writes, the cluster's workers read: a client whose release writes
    other formats than the leading dispatcher's refuses before writing anything, naming
    both releases; a worker of this release says why it gets nothing; once a dispatcher
    of this release leads, the same client submits at once (no cached refusal)."""
    keys = Keys(namespace)
    other = procs.start("tests.integration.other_release", "balancer", "serve", name="serve")
    wait_for(lambda: real.get(keys.protocol) is not None, timeout=30)
    assert real.get(keys.protocol) == f"{protocol.VERSION + 1}|9.9.9".encode()
    worker = procs.worker("--pool", "thread", "--name", "new-w1")

    with Flow("to-another-release") as flow:
        tasks.constant(7)
    with pytest.raises(ProtocolMismatch) as refused:
        flow.submit(real, namespace=namespace)
    assert (f"led by a dispatcher of release 9.9.9 (protocol {protocol.VERSION + 1});"
            f" this client runs release {protocol.release()} (protocol {protocol.VERSION})"
            in str(refused.value))
    assert real.zcard(keys.flows) == 0 and not real.keys(f"{{{namespace}}}:task:*")
    wait_for(lambda: "the dispatcher leading the cluster runs release 9.9.9"
             in procs.log(worker), timeout=30)
    shown = subprocess.run([sys.executable, "-m", "balancer.cli", "status"], cwd=ROOT,
                           env=procs.env, capture_output=True, text=True, timeout=60).stdout
    assert f"(release 9.9.9, protocol {protocol.VERSION + 1})" in shown
    assert "WARNING: this code runs release" in shown
    scheduled = subprocess.run(
        [sys.executable, "-m", "balancer.cli", "schedule", "add",
         "tests.integration.scheduled:every_second"], cwd=ROOT, env=procs.env,
        capture_output=True, text=True, timeout=60)
    assert scheduled.returncode == 1 and "Traceback" not in scheduled.stderr
    assert "is led by a dispatcher of release 9.9.9" in scheduled.stderr
    assert not real.exists(keys.schedules)

    procs.stop(other)
    procs.serve()
    wait_for(lambda: real.get(keys.protocol) == protocol.stamp().encode(), timeout=30)
    run = flow.submit(real, namespace=namespace)
    assert run.wait(timeout=60) == "completed" and run.result(next(iter(run.ids))) == 7
    assert procs.log(worker).count("runs release 9.9.9") == 1
