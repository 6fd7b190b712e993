"""Prefect's test helpers (balancer/testing.py): a harness that keeps a test suite off any
real cluster, and a quiet run logger."""

from __future__ import annotations

import logging

import pytest

from balancer import flow, get_run_logger
from balancer.testing import disable_run_logger, prefect_test_harness
from tests.integration import tasks


@flow
def doubled(x: int) -> int:
    get_run_logger().info("doubling %s", x)
    return tasks.multiply(x)


def test_the_harness_runs_flows_on_the_embedded_cluster_whatever_the_environment_says(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BALANCER_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing answers
    with prefect_test_harness():
        assert doubled(21) == 42
    import os

    assert os.environ["BALANCER_REDIS_URL"] == "redis://127.0.0.1:1/0"  # put back


def test_disable_run_logger_silences_the_runs_loggers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with disable_run_logger():
        logging.getLogger("balancer.flow.doubled").info("hidden")
        logging.getLogger("balancer.task").info("hidden too")
        assert tasks.multiply.fn(3) == 6  # the plain function
    logging.getLogger("balancer.flow.doubled").info("shown again")
    assert "hidden" not in caplog.text and "shown again" in caplog.text
