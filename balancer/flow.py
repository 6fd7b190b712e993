"""Flows: DAGs of task calls, built imperatively (``add_task``/``set_upstream``) or
functionally (calling tasks inside ``with Flow(...)``; results flow into arguments)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from balancer import context
from balancer.common import codec
from balancer.options import check_wait
from balancer.queue import Queue
from balancer.task import Task

if TYPE_CHECKING:
    import redis

    from balancer.run import FlowRun


class FlowError(ValueError):
    """The flow cannot be submitted as built (cycle, foreign task, bad argument)."""


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

    @property
    def queue_name(self) -> str:
        return self.queue.name if self.queue is not None else self.task.queue_name

    def set_upstream(self, other: Node | Task, key: str | None = None) -> None:
        self.flow.set_dependency(other, self, key)

    def set_downstream(self, other: Node | Task, key: str | None = None) -> None:
        self.flow.set_dependency(self, other, key)

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"<Node {self.task.name} of flow {self.flow.name!r}>"


class Flow:
    def __init__(self, name: str) -> None:
        if not name or not isinstance(name, str):
            raise ValueError("a flow needs a non-empty name")
        self.name = name
        self.nodes: list[Node] = []
        self._by_task: dict[Task, Node] = {}
        self._token: Any = None

    # -- building --------------------------------------------------------------------

    def __enter__(self) -> Flow:
        self._token = context.enter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        context.leave(self._token)

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

    def call(self, task: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Node:
        """A functional-style call: a new node whose arguments may reference other nodes."""
        upstream = codec.find_in_call(task.name, args, kwargs, Node)
        for up in upstream:
            if up.flow is not self:
                raise FlowError(f"task {task.name!r} gets a result from another flow"
                                f" ({up.flow.name!r})")
        node = self._new_node(task, args, kwargs)
        for up in upstream:
            node.upstream.setdefault(up, None)
        return node

    def set_dependency(self, upstream: Node | Task, downstream: Node | Task,
                       key: str | None = None) -> None:
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
        node = Node(task, self, args, dict(kwargs))
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

    # -- checking --------------------------------------------------------------------

    def plan(self) -> list[Node]:
        """Nodes in dependency order, after folding in ``set_upstream`` made outside the flow.

        Both walks keep their own stack, so a chain of any length plans without
        recursion. Raises FlowError naming the tasks of a cycle.
        """
        self._fold_declared()
        order: list[Node] = []
        done: set[Node] = set()
        for root in self.nodes:
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

    def submit(self, client: redis.Redis | None = None, *, namespace: str | None = None
               ) -> FlowRun:
        """Send the flow to the cluster and return at once with a handle on the run.

        ``client``: a Redis client of the cluster (default: ``BALANCER_REDIS_URL``, else the
        embedded cluster); ``namespace``: the cluster's key namespace if not the default.
        """
        from balancer.client import resolve
        from balancer.submit import submit_flow

        conn, settings = resolve(client, namespace)
        return submit_flow(conn, settings, self)

    def run(self, timeout: float | None = None, client: redis.Redis | None = None, *,
            namespace: str | None = None, quiet: bool = False) -> FlowRun:
        """Submit, wait for every task to finish, and return the finished run.

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
        if is_importing_tasks():
            import logging

            logging.getLogger("balancer").warning(
                "flow %r: run() ignored while a worker imports its module; guard it with"
                " `if __name__ == '__main__':`", self.name)
            return None  # type: ignore[return-value]
        run = self.submit(client, namespace=namespace)
        report = Reporter.for_run(run, sys.stderr, client_settings(namespace).progress, quiet)
        report.begin()
        try:
            state = run.wait(timeout, on_tick=report.update if report.tick else None,
                             tick=report.tick or 0.0)
        except KeyboardInterrupt:
            report.interrupted()
            raise SystemExit(130) from None
        report.end(state)
        return run

    def __repr__(self) -> str:
        return f"<Flow {self.name!r}: {len(self.nodes)} tasks>"
