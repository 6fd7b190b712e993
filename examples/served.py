"""A @flow function served as a deployment (Prefect 2/3's ``flow.serve``): it runs at the
start of every minute, and whenever asked, until this process is stopped.

    python examples/served.py                                    # serve it; Ctrl-C stops
    balancer deployment ls                                       # from another shell
    balancer deployment run report/every-minute --param hours=6 --wait

Without BALANCER_REDIS_URL it serves on the embedded cluster (its own workers, in this
process), where only this process can ask it for runs.
"""

from balancer import flow, task


@task
def count_events(hours: int) -> int:
    return hours * 60


@task
def summarize(count: int) -> str:
    return f"{count} events"


@flow(log_prints=True)
def report(hours: int = 1) -> str:
    line = summarize(count_events(hours))
    print(f"report: {line}")
    return line


if __name__ == "__main__":
    report.serve(name="every-minute", cron="* * * * *", parameters={"hours": 1})
