"""Prefect 1's cache validators, where Prefect 1 code finds them
(``from balancer.engine import cache_validators``): each decides which cached result may
stand in for a run of a task with ``cache_for``. Here the worker decides, from the inputs'
digest (common/cache.py), so a validator is a name, not code run on the worker:

- ``duration_only`` (the default): any cached result not yet expired;
- ``all_inputs``: one from a run with the same inputs (by name: ``f(1, b=2)`` is
  ``f(1, 2)``), upstream results included;
- ``partial_inputs_only(validate_on=["x"])``: one from a run with the same ``x``;
- ``never_use``: none (and none is stored).

Every one of them honours ``cache_for``. Prefect 1's ``all_parameters`` and
``partial_parameters_only`` compare the flow's parameters, which a worker does not see:
they are refused at decoration (pass the parameters to the task, and use ``all_inputs``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class Validator:
    """A validator as a task carries it: its name, and the inputs it compares."""

    def __init__(self, name: str, validate_on: Iterable[str] = ()) -> None:
        self.name = name
        self.validate_on = tuple(validate_on)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"cache validator {self.name} is decided by the worker from the"
                        " inputs' digest; it is not called")

    def __repr__(self) -> str:
        on = f"(validate_on={list(self.validate_on)})" if self.validate_on else ""
        return f"<cache_validator {self.name}{on}>"


duration_only = Validator("duration_only")
all_inputs = Validator("all_inputs")
never_use = Validator("never_use")


def partial_inputs_only(validate_on: Iterable[str] | None = None) -> Validator:
    """The cached result of a run whose inputs named in ``validate_on`` were the same."""
    if validate_on is None or isinstance(validate_on, str):
        raise ValueError("partial_inputs_only: give validate_on, a list of argument names")
    names = list(validate_on)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"partial_inputs_only: validate_on must name arguments, got {names!r}")
    return Validator("partial_inputs_only", names)


def _parameters_only(*args: Any, **kwargs: Any) -> Any:
    raise ValueError("cache validators on flow parameters (all_parameters,"
                     " partial_parameters_only) are not supported: workers do not see the"
                     " flow's parameters; pass them to the task and use all_inputs")


all_parameters = _parameters_only
partial_parameters_only = _parameters_only

__all__ = ["Validator", "all_inputs", "all_parameters", "duration_only", "never_use",
           "partial_inputs_only", "partial_parameters_only"]
