"""The pure logic behind setting bad entries aside: telling an outage from bad data,
reading a queue config with a bad setting, and the set-aside record itself."""

from __future__ import annotations

import redis
from balancer.common import aside
from balancer.common.aside import Aside
from balancer.common.models import QueueConfig
from balancer.common.retry import error_code, is_outage


def test_a_setting_that_is_not_a_number_reads_as_its_default_and_is_told() -> None:
    config, problems = QueueConfig.parse(
        "q", {b"priority": b"urgent", b"concurrency_limit": b"\xff", b"paused": b"1"})
    assert config == QueueConfig("q", priority=0, concurrency_limit=None, paused=True)
    assert len(problems) == 2
    assert "priority 'urgent' is not an integer: 0 used" in problems
    assert QueueConfig.parse("q", {b"priority": b"7", b"concurrency_limit": b""}) == (
        QueueConfig("q", priority=7), [])
    assert QueueConfig.from_hash("q", {b"priority": b"urgent"}) == QueueConfig("q")


def test_error_replies_are_told_apart_as_outages_or_bad_data() -> None:
    oom = redis.exceptions.OutOfMemoryError("command not allowed", status_code="OOM")
    busy = redis.ResponseError("Command # 1 (EVALSHA x) of pipeline caused error: BUSY Redis"
                               " is busy running a script")
    wrong = redis.ResponseError("Command # 2 (ZRANGE k 0 1) of pipeline caused error: "
                                "WRONGTYPE Operation against a key holding the wrong kind")
    script = redis.ResponseError("ERR user_script:3: attempt to compare nil with number")
    assert [error_code(e) for e in (oom, busy, wrong, script)] == [
        "OOM", "BUSY", "WRONGTYPE", "ERR"]
    assert [is_outage(e) for e in (oom, busy, wrong, script)] == [True, True, False, False]
    assert is_outage(redis.ConnectionError("gone")) and is_outage(redis.TimeoutError())
    assert is_outage(redis.exceptions.ReadOnlyError("replica", status_code="READONLY"))
    assert not is_outage(ValueError("not redis"))
    assert aside.kind_of(wrong) == aside.WRONG_TYPE and aside.kind_of(script) == aside.UNUSABLE


def test_a_set_aside_record_keeps_the_entry_as_it_was_and_one_id_per_entry() -> None:
    record = Aside(aside.UNREADABLE, "{ns}:queue:q", "not UTF-8", b"\xff\xfe-x", 12.5, "q",
                   1000.0)
    again = Aside(aside.UNREADABLE, "{ns}:queue:q", "met again", b"\xff\xfe-x", 13.0, "q",
                  2000.0)
    assert record.id == again.id != Aside(aside.UNREADABLE, "{ns}:queue:q", "", b"y").id
    assert Aside.from_blob(record.to_blob()) == record
    # Oldest first: an unreadable record has no date.
    (unreadable, row) = aside.rows({record.id.encode(): record.to_blob(),
                                    b"zz": b"\xc1 not msgpack"})
    assert row == {"id": record.id, "kind": "unreadable", "key": "{ns}:queue:q", "queue": "q",
                   "member": "\\xff\\xfe-x", "score": 12.5, "detail": "not UTF-8",
                   "since": 1.0}
    assert unreadable["id"] == "zz" and unreadable["kind"] == "unreadable-record"
    assert aside.readable([b"ok", b"\xff", b"fine"]) == ["ok", "fine"]
