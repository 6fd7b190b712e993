"""The records a map expands into, and the maps that expand with it item by item.

A map's children are plain tasks, one per item, whose one dependent is the map (gated: the
last to settle puts it back in the gate). A map that maps over nothing but this map's
result (``inc.map(inc.map(xs))``), and waits for nothing else, expands with it, as Prefect
1 maps item by item: its i-th child waits for this map's i-th child alone and gets its
result, so it runs as soon as that one finished, and a failed item fails only the items
mapped over it. Such a map is taken out of this map's dependents (its own children now
stand for it), and maps over it in turn expand with it the same way.

Records are written without a state, with ids fixed by the map and the index
(``gates.child_ids``): writing them again after a crash, or from a second dispatcher,
writes the same bytes, and ``gate.lua`` gives them their state when it expands the map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from balancer.common import codec, signing
from balancer.common.codec import CodecError, UpstreamRef
from balancer.common.replies import field_int, field_text
from balancer.common.scripts import Expansion
from balancer.mapping import take_spec

Raw = dict[str, bytes | None]
Call = tuple[list[Any], dict[str, Any]]


def child_ids(map_id: str, count: int) -> list[str]:
    """A map's children's ids: fixed by the map and the index (zero-padded, so that they
    sort in order), so that expanding again writes the same records."""
    width = len(str(max(count - 1, 0)))
    return [f"{map_id}-{i:0{width}d}" for i in range(count)]


@dataclass
class Planned:
    """One map's part of an expansion: its children's records, and what gate.lua needs."""

    expansion: Expansion
    records: dict[str, dict[str, Any]]


class Planner:
    def __init__(self, read: Callable[[str], Raw], flow: str, max_payload_bytes: int,
                 signer: signing.Signer | None,
                 trusted: Callable[[str, Raw], bool] = lambda task_id, raw: True) -> None:
        self.read = read  # a task's record, by id (gates.FIELDS)
        self.trusted = trusted  # its signature holds, when signing is on
        self.flow = flow
        self.limit = max_payload_bytes
        self.signer = signer

    def plan(self, map_id: str, raw: Raw, calls: list[Call]) -> list[Planned]:
        """The map's expansion first, then those of the maps expanding with it."""
        return self._plan(map_id, raw, calls, pending=False)

    def _plan(self, map_id: str, raw: Raw, calls: list[Call], pending: bool
              ) -> list[Planned]:
        ids = child_ids(map_id, len(calls))
        entries = _dependents(raw)
        chained = [(str(e[0]), self.read(str(e[0]))) for e in entries
                   if len(e) > 3 and e[3]]
        chained = [(m, r) for m, r in chained
                   if self.item_by_item(r, map_id) and self.trusted(m, r)]
        extra: list[list[list[Any]]] = [[] for _ in ids]
        below: list[Planned] = []
        for sub_id, sub_raw in chained:
            sub_queue = field_text(sub_raw["queue"], "default")
            sub_score = float(field_text(sub_raw["score"], "0") or 0)
            sub_ids = child_ids(sub_id, len(ids))
            for i, sub_child in enumerate(sub_ids):
                extra[i].append([sub_child, sub_queue, sub_score])
            below += self._plan(sub_id, sub_raw, [_item_call(sub_raw, ref) for ref in ids],
                                pending=True)
        records = {child: self._record(map_id, raw, i, child, call, extra[i], pending)
                   for i, (child, call) in enumerate(zip(ids, calls))}
        taken = {m for m, _ in chained}
        if taken:
            kept = [e for e in entries if str(e[0]) not in taken]
            expansion = Expansion(map_id, ids, codec.pack(kept), len(kept))
        else:
            expansion = Expansion(map_id, ids)
        return [Planned(expansion, records), *below]

    @staticmethod
    def item_by_item(raw: Raw, parent_id: str) -> bool:
        """Whether the map of record ``raw`` maps over the result of ``parent_id`` alone,
        waits for nothing else, and runs by the default rules: then it expands with it."""
        if (raw["state"] != b"pending" or raw["map"] is None or raw["gate"] is None
                or field_int(raw["nup"]) != 1 or field_int(raw["deps"]) != 1
                or raw["trigger"] not in (None, b"all_successful")
                or raw["runskip"] is not None):
            return False
        try:
            args, kwargs = codec.decode_call(raw["args"] or b"")
            spec = take_spec(kwargs)
        except (CodecError, TypeError, ValueError):
            return False
        if spec.flat:
            return False
        mapped = [args[p] if p < len(args) else None for p in spec.positions]
        mapped += [kwargs.get(k) for k in spec.keywords]
        return bool(mapped) and all(m == UpstreamRef(parent_id) for m in mapped)

    def _record(self, map_id: str, raw: Raw, index: int, child_id: str, call: Call,
                extra: list[list[Any]], pending: bool) -> dict[str, Any]:
        """A child's record, without a state: a plain task whose dependents are the map
        (gated) and the children of maps expanding with it, item by item. A child of a
        map expanding with another waits for one child of it (``deps`` 1)."""
        name, fn = field_text(raw["name"]), field_text(raw["fn"])
        queue = field_text(raw["queue"], "default")
        score = float(field_text(raw["score"], "0") or 0)
        children = codec.pack([[map_id, queue, score, 1], *extra])
        args, kwargs = call
        blob = codec.encode_call(name, tuple(args), kwargs, self.limit)
        record: dict[str, Any] = {
            "name": name, "fn": fn, "flow": self.flow, "queue": queue, "score": score,
            "args": blob, "children": children, "nchildren": 1 + len(extra),
            "parent": map_id, "index": index}
        record.update({field: raw[field] for field in ("priority", "retries", "retry_delay",
                                                       "timeout", "tags")
                       if raw[field] is not None})
        if pending:
            record["deps"] = 1
        if self.signer is not None:
            timeout = float(field_text(raw["timeout"])) if raw["timeout"] is not None else None
            record["sig"] = self.signer.sign(signing.spec_message(
                child_id, self.flow, queue, timeout, fn, name, children, blob))
        return record


def _dependents(raw: Raw) -> list[list[Any]]:
    try:
        entries = codec.unpack(raw["children"]) if raw["children"] else []
        return [list(e) for e in entries if isinstance(e, list) and e]
    except (CodecError, TypeError, ValueError):
        return []


def _item_call(raw: Raw, ref: str) -> Call:
    """The arguments of one child of a map expanding item by item: each mapped argument is
    the result of one child of the map it maps over."""
    args, kwargs = codec.decode_call(raw["args"] or b"")
    spec = take_spec(kwargs)
    args, kwargs = list(args), dict(kwargs)
    for p in spec.positions:
        args[p] = UpstreamRef(ref)
    for k in spec.keywords:
        kwargs[k] = UpstreamRef(ref)
    return args, kwargs
