"""Prefect's run names: ``@flow(flow_run_name="etl-{day}")`` and
``@task(task_run_name="fetch-{url}")``.

A name is a template formatted with the run's arguments by parameter name (format specs
included: ``"{name}-on-{date:%A}"``), or a function of no arguments that returns it (it
may read ``balancer.runtime``: ``runtime.flow_run.parameters``, ``runtime.task_run.parameters``).

A flow run's name is made in the caller's process as the @flow function is called; a task
run's on the worker, with the arguments the task receives (upstream results in place), as
Prefect makes it where the run begins. The template is code of the task's module, which
the worker imports: nothing of it travels through Redis, so a client (or a Redis writer)
chooses only the values formatted into it, never what is read off them.

A template is checked at decoration: each field must name a parameter of the function,
so that a typo fails at import rather than at the first run.

A copy's template (``t.with_options(task_run_name="fetch-{url}")``, Prefect's way of
naming the calls in a loop) cannot be read from the module: it travels with the call,
signed with the arguments, under RUN_NAME_KEYWORD. Since whoever writes Redis could write
one too, a template that travels may only name parameters (with format specs), never
reach into them (``{user.name}``, ``{rows[0]}``: from a registered type's method a field
could read its module's globals), and a function cannot travel.
"""

from __future__ import annotations

import inspect
import string
from collections.abc import Callable, Mapping
from typing import Any

# Longer names are cut here (with "..."): a name is shown in listings and kept in records.
MAX_LENGTH = 200


class RunNameError(ValueError):
    """A run name could not be made from its template or function."""


def check(owner: str, option: str, name: Any, fn: Callable[..., Any] | None,
          travels: bool = False) -> None:
    """Refuse a ``name`` that is neither a template nor a function, and a template field
    that names no parameter of ``fn`` (None: a task class, whose fields are not known).
    ``travels``: a copy's, which must be a template naming parameters only."""
    if name is None or (callable(name) and not travels):
        return
    if not isinstance(name, str):
        raise TypeError(f"{owner}: {option} must be a string template or a function"
                        f" returning the name, got {type(name).__name__}"
                        + (" (a copy's cannot be a function: it travels to the worker"
                           " with the call; give the function to @task)" if travels else ""))
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(name) if f is not None]
    except ValueError as exc:
        raise ValueError(f"{owner}: {option} {name!r} is not a format string: {exc}") from None
    if travels:
        reaching = [f for f in fields if _root(f) != f]
        if reaching:
            raise ValueError(f"{owner}: {option} {name!r}: a copy's template may only name"
                             f" parameters, not reach into one ({reaching[0]!r}): it travels"
                             " with the call; give such a template to @task")
    if fn is None:
        return
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for f in fields:
        root = _root(f)
        if not root.isidentifier():
            raise ValueError(f"{owner}: {option} {name!r} has a field, {f!r}, that names"
                             " no parameter (name each field by a parameter)")
        if root not in params and not takes_any:
            raise ValueError(f"{owner}: {option} {name!r} has a field, {f!r}, that names"
                             f" no parameter of {getattr(fn, '__name__', 'the function')}"
                             f" (it takes {', '.join(params) or 'none'})")


def parameters(fn: Callable[..., Any], args: Any, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The call's arguments by parameter name, defaults filled in (``**kwargs`` spread),
    as Prefect's ``parameters``. Arguments that do not fit the signature give {}: the call
    itself then raises its TypeError."""
    try:
        signature = inspect.signature(fn)
        bound = signature.bind(*args, **kwargs)
    except (TypeError, ValueError):
        return {}
    bound.apply_defaults()
    out = dict(bound.arguments)
    for p in signature.parameters.values():
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            out.update(out.pop(p.name, {}))
    return out


def render(owner: str, option: str, name: Any, params: Mapping[str, Any]) -> str:
    """The run's name: ``name`` formatted with ``params``, or what the function returns.
    RunNameError says what went wrong (a field the call did not give, a function that
    raised or returned no string)."""
    try:
        made = name() if callable(name) else name.format_map(params)
    except Exception as exc:  # a user's function, or a format spec the value refuses
        raise RunNameError(f"{owner}: cannot make the run's name from {option}"
                           f" {_shown(name)}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(made, str):
        raise RunNameError(f"{owner}: {option} {_shown(name)} returned"
                           f" {type(made).__name__}, not a string")
    return made if len(made) <= MAX_LENGTH else made[:MAX_LENGTH - 3] + "..."


def _root(field: str) -> str:
    """The parameter a field names: ``user`` for ``user.name`` or ``user[0]``."""
    for i, c in enumerate(field):
        if c in ".[":
            return field[:i]
    return field


def _shown(name: Any) -> str:
    return repr(name) if isinstance(name, str) else f"function {getattr(name, '__name__', name)}"


def travelled(value: Any) -> str:
    """A template that came with a call (RUN_NAME_KEYWORD), as a copy sends it; anything
    else (a Redis writer's) is a RunNameError."""
    try:
        check("a task copy", "task_run_name", value, None, travels=True)
    except (TypeError, ValueError) as exc:
        raise RunNameError(str(exc)) from None
    if value is None:
        raise RunNameError("a task copy: task_run_name is missing")
    return str(value)
