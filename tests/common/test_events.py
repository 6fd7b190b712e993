"""common/events.py: the entry format read back, bad entries refused, lines readable."""

from __future__ import annotations

import json

import pytest
from balancer.common import events


def test_an_entry_written_from_python_reads_back() -> None:
    records = (events.task_record("t1", "f1", "q", "na|me:3", 100, 150, 400, "boom"),
               events.task_record("t2", "f1", "q", "other"))
    fields = events.encode(events.TASK_CANCELLED, worker="w1", tasks=records)
    found = events.decode(b"1700000000000-0", {k.encode(): v for k, v in fields.items()})
    assert [e.task for e in found] == ["t1", "t2"]
    first = found[0]
    assert (first.name, first.wait_ms, first.run_ms, first.detail, first.at_ms) == (
        "na|me:3", 50, 250, "boom", 1700000000000)
    assert found[1].ready_ms is None and found[1].run_ms is None
    assert json.loads(first.to_json())["kind"] == "task.cancelled"


def test_an_entry_with_the_flows_it_settled_reads_as_the_tasks_then_the_flows() -> None:
    fields = events.encode(events.TASK_COMPLETED, worker="w1",
                           tasks=(events.task_record("t1", "f1", "q", "n", 1, 2, 3),),
                           flows=(events.flow_record("f1", "completed", "fl|ow:1", 1),
                                  events.flow_record("f2", "failed")))
    task, first, second = events.decode(b"7-1", {k.encode(): v for k, v in fields.items()})
    assert (task.kind, task.task, task.worker) == (events.TASK_COMPLETED, "t1", "w1")
    assert (first.kind, first.flow, first.state, first.name, first.count, first.worker) == (
        events.FLOW_FINISHED, "f1", "completed", "fl|ow:1", 1, "")
    assert (second.flow, second.state, second.count) == ("f2", "failed", None)
    assert first.stream_id == task.stream_id == "7-1"


def test_cancelled_is_a_kind_of_the_schema() -> None:
    assert events.TASK_CANCELLED in events.TASK_KINDS


@pytest.mark.parametrize("fields", [
    {},
    {b"k": b"task.exploded"},
    {b"k": b"task.completed"},
    {b"k": b"task.completed", b"t": b"1:a"},  # not a whole record
    {b"k": b"task.completed", b"t": b"9:a"},  # cut short
    {b"k": b"task.completed", b"t": b"x:a"},
    {b"k": b"task.completed", b"t": events.task_record("t"), b"ff": b"1:f1:s"},  # not whole
])
def test_entries_not_of_the_schema_are_refused(fields: dict[bytes, bytes]) -> None:
    with pytest.raises(events.EventError):
        events.decode(b"1-0", fields)


def test_unknown_kinds_and_fields_cannot_be_written() -> None:
    with pytest.raises(events.EventError):
        events.encode("task.exploded")
    with pytest.raises(events.EventError):
        events.encode(events.WORKER_JOINED, worker="w", zz="1")


def test_a_line_stays_one_line_whatever_the_names_hold() -> None:
    record = events.task_record("t1", "f1", "q", "evil\nname\x1b[31m", 1, 2, 3,
                                "ValueError: a\nb")
    [event] = events.decode(b"5-0", {b"k": b"task.failed", b"t": record})
    line = events.line(event)
    assert "\n" not in line and "\x1b" not in line
    assert "\\x1b" in line and "ran=1ms" in line
