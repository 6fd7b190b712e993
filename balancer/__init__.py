"""Define tasks and flows, submit them, read their results.

    from balancer import task, Flow, Queue
"""

from balancer.common.codec import ErrorInfo, register_type
from balancer.flow import Flow, FlowError, Node
from balancer.parameter import Parameter
from balancer.queue import Queue
from balancer.run import FlowRun, TaskFailed
from balancer.task import Task, task

__all__ = ["ErrorInfo", "Flow", "FlowError", "FlowRun", "Node", "Parameter", "Queue", "Task",
           "TaskFailed", "register_type", "task"]
