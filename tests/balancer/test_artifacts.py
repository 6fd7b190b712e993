"""Artifacts as Prefect offers them (balancer/artifacts.py), on fakeredis: what a run keeps
and lists, keys, progress updates, and what is refused or skipped."""

from __future__ import annotations

import pytest
import redis
from balancer.common import codec
from balancer.common.keys import Keys

from balancer import artifacts
from balancer.artifacts import (
    DATA_LIMIT,
    Artifact,
    ArtifactError,
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from balancer.runcontext import RunFacts, bound

KEYS = Keys("ns")


def _in_task(fake: redis.Redis, task_id: str = "t1") -> RunFacts:
    return RunFacts(task_id, "report", "f1", "default", "w1", client=fake, namespace="ns")


def test_a_task_s_artifacts_are_kept_with_its_run_in_the_order_made(fake: redis.Redis) -> None:
    with bound(_in_task(fake)):
        create_markdown_artifact("# Report", key="daily-report", description="today")
        create_table_artifact({"a": [1, 2], "b": [3]})
        create_link_artifact("https://example.com")
        progress = create_progress_artifact(10)
        update_progress_artifact(progress, 55.5)
    made = artifacts.of_run(fake, KEYS, "f1")
    assert [(a.kind, a.task_run_id, a.flow_run_id) for a in made] == [
        ("markdown", "t1", "f1"), ("table", "t1", "f1"), ("link", "t1", "f1"),
        ("progress", "t1", "f1")]
    assert made[1].data == {"columns": ["a", "b"], "rows": [[1, 3], [2, None]]}
    assert made[2].data == {"link": "https://example.com", "text": "https://example.com"}
    assert made[3].data == 55.5 and fake.pttl(KEYS.artifact(progress)) > 0
    assert [artifacts.summary(a) for a in made[:1]] == ["markdown daily-report: # Report (today)"]


def test_the_latest_artifact_of_a_key_is_found_by_it(fake: redis.Redis) -> None:
    with bound(_in_task(fake)):
        create_markdown_artifact("first", key="daily-report")
    with bound(_in_task(fake, "t2")):
        create_markdown_artifact("second", key="daily-report")
    found = Artifact.get("daily-report", client=fake, namespace="ns")
    assert found is not None and (found.data, found.task_run_id) == ("second", "t2")
    assert [a.data for a in artifacts.latest(fake, KEYS)] == ["second"]
    assert Artifact.get("never-made", client=fake, namespace="ns") is None


def test_tables_come_as_rows_of_dicts_columns_or_plain_rows(fake: redis.Redis) -> None:
    with bound(_in_task(fake)):
        create_table_artifact([{"x": 1}, {"y": 2}])
        create_table_artifact([[1, 2], [3, 4]])
    rows_of_dicts, plain = (a.data for a in artifacts.of_run(fake, KEYS, "f1"))
    assert rows_of_dicts == {"columns": ["x", "y"], "rows": [[1, None], [None, 2]]}
    assert plain == {"columns": [], "rows": [[1, 2], [3, 4]]}


@pytest.mark.parametrize("make, said", [
    (lambda: create_markdown_artifact("x", key="Not Valid"), "lowercase letters, digits"),
    (lambda: create_markdown_artifact(b"bytes"), "markdown must be a string"),
    (lambda: create_table_artifact("a,b"), "a table is a list of dicts"),
    (lambda: create_progress_artifact(101), "from 0 to 100"),
    (lambda: create_progress_artifact(float("nan")), "from 0 to 100"),
    (lambda: create_link_artifact(""), "link must be a non-empty string"),
    (lambda: create_markdown_artifact("x" * DATA_LIMIT), "over the limit"),
    (lambda: update_progress_artifact("nope", 5), "no progress artifact nope"),
])
def test_what_cannot_be_an_artifact_is_refused_naming_it(fake: redis.Redis, make: object,
                                                         said: str) -> None:
    with bound(_in_task(fake)), pytest.raises(ArtifactError, match=said):
        make()  # type: ignore[operator]


def test_what_someone_else_wrote_in_a_run_s_list_is_left_out(fake: redis.Redis) -> None:
    with bound(_in_task(fake)):
        kept = create_markdown_artifact("mine")
    fake.rpush(KEYS.flow_artifacts("f1"), "planted", "gone")
    fake.set(KEYS.artifact("planted"), codec.pack(["planted", "table", "not a table", None,
                                                   None, "f1", None, 0]))
    assert [a.id for a in artifacts.of_run(fake, KEYS, "f1")] == [kept]


def test_an_artifact_s_data_is_kept_as_json_carries_it(fake: redis.Redis) -> None:
    """Bytes or odd keys (a task's, or a Redis writer's) must not break a reader that
    shows JSON: the dashboard, `balancer flow --json`."""
    with bound(_in_task(fake)):
        create_table_artifact([{"raw": b"\x00\x01", "n": 1}])
        create_markdown_artifact("x")
    fake.rpush(KEYS.flow_artifacts("f1"), "planted")
    fake.set(KEYS.artifact("planted"), codec.pack(["planted", "markdown", b"bytes", None,
                                                   None, "f1", None, 0]))
    made, _, planted = artifacts.of_run(fake, KEYS, "f1")
    assert made.data == {"columns": ["raw", "n"], "rows": [["b'\\x00\\x01'", 1]]}
    assert planted.data == "b'bytes'"
