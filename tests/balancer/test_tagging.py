"""Prefect's `tags` context manager (balancer/tagging.py): the blocks' tags, nested, for
the task runs made in them."""

from __future__ import annotations

import threading

import pytest

from balancer import Flow, tags, task
from balancer.caching import TAGS_LIMIT
from balancer.tagging import current, merged


@task
def step(x: int) -> int:
    return x


@task
def other() -> None: ...


def test_blocks_nest_and_end_with_their_block() -> None:
    assert current() == ()
    with tags("etl", "db") as inner:
        assert inner == ("db", "etl") == current()
        with tags("db", "io"):
            assert current() == ("db", "etl", "io")
        assert current() == ("db", "etl")
    assert current() == ()


def test_each_thread_has_its_own_blocks() -> None:
    seen: list[tuple[str, ...]] = []
    with tags("db"):
        other = threading.Thread(target=lambda: seen.append(current()))
        other.start()
        other.join()
    assert seen == [()]


@pytest.mark.parametrize("bad", ["", "a,b", 5])
def test_a_tag_no_record_can_hold_is_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="cannot be a tag"), tags(bad):  # type: ignore[arg-type]
        pass


def test_a_task_s_own_tags_and_the_blocks_stay_under_the_limit() -> None:
    assert merged("t", ["b", "a"], ("a", "c")) == ["a", "b", "c"]
    with pytest.raises(ValueError, match=f"task 't': {TAGS_LIMIT + 1} tags"):
        merged("t", [f"own{i}" for i in range(TAGS_LIMIT)], ("extra",))


def test_calls_in_a_flow_keep_the_tags_of_their_block() -> None:
    with Flow("f") as flow:
        with tags("db"):
            a = step(1)
            flow.add_task(other)
        b = step(2)
    assert [n.tags for n in flow.nodes] == [("db",), ("db",), ()]
    assert a.tags == ("db",) and b.tags == ()
    assert step.tags == []  # the task itself is not changed
