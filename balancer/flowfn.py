"""``@flow`` on a function, as Prefect 2/3 write it: calling the function runs it here, in
the client, as one flow run on the cluster (``balancer/dynamic.py``). Inside it,
``t.submit(...)`` returns a future, ``t.map(...)`` a list of futures, and ``t(...)`` runs
the task on the cluster and returns its value; the function may branch and loop on
results. A @flow called inside another is a sub-run: a run of its own, listed in its
parent's run.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, overload

import redis

from balancer import building, flowtimeout, runcontext, runnames
from balancer.annotations import allow_failure
from balancer.common import runsignals, statehandlers
from balancer.common.codec import ErrorInfo
from balancer.common.models import FlowState
from balancer.common.settings import Settings
from balancer.dynamic import DynamicRun, current_run
from balancer.flow import FlowCancelled
from balancer.futures import FutureList, State, TaskFuture
from balancer.mapping import unmapped
from balancer.options import check_task_options
from balancer.run import TaskFailed
from balancer.states import FailedRun
from balancer.task_runners import SequentialTaskRunner

if TYPE_CHECKING:
    from balancer.deployments import Deployment
    from balancer.task import Task

log = logging.getLogger("balancer.client")

_clients_lock = threading.Lock()
_clients: dict[str, redis.Redis] = {}


@dataclass(frozen=True)
class FlowOptions:
    name: str
    retries: int = 0
    retry_delay_seconds: float = 0.0
    redis_url: str | None = None
    namespace: str | None = None
    description: str | None = None
    version: str | None = None
    # Longest the function may run, retries included (balancer/flowtimeout.py).
    timeout_seconds: float | None = None
    # Prefect's task runner (balancer/task_runners.py): kept, the workers run the tasks.
    task_runner: Any = None
    # Prefect 2/3's hooks, fn(flow, flow_run, state), called in this process as the run
    # starts, and as it ends (common/statehandlers.py: hooks).
    on_running: tuple[Any, ...] = ()
    on_completion: tuple[Any, ...] = ()
    on_failure: tuple[Any, ...] = ()
    on_cancellation: tuple[Any, ...] = ()
    on_crashed: tuple[Any, ...] = ()
    # Prefect's flow_run_name: a template of the function's parameters, or a function of
    # none, made into the run's name as it is called (balancer/runnames.py).
    flow_run_name: Any = None


@dataclass
class _Outcome:
    """What a flow function's run gave: its value, or the error it ends with."""

    value: Any = None
    error: BaseException | None = None


# The id the next top-level run opened in this context takes, and the deployment it runs
# for: a deployment's run (balancer/serving.py: ``assigned_id``).
_assigned: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "balancer_assigned_run_id", default=None)


@contextlib.contextmanager
def assigned_id(run_id: str, deployment: str) -> Iterator[None]:
    """Calls of a flow function in the body open their run with ``run_id``, recorded as a
    run of ``deployment``."""
    token = _assigned.set((run_id, deployment))
    try:
        yield
    finally:
        _assigned.reset(token)


HOOKS = ("on_running", "on_completion", "on_failure", "on_cancellation", "on_crashed")
# Which hooks a run's end calls, by its state.
_ENDED = {FlowState.COMPLETED: "on_completion", FlowState.FAILED: "on_failure",
          FlowState.CANCELLED: "on_cancellation"}


class FlowFunction:
    """A function decorated with ``@flow``. Call it to run it as a flow run."""

    def __init__(self, fn: Callable[..., Any], options: FlowOptions) -> None:
        if not callable(fn):
            raise TypeError(f"@flow decorates a function, got {type(fn).__name__}")
        check_task_options(f"flow {options.name!r}", 0, options.retries,
                           options.retry_delay_seconds, options.timeout_seconds)
        if isinstance(options.task_runner, SequentialTaskRunner):
            raise ValueError(f"flow {options.name!r}: a SequentialTaskRunner runs submitted"
                             " tasks one at a time, and here the workers run them at once:"
                             " call the tasks (a plain call waits for its result) or chain"
                             " them with wait_for=[previous]")
        hooks: dict[str, Any] = {h: tuple(statehandlers.functions(
            f"flow {options.name!r}", h, getattr(options, h) or None,
            "fn(flow, flow_run, state)")) for h in HOOKS}
        options = replace(options, **hooks)
        runnames.check(f"flow {options.name!r}", "flow_run_name", options.flow_run_name, fn)
        self.fn = fn
        self.options = options
        self.name = options.name
        functools.update_wrapper(self, fn)

    def with_options(self, **changes: Any) -> FlowFunction:
        """A copy with other options (name, retries, retry_delay_seconds, timeout_seconds,
        task_runner, redis_url, namespace, description, version, flow_run_name, the
        hooks), as Prefect's
        ``flow.with_options``."""
        return FlowFunction(self.fn, replace(self.options, **changes))

    def to_deployment(self, name: str | None = None, **options: Any) -> Deployment:
        """Prefect's ``flow.to_deployment``: this flow served under ``name`` (default: the
        flow's), for ``serve(*deployments)``. Options: ``cron`` or ``interval`` (one, or a
        list of them), ``schedule``/``schedules`` (balancer.schedules'), ``parameters``,
        ``paused``, ``description``, ``tags``, ``version`` (balancer/deployments.py)."""
        from balancer import deployments

        return deployments.make(self, name, **options)

    def serve(self, name: str | None = None, *, limit: int | None = None,
              print_starting_message: bool = True, pause_on_shutdown: bool = True,
              **options: Any) -> None:
        """Prefect's ``flow.serve``: serve this flow as the deployment ``name`` until the
        process is stopped: fire its schedule, run what is asked of it
        (balancer/serving.py). Ignored while a worker imports the module."""
        from balancer.common.importpath import is_importing_tasks
        from balancer.serving import serve

        if is_importing_tasks():
            log.warning("flow %r: serve ignored while a worker imports its module; guard it"
                        " with `if __name__ == '__main__':`", self.name)
            return
        serve(self.to_deployment(name, **options), limit=limit,
              print_starting_message=print_starting_message,
              pause_on_shutdown=pause_on_shutdown)

    def deploy(self, *args: Any, **kwargs: Any) -> None:
        """Prefect's ``flow.deploy`` builds an image for a work pool of Prefect's server:
        refused, naming what to do here."""
        raise NotImplementedError(
            f"flow {self.name!r}: deploy (work pools, images) is Prefect server's; here run"
            f" {self.name}.serve(name=..., cron=...) in a process that stays up (a"
            " docker-compose service, a systemd unit) where the flow's code is")

    def __call__(self, *args: Any, return_state: bool = False, **kwargs: Any) -> Any:
        """Run the function as a flow run and return what it returns (or raise what it
        raised, once its retries are spent). ``return_state=True``: return the run's
        final State instead (``.result()``, ``.is_completed()``, ``.flow_run_id``). An
        ``async def`` function's call returns a coroutine that does this when awaited."""
        from balancer.common.importpath import is_importing_tasks

        asynchronous = inspect.iscoroutinefunction(self.fn)
        if is_importing_tasks():
            log.warning("flow %r: call ignored while a worker imports its module; guard it"
                        " with `if __name__ == '__main__':`", self.name)
            # An async flow's caller awaits what it gets (`asyncio.run(main())`).
            return asyncio.sleep(0) if asynchronous else None
        if asynchronous:
            return self._call_async(args, kwargs, return_state)
        run = self._open(args, kwargs, asynchronous=False)
        limit = flowtimeout.limit(self.options.timeout_seconds, f"flow {self.name!r} ({run.id})")
        with self._running(run) as out, limit:
            out.value, out.error = self._attempts(run, args, kwargs)
            run.wait_for_tasks()
            if out.error is None:
                out.value, out.error = _resolved(out.value)
        return self._settle(run, out.value, out.error, return_state)

    async def _call_async(self, args: tuple[Any, ...], kwargs: dict[str, Any],
                          return_state: bool) -> Any:
        """``__call__`` of an ``async def`` function. The client's Redis calls are short
        and made on the loop; waiting for the run's tasks takes a thread, so that the
        loop goes on. A timeout cancels the function at its next ``await``."""
        run = self._open(args, kwargs, asynchronous=True)
        with self._running(run) as out:
            out.value, out.error = await flowtimeout.within(
                self._body_async(run, args, kwargs), self.options.timeout_seconds,
                f"flow {self.name!r} ({run.id})")
        return self._settle(run, out.value, out.error, return_state)

    @contextlib.contextmanager
    def _running(self, run: DynamicRun) -> Iterator[_Outcome]:
        """Around the function's run: inside, ``run`` is the current run (what its tasks
        are added to); past its timeout, the timeout is its outcome; anything else raised
        (ctrl-C, a cancelled coroutine, Redis gone) crashes the run and goes on up."""
        out = _Outcome()
        token = building.enter_run(run)
        try:
            try:
                yield out
            except flowtimeout.FlowRunTimeoutError as exc:
                out.value, out.error = self._timed_out(run, exc)
            finally:
                building.leave_run(token)
        except BaseException as exc:
            self._crashed(run, exc)
            raise

    async def _body_async(self, run: DynamicRun, args: tuple[Any, ...],
                          kwargs: dict[str, Any]) -> tuple[Any, Exception | None]:
        value, error = await self._attempts_async(run, args, kwargs)
        await asyncio.to_thread(run.wait_for_tasks)
        if error is None:
            value, error = await asyncio.to_thread(_resolved, value)
        return value, error

    async def _attempts_async(self, run: DynamicRun, args: tuple[Any, ...],
                              kwargs: dict[str, Any]) -> tuple[Any, Exception | None]:
        """``_attempts`` of an ``async def`` function: the same rules, awaited."""
        retries = self.options.retries
        for attempt in range(retries + 1):
            try:
                return await self.fn(*args, **kwargs), None
            except FlowCancelled as exc:
                return None, exc
            except Exception as exc:
                if attempt == retries:
                    return None, exc
                self._again(run, attempt, exc)
                await asyncio.sleep(self.options.retry_delay_seconds)
        raise AssertionError("unreachable")

    def _open(self, args: tuple[Any, ...], kwargs: dict[str, Any], *, asynchronous: bool
              ) -> DynamicRun:
        """Open the run (a sub-run inside another @flow's), named as ``flow_run_name``
        makes it of these arguments, and call the on_running hooks. A name that cannot be
        made raises RunNameError before anything is written."""
        parent = current_run()
        client, settings = self._cluster(parent)
        assigned = _assigned.get() if parent is None else None
        run = DynamicRun(client, settings, self.name, parent, asynchronous=asynchronous,
                         run_id=assigned[0] if assigned else None)
        run.deployment = assigned[1] if assigned else None
        run.parameters = runnames.parameters(self.fn, args, kwargs)
        if self.options.flow_run_name is not None:
            token = building.enter_run(run)  # a name function reads runtime.flow_run
            try:
                run.run_name = runnames.render(f"flow {self.name!r}", "flow_run_name",
                                               self.options.flow_run_name, run.parameters)
            finally:
                building.leave_run(token)
        run.open()
        self._hooks("on_running", run, FlowRunState.of(FlowState.RUNNING, self.name,
                                                       flow_run_id=run.id))
        return run

    def _timed_out(self, run: DynamicRun, exc: BaseException) -> tuple[Any, BaseException]:
        """Past timeout_seconds: its tasks not queued yet fail as the run closes; those
        queued or running end as they do (each bounded by its own timeout)."""
        log.error("flow=%s name=%s: %s", run.id, self.name, exc)
        return None, exc

    def _crashed(self, run: DynamicRun, exc: BaseException) -> None:
        """Ctrl-C, a cancelled coroutine, or Redis gone: close what can be closed."""
        try:
            run.close(True, ErrorInfo.from_exception(exc))
        except redis.RedisError:
            log.error("flow=%s: could not close the run after %r", run.id, exc)
        self._hooks("on_crashed", run, FlowRunState.of(
            "crashed", self.name, None, ErrorInfo.from_exception(exc), run.id, exc))

    def _settle(self, run: DynamicRun, value: Any, error: BaseException | None,
                return_state: bool) -> Any:
        """Close the run in the function's outcome, call the hooks of how it ended, and
        return what the call gives."""
        message = ""
        if error is None:
            value, error, message = _ended_in(value)
        info = ErrorInfo.from_exception(error) if error is not None else None
        state = run.close(error is not None, info)
        if state == FlowState.CANCELLED and error is None:
            # The function went on (it caught the refusal, or added nothing after the
            # cancel): its run is cancelled all the same, and says so.
            error = FlowCancelled(f"flow {self.name!r} ({run.id}) was cancelled")
            info = ErrorInfo.from_exception(error)
            value = None
        final = FlowRunState.of(state, self.name, value, info, run.id, error)
        if isinstance(error, flowtimeout.FlowRunTimeoutError):
            final = replace(final, name="TimedOut")  # a Failed state, as Prefect names it
        elif message:  # a state the function returned: its own message
            final = replace(final, message=message)
        if state in _ENDED:
            self._hooks(_ENDED[state], run, final)
        if return_state:
            return final
        if error is not None:
            raise error
        return value

    def _hooks(self, kind: str, run: DynamicRun, state: State) -> None:
        """Call the hooks of ``kind`` (HOOKS) with the run and its state."""
        hooks = getattr(self.options, kind)
        if hooks:
            statehandlers.hooks(self, hooks, statehandlers.RunInfo(
                run.id, self.name, flow_run_id=run.id), state)

    def _attempts(self, run: DynamicRun, args: tuple[Any, ...], kwargs: dict[str, Any]
                  ) -> tuple[Any, Exception | None]:
        """Run the function, again on an exception while retries are left (the tasks of
        every attempt stay in the run, as Prefect's flow retries keep them)."""
        retries = self.options.retries
        for attempt in range(retries + 1):
            try:
                return self.fn(*args, **kwargs), None
            except FlowCancelled as exc:
                return None, exc  # not run again: its run takes no more tasks
            except Exception as exc:
                if attempt == retries:
                    return None, exc
                self._again(run, attempt, exc)
                time.sleep(self.options.retry_delay_seconds)
        raise AssertionError("unreachable")

    def _again(self, run: DynamicRun, attempt: int, exc: Exception) -> None:
        log.warning("flow=%s name=%s: attempt %d of %d raised %s: %s; running it again",
                    run.id, self.name, attempt + 1, self.options.retries + 1,
                    type(exc).__name__, exc)

    def _cluster(self, parent: DynamicRun | None) -> tuple[redis.Redis, Settings]:
        """The parent's cluster for a sub-run; else ``redis_url`` if given, else as
        ``flow.run()`` finds it: ``BALANCER_REDIS_URL``, or the embedded cluster."""
        from balancer.client import resolve
        from balancer.client import settings as client_settings
        from balancer.common.connection import connect

        if parent is not None:
            return parent.client, parent.settings
        url = self.options.redis_url
        if url:
            settings = client_settings(self.options.namespace).replace(redis_url=url)
            with _clients_lock:
                client = _clients.get(url)
                if client is None:
                    client = _clients[url] = connect(url)
            return client, settings
        return resolve(None, self.options.namespace)

    def __repr__(self) -> str:
        return f"<flow {self.name}>"


def _ended_in(value: Any) -> tuple[Any, Exception | None, str]:
    """A state the function returned (balancer/states.py's, Prefect 1's, or a task's
    ``return_state=True``) is its run's: what the call gives, the error a failed one
    fails the run with (``FailedRun``, its message), and its message. Any other value is
    returned as it is."""
    if isinstance(value, runsignals.State):
        if isinstance(value, runsignals.Success):
            return value.result, None, value.message
        failed = FailedRun(value.message or f"the flow returned {value!r}")
        return None, failed, str(failed)
    if isinstance(value, State):
        if value.is_completed():
            return value.data, None, value.message
        failed = FailedRun(value.message or f"the flow returned a {value.name} state")
        return None, failed, str(failed)
    return value, None, ""


def _resolved(value: Any) -> tuple[Any, Exception | None]:
    """What the function returned, with futures (also in lists, tuples and dicts) replaced
    by their results, as Prefect resolves a flow's return value; a future of a task that
    failed fails the run with its TaskFailed."""
    try:
        return results_of(value), None
    except TaskFailed as exc:
        return None, exc


def results_of(value: Any, allowed: bool = False) -> Any:
    """``value`` with each future (also in lists, tuples and dicts) replaced by its
    result, waiting for it; a failed one raises its TaskFailed, or gives None under
    ``allow_failure`` (``allowed``)."""
    if isinstance(value, allow_failure):
        return results_of(value.value, True)
    if isinstance(value, TaskFuture):
        result = value.result(raise_on_failure=not allowed)
        return None if isinstance(result, TaskFailed) else result
    if isinstance(value, list):
        return [results_of(v, allowed) for v in value]
    if type(value) is tuple:
        return tuple(results_of(v, allowed) for v in value)
    if isinstance(value, dict):
        return {k: results_of(v, allowed) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class FlowRunState(State):
    """A flow run's final state, as ``my_flow(return_state=True)`` returns it."""

    flow_run_id: str = ""
    exception: BaseException | None = None

    @classmethod
    def of(cls, state: str, label: str, data: Any = None,
           error: ErrorInfo | None = None, flow_run_id: str = "",
           exception: BaseException | None = None) -> FlowRunState:
        base = State.of(state, label, data, error)
        return cls(base.state, base.name, base.type, base.message, data, error, label,
                   flow_run_id, exception)

    def result(self, raise_on_failure: bool = True) -> Any:
        """What the function returned; if it raised, that exception (raised, or returned
        with ``raise_on_failure=False``)."""
        if self.exception is None:
            return self.data
        if raise_on_failure:
            raise self.exception
        return self.exception


@overload
def flow(fn: Callable[..., Any], /) -> FlowFunction: ...


@overload
def flow(*, name: str | None = None, retries: int = 0, retry_delay_seconds: float = 0.0,
         timeout_seconds: float | None = None, task_runner: Any = None,
         redis_url: str | None = None, namespace: str | None = None,
         description: str | None = None, version: str | None = None,
         log_prints: bool | None = None, on_running: Any = None, on_completion: Any = None,
         on_failure: Any = None, on_cancellation: Any = None, on_crashed: Any = None,
         flow_run_name: Any = None, validate_parameters: bool | None = None,
         persist_result: bool | None = None) -> Callable[[Callable[..., Any]], FlowFunction]: ...


def flow(fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
         retries: int = 0, retry_delay_seconds: float = 0.0,
         timeout_seconds: float | None = None, task_runner: Any = None,
         redis_url: str | None = None,
         namespace: str | None = None, description: str | None = None,
         version: str | None = None, log_prints: bool | None = None,
         on_running: Any = None, on_completion: Any = None, on_failure: Any = None,
         on_cancellation: Any = None, on_crashed: Any = None, flow_run_name: Any = None,
         validate_parameters: bool | None = None, persist_result: bool | None = None
         ) -> FlowFunction | Callable[[Callable[..., Any]], FlowFunction]:
    """``@flow`` or ``@flow(name=..., retries=2, retry_delay_seconds=1)``: calling the
    function runs it as a flow run on the cluster at ``redis_url`` (default:
    ``BALANCER_REDIS_URL``, else the embedded cluster). ``log_prints`` is taken and
    ignored (prints go where the client's go). Prefect 2/3's hooks (``on_completion=[fn]``,
    ``on_failure``, ``on_cancellation``, ``on_crashed``, ``on_running``), each
    ``fn(flow, flow_run, state)``, are called in this process. ``timeout_seconds``: past
    it the function is stopped and its run fails with FlowRunTimeoutError
    (balancer/flowtimeout.py). ``task_runner`` is kept and changes nothing: the cluster's
    workers run the tasks (balancer/task_runners.py). ``flow_run_name``: the run's name, a
    template of the function's parameters (``"etl-{day}"``) or a function of none
    (balancer/runnames.py). ``validate_parameters`` and ``persist_result`` are taken when
    False, which is what happens here: arguments reach the function as given (no pydantic
    coercion), and its return value stays in this process (its tasks' results are stored
    in their records); True, which would promise otherwise, is refused."""
    del log_prints
    for option, given, why in (
            ("validate_parameters", validate_parameters,
             "arguments reach the function as given, without pydantic's checks or coercion"),
            ("persist_result", persist_result,
             "the function's return value stays in the calling process (its tasks' results"
             " are stored in their records for BALANCER_RESULT_TTL)")):
        if given:
            raise ValueError(f"@flow({option}=True) is not supported here: {why}; give"
                             f" {option}=False or leave it out")

    def wrap(f: Callable[..., Any]) -> FlowFunction:
        return FlowFunction(f, FlowOptions(
            name or f.__name__, retries, retry_delay_seconds, redis_url, namespace,
            description, version, timeout_seconds, task_runner, on_running, on_completion,
            on_failure, on_cancellation, on_crashed, flow_run_name))

    return wrap(fn) if fn is not None else wrap


def get_run_logger() -> logging.Logger | logging.LoggerAdapter:  # type: ignore[type-arg]
    """Prefect's ``get_run_logger()``: in a @flow function, the logger
    ``balancer.flow.<name>``; elsewhere ``balancer.context.logger``: in a task on a worker,
    ``balancer.task`` with the run's ids on each line, which the worker's log carries."""
    run = current_run()
    if run is not None:
        return logging.getLogger(f"balancer.flow.{run.name}")
    logger: logging.Logger | logging.LoggerAdapter = runcontext.context["logger"]  # type: ignore[type-arg]
    return logger


# -- what a task does inside a @flow function ------------------------------------------


def _run_or_refuse(task: Task, what: str) -> DynamicRun:
    run = current_run()
    if run is None:
        where = ("inside `with Flow(...)` (Prefect 1) or a @flow function (Prefect 2/3)"
                 if what == "map" else "inside a @flow function")
        raise RuntimeError(f"task {task.name!r}: .{what}() runs the task on the cluster from"
                           f" {where}; call it from one (outside, calling the task runs the"
                           " plain function)")
    return run


def submit(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any],
           wait_for: Iterable[Any] | None = None) -> TaskFuture:
    """``t.submit(...)``: in a @flow function's run; outside any flow, a run of its own
    (balancer/background.py)."""
    if current_run() is None:
        if building.current_flow() is not None:
            raise RuntimeError(f"task {task.name!r}: .submit() and .delay() send a task to"
                               " the cluster from a @flow function or outside any flow;"
                               " inside `with Flow(...)`, call the task (t(...)) to add it"
                               " to the flow")
        from balancer import background

        return background.submit(task, args, kwargs, wait_for)
    return _run_or_refuse(task, "submit").submit(task, args, kwargs, wait_for)


def call(run: DynamicRun, task: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """A plain call inside a @flow function: run the task on the cluster, wait, and return
    its value (raise TaskFailed if it failed), or its State with ``return_state=True``.
    An ``async def`` task called in an ``async def`` flow gives a coroutine that does
    this when awaited (so that ``asyncio.gather`` runs several at once), as in Prefect."""
    wait_for = kwargs.pop("wait_for", None)
    return_state = bool(kwargs.pop("return_state", False))
    if run.asynchronous and inspect.iscoroutinefunction(task.fn):
        return _call_awaited(run, task, args, kwargs, wait_for, return_state)
    state = run.submit(task, args, kwargs, wait_for).wait()
    assert state is not None  # no timeout
    return state if return_state else state.result()


async def _call_awaited(run: DynamicRun, task: Task, args: tuple[Any, ...],
                        kwargs: dict[str, Any], wait_for: Any, return_state: bool) -> Any:
    state = await asyncio.to_thread(run.submit(task, args, kwargs, wait_for).wait)
    assert state is not None  # no timeout
    return state if return_state else state.result()


def map_calls(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any],
              wait_for: Iterable[Any] | None = None) -> FutureList:
    """``task.map(xs, ys, k=zs, other=unmapped(v))``: one task per position of the mapped
    arguments (every iterable but str, bytes and ``unmapped(...)``; a future's result
    when it is a list), in one script call."""
    run = _run_or_refuse(task, "map")
    mapped: dict[int | str, list[Any]] = {}
    static: dict[int | str, Any] = {}
    given: list[tuple[int | str, Any]] = [*enumerate(args), *kwargs.items()]
    for key, value in given:
        if isinstance(value, unmapped):
            static[key] = value.value
            continue
        if isinstance(value, TaskFuture):
            result = value.result()
            if isinstance(result, list):
                value = result
        if _iterable(value):
            mapped[key] = list(value)
        else:
            static[key] = value
    if not mapped:
        raise TypeError(f"task {task.name!r}: .map() got no iterable argument to map over"
                        " (wrap a constant in unmapped(...))")
    lengths = {len(v) for v in mapped.values()}
    if len(lengths) > 1:
        sizes = ", ".join(f"{_label(k)} has {len(v)}" for k, v in mapped.items())
        raise ValueError(f"task {task.name!r}: .map() arguments differ in length ({sizes})")
    calls = []
    for i in range(lengths.pop()):
        values = {**static, **{k: v[i] for k, v in mapped.items()}}
        positional = tuple(values[p] for p in range(len(args)))
        keywords = {k: v for k, v in values.items() if isinstance(k, str)}
        calls.append((positional, keywords))
    if not calls:
        return FutureList()
    return run.submit_many(task, calls, wait_for)


def _iterable(value: Any) -> bool:
    if isinstance(value, (str, bytes, bytearray)):
        return False
    try:
        iter(value)
    except TypeError:
        return False
    return True


def _label(key: int | str) -> str:
    return f"keyword {key!r}" if isinstance(key, str) else f"position {key}"
