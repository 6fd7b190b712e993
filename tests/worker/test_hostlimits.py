"""The host's limit on a process pool's slots: its memory over an idle child's floor."""

from __future__ import annotations

from balancer.worker.hostlimits import CHILD_MEMORY, too_many


def test_a_process_pool_whose_children_cannot_fit_the_hosts_memory_is_named() -> None:
    memory = 100 * CHILD_MEMORY
    assert too_many(100, "process", memory) is None
    why = too_many(101, "process", memory)
    assert why is not None and "start at most 100" in why and "--pool thread" in why


def test_a_thread_pool_is_left_to_the_threads_the_host_starts() -> None:
    assert too_many(10**6, "thread", CHILD_MEMORY) is None
