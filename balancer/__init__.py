"""Define tasks and flows, submit them, read their results.

    from balancer import task, Flow, Queue
"""

from balancer.common.codec import ErrorInfo
from balancer.common.scripts import NotReplicated
from balancer.flow import Flow, FlowError, Node
from balancer.parameter import Parameter
from balancer.queue import Queue
from balancer.run import FlowLost, FlowRun, TaskFailed
from balancer.task import Task, task

__all__ = ["ErrorInfo", "Flow", "FlowError", "FlowLost", "FlowRun", "Node", "NotReplicated",
           "Parameter", "Queue", "Task", "TaskFailed", "task"]
