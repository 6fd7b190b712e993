"""balancer.common.codec: what travels through Redis (arguments, results, errors), how it fails."""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import msgpack
import pytest
from balancer.common import codec
from balancer.common.codec import CodecError, ErrorInfo, UpstreamRef
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

LIMIT = 1 << 20


class Pair(NamedTuple):
    a: int
    b: int


@pytest.mark.parametrize(
    "value",
    [
        None,
        0,
        -1,
        2**63 - 1,
        -(2**63),
        1.5,
        True,
        "text",
        "",
        b"\x00\xffbinary|bytes",
        [1, [2, [3, None]], {"k": b"v"}],
        {"outer": {"inner": [1, 2, {"deep": None}]}, "list": []},
        {1: "one", 2: {3: "three"}},
    ],
    ids=repr,
)
def test_pack_unpack_round_trips_plain_values(value: object) -> None:
    assert codec.unpack(codec.pack(value)) == value


def test_bytes_stay_bytes_and_str_stays_str() -> None:
    back = codec.unpack(codec.pack([b"raw", "text"]))
    assert back == [b"raw", "text"]
    assert isinstance(back[0], bytes)
    assert isinstance(back[1], str)


def test_int_map_keys_come_back_as_ints() -> None:
    back = codec.unpack(codec.pack({7: "seven", -1: "minus"}))
    assert back == {7: "seven", -1: "minus"}
    assert all(isinstance(k, int) for k in back)


def test_tuples_travel_as_lists() -> None:
    assert codec.unpack(codec.pack((1, (2, 3)))) == [1, [2, 3]]


def test_upstream_ref_round_trips_as_msgpack_extension() -> None:
    blob = codec.pack(UpstreamRef("abc123"))
    raw = msgpack.unpackb(blob)
    assert isinstance(raw, msgpack.ExtType)
    assert raw.code == codec.UPSTREAM_REF
    assert raw.data == b"abc123"
    assert codec.unpack(blob) == UpstreamRef("abc123")


def test_upstream_refs_nested_in_structures_round_trip() -> None:
    value = {"a": [UpstreamRef("t1"), {"b": UpstreamRef("t2")}], "c": 3}
    assert codec.unpack(codec.pack(value)) == value


def test_unknown_extension_type_is_a_codec_error() -> None:
    blob = msgpack.packb(msgpack.ExtType(42, b"data"))
    with pytest.raises(CodecError, match="extension type 42"):
        codec.unpack(blob)


def test_pack_of_unencodable_value_raises_codec_error() -> None:
    with pytest.raises(CodecError, match="object"):
        codec.pack(object())


def test_pack_of_too_large_int_raises_codec_error() -> None:
    with pytest.raises(CodecError):
        codec.pack(2**64)


def test_encode_call_round_trips_through_decode_call() -> None:
    blob = codec.encode_call("t", (1, b"x", [UpstreamRef("u")]), {"k": {"n": None}}, LIMIT)
    args, kwargs = codec.decode_call(blob)
    assert args == [1, b"x", [UpstreamRef("u")]]
    assert kwargs == {"k": {"n": None}}


def test_encode_call_names_task_and_position_of_unencodable_value() -> None:
    with pytest.raises(CodecError) as info:
        codec.encode_call("resize", (1, 2 + 3j), {}, LIMIT)
    message = str(info.value)
    assert "'resize'" in message
    assert "position 1" in message
    assert "complex" in message


@pytest.mark.parametrize("value", [
    {3, 1, 2}, set(), frozenset({"b", "a"}), {(1, (2, "x")), (1,)}, {frozenset({1}), 2},
    [{1}, {"k": frozenset()}], {1, "mixed", 2.5, None}],
    ids=["ints", "empty", "frozen-strs", "tuples", "frozen-in-set", "set-in-list", "mixed"])
def test_sets_and_frozensets_come_back_as_themselves_with_their_tuples(value: object) -> None:
    back = codec.unpack(codec.pack(value))
    assert back == value and type(back) is type(value)


def test_a_set_packs_to_the_same_bytes_whatever_its_order() -> None:
    """Equal inputs give the cache the same digest, across processes (str hashes differ)."""
    assert codec.pack({"b", "c", "a"}) == codec.pack({"a", "b", "c"})


def test_a_set_of_values_that_would_arrive_as_dicts_is_refused_naming_them() -> None:
    with pytest.raises(CodecError, match="a set of Pair cannot travel: its items would arrive"
                                         " as dicts"):
        codec.pack({Pair(1, 2)})


@pytest.mark.parametrize("payload", [codec.pack(1), codec.pack([[1], {}]), b"\xc1"])
def test_a_set_whose_items_cannot_be_held_is_a_codec_error(payload: bytes) -> None:
    with pytest.raises(CodecError):
        codec.unpack(msgpack.packb(msgpack.ExtType(codec.SET, payload)))


def test_encode_call_names_task_and_keyword_of_unencodable_object() -> None:
    with pytest.raises(CodecError) as info:
        codec.encode_call("load", ("ok",), {"good": 1, "conn": object()}, LIMIT)
    message = str(info.value)
    assert "'load'" in message
    assert "keyword 'conn'" in message
    assert "position" not in message


def test_encode_call_names_nested_unencodable_argument_by_its_top_level_position() -> None:
    with pytest.raises(CodecError, match="position 2"):
        codec.encode_call("t", (1, 2, {"inner": [object()]}), {}, LIMIT)


def test_encode_call_rejects_payload_over_the_limit_naming_task_and_limit() -> None:
    with pytest.raises(CodecError) as info:
        codec.encode_call("big", (b"x" * 200,), {}, 100)
    message = str(info.value)
    assert "'big'" in message
    assert "limit of 100" in message
    assert "BALANCER_MAX_PAYLOAD_BYTES" in message


def test_encode_call_accepts_payload_exactly_at_the_limit() -> None:
    size = len(codec.pack([[b"x" * 50], {}]))
    blob = codec.encode_call("t", (b"x" * 50,), {}, size)
    assert len(blob) == size


@pytest.mark.parametrize(
    "value",
    [None, 1, "s", [], [[]], [[], {}, 3], [{}, []], [[], []], {"args": [], "kwargs": {}}],
    ids=repr,
)
def test_decode_call_rejects_anything_but_an_args_kwargs_pair(value: object) -> None:
    with pytest.raises(CodecError, match=r"\[args, kwargs\]"):
        codec.decode_call(msgpack.packb(value))


@pytest.mark.parametrize(
    "blob",
    [
        b"\xc1",  # a reserved type byte
        b"\xc0\xc0",  # extra data after a value
        b"\x91" * 5000 + b"\xc0",  # nesting deeper than msgpack's stack
        b"\xdd\xff\xff\xff\xff",  # an array header far longer than the data
        b"\x81\x80\x01",  # a map used as a map key
        b"\xd4\x01\xff",  # an upstream reference that is not utf-8
    ],
    ids=["reserved", "extra", "deep", "long-header", "unhashable-key", "bad-ref"],
)
def test_decode_call_of_garbage_bytes_raises_codec_error(blob: bytes) -> None:
    with pytest.raises(CodecError, match="undecodable"):
        codec.decode_call(blob)


def test_upstream_refs_finds_every_reference_in_nested_structures() -> None:
    value = [UpstreamRef("a"), (1, {"k": UpstreamRef("b"), "l": [UpstreamRef("a")]}), "c"]
    assert codec.upstream_refs(value) == {"a", "b"}


@pytest.mark.parametrize("value", [None, 1, "a", [], (), {}, {"k": [1, 2]}], ids=repr)
def test_upstream_refs_of_plain_values_is_empty(value: object) -> None:
    assert codec.upstream_refs(value) == set()


def test_substitute_replaces_references_and_keeps_container_types() -> None:
    value = {"x": [UpstreamRef("a"), (UpstreamRef("b"), 3)], "y": UpstreamRef("a"), "z": "keep"}
    result = codec.substitute(value, {"a": [1, 2], "b": None})
    assert result == {"x": [[1, 2], (None, 3)], "y": [1, 2], "z": "keep"}
    assert isinstance(result["x"][1], tuple)


def test_substitute_of_missing_result_raises_key_error() -> None:
    with pytest.raises(KeyError):
        codec.substitute([UpstreamRef("missing")], {})


def _raise_lookup() -> None:
    raise LookupError("no such thing")


def test_error_info_from_exception_keeps_type_message_and_traceback() -> None:
    try:
        _raise_lookup()
    except LookupError as exc:
        info = ErrorInfo.from_exception(exc)
    assert info.type == "LookupError"
    assert info.message == "no such thing"
    assert "_raise_lookup" in info.traceback
    assert "LookupError: no such thing" in info.traceback
    assert str(info) == "LookupError: no such thing"


def test_error_info_type_of_non_builtin_exception_is_qualified() -> None:
    info = ErrorInfo.from_exception(CodecError("bad"))
    assert info.type == "balancer.common.codec.CodecError"


def test_error_round_trips_through_pack_error() -> None:
    info = ErrorInfo("ValueError", "bad value", "Traceback ...")
    assert codec.unpack_error(codec.pack_error(info)) == info


@pytest.mark.parametrize("blob", [None, b""])
def test_unpack_error_of_nothing_is_none(blob: bytes | None) -> None:
    assert codec.unpack_error(blob) is None


@pytest.mark.parametrize(
    "blob",
    [b"\xc1", b"\x93\x01", msgpack.packb(5), msgpack.packb([1, 2]), msgpack.packb({"a": 1})],
    ids=repr,
)
def test_unpack_error_of_garbage_returns_a_readable_corrupt_error(blob: bytes) -> None:
    info = codec.unpack_error(blob)
    assert info == ErrorInfo("balancer.CorruptError", "the stored error record is unreadable")
    assert str(info).startswith("balancer.CorruptError: ")


@hsettings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_unpack_of_arbitrary_bytes_raises_only_codec_error(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        codec.unpack(data)


@hsettings(max_examples=300, deadline=None)
@given(st.binary(max_size=256))
def test_decode_call_of_arbitrary_bytes_raises_only_codec_error(data: bytes) -> None:
    try:
        args, kwargs = codec.decode_call(data)
    except CodecError:
        return
    assert isinstance(args, list)
    assert isinstance(kwargs, dict)


_ext_prefixed = st.builds(
    lambda code, payload: msgpack.packb(msgpack.ExtType(code, payload)),
    st.sampled_from([codec.UPSTREAM_REF, 2, codec.SET, codec.FROZENSET, 99]),
    st.binary(max_size=16),
)


@hsettings(max_examples=300, deadline=None)
@given(_ext_prefixed)
def test_unpack_of_arbitrary_extension_values_raises_only_codec_error(data: bytes) -> None:
    with contextlib.suppress(CodecError):
        codec.unpack(data)


@pytest.mark.parametrize("value", ["abc", b"xyz", {"a": 1, "b": 2, "c": 3}], ids=repr)
def test_unpack_error_of_a_three_item_non_list_is_a_corrupt_error(value: object) -> None:
    info = codec.unpack_error(msgpack.packb(value))
    assert info is not None
    assert info.type == "balancer.CorruptError"


@pytest.mark.parametrize("value", [
    [[UpstreamRef("a")], {}],
    [[1, [2, {"k": UpstreamRef("b" * 24)}]], {}],
    [[], {"x": (UpstreamRef("c"),)}],
])
def test_a_blob_holding_a_reference_is_never_skipped(value: object) -> None:
    assert codec.may_hold_refs(codec.pack(value))


def test_a_blob_of_plain_values_is_skipped() -> None:
    assert not codec.may_hold_refs(codec.pack([[1, "text", [True, None]], {"n": 7}]))


# -- everyday types and the extension hook -------------------------------------------------

def test_everyday_types_round_trip_as_themselves() -> None:
    import datetime as dt
    import uuid
    from decimal import Decimal

    values = [dt.datetime(2020, 1, 2, 3, 4, 5, 6), dt.datetime(2020, 1, 2, tzinfo=dt.timezone.utc),
              dt.date(2020, 1, 2), dt.time(4, 5, 6, 7), dt.timedelta(days=-3, microseconds=9),
              Decimal("-0.000100"), Decimal("NaN"), uuid.uuid4()]
    back = codec.unpack(codec.pack(values))
    assert [type(v) for v in back] == [type(v) for v in values]
    assert str(back[6]) == "NaN" and back[:6] + back[7:] == values[:6] + values[7:]


def test_dataclasses_and_namedtuples_travel_as_dicts_unless_registered() -> None:
    from dataclasses import dataclass
    from typing import NamedTuple

    @dataclass
    class Loose:
        a: int

    class Row(NamedTuple):
        k: str
        v: int

    assert codec.unpack(codec.pack([Loose(1), Row("x", 2), (1, 2)])) == [
        {"a": 1}, {"k": "x", "v": 2}, [1, 2]]


def test_a_registered_type_comes_back_as_itself_and_codes_are_checked() -> None:
    class Celsius:
        def __init__(self, degrees: float) -> None:
            self.degrees = degrees

    with pytest.raises(ValueError, match="give encode and decode"):
        codec.register_type(Celsius, 100)
    with pytest.raises(ValueError, match="from 16 to 127"):
        codec.register_type(Celsius, 7, encode=lambda c: c.degrees, decode=Celsius)
    codec.register_type(Celsius, 101, encode=lambda c: c.degrees, decode=Celsius)
    codec.register_type(Celsius, 101, encode=lambda c: c.degrees, decode=Celsius)  # again: fine
    with pytest.raises(ValueError, match="already registered"):
        codec.register_type(dict, 101, encode=dict, decode=dict)
    back = codec.unpack(codec.pack({"t": Celsius(21.5)}))
    assert isinstance(back["t"], Celsius) and back["t"].degrees == 21.5


def test_an_unregistered_extension_code_is_a_codec_error_naming_the_hook() -> None:
    blob = msgpack.packb(msgpack.ExtType(99, b"\x01"))
    with pytest.raises(CodecError, match=r"unknown msgpack extension type 99.*register_type"):
        codec.unpack(blob)
    # the worker's substitution keeps it as it came, byte for byte
    assert codec.pack(codec.unpack_refs(blob)) == blob


def test_malformed_extension_data_is_a_codec_error() -> None:
    with pytest.raises(CodecError, match="undecodable"):
        codec.unpack(msgpack.packb(msgpack.ExtType(codec.DATETIME, b"not a date")))


def test_an_unknown_type_names_the_argument_and_the_type() -> None:
    with pytest.raises(CodecError, match=r"'t'.*keyword 'x'.*complex"):
        codec.encode_call("t", (), {"x": 1j}, LIMIT)
