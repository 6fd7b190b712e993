"""The product brief's first sample, unchanged but for its import line.

Imperative style: dependencies set with set_upstream outside any flow, then added.
Run: python examples/seed_basic.py
"""

from balancer import Flow, task


@task
def task1():
    print("Executing Task 1")
    return "Task 1 result"


@task
def task2():
    print("Executing Task 2")
    return "Task 2 result"


@task
def task3():
    print("Executing Task 3")
    return "Task 3 result"


task2.set_upstream(task1)
task3.set_upstream(task2)

flow = Flow("load-balanced-flow")
flow.add_task(task1)
flow.add_task(task2)
flow.add_task(task3)

flow.run()
