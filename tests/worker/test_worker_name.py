"""A worker's name goes into lease members, signals and key names: one that would split
a field ("|", whitespace) or end the keys' hash tag (braces) is refused at start."""

from __future__ import annotations

import pytest
import redis
from balancer.common.settings import Settings
from balancer.worker.cli import main as worker_cli
from balancer.worker.supervisor import Worker, WorkerError
from click.testing import CliRunner

BAD_NAMES = ["", "a|b", "|", "two words", "tab\there", "new\nline", "{tag", "tag}", "{x}"]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_worker_start_refuses_a_name_that_breaks_a_message_format_with_a_usage_error(
        name: str) -> None:
    """Refused before Redis is reached: the URL here answers nothing."""
    result = CliRunner().invoke(worker_cli, ["start", "--name", name, "--redis-url",
                                             "redis://127.0.0.1:1/0"])
    assert result.exit_code == 2, result.output
    assert "Invalid value for --name: invalid worker name" in result.output


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_a_worker_made_in_code_refuses_the_same_names(fake: redis.Redis, settings: Settings,
                                                       name: str) -> None:
    with pytest.raises(WorkerError, match="invalid worker name"):
        Worker(fake, settings, name=name)


@pytest.mark.parametrize("name", ["w1", "host-1.example.com-4242", "gpu_node:3", "ü"])
def test_ordinary_worker_names_are_accepted(fake: redis.Redis, settings: Settings,
                                            name: str) -> None:
    assert Worker(fake, settings, name=name, pool="thread").id == name
