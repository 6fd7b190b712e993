"""Prefect 1's mapping: ``t.map(xs, unmapped(y))`` runs ``t`` once per item of ``xs``.

A mapped call is one node of the flow; what it maps over may be a list given in code or
an upstream task's result, known only when that task finishes. When every upstream has
settled, the dispatcher expands the node (``balancer.gates``): one child task per item,
each queued and load-balanced like any task, and the node waits for them. When they have
all settled it stores the list of their results, in order, as its own result, which its
dependents receive. Mapping over a mapped call's result maps over that list, item by
item. Every argument is mapped unless wrapped in ``unmapped``; ``flatten(x)`` maps over
the items of x's lists, one level down. Mapped arguments of unequal length map over the
shortest, as Prefect 1 does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from balancer import building

if TYPE_CHECKING:
    from balancer.flow import Node
    from balancer.task import Task


# The keyword a mapped call's spec travels under, in its arguments.
MAP_KEYWORD = "__balancer_map__"


class MapError(ValueError):
    """A mapped call cannot be expanded: an argument that is no list, too many items."""


@dataclass(frozen=True)
class unmapped:  # Prefect's spelling
    """An argument passed whole to every run of a mapped call (Prefect 1's ``with Flow``
    map and a @flow function's alike)."""

    value: Any

    def __iter__(self) -> Iterator[Any]:
        raise TypeError("unmapped(...) is not iterable: it is passed whole to every call")


@dataclass(frozen=True)
class flatten:
    """A mapped argument whose value is a list of lists: map over their items."""

    value: Any


@dataclass(frozen=True)
class MapSpec:
    """Which arguments of a call are mapped (positions, keywords) and which of those are
    flattened first."""

    positions: tuple[int, ...] = ()
    keywords: tuple[str, ...] = ()
    flat: tuple[int | str, ...] = ()

    def to_list(self) -> list[Any]:
        return [list(self.positions), list(self.keywords), list(self.flat)]

    @classmethod
    def from_list(cls, value: Any) -> MapSpec:
        """The spec as it travels; MapError when it is not one (a record written by hand)."""
        try:
            positions, keywords, flat = value
            return cls(tuple(int(p) for p in positions), tuple(str(k) for k in keywords),
                       tuple(f if isinstance(f, int) else str(f) for f in flat))
        except (TypeError, ValueError) as exc:
            raise MapError(f"the map's record holds no readable map spec ({exc})") from None


def take_spec(kwargs: dict[str, Any]) -> MapSpec:
    """Remove the map spec from a mapped call's keyword arguments, where it travels (under
    MAP_KEYWORD: signed with the arguments when signing is on), and return it."""
    if MAP_KEYWORD not in kwargs:
        raise MapError("the map's record holds no map spec")
    return MapSpec.from_list(kwargs.pop(MAP_KEYWORD))


def split(args: tuple[Any, ...], kwargs: dict[str, Any]
          ) -> tuple[tuple[Any, ...], dict[str, Any], MapSpec]:
    """The call's plain arguments, and which of them are mapped: every one not wrapped in
    ``unmapped``."""
    positions: list[int] = []
    keywords: list[str] = []
    flat: list[int | str] = []
    plain_args: list[Any] = []
    for i, value in enumerate(args):
        if isinstance(value, unmapped):
            plain_args.append(value.value)
            continue
        positions.append(i)
        if isinstance(value, flatten):
            flat.append(i)
            value = value.value
        plain_args.append(value)
    plain_kwargs: dict[str, Any] = {}
    for key, value in kwargs.items():
        if isinstance(value, unmapped):
            plain_kwargs[key] = value.value
            continue
        keywords.append(key)
        if isinstance(value, flatten):
            flat.append(key)
            value = value.value
        plain_kwargs[key] = value
    return tuple(plain_args), plain_kwargs, MapSpec(tuple(positions), tuple(keywords),
                                                    tuple(flat))


def map_call(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any],
             upstream_tasks: Iterable[Any]) -> Node:
    """``task.map(...)`` inside ``with Flow(...)``: a mapped node. ``upstream_tasks`` run
    first and are not mapped over."""
    flow = building.current_flow()
    if flow is None:
        raise RuntimeError(f"{task.name}.map(...) builds a flow: call it inside"
                           " `with Flow(...)`")
    plain_args, plain_kwargs, spec = split(args, kwargs)
    if not spec.positions and not spec.keywords:
        raise MapError(f"task {task.name!r}: .map() needs at least one argument that is not"
                       " unmapped()")
    node: Node = flow.call(task, plain_args, plain_kwargs, upstream_tasks)
    node.mapped = spec
    return node


def items(name: str, spec: MapSpec, args: list[Any], kwargs: dict[str, Any],
          limit: int) -> list[tuple[list[Any], dict[str, Any]]]:
    """The arguments of each child of a mapped call, given the call's arguments with
    every upstream result in place of its mapped references. MapError names the
    argument that is no list, or the count past ``limit``."""
    columns: list[tuple[int | str, list[Any]]] = []
    for where in (*spec.positions, *spec.keywords):
        if isinstance(where, int):
            if where >= len(args):
                raise MapError(f"task {name!r}: mapped argument {where} is missing")
            value = args[where]
            shown = f"argument at position {where}"
        else:
            if where not in kwargs:
                raise MapError(f"task {name!r}: mapped argument {where!r} is missing")
            value = kwargs[where]
            shown = f"argument {where!r}"
        if not isinstance(value, list):
            raise MapError(f"task {name!r}: cannot map over {shown}: it is a"
                           f" {type(value).__name__}, not a list")
        if where in spec.flat:
            flat: list[Any] = []
            for i, inner in enumerate(value):
                if not isinstance(inner, list):
                    raise MapError(f"task {name!r}: cannot flatten {shown}: item {i} is a"
                                   f" {type(inner).__name__}, not a list")
                flat.extend(inner)
            value = flat
        columns.append((where, value))
    count = min(len(values) for _, values in columns)
    if count > limit:
        raise MapError(f"task {name!r}: mapping over {count} items, more than the limit of"
                       f" {limit} children per map (BALANCER_MAX_MAP_CHILDREN)")
    out = []
    for i in range(count):
        child_args, child_kwargs = list(args), dict(kwargs)
        for where, values in columns:
            if isinstance(where, int):
                child_args[where] = values[i]
            else:
                child_kwargs[where] = values[i]
        out.append((child_args, child_kwargs))
    return out
