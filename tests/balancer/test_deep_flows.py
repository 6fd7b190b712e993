"""Long chains and deeply nested arguments: walked without recursion, or refused with an
error that names the limit and where it was passed, never a RecursionError."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest
import redis
from balancer.common import codec
from balancer.common.codec import MAX_DEPTH, CodecError
from balancer.common.keys import Keys
from balancer.common.settings import Settings

from balancer import Flow, FlowError, task
from balancer.flow import Node
from balancer.submit import submit_flow

CHAIN = 5000


@task
def link(x: Any = None) -> Any:
    return x


@task
def first() -> int:
    return 0


@task
def second() -> int:
    return 0


def nested(depth: int, inner: Any = 1) -> Any:
    value = inner
    for _ in range(depth - 1):
        value = [value]
    return [value]


def chain_built_from_its_end(n: int) -> tuple[Flow, list[Node]]:
    """n calls, each upstream of the one before it in ``flow.nodes``: a recursive walk
    from the first node goes n levels deep."""
    flow = Flow("chain")
    nodes = [flow.call(link, (i,), {}) for i in range(n)]
    for down, up in pairwise(nodes):
        down.set_upstream(up)
    return flow, nodes


def test_a_chain_of_5000_calls_plans_upstream_first(fake: redis.Redis) -> None:
    flow, nodes = chain_built_from_its_end(CHAIN)
    assert flow.plan() == nodes[::-1]


def test_a_chain_of_5000_upstreams_declared_outside_any_flow_is_folded_in() -> None:
    """``set_upstream`` outside a flow records the dependency on the task itself; the
    flow adds the declared upstreams, and theirs, when it plans."""
    tasks = [task(name=f"t{i}")(link.fn) for i in range(CHAIN)]
    for down, up in pairwise(tasks):
        down.set_upstream(up)
    flow = Flow("declared")
    flow.add_task(tasks[0])
    assert [n.task for n in flow.plan()] == tasks[::-1]


def test_a_cycle_closing_a_chain_of_5000_is_a_flow_error_naming_its_tasks() -> None:
    flow, nodes = chain_built_from_its_end(CHAIN)
    nodes[-1].set_upstream(nodes[0])
    with pytest.raises(FlowError, match=r"has a cycle: link -> link .* -> link") as info:
        flow.plan()
    assert str(info.value).count("link") == CHAIN + 1


def test_a_cycle_between_two_tasks_still_names_both() -> None:
    flow = Flow("pair")
    a, b = flow.add_task(first), flow.add_task(second)
    a.set_upstream(b)
    b.set_upstream(a)
    with pytest.raises(FlowError, match="has a cycle: first -> second -> first"):
        flow.plan()


def test_an_argument_nested_700_levels_is_refused_at_the_call_naming_it() -> None:
    with pytest.raises(CodecError, match=rf"task 'link': argument at position 0 is nested"
                                         rf" deeper than {MAX_DEPTH} levels"), Flow("deep"):
        link(nested(700))
    with pytest.raises(CodecError, match="argument at keyword 'x' is nested"), Flow("deep"):
        link(x={"rows": nested(700)})


def test_a_refused_call_adds_nothing_to_its_flow() -> None:
    with Flow("deep") as flow, pytest.raises(CodecError):
        link(nested(MAX_DEPTH + 1))
    assert flow.nodes == []


def test_an_argument_nested_to_the_limit_is_encoded_with_its_reference(
        fake: redis.Redis, settings: Settings) -> None:
    with Flow("at-the-limit") as flow:
        head = first()
        tail = link(nested(MAX_DEPTH - 1, head))
    run = submit_flow(fake, settings, flow)
    blob = fake.hget(Keys(settings.namespace).task(run.ids[tail]), "args")
    args, _ = codec.decode_call(blob)
    assert codec.upstream_refs(args) == {run.ids[head]}
    assert tail.upstream == {head: None}


def test_an_argument_nested_deeper_after_the_call_is_refused_at_submit(
        fake: redis.Redis, settings: Settings) -> None:
    rows: list[Any] = []
    with Flow("grown") as flow:
        link(rows)
    rows.append(nested(800))
    with pytest.raises(FlowError, match="argument at position 0 is nested deeper"):
        submit_flow(fake, settings, flow)
    assert not list(fake.scan_iter(match=Keys(settings.namespace).prefix + "*"))


def test_find_in_call_walks_containers_in_order_without_recursion() -> None:
    value = [1, (2, {"a": 3, "b": [4]}), {5}, frozenset({6}), "seven", [[8]]]
    found = codec.find_in_call("t", (value,), {"k": 9}, int)
    assert found == [1, 2, 3, 4, 5, 6, 8, 9]
    assert codec.find_in_call("t", (nested(MAX_DEPTH, "x"),), {}, str) == ["x"]
    with pytest.raises(CodecError, match="task 't': argument at keyword 'k' is nested"):
        codec.find_in_call("t", (), {"k": nested(5000)}, int)
