"""common.signals: the wake-list messages and the inbox entries (leases) the Lua scripts
write and Python reads."""

from __future__ import annotations

import pytest
import redis
from balancer.common import codec, signals
from balancer.common.keys import Keys
from balancer.common.scripts import Scripts
from balancer.common.signals import Lease, Signal
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

# -- wake signals --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [signals.SUBMITTED, signals.QUEUES, signals.CASCADE,
                                  signals.SCHEDULES])
def test_bare_signals_parse_to_their_kind(kind: str) -> None:
    assert signals.parse(kind.encode()) == Signal(kind)


def test_gone_signal_carries_the_worker_id() -> None:
    assert signals.parse(b"x|worker-7") == Signal(signals.GONE, worker="worker-7")


@pytest.mark.parametrize("count", [1, 3, 250])
def test_ack_signal_carries_the_worker_and_how_many_tasks_it_acknowledged(count: int) -> None:
    parsed = signals.parse(f"a|worker-7|{count}".encode())
    assert parsed == Signal(signals.ACK, worker="worker-7", leased=count)


def test_an_ack_that_queued_nothing_is_an_ack_that_needs_no_queue_read() -> None:
    assert signals.parse(b"a|worker-7|2") == Signal(signals.ACK, worker="worker-7", leased=2)
    assert signals.parse(b"k|worker-7|2") == Signal(signals.ACK, worker="worker-7", leased=2,
                                                   queued=False)


def test_heartbeat_carries_worker_leased_count_and_blob() -> None:
    parsed = signals.parse(b"h|w1|4|payload")
    assert parsed == Signal(signals.HEARTBEAT, worker="w1", leased=4, blob=b"payload")


def test_heartbeat_blob_keeps_pipe_and_non_utf8_bytes() -> None:
    blob = b"\x82|\xff|x||\x00|"
    parsed = signals.parse(b"h|w1|0|" + blob)
    assert parsed == Signal(signals.HEARTBEAT, worker="w1", leased=0, blob=blob)


def test_heartbeat_with_empty_blob_parses() -> None:
    assert signals.parse(b"h|w1|2|") == Signal(signals.HEARTBEAT, worker="w1", leased=2)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"z",
        b"unknown|w1",
        b"h",
        b"h|w1",
        b"h|w1|3",
        b"h|w1|many|blob",
        b"\xff",
        b"a|w1",  # the old ack format, without a count
        b"a|w1|",
        b"a|w1|many",
        b"a|w1|1.5",
        b"a|\xff\xfe|1",
        b"x|\xff",
        b"h|\xff|1|blob",
    ],
    ids=repr,
)
def test_garbage_signal_parses_to_none(raw: bytes) -> None:
    assert signals.parse(raw) is None


# -- lease members -------------------------------------------------------------------------


def test_lease_member_round_trips() -> None:
    member = signals.lease_member("abc123", "4.17.2")
    assert member == "abc123|4.17.2"
    assert signals.parse_lease_member(member.encode()) == ("abc123", "4.17.2")


@pytest.mark.parametrize(("entry", "member"), [
    (b"t1|1.2.3|5:queue4:flow", b"t1|1.2.3"), (b"t1|1.2.3", b"t1|1.2.3"),
    (b"t1|", b"t1|"), (b"forged", b"forged"), (b"", b"")])
def test_an_inbox_entry_stands_for_its_first_two_fields_as_take_held_reads_them(
        entry: bytes, member: bytes) -> None:
    assert signals.entry_member(entry) == member


@pytest.mark.parametrize("raw", [b"", b"abc", b"abc|", b"|4.1.1", b"|"], ids=repr)
def test_garbage_lease_member_parses_to_none(raw: bytes) -> None:
    assert signals.parse_lease_member(raw) is None


def test_lease_member_with_invalid_utf8_does_not_raise() -> None:
    assert signals.parse_lease_member(b"a\xff|1.1.1") == ("a\ufffd", "1.1.1")


# -- inbox entries (parse_lease) -----------------------------------------------------------


def lua_entry(task_id: str, token: str, *fields: bytes) -> bytes:
    """An inbox entry laid out as assign.lua writes it: ``id|token|`` then ``<len>:<bytes>``
    for queue, flow, timeout, fn, name, children, args."""
    return f"{task_id}|{token}|".encode() + b"".join(b"%d:%s" % (len(f), f) for f in fields)


CHILDREN = codec.pack([["c1", "q|2", 1.5], ["c:2", "q", -3.0]])
ARGS = b"\x00|a:b|3:xyz\xff::|"
VALID = lua_entry("t1", "3.9.1", b"q", b"f1", b"2.5", b"mod:fn", b"name", CHILDREN, ARGS)


def test_entry_parses_to_every_field() -> None:
    assert signals.parse_lease(VALID) == Lease(
        "t1", "3.9.1", "q", "f1", 2.5, "mod:fn", "name", CHILDREN, ARGS, raw=VALID)


def test_entry_with_empty_fields_parses_without_a_timeout() -> None:
    raw = lua_entry("t1", "1.1.1", b"q", b"", b"", b"m:f", b"", b"", b"")
    lease = signals.parse_lease(raw)
    assert lease == Lease("t1", "1.1.1", "q", "", None, "m:f", "", b"", b"", raw=raw)
    assert lease is not None
    assert lease.member == "t1|1.1.1"


@pytest.fixture
def scripts(fake: redis.Redis, namespace: str) -> Scripts:
    return Scripts(fake, Keys(namespace))


def _assign(scripts: Scripts, task_ids: list[str], prefix: str = "3.9") -> list[bytes]:
    leader = scripts.leader("d1", 60_000)
    assert leader is not None
    n, *_ = scripts.assign(leader, "w1", "q:1|x", 10, 1_000, prefix, task_ids)
    assert n == len(task_ids)
    return list(scripts.client.lrange(scripts.keys.inbox("w1"), 0, -1))


def test_entry_written_by_assign_parses_back_to_the_task_spec(scripts: Scripts) -> None:
    keys, client = scripts.keys, scripts.client
    name = "réseau ✓|:"  # multi-byte: Lua counts bytes, and so must the parser
    client.hset(keys.task("t1"), mapping={
        "id": "t1", "name": name, "fn": "pkg.mod:fn", "flow": "flow|1:x", "queue": "q:1|x",
        "score": 5, "args": ARGS, "timeout": 2.5, "children": CHILDREN, "nchildren": 2,
        "state": "queued"})
    client.zadd(keys.queue("q:1|x"), {"t1": 5})

    [raw] = _assign(scripts, ["t1"])
    lease = signals.parse_lease(raw)
    assert lease == Lease("t1", "3.9.1", "q:1|x", "flow|1:x", 2.5, "pkg.mod:fn", name,
                          CHILDREN, ARGS, raw=raw)
    assert lease is not None
    assert codec.unpack(lease.children) == [["c1", "q|2", 1.5], ["c:2", "q", -3.0]]
    assert client.smembers(keys.leases("w1")) == {lease.member.encode()}


def test_entry_written_by_assign_for_a_record_missing_optional_fields_parses(
        scripts: Scripts) -> None:
    keys, client = scripts.keys, scripts.client
    client.hset(keys.task("t1"), mapping={"fn": "m:f", "score": 1, "timeout": ""})
    client.hset(keys.task("t2"), mapping={"fn": "m:g", "score": 2, "timeout": 60})
    client.zadd(keys.queue("q:1|x"), {"t1": 1, "t2": 2})

    first, second = map(signals.parse_lease, _assign(scripts, ["t1", "t2"], prefix="7.1"))
    assert first is not None
    assert second is not None
    assert first == Lease("t1", "7.1.1", "q:1|x", "", None, "m:f", "", b"", b"", first.raw)
    assert (second.token, second.fn, second.timeout) == ("7.1.2", "m:g", 60.0)


# The smallest valid entry; most garbage cases below are mutations of it.
BASE = b"t1|1.1.1|1:q1:f0:3:m:f1:n0:0:"


def test_minimal_entry_parses() -> None:
    assert signals.parse_lease(BASE) == Lease(
        "t1", "1.1.1", "q", "f", None, "m:f", "n", b"", b"", raw=BASE)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"t1",
        b"t1|1.1.1",
        b"t1|1.1.1|",
        VALID[:-1],  # truncated: the last length promises more than is left
        VALID + b"x",  # trailing bytes
        VALID + b"0:0:0:0:",  # an eleventh field (8th signature, 9th depth, 10th ready)
        BASE[:-2],  # six fields
        b"t1|1.1.1|" + b"1:q" * 6,  # six fields, all well formed
        b"t1|1.1.1|1:q1:f0:3:m:f1:n0:99:args",  # a length beyond the end
        b"t1|1.1.1|x:q1:f0:3:m:f1:n0:0:",  # non-numeric length
        b"t1|1.1.1|:q1:f0:3:m:f1:n0:0:",  # empty length
        b"t1|1.1.1|1.0:q1:f0:3:m:f1:n0:0:",  # fractional length
        b"t1|1.1.1|-1:1:q1:f0:3:m:f1:n0:0:",  # negative length
        b"t1|1.1.1|1q1:f0:3:m:f1:n0:0:",  # a length not followed by its colon
        b"t1|1.1.1|2:q1:f0:3:m:f1:n0:0:",  # a length off by one shifts every field
        b"t1|1.1.1|1:q1:f3:abc3:m:f1:n0:0:",  # non-numeric timeout
        b"t\xff|1.1.1|1:q1:f0:3:m:f1:n0:0:",  # invalid UTF-8 in the id
        b"t1|1.1.1|1:\xff1:f0:3:m:f1:n0:0:",  # invalid UTF-8 in the queue
        b"t1|1.1.1|1:q1:f0:3:m\xfff1:n0:0:",  # invalid UTF-8 in fn
    ],
    ids=repr,
)
def test_garbage_entry_parses_to_none(raw: bytes) -> None:
    assert signals.parse_lease(raw) is None


def test_an_eighth_field_is_the_signature_and_an_entry_without_it_has_none() -> None:
    signed = signals.parse_lease(VALID + b"4:abcd")
    assert signed is not None and signed.sig == b"abcd"
    assert signed[:9] == signals.parse_lease(VALID)[:9]  # type: ignore[index]
    assert signals.parse_lease(VALID).sig == b""  # type: ignore[union-attr]


_ids = st.text(st.characters(codec="utf-8", exclude_characters="|"), min_size=1, max_size=12)
_text = st.text(st.characters(codec="utf-8"), max_size=12)
_timeouts = st.none() | st.floats(min_value=0.001, max_value=1e6, allow_nan=False)


@hsettings(max_examples=200, deadline=None)
@given(_ids, _ids, _text, _text, _timeouts, _text, _text, st.binary(max_size=32),
       st.binary(max_size=32))
def test_any_entry_laid_out_as_assign_writes_it_parses_back(
        task_id: str, token: str, queue: str, flow: str, timeout: float | None, fn: str,
        name: str, children: bytes, args: bytes) -> None:
    raw = lua_entry(task_id, token, queue.encode(), flow.encode(),
                    b"" if timeout is None else repr(timeout).encode(), fn.encode(),
                    name.encode(), children, args)
    assert signals.parse_lease(raw) == Lease(task_id, token, queue, flow, timeout, fn, name,
                                             children, args, raw)
    # Every strict prefix is a truncated entry, never a shorter valid one.
    for cut in range(len(raw)):
        assert signals.parse_lease(raw[:cut]) is None


_fragments = st.lists(
    st.sampled_from([b"|", b":", b"0", b"1", b"2", b"9", b"-", b".", b"a", b"\xff", b" "])
    | st.binary(max_size=4),
    max_size=40,
).map(b"".join)


@hsettings(max_examples=500, deadline=None)
@given(st.binary(max_size=128) | _fragments)
def test_parse_lease_of_arbitrary_bytes_returns_a_lease_or_none(raw: bytes) -> None:
    lease = signals.parse_lease(raw)
    assert lease is None or (isinstance(lease, Lease) and lease.raw == raw)


def test_a_submitted_signal_names_its_queues_and_a_retry_signal_parses() -> None:
    from balancer.common.signals import RETRY, SUBMITTED, parse, submitted

    assert parse(submitted({"b": [], "a": ["1"]}).encode()) == Signal(SUBMITTED,
                                                                      queues=("a", "b"))
    assert parse(b"s") == Signal(SUBMITTED)
    assert parse(b"r") == Signal(RETRY)


def test_a_small_submit_to_one_queue_lists_its_ready_ids() -> None:
    from balancer.common.signals import LISTED_IDS, SUBMITTED, parse, submitted

    signal = parse(submitted({"odd|name=x,y": ["a1", "b2"]}).encode())
    assert signal == Signal(SUBMITTED, queues=("odd|name=x,y",), ready=("a1", "b2"))
    many = [f"{i:x}" for i in range(LISTED_IDS + 1)]
    assert parse(submitted({"q": many}).encode()) == Signal(SUBMITTED, queues=("q",))
    assert parse(submitted({"q": []}).encode()) == Signal(SUBMITTED, queues=("q",))
    assert parse(b"S|q|") is None and parse(b"S||a1") is None


# -- the prefetch depth a lease carries ----------------------------------------------------


def test_a_ninth_field_is_the_prefetch_depth_and_an_older_entry_reads_one() -> None:
    signed = VALID + b"4:abcd"
    assert signals.parse_lease(VALID + b"0:2:16") == signals.parse_lease(VALID)._replace(  # type: ignore[union-attr]
        raw=VALID + b"0:2:16", depth=16)
    assert signals.parse_lease(signed).depth == 1  # type: ignore[union-attr]  # before depths
    assert signals.parse_lease(VALID).depth == 1  # type: ignore[union-attr]  # before signing
    assert signals.parse_lease(signed + b"0:").depth == 1  # type: ignore[union-attr]
    assert signals.parse_lease(signed + b"1:x") is None  # a depth that is no number


@pytest.mark.parametrize("depth", [1, 4, 32])
def test_assign_writes_the_depth_it_is_given_into_every_entry(scripts: Scripts,
                                                              depth: int) -> None:
    keys, client = scripts.keys, scripts.client
    for i, t in enumerate(["t1", "t2"]):
        client.hset(keys.task(t), mapping={"fn": "m:f", "score": i, "sig": "s"})
        client.zadd(keys.queue("q"), {t: i})
    leader = scripts.leader("d1", 60_000)
    assert leader is not None
    assert scripts.assign(leader, "w1", "q", 64, 1_000, "3.9u", ["t1", "t2"], 1, depth)[0] == 2
    leases = [signals.parse_lease(raw) for raw in client.lrange(keys.inbox("w1"), 0, -1)]
    assert [(lease.depth, lease.sig) for lease in leases if lease] == [(depth, b"s")] * 2
