"""The digest of a run under a Prefect 3 cache policy (balancer/cache_policies.py), worked
out on the worker before the run: a later run reuses the result only when every part of
its policy gives what it gave.

- ``inputs``: the task's arguments (upstream results included), but those left out;
- ``task_source``: the task's source code as this worker has it (its compiled code when
  the file cannot be read);
- ``run_id``: the flow run's id;
- ``flow_parameters`` (or some of them): the flow run's parameters as its record keeps
  them; a run whose record could not keep them all (too big, or not msgpack:
  balancer/parameter.py) is not cached, since what is kept could be the same for runs
  whose parameters differ;
- ``key_fn``: what the key functions of the task's policy, as its module defines it,
  return: ``fn(context, parameters)``. None from one leaves it out (Prefect's compound
  policies do so), and from all of them, with no other part, caches nothing.

A key function is the task's own code, run in the slot that runs the task: what it raises
(even ``sys.exit()``) or a key that is not a string leaves the run uncached
(``KeyUnmade``, logged), as Prefect 3 does, and the task runs.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from typing import Any

from balancer.common import cache, codec, importpath
from balancer.common.cache import (
    EXCLUDED_INPUT,
    INPUTS_PART,
    KEY_FN_PART,
    ONE_PARAMETER,
    PARAMETERS_PART,
    RUN_ID_PART,
    SOURCE_PART,
    CacheSpec,
)

from balancer import runnames
from balancer.runcontext import RunFacts


class KeyUnmade(Exception):
    """A part of the run's cache key could not be made: the run goes on uncached."""


class TaskRun:
    """Prefect's ``context.task_run`` for a key function: the run's ids, name, count and
    tags (the last two read from Redis when first asked for)."""

    def __init__(self, facts: RunFacts) -> None:
        self._facts = facts

    @property
    def id(self) -> str:
        return self._facts.task_run_id

    @property
    def flow_run_id(self) -> str:
        return self._facts.flow_run_id

    @property
    def name(self) -> str:
        return self._facts.task_run_name

    @property
    def run_count(self) -> int:
        return int(self._facts.more().get("task_run_count", 1))

    @property
    def tags(self) -> list[str]:
        return list(self._facts.more().get("task_tags", []))


class KeyContext:
    """Prefect's ``TaskRunContext`` as a key function reads it: ``task`` (as its module
    defines it), ``task_run``, and ``parameters`` (the task's arguments by name)."""

    def __init__(self, task: Any, facts: RunFacts, parameters: dict[str, Any]) -> None:
        self.task = task
        self.task_run = TaskRun(facts)
        self.parameters = parameters


def digest(spec: CacheSpec, fn_path: str, args: list[Any], kwargs: dict[str, Any],
           facts: RunFacts) -> tuple[str, str] | None:
    """The digest of the run's parts and its label (what its key functions returned,
    " "-joined: a Prefect 1 target as rendered, which `balancer cache ls` shows), or None
    when no part gives a key (key functions that all returned None). KeyUnmade when a part
    cannot be made."""
    pieces: list[Any] = []
    label: list[str] = []
    excluded = {p[len(EXCLUDED_INPUT):] for p in spec.parts if p.startswith(EXCLUDED_INPUT)}
    some = sorted(p[len(ONE_PARAMETER):] for p in spec.parts if p.startswith(ONE_PARAMETER))
    parts = set(spec.parts)
    if INPUTS_PART in parts:
        given = {k: v for k, v in cache.inputs(spec, args, kwargs).items() if k not in excluded}
        pieces.append([INPUTS_PART, sorted(given.items())])
    if SOURCE_PART in parts:
        pieces.append([SOURCE_PART, source_digest(fn_path)])
    if RUN_ID_PART in parts:
        pieces.append([RUN_ID_PART, facts.flow_run_id])
    if PARAMETERS_PART in parts or some:
        values = _parameters(facts)
        if PARAMETERS_PART in parts:
            pieces.append([PARAMETERS_PART, sorted(values.items())])
        if some:
            pieces.append([ONE_PARAMETER, [[n, values.get(n)] for n in some]])
    if KEY_FN_PART in parts:
        label = _keys(fn_path, args, kwargs, facts)
        pieces.extend([KEY_FN_PART, key] for key in label)
    if not pieces:
        return None
    try:
        return hashlib.sha256(codec.pack(pieces)).hexdigest(), " ".join(label)
    except codec.CodecError as exc:  # the parts came packed, so they pack
        raise KeyUnmade(f"its cache key's parts cannot be packed: {exc}") from None


def _parameters(facts: RunFacts) -> dict[str, Any]:
    values, whole = facts.recorded_parameters()
    if not whole:
        raise KeyUnmade("its cache policy compares the flow run's parameters, and the run's"
                        " record could not keep them all (over 64 KiB packed, or not"
                        " msgpack)")
    return values


def _keys(fn_path: str, args: list[Any], kwargs: dict[str, Any],
          facts: RunFacts) -> list[str]:
    """What the task's key functions return, but None."""
    fn = importpath.load(fn_path)
    task = importpath.keyed_task(fn_path)
    if task is None:
        raise KeyUnmade("its call names a cache key function, and its task, as this"
                        " worker's module defines it, has none")
    key_fns = task.cache_policy.key_fns
    parameters = runnames.parameters(fn, args, kwargs)
    context = KeyContext(task, facts, parameters)
    keys = []
    for key_fn in key_fns:
        name = getattr(key_fn, "__qualname__", repr(key_fn))
        try:
            key = key_fn(context, parameters)
        except BaseException as exc:  # its code: sys.exit() in it stops nothing
            raise KeyUnmade(f"its cache key function {name} raised {type(exc).__name__}:"
                            f" {exc}") from None
        if key is None:
            continue
        if not isinstance(key, str):
            raise KeyUnmade(f"its cache key function {name} returned a"
                            f" {type(key).__name__}, not a string")
        keys.append(key)
    return keys


@functools.lru_cache(maxsize=1024)
def source_digest(fn_path: str) -> str:
    """A digest of the task's source as this worker loaded it (kept: a worker runs the
    code it imported until it restarts, whatever the file says since)."""
    fn = importpath.load(fn_path)
    target = fn.args[0] if isinstance(fn, functools.partial) else fn  # a task class
    try:
        text = inspect.getsource(target)
    except (OSError, TypeError):
        code = getattr(target, "__code__", None)
        text = code.co_code.hex() if code is not None else fn_path
    return hashlib.sha256(text.encode()).hexdigest()
