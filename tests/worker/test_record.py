"""The record a pool child shares with its supervisor: what it holds, and since when."""

from __future__ import annotations

import multiprocessing

from balancer.common.signals import Lease
from balancer.worker.record import FINISHING, IDLE, RUNNING, TAKEN, Record


def lease(task_id: str = "t1", fn: str = "m:f", timeout: float | None = 2.5) -> Lease:
    return Lease(task_id, "3.1.u1", "q", "flow1", timeout, fn, "f", b"\x90", b"args")


def make() -> tuple[Record, Record]:
    """The child's and the supervisor's view of one shared record."""
    mine = Record(multiprocessing.get_context("spawn"))
    return mine, Record.attach(mine.shared)


def test_the_supervisor_reads_the_lease_and_phase_the_child_wrote() -> None:
    child, supervisor = make()
    assert supervisor.read().phase == IDLE and supervisor.read().lease is None
    child.took(lease())
    snap = supervisor.read()
    assert snap.phase == TAKEN and snap.lease is not None
    assert (snap.lease.task_id, snap.lease.token, snap.lease.queue, snap.lease.flow,
            snap.lease.timeout, snap.lease.fn) == ("t1", "3.1.u1", "q", "flow1", 2.5, "m:f")
    child.started(12.5, 1_700_000_000_123)
    snap = supervisor.read()
    assert (snap.phase, snap.started, snap.started_ms) == (RUNNING, 12.5, 1_700_000_000_123)
    child.finishing()
    assert supervisor.read().phase == FINISHING
    child.idle()
    assert supervisor.read().lease is None


def test_the_supervisor_reads_the_partition_a_lease_was_taken_from() -> None:
    child, supervisor = make()
    child.took(lease()._replace(partition=2))
    snap = supervisor.read()
    assert snap.lease is not None and snap.lease.partition == 2


def test_each_lease_has_a_new_generation() -> None:
    child, supervisor = make()
    child.took(lease("a"))
    first = supervisor.read().gen
    child.idle()
    child.took(lease("b"))
    assert supervisor.read().gen == first + 1


def test_the_child_is_told_once_that_the_supervisor_sleeps() -> None:
    child, supervisor = make()
    assert child.took(lease("a")) is False
    supervisor.set_asleep(True)
    assert child.took(lease("b")) is True
    assert child.took(lease("c")) is False


def test_a_description_too_long_for_the_record_keeps_what_settles_the_task() -> None:
    child, supervisor = make()
    child.took(lease(fn="m:" + "f" * 10_000))
    snap = supervisor.read()
    assert snap.lease is not None and snap.lease.task_id == "t1" and snap.lease.token == "3.1.u1"


def test_the_supervisor_reads_every_lease_of_the_childs_batch() -> None:
    child, supervisor = make()
    assert supervisor.held() == []
    child.hold([lease("a"), lease("b"), lease("c")])
    child.took(lease("b"))
    assert supervisor.held() == [("a", "3.1.u1", "q", 0), ("b", "3.1.u1", "q", 0),
                                 ("c", "3.1.u1", "q", 0)]
    child.hold([lease("d")._replace(partition=2)])
    assert supervisor.held() == [("d", "3.1.u1", "q", 2)]
    supervisor.clear()
    assert supervisor.held() == []


def test_a_batch_too_large_for_the_record_lists_what_fits() -> None:
    child, supervisor = make()
    many = [Lease(f"task-{i:04d}", "3.1.u1", "q" * 100, "flow1", None, "m:f", "f", b"", b"")
            for i in range(1000)]
    child.hold(many)
    held = supervisor.held()
    assert 0 < len(held) < 1000
    assert [t for t, *_ in held] == [lease.task_id for lease in many[:len(held)]]
