"""common.protocol, common.signals and common.prefetch against the Lua side: the lease token
grammar, every script's KEYS/ARGV header against the layout its wrapper follows, the
signals the scripts push, and the quiet-ack checkpoints."""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib import resources
from typing import Any

import pytest
import redis
from balancer.common import prefetch, protocol, signals
from balancer.common.keys import Keys
from balancer.common.protocol import LAYOUTS, Layout
from balancer.common.scripts import (
    AddedTask,
    CancelTask,
    Child,
    Done,
    Expansion,
    LeasedTask,
    ScheduledRun,
    Scripts,
)
from balancer.common.signals import Offer
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

LUA = resources.files("balancer.common") / "lua"
PRELUDE = (LUA / "_prelude.lua").read_text()
SCRIPTS = sorted(p.name[:-4] for p in LUA.iterdir()
                 if p.name.endswith(".lua") and not p.name.startswith("_"))


def lua(client: redis.Redis, body: str, *args: Any) -> Any:
    """Run ``body`` after the prelude, as every script runs."""
    return client.eval(PRELUDE + "\n" + body, 0, *args)


# -- lease tokens ------------------------------------------------------------------------

TOKENS = ["1.2.3", "1.2u.3", "1.2u.3!", "1.2.3!", "17.0189abcdef0123456789abu.16",
          "1.u2.3",  # a "u" inside the batch: counted
          "1.2.3u", "1u.2.3", "u.2.3", "1.2.u3",  # a "u" out of place: no grammar, counted
          "1.u.3",  # batch "u" alone: counted (a flag needs a batch character before it)
          "1.2u.3!!", "1.2u", "1..3", "", "x", "1.2uu.3", "1.2u.3.4",
          "1.2.3t", "1.2u.3t!", "1.2t.3", "1.2tu.3t", "1.2.3tt", "1.2.3!t", "t.2.3t"]


@pytest.mark.parametrize(("token", "parsed"), [
    ("1.2.3", protocol.Token(1, "2", True, 3, False)),
    ("12.7u.1!", protocol.Token(12, "7", False, 1, True)),
    ("1.2uu.3", protocol.Token(1, "2u", False, 3, False)),
    ("1.u2.3", protocol.Token(1, "u2", True, 3, False)),
    ("1.u.3", protocol.Token(1, "u", True, 3, False)),  # no character left for a batch
    ("1.2.3u", None), ("1u.2.3", None), ("1.2u.3!!", None), ("", None),
    ("1.2u.3t!", protocol.Token(1, "2", False, 3, True, True)),
    ("1.2t.3", protocol.Token(1, "2t", True, 3, False, False)),  # a "t" in the batch
    ("1.2.3!t", None), ("1.2.3tt", None),
])
def test_tokens_parse_by_the_grammar(token: str, parsed: protocol.Token | None) -> None:
    assert protocol.parse_token(token) == parsed


def test_the_prefix_python_builds_and_the_token_lua_completes_parse_back(
        fake: redis.Redis) -> None:
    for counted in (True, False):
        for suspect in (True, False):
            for tagged in (True, False):
                prefix = protocol.lease_prefix("42", 7, counted)
                built = lua(fake, "return lease_token(ARGV[1], ARGV[2], ARGV[3] == '1',"
                            " ARGV[4] == '1')", prefix, 3, "1" if suspect else "0",
                            "1" if tagged else "0").decode()
                assert built == protocol.lease_token(prefix, 3, suspect, tagged)
                assert protocol.parse_token(built) == protocol.Token(42, "7", counted, 3,
                                                                     suspect, tagged)


def _lua_counted(client: redis.Redis, tokens: list[str]) -> list[bool]:
    reply = lua(client, "local out = {}\nfor i = 1, #ARGV do out[i] = counted(ARGV[i]) and 1"
                " or 0 end\nreturn out", *tokens)
    return [bool(x) for x in reply]


def _lua_tagged(client: redis.Redis, tokens: list[str]) -> list[bool]:
    reply = lua(client, "local out = {}\nfor i = 1, #ARGV do out[i] = tag_counted(ARGV[i])"
                " and 1 or 0 end\nreturn out", *tokens)
    return [bool(x) for x in reply]


def test_lua_counts_a_lease_exactly_when_the_grammar_says_so(fake: redis.Redis) -> None:
    assert _lua_counted(fake, TOKENS) == [protocol.is_counted(t) for t in TOKENS]
    assert not protocol.is_counted("1.u2u.3") and protocol.is_counted("1.u2.3")


def test_lua_counts_a_lease_against_tags_exactly_when_the_grammar_says_so(
        fake: redis.Redis) -> None:
    assert _lua_tagged(fake, TOKENS) == [protocol.is_tagged(t) for t in TOKENS]
    assert protocol.is_tagged("1.2u.3t!") and not protocol.is_tagged("1.2t.3")


@hsettings(max_examples=50, deadline=None)
@given(st.lists(st.text("0123456789ut.!aZ", max_size=10), min_size=1, max_size=40))
def test_lua_and_python_agree_on_any_token(tokens: list[str]) -> None:
    import fakeredis
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    assert _lua_counted(client, tokens) == [protocol.is_counted(t) for t in tokens]
    assert _lua_tagged(client, tokens) == [protocol.is_tagged(t) for t in tokens]


def test_suspect_is_the_last_character_only() -> None:
    assert protocol.is_suspect("1.2u.3!") and not protocol.is_suspect("1.2!.3")
    lease = signals.Lease("t", "1.2u.3!", "q", "f", None, "m:f", "f", b"", b"")
    assert lease.suspect


# -- script layouts ------------------------------------------------------------------------


def header(source: str, tag: str) -> tuple[tuple[str, ...], str]:
    """The names and the "then" part of a script's ``-- KEYS:`` or ``-- ARGV:`` header: the
    tag's line and the lines after it indented past "--"."""
    lines = source.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"-- {tag}:"))
    parts = [lines[start][len(f"-- {tag}:"):]]
    for line in lines[start + 1:]:
        if not line.startswith("--  "):
            break
        parts.append(line[2:])
    text = " ".join(" ".join(parts).split())
    head, _, then = text.partition("; then ")
    return protocol.layout(head, "").keys, then


def test_every_script_has_a_layout_and_every_layout_a_script() -> None:
    assert sorted(LAYOUTS) == SCRIPTS


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_script_header_says_what_its_layout_declares(name: str) -> None:
    source = (LUA / f"{name}.lua").read_text()
    declared = LAYOUTS[name]
    assert header(source, "KEYS") == (declared.keys, declared.keys_then)
    assert header(source, "ARGV") == (declared.argv, declared.argv_then)


def key_kind(keys: Keys, key: str) -> str:
    """The kind of a key as layouts name it: ``flow done`` for flow:<id>:done, else the
    segment after the namespace (``leases``, ``queue-conf``, ...)."""
    assert key.startswith(keys.prefix), key
    parts = key[len(keys.prefix):].split(":")
    if parts[0] == "flow" and len(parts) == 3:
        return f"flow {parts[-1]}"  # flow done, flow tasks
    return parts[0]


DONE = [Done("t1", "1.1.1", "q", "f", 1, b"r", True, [Child("c1", "q", 1.0)])]
OFFER = Offer("1", (("w1", 4, 0.0, 4), ("w2", 2, 0.25, 2)), ("other",))
TASK = [("t1", 1.0, {"fn": "m:f", "flow": "f"})]
CALLS: dict[str, Callable[[Scripts], Any]] = {
    "ack": lambda s: s.ack_and_take("w1", DONE, 1000, 5, 2, 8, "0"),
    "assign": lambda s: s.assign("1|d", "w1", "q", 4, 100, "1.1u", ["t1", "t2"], 2, 4),
    "cancel": lambda s: s.cancel("f", [CancelTask("t1", "q", "1.1.1", "w1", b"e"),
                                       CancelTask("t2", "q")], 1000),
    "cascade": lambda s: s.cascade("t1", "f", b"e", ["c1", "c2"], 1000),
    "dlq_purge": lambda s: s.dlq_purge("t1", "f", 1000),
    "dlq_retry": lambda s: s.dlq_retry("t1", "q"),
    "fail": lambda s: s.fail("w1", "1.1.1", "t1", "q", "f", b"e", "retry", 1000, 3, 5),
    "flow_close": lambda s: s.flow_close("f", "completed", 1000, b""),
    "flow_extend": lambda s: s.flow_extend(
        "f", [AddedTask("t1", "q", 1.0, b"l", {"fn": "m:f"})], "s"),
    "flow_release": lambda s: s.flow_release("t1", "q", 1.0, "f", 1000, b"", "s"),
    "gate": lambda s: s.gate("t1", "f", "q", "expand", 1000, expansions=[
        Expansion("t1", ["t1-0", "t1-1"]), Expansion("t2", ["t2-0", "t2-1"], b"\x90", 0)]),
    "heartbeat": lambda s: s.heartbeat("w1", b"info", 1000),
    "leader": lambda s: s.lead("d1", 1000),
    "mark_running": lambda s: s.mark_running("w1", [("t1", "1.1.1"), ("t2", "1.1.2")]),
    "loop": lambda s: s.record_loop("w1", "t1", "1.1.1", b"\x92\xc4\x00\xa0", 5000),
    "name_run": lambda s: s.name_run("w1", "t1", "1.1.1", "fetch-a"),
    "promote": lambda s: s.promote([("t1", "q"), ("t2", "r")]),
    "reap": lambda s: s.reap("1|d", "w1", 5, 3, b"e", [LeasedTask("t1", "q", "1.1.1")]),
    "queue_rm": lambda s: s.queue_rm("q"),
    "release": lambda s: s.release("w1", [LeasedTask("t1", "q", "1.1.1")]),
    "set_aside": lambda s: s.set_aside("e1", b"rec", "{ns}:queue:q", "zset", b"m"),
    "submit_small": lambda s: s.submit_small("f", {"name": "n"}, "q", TASK, 5, 0, "s", OFFER,
                                             b"raw", "1.abcu", 100),
    "slots_take": lambda s: s.slots_take("h1", [("api", 2, 1.5), ("db", 1, 0)], 1,
                                                 60_000, rate=True),
    "take": lambda s: s.take("w1", 3),
    "schedule_fire": lambda s: s.schedule_fire(
        "1|d", "s1", 5, 10, "1", ScheduledRun("f", {"name": "n"}, {"t1": {"fn": "m:f"}},
                                              {"q": {"t1": 1.0}}, "s", 0)),
    "schedule_put": lambda s: s.schedule_put("s1", b"c", 5, {"name": "n"}),
}


def test_every_script_has_a_wrapper_call_checked() -> None:
    assert sorted(CALLS) == SCRIPTS


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_wrapper_passes_the_keys_and_argv_head_its_layout_declares(
        name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    keys = Keys("ns")
    scripts = Scripts(redis.Redis(), keys)
    sent: list[tuple[str, list[str], list[Any]]] = []

    def run(script: str, k: list[str], a: list[Any]) -> Any:
        sent.append((script, list(k), list(a)))
        raise _Sent

    monkeypatch.setattr(scripts, "_run", run)
    with pytest.raises(_Sent):
        CALLS[name](scripts)
    [(script, k, a)] = sent
    declared: Layout = LAYOUTS[name]
    assert script == name
    head = k[:len(declared.keys)]
    assert [key_kind(keys, key) for key in head] == [
        "queue" if n == "source" else n for n in declared.keys]
    if not declared.keys_then:
        assert len(k) == len(declared.keys)
    else:
        assert len(k) > len(declared.keys)
    if not declared.argv_then:
        assert len(a) == len(declared.argv)
    else:
        assert len(a) > len(declared.argv)


class _Sent(Exception):
    """Stops a wrapper once it has built its call."""


def test_assign_passes_the_prefetch_depth_where_the_layout_says() -> None:
    argv = LAYOUTS["assign"].argv
    assert argv.index("prefetch depth") == 7  # ARGV[8], as assign.lua reads it


# -- signals -------------------------------------------------------------------------------


def test_the_prelude_signal_table_is_the_one_python_reads() -> None:
    table = re.search(r"local SIGNAL = \{(.*?)\}", PRELUDE, re.S)
    assert table is not None
    pairs = dict(re.findall(r"(\w+) = '([^']*)'", table.group(1)))
    assert pairs == signals.LUA_KINDS
    cap = re.search(r"local WAKE_CAP = (\d+)", PRELUDE)
    assert cap is not None and int(cap.group(1)) == protocol.WAKE_CAP


@pytest.mark.parametrize("name", ["_prelude", *SCRIPTS])
def test_scripts_push_signals_only_through_the_prelude(name: str) -> None:
    """No script pushes onto the wake list itself (only ``signal_capped`` does, capped),
    and every kind a script names is in the table."""
    source = (LUA / f"{name}.lua").read_text()
    if name == "_prelude":
        assert source.count("'RPUSH', wake_key") == 1
    else:
        layout = LAYOUTS[name]
        if "wake" in layout.keys:
            wake = layout.keys.index("wake") + 1
            assert not re.search(rf"PUSH', KEYS\[{wake}\]", source)
    assert set(re.findall(r"SIGNAL\.(\w+)", source)) <= set(signals.LUA_KINDS)


@pytest.mark.parametrize(("kind", "fields", "expected"), [
    ("ack", ["w1", 3], signals.Signal(signals.ACK, worker="w1", leased=3)),
    ("settled", ["w1", 0], signals.Signal(signals.ACK, worker="w1", leased=0, queued=False)),
    ("offer_taken", ["w1", 2], signals.Signal(signals.OFFER_TAKEN, worker="w1", leased=2)),
    ("heartbeat", ["w1", 4, "b|l\xffob"],
     signals.Signal(signals.HEARTBEAT, worker="w1", leased=4, blob="b|l\xffob".encode())),
    ("submitted", [], signals.Signal(signals.SUBMITTED)),
    ("retry", [], signals.Signal(signals.RETRY)),
    ("cascade", [], signals.Signal(signals.CASCADE)),
])
def test_each_signal_lua_builds_is_one_python_reads(
        fake: redis.Redis, kind: str, fields: list[Any], expected: signals.Signal) -> None:
    lua(fake, "signal('wake', SIGNAL[ARGV[1]], unpack(ARGV, 2))", kind, *fields)
    [raw] = fake.lrange("wake", 0, -1)
    assert signals.parse(raw) == expected
    builders: dict[str, Callable[..., Any]] = {
        "ack": signals.acked, "offer_taken": signals.offer_taken,
        "settled": lambda w, n: signals.acked(w, n, queued=False),
        "heartbeat": lambda w, n, b: signals.heartbeat(w, n, b.encode())}
    if kind in builders:
        built = builders[kind](*fields)
        assert (built if isinstance(built, bytes) else built.encode()) == raw


def test_a_signal_keeps_the_wake_list_at_its_cap(fake: redis.Redis) -> None:
    fake.rpush("wake", *["s"] * protocol.WAKE_CAP)
    lua(fake, "signal('wake', SIGNAL.retry)")
    assert fake.llen("wake") == protocol.WAKE_CAP
    assert fake.lindex("wake", -1) == b"r"


# -- quiet acks ----------------------------------------------------------------------------


@pytest.mark.parametrize("quiet", [-1, 0, 1, 2, 5, 8, 64])
def test_python_and_ack_lua_agree_on_the_checkpoints(fake: redis.Redis, quiet: int) -> None:
    """ack.lua's passes_checkpoint (with its "quiet < 0: always"), run on every way down
    from up to 70 leases held, against prefetch.passes_checkpoint."""
    source = (LUA / "ack.lua").read_text()
    func = re.search(r"local function passes_checkpoint.*?\nend\n", source, re.S)
    assert func is not None
    body = func.group(0) + (
        "local quiet, out = tonumber(ARGV[1]), {}\n"
        "for i = 2, #ARGV, 2 do\n"
        "  local b, a = tonumber(ARGV[i]), tonumber(ARGV[i + 1])\n"
        "  out[#out + 1] = (quiet < 0 or passes_checkpoint(b, a, quiet)) and 1 or 0\n"
        "end\nreturn out")
    pairs = [(before, after) for before in range(1, 70) for after in range(before)]
    argv = [n for pair in pairs for n in pair]
    got = [bool(x) for x in lua(fake, body, quiet, *argv)]
    assert got == [prefetch.passes_checkpoint(b, a, quiet) for b, a in pairs]


def test_checkpoints_halve_from_the_quiet_point_down_to_zero() -> None:
    assert prefetch.checkpoints(8) == [8, 4, 2, 1, 0]
    assert prefetch.checkpoints(prefetch.ack_quiet_above(2)) == [32, 16, 8, 4, 2, 1, 0]
