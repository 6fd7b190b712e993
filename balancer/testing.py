"""Prefect's test helpers, for users' own test suites.

    from balancer.testing import prefect_test_harness, disable_run_logger

    @pytest.fixture(autouse=True, scope="session")
    def cluster_for_tests():
        with prefect_test_harness():
            yield

    def test_my_task():
        with disable_run_logger():
            assert my_task.fn(2) == 4      # the plain function, no cluster

Inside ``prefect_test_harness()``, flows and tasks run on the embedded cluster (this
process's own broker, dispatcher and worker: balancer/embedded.py) whatever
``BALANCER_REDIS_URL`` says, so that a test suite never submits to a real cluster, and
leaves nothing behind when its process ends. Flows given a ``redis_url`` of their own, or
code given a client, still go where they are told.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from balancer.common.settings import ENV_PREFIX

_URL = ENV_PREFIX + "REDIS_URL"
_LOGGERS = ("balancer.task", "balancer.flow")


@contextlib.contextmanager
def prefect_test_harness(server_startup_timeout: Any = None) -> Iterator[None]:
    """Run the block's flows and tasks on the embedded cluster (Prefect's
    ``prefect_test_harness``; ``server_startup_timeout`` is taken and changes nothing)."""
    del server_startup_timeout
    saved = os.environ.pop(_URL, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[_URL] = saved


@contextlib.contextmanager
def disable_run_logger() -> Iterator[None]:
    """Silence the runs' loggers (a task's ``balancer.context.logger``, a flow's
    ``get_run_logger()``) in the block, as Prefect's ``disable_run_logger``: for calling a
    task's ``.fn`` in a unit test without its log lines."""
    loggers = [logging.getLogger(name) for name in _LOGGERS]
    was = [logger.level for logger in loggers]
    for logger in loggers:  # a flow's own logger (balancer.flow.<name>) inherits it
        logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for logger, level in zip(loggers, was, strict=True):
            logger.setLevel(level)


__all__ = ["disable_run_logger", "prefect_test_harness"]
