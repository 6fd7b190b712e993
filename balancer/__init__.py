"""Define tasks and flows, submit them, read their results.

    from balancer import task, Flow, Queue
"""

from balancer.cancel import CancelError, Cancelled
from balancer.common.codec import ErrorInfo
from balancer.common.connection import BadRedisURL, Unreachable
from balancer.flow import Flow, FlowError, Node
from balancer.parameter import Parameter
from balancer.queue import Queue
from balancer.run import FlowRun, TaskFailed
from balancer.task import Task, task

attach = FlowRun.attach

__all__ = ["BadRedisURL", "CancelError", "Cancelled", "ErrorInfo", "Flow", "FlowError",
           "FlowRun", "Node", "Parameter", "Queue", "Task", "TaskFailed", "Unreachable",
           "attach", "task"]
