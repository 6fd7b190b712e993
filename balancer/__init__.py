"""Define tasks and flows, submit them, read their results.

    from balancer import task, Flow, Queue
"""

from balancer import triggers
from balancer.annotations import allow_failure, quote
from balancer.cancel import CancelError, Cancelled
from balancer.common.codec import ErrorInfo, register_type
from balancer.common.connection import BadRedisURL, Unreachable
from balancer.common.protocol import ProtocolMismatch
from balancer.common.runsignals import ENDRUN, FAIL, LOOP, RETRY, SKIP, Failed, Skipped, Success
from balancer.common.scripts import NotReplicated
from balancer.concurrency import (
    ConcurrencyError,
    ConcurrencyLimit,
    ConcurrencyTimeout,
    concurrency_limits,
    set_concurrency_limit,
)
from balancer.control_flow import case, ifelse, merge, switch
from balancer.deployments import Deployment, DeploymentError, run_deployment
from balancer.flow import Flow, FlowCancelled, FlowError, Node, SubmitRefused
from balancer.flowfn import FlowFunction, flow, get_run_logger
from balancer.flowgraph import Edge
from balancer.flowtimeout import FlowRunTimeoutError
from balancer.futures import FutureList, State, TaskFuture
from balancer.mapping import MapError, flatten, unmapped
from balancer.parameter import Parameter
from balancer.pausing import FlowPauseTimeout, pause_flow_run, resume_flow_run, suspend_flow_run
from balancer.queue import Queue
from balancer.run import FlowLost, FlowRun, TaskFailed
from balancer.runcontext import context
from balancer.runtime import get_run_context
from balancer.serving import serve
from balancer.states import FailedRun
from balancer.tagging import tags
from balancer.taglimits import TagLimit, set_tag_limit, tag_limits
from balancer.task import Task, task
from balancer.worker.interrupt import TaskInterrupted

attach = FlowRun.attach

__all__ = [
    "ENDRUN",
    "FAIL",
    "LOOP",
    "RETRY",
    "SKIP",
    "BadRedisURL",
    "CancelError",
    "Cancelled",
    "ConcurrencyError",
    "ConcurrencyLimit",
    "ConcurrencyTimeout",
    "Deployment",
    "DeploymentError",
    "Edge",
    "ErrorInfo",
    "Failed",
    "FailedRun",
    "Flow",
    "FlowCancelled",
    "FlowError",
    "FlowFunction",
    "FlowLost",
    "FlowPauseTimeout",
    "FlowRun",
    "FlowRunTimeoutError",
    "FutureList",
    "MapError",
    "Node",
    "NotReplicated",
    "Parameter",
    "ProtocolMismatch",
    "Queue",
    "Skipped",
    "State",
    "SubmitRefused",
    "Success",
    "TagLimit",
    "Task",
    "TaskFailed",
    "TaskFuture",
    "TaskInterrupted",
    "Unreachable",
    "allow_failure",
    "attach",
    "case",
    "concurrency_limits",
    "context",
    "flatten",
    "flow",
    "get_run_context",
    "get_run_logger",
    "ifelse",
    "merge",
    "pause_flow_run",
    "quote",
    "register_type",
    "resume_flow_run",
    "run_deployment",
    "serve",
    "set_concurrency_limit",
    "set_tag_limit",
    "suspend_flow_run",
    "switch",
    "tag_limits",
    "tags",
    "task",
    "triggers",
    "unmapped",
]
