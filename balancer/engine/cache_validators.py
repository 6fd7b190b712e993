"""Prefect 1's cache validators, where Prefect 1 code finds them
(``from balancer.engine import cache_validators``): each decides which cached result may
stand in for a run of a task with ``cache_for``. Here the worker decides, from the inputs'
digest (common/cache.py), so a validator is a name, not code run on the worker:

- ``duration_only`` (the default): any cached result not yet expired;
- ``all_inputs``: one from a run with the same inputs (by name: ``f(1, b=2)`` is
  ``f(1, 2)``), upstream results included;
- ``partial_inputs_only(validate_on=["x"])``: one from a run with the same ``x``;
- ``never_use``: none (and none is stored);
- ``all_parameters``: one from a run of a flow run with the same parameters (as the flow
  run's record keeps them: balancer/parameter.py), ``partial_parameters_only(validate_on=
  ["x"])`` with the same ``x``.

Every one of them honours ``cache_for``. The flow-parameter validators are policies
(balancer/cache_policies.py) that the worker works out from the flow run's record.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from balancer.common.cache import ONE_PARAMETER, PARAMETERS_PART


class Validator:
    """A validator as a task carries it: its name, and the inputs it compares."""

    def __init__(self, name: str, validate_on: Iterable[str] = (),
                 parts: Iterable[str] = ()) -> None:
        self.name = name
        self.validate_on = tuple(validate_on)
        # A policy's parts, as common/cache.py's CacheSpec carries them ("policy" only).
        self.parts = tuple(parts)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"cache validator {self.name} is decided by the worker from the"
                        " inputs' digest; it is not called")

    def __repr__(self) -> str:
        on = f"(validate_on={list(self.validate_on)})" if self.validate_on else ""
        parts = f" {list(self.parts)}" if self.parts else ""
        return f"<cache_validator {self.name}{on}{parts}>"


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


def policy(parts: Iterable[str]) -> Validator:
    """A validator comparing the parts of a cache policy (balancer/cache_policies.py)."""
    return Validator("policy", parts=parts)


all_parameters = policy([PARAMETERS_PART])


def partial_parameters_only(validate_on: Iterable[str] | None = None) -> Validator:
    """The cached result of a run whose flow run's parameters named in ``validate_on``
    were the same."""
    if validate_on is None or isinstance(validate_on, str):
        raise ValueError("partial_parameters_only: give validate_on, a list of parameter"
                         " names")
    names = list(validate_on)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError("partial_parameters_only: validate_on must name parameters, got"
                         f" {names!r}")
    return policy(sorted({ONE_PARAMETER + n for n in names}))


__all__ = ["Validator", "all_inputs", "all_parameters", "duration_only", "never_use",
           "partial_inputs_only", "partial_parameters_only"]
