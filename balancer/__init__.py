"""Define tasks and flows, submit them, read their results.

    from balancer import task, Flow, Queue
"""

from balancer.flow import Flow, FlowError, Node
from balancer.queue import Queue
from balancer.run import FlowRun, TaskFailed
from balancer.task import Task, task
from common.codec import ErrorInfo

__all__ = ["ErrorInfo", "Flow", "FlowError", "FlowRun", "Node", "Queue", "Task", "TaskFailed",
           "task"]
