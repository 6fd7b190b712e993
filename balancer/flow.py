"""Flows: DAGs of task calls, built imperatively (``add_task``/``set_upstream``) or
functionally (calling tasks inside ``with Flow(...)``; results flow into arguments)."""

from __future__ import annotations

import itertools
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import redis

from balancer import building, flowgraph, tagging
from balancer.annotations import allow_failure
from balancer.common import codec, statehandlers
from balancer.common.models import FlowState
from balancer.common.runsignals import Cancelled, Failed, Running, Scheduled, State, Success
from balancer.flowgraph import Edge
from balancer.mapping import MapSpec, unmapped
from balancer.options import check_wait, start_ms
from balancer.parameter import Parameter, Parameters, bind
from balancer.queue import Queue
from balancer.task import Task

if TYPE_CHECKING:
    import redis

    from balancer.run import FlowRun

log = logging.getLogger("balancer")


class FlowError(ValueError):
    """The flow cannot be submitted as built (cycle, foreign task, bad argument)."""


class SubmitRefused(FlowError, redis.ResponseError):
    """Redis refused the submit's writes for now, whatever the flow (out of memory, a
    replica, loading its data, too few replicas for ``min-replicas-to-write``...); what it
    had written is removed. A FlowError, and a redis-py error reply too, so that code that
    waits out Redis's troubles (``except redis.RedisError``) retries it as any other."""


class FlowCancelled(FlowError):
    """A @flow function's run was cancelled (``balancer flow cancel``): it takes no more
    tasks, and its function is not run again by its retries."""


@dataclass(eq=False)
class Node:
    """One call of a task in a flow; passing it to another task passes its result."""

    task: Task
    flow: Flow
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: Queue | None = None
    # Upstream nodes, each with the keyword its result is passed as (None: order only).
    upstream: dict[Node, str | None] = field(default_factory=dict)
    # A mapped call (task.map): which arguments it maps over (balancer.mapping).
    mapped: MapSpec | None = None
    # The tags of the `with tags(...)` blocks it was made in (balancer/tagging.py).
    tags: tuple[str, ...] = ()

    @property
    def gated(self) -> bool:
        """Whether the dispatcher decides when it runs: a map, or a task whose trigger or
        skip rule is not the default (balancer.gates)."""
        return self.mapped is not None or self.task.gated

    @property
    def queue_name(self) -> str:
        return self.queue.name if self.queue is not None else self.task.queue_name

    @property
    def name(self) -> str:
        """Its task's name (as a Prefect 1 task copy's)."""
        return self.task.name

    def set_upstream(self, other: Node | Task, key: str | None = None) -> None:
        self.flow.set_dependency(other, self, key)

    def set_downstream(self, other: Node | Task, key: str | None = None) -> None:
        self.flow.set_dependency(self, other, key)

    # Hashed by identity (eq=False keeps object's __hash__, which a submit's dicts of
    # nodes call in C; a Python __hash__ cost a call per lookup).

    def __getitem__(self, index: Any) -> Node:
        """A reference to ``result[index]``: a small task of its own (Prefect 1's
        GetItem), run after this one."""
        from balancer.control_flow import get_item

        return self.flow.call(get_item, (self, index), {})

    def __iter__(self) -> Iterator[Node]:
        """``a, b = t()`` for a task given ``nout=2`` (Prefect 1's rule: a task without
        nout is not iterable, its result's length being unknown until it runs)."""
        nout = self.task.nout
        if nout is None:
            raise TypeError(f"task {self.task.name!r} is not iterable; if it returns several"
                            " results, give nout=N to @task")
        return iter([self[i] for i in range(nout)])

    def __repr__(self) -> str:
        return f"<Node {self.task.name} of flow {self.flow.name!r}>"


# Prefect 1's Flow options of its deployment, taken and ignored (Flow's docstring).
DEPLOYMENT_OPTIONS = frozenset({"executor", "run_config", "storage", "result",
                                "environment", "validate"})


class Flow:
    def __init__(self, name: str, tasks: Iterable[Task] | None = None,
                 edges: Iterable[Any] | None = None, schedule: Any = None, *,
                 state_handlers: Any = None, on_failure: Any = None,
                 reference_tasks: Iterable[Task] | None = None,
                 terminal_state_handler: Any = None, **deployment: Any) -> None:
        """``tasks`` and ``edges`` build it at once, as Prefect 1's ``Flow(name, tasks=...,
        edges=...)``: an edge is ``(upstream, downstream)``, ``(upstream, downstream,
        key)``, or an object with ``upstream_task``, ``downstream_task`` and ``key``.
        ``schedule`` (``balancer.schedules``) is what ``register_schedule`` registers.
        ``state_handlers`` and ``on_failure``, as Prefect 1's: called by ``run()`` in this
        process as the run starts and ends (common/statehandlers.py). ``reference_tasks``
        as ``set_reference_tasks``. Prefect 1's deployment options (``executor``,
        ``run_config``, ``storage``, ``result``, ``environment``, ``validate``) are taken
        and kept as attributes, and change nothing: the cluster runs the tasks, and stores
        every result."""
        if not name or not isinstance(name, str):
            raise ValueError("a flow needs a non-empty name")
        self.name = name
        self.state_handlers = statehandlers.check(f"flow {name!r}", state_handlers, on_failure)
        if on_failure is not None and not callable(on_failure):
            raise TypeError(f"flow {name!r}: on_failure must be a function fn(flow, state)"
                            " (hooks in a list are Prefect 2/3's: give them to @flow)")
        self.on_failure = on_failure
        unknown = sorted(set(deployment) - DEPLOYMENT_OPTIONS)
        if unknown:
            raise TypeError(f"Flow() got unexpected keyword argument(s) {', '.join(unknown)}")
        if terminal_state_handler is not None:
            raise TypeError(f"flow {name!r}: terminal_state_handler is not supported; give"
                            " state_handlers=[fn] (called as the run ends) instead")
        for option, value in deployment.items():
            setattr(self, option, value)
        if schedule is not None:
            from balancer.schedules import Schedule

            if not isinstance(schedule, Schedule):
                raise TypeError(f"flow {name!r}: schedule must be an IntervalSchedule,"
                                f" CronSchedule or Schedule, got {type(schedule).__name__}")
        self.schedule = schedule
        self.nodes: list[Node] = []
        self.parameters = Parameters()
        self._by_task: dict[Task, Node] = {}
        self._reference: list[Node] | None = None  # set_reference_tasks; None: terminal
        self._token: Any = None
        for t in tasks or ():
            self.add_task(t)
        for edge in edges or ():
            if isinstance(edge, tuple):
                self.add_edge(*edge)
            else:
                self.add_edge(edge.upstream_task, edge.downstream_task,
                              getattr(edge, "key", None))
        if reference_tasks is not None:
            self.set_reference_tasks(reference_tasks)

    # -- building --------------------------------------------------------------------

    def __enter__(self) -> Flow:
        self._token = building.enter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        building.leave(self._token)

    def add_task(self, task: Task, queue: Queue | None = None) -> Node:
        """Add ``task`` (once: adding it again returns the same node, with a new queue if given)."""
        if not isinstance(task, Task):
            raise TypeError(f"add_task expects a @task, got {type(task).__name__}")
        node = self._by_task.get(task)
        if node is None:
            node = self._new_node(task, (), {})
        if queue is not None:
            node.queue = queue
        return node

    def call(self, task: Task, args: tuple[Any, ...], kwargs: dict[str, Any],
             upstream_tasks: Iterable[Node | Task] = ()) -> Node:
        """A functional-style call: a new node whose arguments may reference other nodes
        (their results are passed) and parameters (their values are). ``upstream_tasks``
        run first without passing anything, as in Prefect."""
        task.check_call(args, kwargs)
        after = _listed(task, "upstream_tasks", upstream_tasks)
        found = codec.find_in_call(task.name, args, kwargs, (Node, Parameter, allow_failure))
        if any(isinstance(item, allow_failure) for item in found):
            raise FlowError(f"task {task.name!r}: allow_failure(...) is for @flow functions;"
                            " in `with Flow(...)` give the task trigger=all_finished (from"
                            " balancer.triggers) to run it after a failed upstream")
        upstream = [item for item in found if isinstance(item, Node)]
        for up in upstream:
            if up.flow is not self:
                raise FlowError(f"task {task.name!r} gets a result from another flow"
                                f" ({up.flow.name!r})")
        for param in found:
            if isinstance(param, Parameter):
                self.add_parameter(param)
        node = self._new_node(task, args, kwargs)
        for up in upstream:
            node.upstream.setdefault(up, None)
        for item in after:
            self.set_dependency(item, node)
        return node

    def add_parameter(self, param: Parameter) -> Parameter:
        known = self.parameters.setdefault(param.name, param)
        if known is not param:
            raise FlowError(f"flow {self.name!r} has two parameters named {param.name!r}")
        return param

    # Prefect 1's ways of wiring a flow imperatively.

    def add_edge(self, upstream: Node | Task, downstream: Node | Task,
                 key: str | None = None) -> None:
        """``downstream`` runs after ``upstream``; with ``key``, it receives the result as
        that keyword argument."""
        self.set_dependency(upstream, downstream, key)

    def set_dependencies(self, task: Node | Task,
                         upstream_tasks: Iterable[Node | Task] | None = None,
                         downstream_tasks: Iterable[Node | Task] | None = None,
                         keyword_tasks: dict[str, Any] | None = None,
                         mapped: bool = False) -> None:
        """Prefect 1's ``set_dependencies``: ``keyword_tasks`` maps keyword arguments to
        upstream tasks (their results are passed) or to parameters and plain values."""
        node = self._node(task)
        if mapped:  # the keyword tasks are mapped over, as Prefect 1's mapped=True
            spec = node.mapped or MapSpec()
            node.mapped = MapSpec(spec.positions, (*spec.keywords, *(keyword_tasks or {})),
                                  spec.flat)
        for up in upstream_tasks or ():
            self.set_dependency(up, node)
        for down in downstream_tasks or ():
            self.set_dependency(node, down)
        for key, value in (keyword_tasks or {}).items():
            if isinstance(value, (Node, Task)):
                self.set_dependency(value, node, key)
            else:
                if isinstance(value, Parameter):
                    self.add_parameter(value)
                value = self._tasks_to_calls(value)
                for up in codec.find_in_call(node.task.name, (), {key: value}, Node):
                    if up not in node.upstream:  # as an argument of its own: keyed so
                        self.set_dependency(up, node)  # its result is inside this one
                node.kwargs[key] = value

    def _tasks_to_calls(self, value: Any) -> Any:
        """A list, tuple or dict of tasks given as an argument (``t.bind([a, b])``, as
        Prefect 1 takes it): each task as its call in this flow, whose result is passed."""
        if type(value) in (list, tuple):
            return type(value)(self._node(v) if isinstance(v, Task) else v for v in value)
        if type(value) is dict:
            return {k: self._node(v) if isinstance(v, Task) else v for k, v in value.items()}
        return value

    def chain(self, *tasks: Node | Task) -> None:
        """Each task runs after the one before it."""
        for up, down in itertools.pairwise(tasks):
            self.set_dependency(up, down)

    def set_dependency(self, upstream: Node | Task, downstream: Node | Task,
                       key: str | None = None) -> None:
        if isinstance(upstream, Parameter):
            # Prefect 1's upstream_tasks=[param] or set_upstream(param, key="day"): a
            # parameter's value is known when the run is submitted, so there is nothing to
            # wait for; the task joins the flow, given the value under ``key`` if named.
            down = self._node(downstream)
            self.add_parameter(upstream)  # the run takes it, whether it is passed or not
            if key is not None:
                down.kwargs[key] = upstream
            return
        up, down = self._node(upstream), self._node(downstream)
        if up is down:
            raise FlowError(f"task {up.task.name!r} cannot depend on itself")
        down.upstream[up] = key

    def _node(self, item: Node | Task) -> Node:
        if isinstance(item, Node):
            if item.flow is not self:
                raise FlowError(f"{item!r} belongs to flow {item.flow.name!r}, not {self.name!r}")
            return item
        if item in self._by_task:
            try:
                return self.node_of(item)
            except KeyError as exc:
                raise FlowError(exc.args[0]) from None
        return self.add_task(item)

    def _new_node(self, task: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Node:
        node = Node(task, self, args, dict(kwargs), tags=tagging.current())
        self.nodes.append(node)
        self._by_task.setdefault(task, node)
        return node

    def node_of(self, task: Task) -> Node:
        node = self._by_task.get(task)
        if node is None:
            raise KeyError(f"task {task.name!r} is not part of flow {self.name!r}")
        calls = [n for n in self.nodes if n.task is task]
        if len(calls) > 1:
            raise KeyError(f"task {task.name!r} is called {len(calls)} times in flow"
                           f" {self.name!r}; ask for one call's reference instead")
        return node

    def set_reference_tasks(self, tasks: Iterable[Node | Task]) -> None:
        """The tasks whose outcome is the run's, as Prefect 1's: the run fails only when
        one of them does (a failure elsewhere still counts in ``failed``)."""
        self._reference = [self._node(t) for t in tasks]

    def reference_tasks(self, planned: list[Node] | None = None) -> set[Node]:
        """Those ``set_reference_tasks`` named; by default the terminal tasks (those
        nothing runs after). ``planned``: ``plan()``'s nodes, when the caller has them."""
        if self._reference is not None:
            return set(self._reference)
        nodes = self.plan() if planned is None else planned
        upstream = {up for node in nodes for up in node.upstream}
        return {node for node in nodes if node not in upstream}

    def judged_by_reference(self) -> bool:
        """Whether the run's state must be read from its reference tasks: they were set,
        or a task may run after an upstream failed (a trigger other than the default).
        Otherwise every failure reaches a terminal task as an upstream failure, and "the
        run failed when a task failed" is the same rule, at no cost."""
        return self._reference is not None or any(
            node.task.trigger != "all_successful" for node in self.nodes)

    # -- checking --------------------------------------------------------------------

    def plan(self) -> list[Node]:
        """Nodes in dependency order, after folding in ``set_upstream`` made outside the flow.

        Both walks keep their own stack, so a chain of any length plans without
        recursion. Raises FlowError naming the tasks of a cycle. A flow of independent
        tasks (a one-task flow: the common submit) is in order as it stands.
        """
        nodes = self.graph()
        if not any(node.upstream for node in nodes):
            return nodes
        order: list[Node] = []
        done: set[Node] = set()
        for root in nodes:
            if root not in done:
                self._visit(root, done, order)
        return order

    def _visit(self, root: Node, done: set[Node], order: list[Node]) -> None:
        """Depth-first from ``root``: each node after its upstream ones. ``path`` is the
        chain being walked (a node met on it again closes a cycle), ``pending`` the
        upstream nodes each of them has left to walk."""
        path: list[Node] = [root]
        on_path = {root}
        pending = [iter(root.upstream)]
        while path:
            up = next(pending[-1], None)
            if up is None:
                pending.pop()
                node = path.pop()
                on_path.discard(node)
                done.add(node)
                order.append(node)
            elif up in done:
                continue
            elif up in on_path:
                cycle = [*path[path.index(up):], up]
                raise FlowError(f"flow {self.name!r} has a cycle: "
                                + " -> ".join(n.task.name for n in cycle))
            else:
                path.append(up)
                on_path.add(up)
                pending.append(iter(up.upstream))

    def _fold_declared(self) -> None:
        """Add the upstream tasks declared with ``set_upstream`` outside any flow, and
        theirs in turn, each node walked once (a chain of any length, without recursion)."""
        seen: set[Node] = set()
        for root in list(self.nodes):
            if root in seen:
                continue
            seen.add(root)
            stack = [(root, iter(root.task.upstream))]
            while stack:
                node, declared = stack[-1]
                item = next(declared, None)
                if item is None:
                    stack.pop()
                    continue
                upstream_task, key = item
                up = self.add_task(upstream_task)
                node.upstream.setdefault(up, key)
                if up not in seen:
                    seen.add(up)
                    stack.append((up, iter(up.task.upstream)))

    def queues(self) -> dict[str, Queue]:
        """Queues given explicitly to add_task, whose settings the submit applies."""
        found: dict[str, Queue] = {}
        for node in self.nodes:
            if node.queue is not None:
                found[node.queue.name] = node.queue
        return found

    # -- running ---------------------------------------------------------------------

    def submit(self, client: redis.Redis | None = None, *, namespace: str | None = None,
               parameters: dict[str, Any] | None = None,
               redis_url: str | None = None, delay: float | timedelta | None = None,
               eta: datetime | None = None) -> FlowRun:
        """Send the flow to the cluster and return at once with a handle on the run.

        ``client``: a Redis client of the cluster (default: ``BALANCER_REDIS_URL``, else the
        embedded cluster); ``namespace``: the cluster's key namespace if not the default;
        ``parameters``: values of the flow's ``Parameter``s by name (else their defaults);
        ``redis_url``: the cluster's URL, in place of ``BALANCER_REDIS_URL``;
        ``delay`` (seconds or a timedelta) or ``eta`` (an aware datetime): its first tasks
        wait, ``scheduled``, until then (the dispatcher queues them when it comes).

        A bad URL raises ``BadRedisURL`` and a Redis that cannot be reached
        ``Unreachable``, each one line naming the URL (its password hidden).
        """
        from balancer.client import resolve_url, talking
        from balancer.submit import submit_flow

        try:
            values = bind(self.name, self.parameters, parameters)
            now = int(time.time() * 1000)
            start = start_ms(f"flow {self.name!r}", delay, eta, now)
        except ValueError as exc:
            raise FlowError(str(exc)) from None
        # A delay counts from Redis's clock (read at the submit), an eta is a time.
        after = start - now if delay is not None and start is not None else None
        conn, settings = resolve_url(client, redis_url, namespace)
        with talking(conn):
            return submit_flow(conn, settings, self, values,
                               None if after is not None else start, after)

    def run(self, timeout: float | None = None, client: redis.Redis | None = None, *,
            namespace: str | None = None, quiet: bool = False,
            parameters: dict[str, Any] | None = None,
            redis_url: str | None = None, delay: float | timedelta | None = None,
            eta: datetime | None = None, run_on_schedule: bool | None = None,
            executor: Any = None, return_tasks: Any = None,
            context: dict[str, Any] | None = None) -> FlowRun:
        """Submit (``delay``, ``eta``: as ``submit``'s), wait for every task to finish, and
        return the finished run.

        Prefect 1's ``run_on_schedule``, ``executor`` and ``return_tasks`` are taken and
        change nothing: it runs once, now (``register_schedule`` runs it on its schedule),
        on the cluster's workers, and every task's result is in the run. ``context``
        (values for the tasks' ``prefect.context``) is refused: workers do not see it.

        Without ``BALANCER_REDIS_URL`` (and no client) the flow runs on the embedded
        in-process cluster. Inside a worker importing this module, it does nothing.

        While it waits it reports on stderr (``balancer.progress``): a progress bar on a
        terminal, plain lines elsewhere, what holds the run when it makes no progress, a
        summary at the end. ``quiet`` (or ``BALANCER_PROGRESS=off``) silences it. Ctrl-C
        says where the run is left and exits with status 130, without a traceback.
        """
        from balancer.client import settings as client_settings
        from balancer.common.importpath import is_importing_tasks
        from balancer.progress import Reporter

        check_wait(f"flow {self.name!r}: run", timeout)  # before anything is submitted
        del executor, return_tasks
        if context:
            raise FlowError(f"flow {self.name!r}: run(context=...) is not supported: the"
                            " workers' balancer.context holds the run's own facts; pass"
                            " values as Parameters instead")
        if run_on_schedule and self.schedule is not None:
            log.info("flow %r: run() runs it once, now; register_schedule() runs it on its"
                     " schedule", self.name)
        if is_importing_tasks():
            log.warning("flow %r: run() ignored while a worker imports its module; guard it"
                        " with `if __name__ == '__main__':`", self.name)
            return None  # type: ignore[return-value]
        run = self.submit(client, namespace=namespace, parameters=parameters,
                          redis_url=redis_url, delay=delay, eta=eta)
        running = self._tell_handlers(run, Scheduled("Flow run scheduled."),
                                      Running("Running flow."))
        report = Reporter.for_run(run, sys.stderr, client_settings(namespace).progress, quiet)
        report.begin()
        try:
            state = run.wait(timeout, on_tick=report.update if report.tick else None,
                             tick=report.tick or 0.0)
        except KeyboardInterrupt:
            report.interrupted()
            raise SystemExit(130) from None
        report.end(state)
        if running is not None:
            try:
                final = {FlowState.COMPLETED: Success,
                         FlowState.CANCELLED: Cancelled}.get(run.state, Failed)
                ended = final(run.message, run.result)
            except redis.RedisError as exc:  # the run is over: its handlers are not told
                log.error("flow=%s name=%s: its end could not be read for its state"
                          " handlers: %s", run.id, self.name, exc)
            else:
                self._tell_handlers(run, running, ended)
        return run

    def _tell_handlers(self, run: FlowRun, old: State, new: State) -> State | None:
        """Call the flow's state handlers on a change of its run's state, as Prefect 1's
        flow runner does; None when it has none. They are told, not obeyed: the run goes on
        in the cluster whatever they return, and one that raises is logged, not raised
        (the run was submitted: raising here would leave it unwatched)."""
        handlers = statehandlers.of(self)
        if not handlers:
            return None
        try:
            return statehandlers.call(self, handlers, old, new)
        except statehandlers.HandlerFailed:
            log.exception("flow=%s name=%s: a state handler failed", run.id, self.name)
            return new

    def register_schedule(self, schedule: Any = None, client: redis.Redis | None = None, *,
                          namespace: str | None = None,
                          parameters: dict[str, Any] | None = None,
                          schedule_id: str | None = None) -> str:
        """Hand this flow and its schedule (``schedule``, else the flow's own) to the
        cluster: its leader dispatcher runs the flow at every due time from now on, with
        ``parameters`` (else their defaults), until ``balancer schedule rm``. The
        schedule's id (default: the flow's name) is returned; registering the same id
        again replaces it (keeping its next due time when the clocks are the same)."""
        from balancer.client import resolve
        from balancer.schedule_store import register

        schedule = schedule if schedule is not None else self.schedule
        if schedule is None:
            raise FlowError(f"flow {self.name!r} has no schedule: give Flow(...,"
                            " schedule=...) or register_schedule(schedule)")
        conn, settings = resolve(client, namespace)
        return register(conn, settings, self, schedule, schedule_id, parameters)[0]

    def register(self, project_name: str | None = None, *,
                 client: redis.Redis | None = None, namespace: str | None = None,
                 **prefect_options: Any) -> str:
        """Prefect 1's ``flow.register(project_name=...)``: a flow with a schedule is
        handed to the cluster (``register_schedule``: its leader runs it at every due time;
        Prefect's other options, ``labels=`` and the like, are taken and change nothing).
        One without a schedule has nothing to register here: refused, naming what to do."""
        if self.schedule is None:
            raise FlowError(f"flow {self.name!r}: register() hands a flow's schedule to the"
                            " cluster, and it has none; run it with flow.run() (or"
                            " flow.submit()), or give it Flow(..., schedule=...)")
        return self.register_schedule(client=client, namespace=namespace)

    # -- Prefect 1's introspection (balancer/flowgraph.py) ------------------------------

    def graph(self) -> list[Node]:
        """Every call in the flow, with the upstream tasks declared by ``set_upstream``
        outside it folded in (as a submit folds them), in the order they were added."""
        if any(node.task.upstream for node in self.nodes):
            self._fold_declared()
        return list(self.nodes)

    @property
    def tasks(self) -> set[Node]:
        return set(self.graph())

    @property
    def edges(self) -> set[Edge]:
        return flowgraph.edges(self)

    def edges_to(self, task: Node | Task) -> set[Edge]:
        return flowgraph.edges_to(self, task)

    def edges_from(self, task: Node | Task) -> set[Edge]:
        return flowgraph.edges_from(self, task)

    def upstream_tasks(self, task: Node | Task) -> set[Node]:
        return flowgraph.upstream_tasks(self, task)

    def downstream_tasks(self, task: Node | Task) -> set[Node]:
        return flowgraph.downstream_tasks(self, task)

    def root_tasks(self) -> set[Node]:
        return flowgraph.root_tasks(self)

    def terminal_tasks(self) -> set[Node]:
        return flowgraph.terminal_tasks(self)

    def sorted_tasks(self, root_tasks: Iterable[Node | Task] | None = None
                     ) -> tuple[Node, ...]:
        return flowgraph.sorted_tasks(self, root_tasks)

    def get_tasks(self, name: str | None = None, tags: Iterable[str] | None = None,
                  task_type: type | None = None) -> list[Node]:
        return flowgraph.get_tasks(self, name, tags, task_type)

    def __iter__(self) -> Iterator[Node]:
        """The tasks in the order they can run (Prefect 1's iteration of a flow)."""
        return iter(self.sorted_tasks())

    def validate(self) -> None:
        """Raise FlowError if the flow cannot run as built (a cycle, a task of another
        flow), as Prefect's ``flow.validate()``; submitting checks the same."""
        self.plan()

    def visualize(self, flow_state: FlowRun | None = None, filename: str | None = None,
                  format: str | None = None) -> Any:
        """Draw the DAG, as Prefect 1's: a ``graphviz.Digraph`` (rendered to ``filename``,
        as ``format``: pdf by default, png, svg, ...) when the graphviz package is
        installed, else a text rendering, printed and returned. With ``flow_state``, a run
        of this flow (``flow.run()``'s or ``submit()``'s), each task shows its state in it
        (and graphviz colours it)."""
        if isinstance(flow_state, (str, os.PathLike)):
            raise TypeError("visualize(flow_state=None, filename=None, format=None), as"
                            " Prefect 1's: give the file by keyword, filename=...")
        nodes = self.plan()
        labels = _labels(nodes)
        states = ({node: flow_state.result[node].state for node in nodes}
                  if flow_state is not None else {})
        keys = {(edge.upstream_task, edge.downstream_task): edge.key for edge in self.edges}
        try:
            import graphviz  # type: ignore[import-not-found,import-untyped,unused-ignore]
        except ImportError:
            text = self._text(nodes, labels, states, keys)
            print(text)
            return text
        graph = graphviz.Digraph(self.name)
        for node in nodes:
            mapped = " (mapped)" if node.mapped is not None else ""
            state = states.get(node)
            style = ({"style": "filled", "fillcolor": _STATE_COLOURS.get(state, "white")}
                     if state else {})
            graph.node(str(id(node)), f"{labels[node]}{mapped}\n[{node.queue_name}]"
                       + (f"\n{state}" if state else ""), **style)
            for up in node.upstream:
                graph.edge(str(id(up)), str(id(node)), label=keys.get((up, node)) or "")
        if filename:
            graph.render(filename, format=format, cleanup=True)
        return graph

    def _text(self, nodes: list[Node], labels: dict[Node, str], states: dict[Node, str],
              keys: dict[tuple[Node, Node], str | None]) -> str:
        lines = [f"flow {self.name}: {len(nodes)} tasks, in the order they can run"]
        for node in nodes:
            ups = ", ".join(labels[up] + (f" (as {key})" if (key := keys.get((up, node)))
                                          else "")
                            for up in node.upstream)
            mapped = " (mapped)" if node.mapped is not None else ""
            state = f": {states[node]}" if node in states else ""
            lines.append(f"  {labels[node]}{mapped} [{node.queue_name}]{state}"
                         + (f" <- {ups}" if ups else ""))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Flow {self.name!r}: {len(self.nodes)} tasks>"


def _listed(task: Task, option: str, given: Any) -> list[Any]:
    """``upstream_tasks=[...]``: a list (or any iterable) of tasks, any of them as
    ``unmapped(t)`` (Prefect 1's way to have a map wait for a task it does not map over:
    here none is mapped over); one task alone, or anything else, is a TypeError naming the
    task and the option."""
    if isinstance(given, (Task, Node, str, bytes)) or not isinstance(given, Iterable):
        raise TypeError(f"task {task.name!r}: {option} takes a list of tasks, got"
                        f" {type(given).__name__}")
    return [item.value if isinstance(item, unmapped) else item for item in given]


# A task's state in a drawn run (graphviz colour names).
_STATE_COLOURS = {"completed": "palegreen", "skipped": "lightgrey", "failed": "salmon",
                  "upstream_failed": "lightsalmon", "dead": "salmon", "running": "lightblue",
                  "retrying": "gold", "cancelled": "khaki"}


def _labels(nodes: list[Node]) -> dict[Node, str]:
    """A task's name, and ``name#n`` for its n-th call (as ``FlowRun.results`` names them)."""
    counts: dict[str, int] = {}
    labels: dict[Node, str] = {}
    for node in nodes:
        n = counts[node.task.name] = counts.get(node.task.name, 0) + 1
        labels[node] = node.task.name if n == 1 else f"{node.task.name}#{n}"
    return labels
