"""Prefect 1's introspection of a flow's graph: its tasks, its edges, what runs before and
after what, in the order they can run.

A "task" here is a ``Node``, one call of a task in the flow, as Prefect 1's copy of a
task made by each call (passing it to another call passes its result). Parameters are no
tasks: their values are known when the run is submitted (``flow.parameters()`` lists
them). Read on a flow as built, with the upstream tasks declared by ``set_upstream``
outside it folded in, as a submit reads it; nothing here writes to Redis.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from balancer.task import Task

if TYPE_CHECKING:
    from balancer.flow import Flow, Node


@dataclass(frozen=True)
class Edge:
    """``downstream_task`` runs after ``upstream_task``; with ``key``, it receives the
    upstream's result as that argument (``mapped``: item by item, ``t.map``). Prefect 1's
    ``Edge``, also taken by ``Flow(name, edges=[...])``."""

    upstream_task: Any
    downstream_task: Any
    key: str | None = None
    mapped: bool = False

    @property
    def tasks(self) -> set[Any]:
        return {self.upstream_task, self.downstream_task}


def edges(flow: Flow) -> set[Edge]:
    nodes = flow.graph()
    return {edge for node in nodes for edge in _edges_into(node)}


def _edges_into(node: Node) -> list[Edge]:
    keys = _argument_keys(node)
    mapped = _mapped_keys(node)
    found = []
    for up, key in node.upstream.items():
        key = key if key is not None else keys.get(up)
        found.append(Edge(up, node, key, key is not None and key in mapped))
    return found


def _argument_keys(node: Node) -> dict[Node, str]:
    """The argument each upstream node is passed as, when it is passed as one whole (not
    inside a list or a dict): by keyword, or by position bound to the function's
    signature."""
    from balancer.flow import Node

    keys = {value: name for name, value in node.kwargs.items() if isinstance(value, Node)}
    positional = [(i, a) for i, a in enumerate(node.args) if isinstance(a, Node)]
    if positional:
        names = _positional_names(node.task)
        for i, arg in positional:
            if i < len(names):
                keys.setdefault(arg, names[i])
    return keys


def _positional_names(task: Task) -> list[str]:
    signature = task.signature()
    if signature is None:  # a callable without a signature Python can read
        return []
    return [p.name for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _mapped_keys(node: Node) -> set[str]:
    if node.mapped is None:
        return set()
    names = _positional_names(node.task)
    return {*node.mapped.keywords, *(names[i] for i in node.mapped.positions
                                     if i < len(names))}


def _known(flow: Flow, task: Node | Task) -> Node:
    """The call ``task`` stands for in the flow (folded in: ``graph`` first), found, never
    added: a question about the graph leaves it as it is. FlowError for a task the flow
    does not call, or calls more than once."""
    from balancer.flow import FlowError, Node

    if isinstance(task, Node):
        return flow._node(task)  # of this flow, or FlowError
    try:
        return flow.node_of(task)
    except KeyError as exc:
        raise FlowError(exc.args[0]) from None


def edges_to(flow: Flow, task: Node | Task) -> set[Edge]:
    flow.graph()
    return set(_edges_into(_known(flow, task)))


def edges_from(flow: Flow, task: Node | Task) -> set[Edge]:
    found = edges(flow)
    node = _known(flow, task)
    return {edge for edge in found if edge.upstream_task is node}


def upstream_tasks(flow: Flow, task: Node | Task) -> set[Node]:
    flow.graph()
    return set(_known(flow, task).upstream)


def downstream_tasks(flow: Flow, task: Node | Task) -> set[Node]:
    nodes = flow.graph()
    node = _known(flow, task)
    return {down for down in nodes if node in down.upstream}


def root_tasks(flow: Flow) -> set[Node]:
    """The tasks nothing runs before: where a run begins."""
    return {node for node in flow.graph() if not node.upstream}


def terminal_tasks(flow: Flow) -> set[Node]:
    """The tasks nothing runs after (the reference tasks, unless others were set)."""
    nodes = flow.graph()
    upstream = {up for node in nodes for up in node.upstream}
    return {node for node in nodes if node not in upstream}


def sorted_tasks(flow: Flow, roots: Iterable[Node | Task] | None = None) -> tuple[Node, ...]:
    """Every task after those it runs after (``plan()``'s order); with ``roots``, only
    those and the tasks downstream of them, as Prefect 1's ``sorted_tasks(root_tasks)``."""
    order = flow.plan()
    if roots is None:
        return tuple(order)
    keep = {_known(flow, t) for t in roots}
    for node in order:  # in dependency order: an upstream is decided before its dependents
        if node not in keep and any(up in keep for up in node.upstream):
            keep.add(node)
    return tuple(node for node in order if node in keep)


def get_tasks(flow: Flow, name: str | None = None, tags: Iterable[str] | None = None,
              task_type: type | None = None) -> list[Node]:
    """The tasks that match every condition given: the task's name, tags it carries (its
    own and those of the ``with tags(...)`` blocks it was called in), and the class of
    its task (a ``Task`` subclass)."""
    wanted = set(tags) if tags is not None else None
    found = []
    for node in flow.graph():
        if name is not None and node.task.name != name:
            continue
        if wanted is not None and not wanted <= {*node.task.tags, *node.tags}:
            continue
        if task_type is not None and not isinstance(node.task, task_type):
            continue
        found.append(node)
    return found
