"""Define tasks and flows, submit them, read their results.

    from balancer import task, Flow, Queue
"""

from balancer.cancel import CancelError, Cancelled
from balancer.common.codec import ErrorInfo, register_type
from balancer.common.connection import BadRedisURL, Unreachable
from balancer.common.scripts import NotReplicated
from balancer.flow import Flow, FlowError, Node
from balancer.flowfn import FlowFunction, flow, get_run_logger
from balancer.futures import FutureList, State, TaskFuture, unmapped
from balancer.parameter import Parameter
from balancer.queue import Queue
from balancer.run import FlowLost, FlowRun, TaskFailed
from balancer.task import Task, task

attach = FlowRun.attach

__all__ = ["BadRedisURL", "CancelError", "Cancelled", "ErrorInfo", "Flow", "FlowError",
           "FlowFunction", "FlowLost", "FlowRun", "FutureList", "Node", "NotReplicated",
           "Parameter", "Queue", "State", "Task", "TaskFailed", "TaskFuture", "Unreachable",
           "attach", "flow", "get_run_logger", "register_type", "task", "unmapped"]
