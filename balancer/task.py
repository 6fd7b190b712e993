"""``@task``: a plain function plus the options a dispatcher needs to run it elsewhere."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, overload

from balancer import building, caching, runnames, taskclass, tasks
from balancer.common import statehandlers
from balancer.common.importpath import task_path
from balancer.options import check_task_options, plain
from balancer.queue import DEFAULT_QUEUE, check_queue_name
from balancer.targets import Target


@dataclass(eq=False)
class Task:
    """A task: ``@task`` on a function, or, as Prefect 1's task classes, a subclass with a
    ``run`` method (``class Load(Task): def run(self, rows): ...``), instantiated with
    the options below as keywords (``Load(name="load", max_retries=2)``)."""

    fn: Callable[..., Any] = None  # type: ignore[assignment]  # a subclass: its run
    name: str = ""
    queue_name: str = DEFAULT_QUEUE
    priority: int = 0
    retries: int = 0
    # Seconds before the first retry, each next one twice the last; or Prefect's list of
    # delays, one per retry (the last for any past them), which do not double.
    retry_delay: float | tuple[float, ...] = 0.0
    timeout: float | None = None
    # Dependencies declared with set_upstream outside any flow: (upstream, keyword or None).
    upstream: list[tuple[Task, str | None]] = field(default_factory=list)
    # When it runs, given how its upstream tasks ended (balancer.triggers), and whether a
    # skipped upstream skips it (Prefect 1's options). Either other than the default makes
    # the dispatcher decide, once every upstream settled (balancer.gates).
    trigger: Any = "all_successful"
    skip_on_upstream_skip: bool = True
    max_retries: int | None = None  # Prefect 1's name for retries
    # Prefect 1's output caching (balancer/caching.py, common/cache.py): reuse the result
    # of an earlier run, from any flow run, for cache_for (seconds or a timedelta).
    cache_for: Any = None
    cache_key: str | None = None
    cache_validator: Any = None
    # Prefect 2/3's cache policy (balancer/cache_policies.py), taken as the two above; kept
    # for the key functions it has, which the worker reads from the task as its module
    # defines it and calls before each run (worker/cachekeys.py).
    cache_policy: Any = None
    # Prefect's refresh_cache: each run runs, whatever the cache holds, and stores its result.
    refresh_cache: bool | None = None
    # Prefect 1's nout: how many values the returned tuple holds, so that a reference
    # unpacks (``a, b = t()``) in a flow.
    nout: int | None = None
    # Prefect 1's checkpoint and Prefect 2/3's persist_result: accepted, and change
    # nothing (every result is stored in its task's record, which dependents read).
    checkpoint: bool | None = None
    persist_result: bool | None = None
    # Prefect 2/3's description (the function's docstring by default) and version: kept.
    description: str | None = None
    version: str | None = None
    # Labels, stored on the task's record and shown by `balancer flow`.
    tags: Any = None
    # Prefect 1's log_stdout: what the task prints goes to its logger (balancer.context's),
    # a line at a time, with its ids (common/taskstdout.py). The worker reads it from the
    # task as its code defines it: a task class sets it in its body.
    log_stdout: bool = False
    # Prefect 1's state handlers, fn(task, old_state, new_state), and on_failure, fn(task,
    # state): called on the worker, around each run (common/statehandlers.py). Code, not
    # data: the worker takes them from the task as its module defines it (a task class
    # sets them in its body), and nothing about them travels.
    state_handlers: Any = None
    on_failure: Any = None
    # Prefect 2/3's hooks, fn(task, task_run, state) (on_failure as a list: these too):
    # called on the worker once the run ends so, with those handlers.
    on_completion: Any = None
    # Prefect 3's retry_condition_fn(task, task_run, state) -> bool: asked on the worker
    # when a run fails with retries left; False fails it for good (worker/statehooks.py).
    retry_condition_fn: Any = None
    # Prefect's retry_jitter_factor: each retry's delay is drawn within +-factor of it
    # (options.delay_field), so that many tasks failing together do not retry together.
    retry_jitter_factor: float | None = None
    # Prefect's task_run_name: a template of the function's parameters, or a function of
    # none, made into each run's name on the worker as it begins (balancer/runnames.py).
    # The worker reads it from the task as its module defines it; a copy's travels with
    # each call instead (RUN_NAME_TRAVELS), as a template naming parameters only.
    task_run_name: Any = None
    # importpath.TASK_MARKER: a worker runs only objects that carry it.
    __balancer_task__ = True

    def __new__(cls, *args: Any, **kwargs: Any) -> Task:
        self = super().__new__(cls)
        if cls is not Task:  # a task class: a worker builds it again with these arguments
            object.__setattr__(self, "_init_args", (args, kwargs))
        return self

    def __post_init__(self) -> None:
        from balancer import triggers

        fn: Any = self.fn
        if fn is None:
            taskclass.bind(self)
            self.log_stdout = taskclass.log_stdout(self)
            (self.state_handlers, self.on_failure, self.on_completion,
             self.retry_condition_fn) = taskclass.handlers(self)
        self.state_handlers = statehandlers.check(f"task {self.name!r}", self.state_handlers,
                                                  self.on_failure, self.on_completion)
        runnames.check(f"task {self.name!r}", "task_run_name", self.task_run_name, fn)
        if self.retry_condition_fn is not None and not callable(self.retry_condition_fn):
            raise TypeError(f"task {self.name!r}: retry_condition_fn must be a function"
                            " fn(task, task_run, state) -> bool, got"
                            f" {type(self.retry_condition_fn).__name__}")
        if self.max_retries is not None:
            if self.retries:
                raise ValueError(f"task {self.name!r}: give retries or max_retries, not both")
            self.retries = self.max_retries
        self.trigger = triggers.name_of(self.trigger)
        # Prefect writes durations as timedelta: take them as seconds.
        delay: Any = self.retry_delay
        timeout: Any = self.timeout
        if isinstance(delay, (list, tuple)):  # Prefect's retry_delay_seconds=[1, 10, 100]
            self.retry_delay = tuple(
                d.total_seconds() if isinstance(d, timedelta) else d for d in delay)
        elif isinstance(delay, timedelta):
            self.retry_delay = delay.total_seconds()
        if isinstance(timeout, timedelta):
            self.timeout = timeout.total_seconds()
        if isinstance(self.cache_for, timedelta):
            self.cache_for = self.cache_for.total_seconds()
        self.check()
        from balancer import caching

        caching.check(self)
        self.tags = caching.tag_list(self)
        self.priority, self.retries = plain(self.priority), plain(self.retries)
        self.retry_delay, self.timeout = plain(self.retry_delay), plain(self.timeout)
        if type(self) is Task:
            functools.update_wrapper(self, self.fn)

    def check(self) -> None:
        """Raise ValueError naming this task and the option Redis could not take. Run at
        decoration, and again at submit: the options are plain attributes, and one set
        after decoration must not reach Redis unchecked. The options last found good are
        kept: while each is still the very object checked (compared by identity, so that
        True never passes for a checked 1), checking again is skipped, which a
        one-task submit would otherwise pay every time."""
        given = (self.name, self.queue_name, self.priority, self.retries, self.retry_delay,
                 self.timeout, self.retry_jitter_factor)
        checked = self.__dict__.get("_checked")
        if checked is not None and all(map(operator.is_, given, checked)):
            return
        try:
            check_queue_name(self.queue_name)
        except ValueError as exc:
            raise ValueError(f"task {self.name!r}: queue_name: {exc}") from None
        check_task_options(f"task {self.name!r}", self.priority, self.retries,
                           self.retry_delay, self.timeout, self.retry_jitter_factor)
        self._checked = given

    @property
    def path(self) -> str:
        if type(self) is not Task:
            return taskclass.path(self)
        return task_path(self.fn)

    @property
    def gated(self) -> bool:
        """Whether the dispatcher decides when it runs (a trigger other than the default,
        or a skipped upstream that does not skip it)."""
        return self.trigger != "all_successful" or not self.skip_on_upstream_skip

    def __call__(self, *args: Any, upstream_tasks: Any = (), **kwargs: Any) -> Any:
        """Inside ``with Flow(...)``: add a call to the flow and return its reference;
        ``upstream_tasks`` (Prefect's keyword) run first, passing nothing. Inside a @flow
        function: run the task on the cluster and return its value (``wait_for=`` and
        ``return_state=`` as Prefect 2/3 take them). Elsewhere: just run the function,
        which keeps tasks easy to unit-test."""
        flow = building.current_flow()
        if flow is None:
            run = building.current_run()
            if run is not None:
                from balancer import flowfn

                return flowfn.call(run, self, args, kwargs)
            return self.fn(*args, **kwargs)
        return flow.call(self, args, kwargs, upstream_tasks or ())

    def submit(self, *args: Any, wait_for: Any = None, **kwargs: Any) -> Any:
        """Send the task to the cluster and return a future at once (``.result()``,
        ``.wait()``, ``.state``): inside a @flow function, in its run (futures among the
        arguments, and those in ``wait_for``, run first; a future's result becomes the
        argument); outside any flow, as a run of its own (balancer/background.py)."""
        from balancer import flowfn

        return flowfn.submit(self, args, kwargs, wait_for)

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        """Prefect 3's ``task.delay``: ``submit`` outside a flow, to the cluster's
        workers; the future at once."""
        return self.submit(*args, **kwargs)

    def map(self, *args: Any, upstream_tasks: Any = (), wait_for: Any = None,
            **kwargs: Any) -> Any:
        """One run of the task per item, ``unmapped(x)`` passing ``x`` whole to each.
        Inside ``with Flow(...)``, Prefect 1's map: the items may be an upstream's result,
        expanded by the dispatcher, and a dependent gets the results as a list
        (``balancer.mapping``). Inside a @flow function, Prefect 2/3's: returns the runs'
        futures."""
        if building.current_flow() is not None:
            from balancer.mapping import map_call

            if wait_for is not None:
                raise TypeError(f"task {self.name!r}: wait_for= is for @flow functions;"
                                " inside `with Flow(...)` give upstream_tasks=")
            return map_call(self, args, kwargs, upstream_tasks or ())
        from balancer import flowfn

        if upstream_tasks:
            raise TypeError(f"task {self.name!r}: upstream_tasks= is for `with Flow(...)`;"
                            " inside a @flow function give wait_for=")
        return flowfn.map_calls(self, args, kwargs, wait_for)

    def with_options(self, **changes: Any) -> Task:
        """A copy of this task with other options, as Prefect 2/3's ``task.with_options``:
        ``name``, ``queue_name``, ``priority``, ``retries`` (``max_retries``),
        ``retry_delay`` (``retry_delay_seconds``), ``timeout`` (``timeout_seconds``),
        ``tags``, ``trigger``, ``skip_on_upstream_skip``, ``cache_for``, ``cache_key``,
        ``cache_validator``, Prefect 2/3's ``cache_policy``, ``cache_key_fn`` (the task's
        own only: caching.copied), ``cache_expiration`` and ``refresh_cache``, ``nout``,
        ``retry_jitter_factor``, and ``description``,
        ``version``, ``persist_result`` (metadata, changing nothing on the worker). The
        others travel with each call; what the worker reads from the task as its module
        defines it (``log_stdout``/``log_prints``, state handlers and hooks) cannot
        differ in a copy, and is refused. A copy's ``task_run_name`` travels with its
        calls, so it is a template naming parameters only (balancer/runnames.py)."""
        renamed = {"retry_delay_seconds": "retry_delay", "timeout_seconds": "timeout",
                   "max_retries": "retries"}
        given = {renamed.get(k, k): v for k, v in changes.items()}
        read_by_worker = sorted(set(given) & {"log_stdout", "log_prints", *taskclass.HANDLERS})
        if read_by_worker:
            raise ValueError(f"task {self.name!r}: with_options cannot change"
                             f" {', '.join(read_by_worker)}: the worker reads it from the"
                             " task as its module defines it; define another @task")
        unknown = sorted(set(given) - _COPYABLE)
        if unknown:
            raise TypeError(f"task {self.name!r}: with_options got unknown option(s)"
                            f" {', '.join(unknown)} (it takes {', '.join(sorted(_COPYABLE))})")
        if type(self) is not Task:
            raise TypeError(f"task {self.name!r}: with_options copies a @task; a task class"
                            " takes its options as keywords: make another instance")
        given["max_retries"] = None  # the copy's retries hold it
        given.update(caching.copied(self, given))
        if "retry_delay" in given:
            try:
                given["retry_delay"] = _retry_delay(given["retry_delay"])
            except ValueError as exc:
                raise ValueError(f"task {self.name!r}: {exc}") from None
        if "task_run_name" in given:  # it travels with each call (balancer/runnames.py)
            runnames.check(f"task {self.name!r}", "task_run_name", given["task_run_name"],
                           self.fn, travels=True)
        copy = dataclasses.replace(self, upstream=list(self.upstream), **given)
        copy.__dict__.pop("_checked", None)
        if "task_run_name" in given or self.__dict__.get(RUN_NAME_TRAVELS):
            copy.__dict__[RUN_NAME_TRAVELS] = True
        return copy

    def copy(self, **task_args: Any) -> Task:
        """Prefect 1's ``task.copy(**task_args)``: ``with_options``, Prefect 1's names
        (``max_retries``, ``retry_delay`` and ``timeout`` as timedelta) included."""
        return self.with_options(**task_args)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """What a task class runs (override it in a subclass); a ``@task`` runs its
        function."""
        return self.fn(*args, **kwargs)

    def set_upstream(self, task: Any, key: str | None = None, flow: Any = None) -> None:
        """Run after ``task``; with ``key``, receive its result as that keyword argument."""
        flow = flow or building.current_flow()
        if flow is not None:
            flow.set_dependency(task, self, key)
        else:
            if not isinstance(task, Task):
                raise TypeError(f"set_upstream expects a task, got {type(task).__name__}")
            self.upstream.append((task, key))

    def set_downstream(self, task: Task, key: str | None = None, flow: Any = None) -> None:
        task.set_upstream(self, key=key, flow=flow)

    def signature(self) -> inspect.Signature | None:
        """The arguments its function takes (``call_signature``), read once per task;
        None for a callable whose signature Python cannot read."""
        if "_call_signature" not in self.__dict__:
            try:
                self.__dict__["_call_signature"] = call_signature(self)
            except (TypeError, ValueError):
                self.__dict__["_call_signature"] = None
        found: inspect.Signature | None = self.__dict__["_call_signature"]
        return found

    def check_call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Raise TypeError, naming the task, when its function cannot take these
        arguments (too many, one it has no parameter for, a required one missing), as
        Prefect does when the call is made: found there, not on a worker that would fail
        the run, and retry it, for a typo."""
        if not kwargs:
            # The usual call: its count alone decides (binding it cost a twentieth of a
            # one-task flow's submit).
            arity = self._arity()
            if arity is not None and arity[0] <= len(args) <= arity[1]:
                return
        signature = self.signature()
        if signature is None:  # no signature Python can read: not checked
            return
        try:
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"task {self.name!r}: {exc}") from None

    def _arity(self) -> tuple[int, float] | None:
        """(fewest, most) positional arguments a call without keywords may give, read once
        per task: ``Signature.bind`` takes such a call exactly when its count is in range.
        None when that does not decide (a keyword-only parameter without a default, which
        such a call lacks, or no signature): then it is bound."""
        if "_call_arity" not in self.__dict__:
            self.__dict__["_call_arity"] = positional_arity(self.signature())
        found: tuple[int, float] | None = self.__dict__["_call_arity"]
        return found

    def bind(self, *args: Any, mapped: bool = False, upstream_tasks: Any = None,
             flow: Any = None, **kwargs: Any) -> Task:
        """Prefect 1's ``t.bind(...)``: give this task's call in ``flow`` (by default the
        one being built) its arguments, without a copy: the task added once (by
        ``add_task``, or by this) takes them, each bound to its parameter by name, an
        upstream task's result passed as its argument (``mapped``: item by item). Returns
        the task, as Prefect 1's."""
        signature = self.signature() or call_signature(self)  # the latter raises, saying why
        try:
            bound = dict(signature.bind(*args, **kwargs).arguments)
        except TypeError as exc:
            raise TypeError(f"task {self.name!r}: bind: {exc}") from None
        for param in signature.parameters.values():  # **kwargs by name, as Prefect 1's
            if param.name in bound and param.kind is param.VAR_KEYWORD:
                bound.update(bound.pop(param.name))
            elif param.name in bound and param.kind is param.VAR_POSITIONAL:
                raise TypeError(f"task {self.name!r}: bind passes arguments by name, and"
                                f" *{param.name} has none: call the task instead")
        self.set_dependencies(flow, upstream_tasks=upstream_tasks, keyword_tasks=bound,
                              mapped=mapped)
        return self

    def set_dependencies(self, flow: Any = None, upstream_tasks: Any = None,
                         downstream_tasks: Any = None, keyword_tasks: Any = None,
                         mapped: bool = False) -> None:
        """Prefect 1's ``t.set_dependencies(flow, ...)``: ``flow.set_dependencies(t, ...)``
        on ``flow`` (by default the one being built)."""
        flow = flow or building.current_flow()
        if flow is None:
            raise ValueError(f"task {self.name!r}: set_dependencies and bind need a flow:"
                             " call them inside `with Flow(...)`, or give flow=")
        flow.set_dependencies(self, upstream_tasks=upstream_tasks,
                              downstream_tasks=downstream_tasks,
                              keyword_tasks=keyword_tasks, mapped=mapped)

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue_name}>"

    def __hash__(self) -> int:
        return id(self)


def positional_arity(signature: inspect.Signature | None) -> tuple[int, float] | None:
    """(fewest, most) positional arguments ``signature`` binds without keywords (most:
    infinite with ``*args``); None when no count does (a keyword-only parameter without a
    default) or there is no signature."""
    if signature is None:
        return None
    fewest, most = 0, 0.0
    for param in signature.parameters.values():
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            most += 1
            if param.default is param.empty:
                fewest = int(most)
        elif param.kind is param.VAR_POSITIONAL:
            most = math.inf
        elif param.kind is param.KEYWORD_ONLY and param.default is param.empty:
            return None
    return fewest, most


def call_signature(task: Task) -> inspect.Signature:
    """The arguments the task's function takes (a task class's ``run``, without
    ``self``)."""
    signature = inspect.signature(task.fn)
    params = list(signature.parameters.values())
    if params and params[0].name == "self":
        signature = signature.replace(parameters=params[1:])
    return signature


def _retry_delay(given: Any) -> Any:
    """A retry delay as Prefect 2/3 gives it (``retry_delay_seconds``): a number (or a
    timedelta, which the Task takes), a list of them (one per retry, the Task makes it a
    tuple), or ``exponential_backoff``, whose delays are ours (each twice the last)."""
    if isinstance(given, tasks.exponential_backoff):
        return given.backoff_factor
    if callable(given):
        raise ValueError("retry_delay_seconds: give a number of seconds, a list of them"
                         " (one per retry), or exponential_backoff(backoff_factor=...);"
                         " a function of your own would run unsigned on the worker")
    return given


# Set on a copy whose task_run_name travels with its calls (the module's is read there).
RUN_NAME_TRAVELS = "_run_name_travels"
# What with_options may change: what travels with each call, and the metadata kept on
# the task (description, version, persist_result) (Task.with_options).
_COPYABLE = frozenset({"name", "queue_name", "priority", "retries", "retry_delay",
                       "retry_jitter_factor", "timeout",
                       "tags", "trigger", "skip_on_upstream_skip", "cache_for", "cache_key",
                       "description", "version", "persist_result",
                       "cache_validator", "nout", "task_run_name", "cache_policy",
                       "cache_key_fn", "cache_expiration", "refresh_cache"})


@overload
def task(fn: Callable[..., Any], /) -> Task: ...


@overload
def task(
    *,
    name: str | None = None,
    queue_name: str = DEFAULT_QUEUE,
    priority: int = 0,
    retries: int = 0,
    retry_delay: float | timedelta = 0.0,
    timeout: float | timedelta | None = None,
    max_retries: int | None = None,
    retry_delay_seconds: float | None = None,
    timeout_seconds: float | None = None,
    trigger: Any = "all_successful",
    skip_on_upstream_skip: bool = True,
    cache_for: float | timedelta | None = None,
    cache_key: str | None = None,
    cache_validator: Any = None,
    nout: int | None = None,
    checkpoint: bool | None = None,
    persist_result: bool | None = None,
    description: str | None = None,
    version: str | None = None,
    tags: Any = None,
    log_stdout: bool = False,
    log_prints: bool | None = None,
    state_handlers: Any = None,
    on_failure: Any = None,
    on_completion: Any = None,
    cache_key_fn: Any = None,
    cache_policy: Any = None,
    cache_expiration: float | timedelta | None = None,
    refresh_cache: bool | None = None,
    retry_condition_fn: Any = None,
    retry_jitter_factor: float | None = None,
    task_run_name: Any = None,
) -> Callable[[Callable[..., Any]], Task]: ...


def task(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    queue_name: str = DEFAULT_QUEUE,
    priority: int = 0,
    retries: int = 0,
    retry_delay: float | timedelta = 0.0,
    timeout: float | timedelta | None = None,
    max_retries: int | None = None,
    retry_delay_seconds: float | None = None,
    timeout_seconds: float | None = None,
    trigger: Any = "all_successful",
    skip_on_upstream_skip: bool = True,
    cache_for: float | timedelta | None = None,
    cache_key: str | None = None,
    cache_validator: Any = None,
    nout: int | None = None,
    checkpoint: bool | None = None,
    persist_result: bool | None = None,
    description: str | None = None,
    version: str | None = None,
    tags: Any = None,
    log_stdout: bool = False,
    log_prints: bool | None = None,
    state_handlers: Any = None,
    on_failure: Any = None,
    on_completion: Any = None,
    cache_key_fn: Any = None,
    cache_policy: Any = None,
    cache_expiration: float | timedelta | None = None,
    refresh_cache: bool | None = None,
    retry_condition_fn: Any = None,
    retry_jitter_factor: float | None = None,
    task_run_name: Any = None,
    target: Any = None,
    result: Any = None,
) -> Task | Callable[[Callable[..., Any]], Task]:
    """Make a function a task: ``@task`` or ``@task(queue_name="high-priority", retries=3)``.

    Prefect 1's spellings work too: ``max_retries`` for ``retries``, and ``retry_delay``
    and ``timeout`` as ``timedelta``; and Prefect 2/3's ``retry_delay_seconds`` and
    ``timeout_seconds`` (numbers); ``trigger`` (balancer.triggers) and
    ``skip_on_upstream_skip`` as Prefect 1's; ``cache_for``/``cache_key``/
    ``cache_validator``, ``nout``, ``checkpoint``, ``tags`` and ``log_stdout`` as Prefect 1's
    too (balancer/caching.py says what the cache options do here), and Prefect 2/3's
    ``log_prints`` for ``log_stdout``; Prefect 1's ``state_handlers`` and ``on_failure``,
    and Prefect 2/3's hooks (``on_completion=[...]``, ``on_failure=[...]``) and
    ``retry_condition_fn``, called on the worker (common/statehandlers.py); Prefect
    2/3's ``cache_key_fn``, ``cache_policy``, ``cache_expiration`` and ``refresh_cache``
    (balancer/caching.py, balancer/cache_policies.py), ``retry_jitter_factor``, and
    ``task_run_name`` (balancer/runnames.py); Prefect 1's ``target`` (balancer/targets.py),
    and its ``result`` (taken, changing nothing: results live in Redis)."""
    log_stdout = log_stdout or bool(log_prints)
    if retry_delay_seconds is not None:
        if retry_delay:
            raise ValueError("give retry_delay or retry_delay_seconds, not both")
        retry_delay = _retry_delay(retry_delay_seconds)
    if timeout_seconds is not None:
        if timeout is not None:
            raise ValueError("give timeout or timeout_seconds, not both")
        timeout = timeout_seconds
    if max_retries is not None:
        if retries:
            raise ValueError("give retries or max_retries, not both")
        retries = max_retries

    def wrap(f: Callable[..., Any]) -> Task:
        owner = f"task {name or f.__name__!r}"
        key_fn = cache_key_fn
        if target is not None:
            if any(o is not None for o in (cache_key_fn, cache_policy, cache_for,
                                           cache_validator, cache_key)):
                raise ValueError(f"{owner}: a target is its own cache: give target or the"
                                 " cache options, not both")
            key_fn = Target(target, owner)
        cached_for, validator, policy = caching.from_prefect_2(
            owner, key_fn, cache_policy, cache_expiration, cache_for, cache_validator)
        return Task(f, name or f.__name__, queue_name, priority, retries,
                    retry_delay,  # type: ignore[arg-type]  # timedelta: __post_init__
                    timeout,  # type: ignore[arg-type]
                    trigger=trigger, skip_on_upstream_skip=skip_on_upstream_skip,
                    cache_for=cached_for, cache_key=cache_key, cache_validator=validator,
                    cache_policy=policy, refresh_cache=refresh_cache,
                    nout=nout, checkpoint=checkpoint, persist_result=persist_result,
                    description=description if description is not None else f.__doc__,
                    version=version, tags=tags, log_stdout=log_stdout,
                    state_handlers=state_handlers, on_failure=on_failure,
                    on_completion=on_completion, retry_condition_fn=retry_condition_fn,
                    retry_jitter_factor=retry_jitter_factor, task_run_name=task_run_name)

    return wrap(fn) if fn is not None else wrap
