"""``Parameter``: a value a flow takes when it is run, as Prefect 1's flows do.

    with Flow("etl") as flow:
        n = Parameter("n", default=10)
        load(extract(n))
    flow.run(parameters={"n": 20})

A parameter is no task: nothing runs for it. Its value is put in the place of the
parameter in every argument that holds it when the flow is submitted, so it travels in
the task's arguments like any other value (and is signed with them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from balancer import building
from balancer.common import codec
from balancer.common.codec import CodecError

_MISSING: Any = object()

# A flow run's record keeps its parameters, for its tasks to read (balancer.context's
# ``parameters``, runtime.flow_run.parameters), up to this size packed: a run given big
# data does not copy it into its record too.
RECORDED_LIMIT = 64 * 1024


@dataclass(eq=False)
class Parameter:
    name: str
    default: Any = None
    # None: required when there is no default (Prefect's rule).
    required: bool | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError("a parameter needs a non-empty name")
        if self.required is None:
            self.required = self.default is None
        flow = building.current_flow()
        if flow is not None:
            flow.add_parameter(self)

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"<Parameter {self.name}>"


class Parameters(dict[str, Parameter]):
    """A flow's parameters by name (``flow.parameters["day"]``); called, the set of them,
    as Prefect 1's ``flow.parameters()``."""

    def __call__(self) -> set[Parameter]:
        return set(self.values())


def bind(flow_name: str, declared: Mapping[str, Parameter],
         given: Mapping[str, Any] | None) -> dict[Parameter, Any]:
    """Each parameter's value for one run: given, else its default. Raises ValueError for a
    name the flow does not declare and for a required parameter not given."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ValueError(f"flow {flow_name!r} has no parameter {', '.join(unknown)}"
                         f" (it declares: {', '.join(sorted(declared)) or 'none'})")
    values: dict[Parameter, Any] = {}
    for name, param in declared.items():
        if name in given:
            values[param] = given[name]
        elif param.required:
            raise ValueError(f"flow {flow_name!r}: parameter {name!r} is required;"
                             f" give it with flow.run(parameters=...)")
        else:
            values[param] = param.default
    return values


def record_fields(values: Mapping[str, Any]) -> dict[str, bytes | int]:
    """A run's parameters as its record keeps them: ``params``, msgpack of those that
    pack (a @flow function may take objects that do not), unless they pack to more than
    RECORDED_LIMIT bytes; and ``params_cut`` when some or all are not kept, so that a
    cache keyed on them (worker/cachekeys.py) does not take what is kept for all."""
    if not values:
        return {}
    kept = dict(values)
    try:
        blob = codec.pack(kept)
    except CodecError:
        kept = {}
        for name, value in values.items():
            try:
                codec.pack(value)
            except CodecError:
                continue
            kept[name] = value
        blob = codec.pack(kept)
    fields: dict[str, bytes | int] = {}
    if kept and len(blob) <= RECORDED_LIMIT:
        fields["params"] = blob
    if len(kept) < len(values) or "params" not in fields:
        fields["params_cut"] = 1
    return fields
