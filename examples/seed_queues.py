"""The product brief's second sample, with queue priorities set.

Tasks go to named queues; the high-priority queue is served first when both have work.
On a cluster, run workers serving both queues:
    worker start --queue high-priority --queue low-priority
Run: python examples/seed_queues.py
"""

from balancer import Flow, Queue, task


@task(queue_name="high-priority")
def high_priority_task():
    print("Executing high-priority task")
    return "high done"


@task(queue_name="low-priority")
def low_priority_task():
    print("Executing low-priority task")
    return "low done"


high_priority_queue = Queue(name="high-priority", priority=10)
low_priority_queue = Queue(name="low-priority", priority=1)

flow = Flow("priority-flow")
flow.add_task(high_priority_task, queue=high_priority_queue)
flow.add_task(low_priority_task, queue=low_priority_queue)

flow.run()
