"""balancer.context: what a task knows of its run, bound by the worker around each task."""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import pytest

from balancer import context, get_run_logger
from balancer.runcontext import KEYS, RunFacts, bound, dated


def _facts(task_id: str = "t1", read: dict[str, object] | None = None,
           reads: list[int] | None = None) -> RunFacts:
    def fetch() -> dict[str, object]:
        if reads is not None:
            reads.append(1)
        return read or {}
    return RunFacts(task_id, "extract", "f1", "default", "w1", fetch)


def test_outside_a_run_every_fact_is_none_and_the_logger_is_plain() -> None:
    assert all(context.get(key) is None for key in KEYS if key != "logger")
    assert context.task_run_id is None and context["flow_name"] is None
    assert context.logger is logging.getLogger("balancer.task") is get_run_logger()
    assert repr(context) == "<balancer.context: no task run>"


def test_an_unknown_fact_is_a_key_error_or_an_attribute_error_naming_the_known_ones() -> None:
    assert context.get("nope", 7) == 7 and "nope" not in context
    with pytest.raises(KeyError):
        context["nope"]
    with pytest.raises(AttributeError, match="no 'nope'; it knows task_run_id, task_name"):
        context.nope  # noqa: B018


def test_bound_facts_are_the_runs_and_end_with_it() -> None:
    with bound(_facts()):
        assert (context.task_run_id, context.task_name, context.flow_run_id, context.queue,
                context.worker) == ("t1", "extract", "f1", "default", "w1")
        assert context.map_index is None and context.task_full_name == "extract"
        with bound(_facts("m1-07")):  # a map's child: <map id>-<index>
            assert context.map_index == 7 and context.task_full_name == "extract[7]"
        assert context.task_run_id == "t1"
        assert repr(context) == "<balancer.context: task t1 of flow f1>"
    assert context.task_run_id is None


@pytest.mark.parametrize(("task_id", "index"), [
    ("1a2b", None), ("1a2b-0", 0), ("1a2b-3-12", 12), ("-5", None), ("1a2b-x", None)])
def test_the_map_index_is_read_from_a_childs_id(task_id: str, index: int | None) -> None:
    assert _facts(task_id).map_index == index


def test_facts_the_records_hold_are_read_once_and_only_when_asked() -> None:
    reads: list[int] = []
    with bound(_facts(read={"task_run_count": 2, "flow_name": "etl"}, reads=reads)):
        assert context.task_run_id == "t1" and context.logger is not None
        assert reads == []  # what the lease carries costs no read
        assert context.task_run_count == 2 and context["flow_name"] == "etl"
        assert context.get("task_tags") is None
    assert reads == [1]


def test_the_logger_puts_the_runs_ids_in_front_of_each_line(
        caplog: pytest.LogCaptureFixture) -> None:
    with bound(_facts()), caplog.at_level(logging.INFO, "balancer.task"):
        context.logger.info("loaded %d rows", 3)
        get_run_logger().warning("and a warning")
    assert [r.getMessage() for r in caplog.records] == [
        "task=t1 flow=f1 name=extract: loaded 3 rows",
        "task=t1 flow=f1 name=extract: and a warning"]


def test_dates_are_prefect_1s_keys_for_the_day_the_run_stands_for() -> None:
    when = datetime(2026, 1, 1, 2, 30, tzinfo=timezone.utc)
    assert dated(when) == {"scheduled_start_time": when, "date": when, "today": "2026-01-01",
                           "yesterday": "2025-12-31", "tomorrow": "2026-01-02"}


def test_prefects_runtime_reads_the_task_run_in_a_task_and_is_empty_outside() -> None:
    from balancer import runtime

    assert (runtime.task_run.id, runtime.flow_run.id, runtime.task_run.tags) == (None, None, [])
    facts = _facts("m1-2", read={"task_run_count": 3, "flow_name": "etl", "task_tags": ["io"]})
    with bound(facts):
        assert (runtime.task_run.id, runtime.task_run.name, runtime.task_run.task_name) == (
            "m1-2", "extract[2]", "extract")
        assert (runtime.task_run.run_count, runtime.task_run.tags) == (3, ["io"])
        assert (runtime.flow_run.id, runtime.flow_run.name, runtime.flow_run.flow_name) == (
            "f1", "etl", "etl")


def test_a_named_run_shows_its_name_in_the_context_runtime_and_logger_and_records_it(
        caplog: pytest.LogCaptureFixture) -> None:
    from balancer import runtime

    recorded: list[str] = []
    facts = _facts(read={"flow_name": "etl", "flow_run_name": "etl-monday"})
    facts.record_name = recorded.append
    with bound(facts):
        assert (context.task_run_name, runtime.task_run.name) == ("extract", "extract")
        facts.named("extract-2026")
        assert (context.task_run_name, runtime.task_run.name) == ("extract-2026",) * 2
        assert context.task_name == "extract"  # the task's own name stays
        assert (runtime.flow_run.name, runtime.flow_run.flow_name) == ("etl-monday", "etl")
        with caplog.at_level(logging.INFO, logger="balancer.task"):
            context.logger.info("hello")
    assert recorded == ["extract-2026"]
    assert "task=t1 flow=f1 name=extract-2026: hello" in caplog.text


def test_a_task_run_s_parameters_are_its_arguments_by_name() -> None:
    from balancer import runtime

    def load(rows: list[int], factor: int = 10, **extra: object) -> None: ...

    facts = _facts()
    facts.call = (load, [[1, 2]], {"mode": "fast"})
    with bound(facts):
        assert runtime.task_run.parameters == {"rows": [1, 2], "factor": 10, "mode": "fast"}
    assert runtime.task_run.parameters == {} and runtime.flow_run.parameters == {}


def test_the_flow_run_s_parameters_are_read_on_their_own_once_when_asked_for() -> None:
    reads: list[str] = []
    facts = _facts(read={"flow_name": "etl"}, reads=[])
    facts.read_parameters = lambda: reads.append("params") or ({"day": "mon"}, True)
    with bound(facts):
        assert context.flow_name == "etl" and reads == []  # the other facts carry none
        assert context.parameters == {"day": "mon"} == context["parameters"]
    assert reads == ["params"]
    with bound(_facts()):
        assert context.parameters == {}  # none to read


def test_get_run_context_is_the_task_s_in_a_task_and_refused_outside_any_run() -> None:
    from balancer import get_run_context
    from balancer.runtime import MissingContextError, TaskRunContext

    facts = _facts()
    facts.call = (lambda rows, factor=2: None, [[1]], {})
    with bound(facts):
        ctx = get_run_context()
        assert isinstance(ctx, TaskRunContext) and ctx.task.name == "extract"
        assert ctx.task_run.id == "t1" and ctx.parameters == {"rows": [1], "factor": 2}
    with pytest.raises(MissingContextError, match="not in a flow or task run"):
        get_run_context()
