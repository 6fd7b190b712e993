"""Define tasks and flows, submit them, read their results.

    from balancer import task, Flow, Queue
"""

from balancer import triggers
from balancer.common.codec import ErrorInfo
from balancer.common.runsignals import ENDRUN, FAIL, RETRY, SKIP, Failed, Skipped, Success
from balancer.control_flow import case, ifelse, merge, switch
from balancer.flow import Flow, FlowError, Node
from balancer.mapping import MapError, flatten, unmapped
from balancer.parameter import Parameter
from balancer.queue import Queue
from balancer.run import FlowRun, TaskFailed
from balancer.task import Task, task

__all__ = ["ENDRUN", "FAIL", "RETRY", "SKIP", "ErrorInfo", "Failed", "Flow", "FlowError",
           "FlowRun", "MapError", "Node", "Parameter", "Queue", "Skipped", "Success", "Task",
           "TaskFailed", "case", "flatten", "ifelse", "merge", "switch", "task", "triggers",
           "unmapped"]
