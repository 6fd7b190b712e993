"""Prefect 2/3's dynamic style: the flow function runs here and branches on results.
Run: python examples/dynamic.py (embedded cluster), or with BALANCER_REDIS_URL set."""

from balancer import flow, task, unmapped


@task
def extract() -> list[int]:
    return [1, 2, 3]


@task
def scale(x: int, factor: int) -> int:
    return x * factor


@task
def load(values: list[int]) -> int:
    return sum(values)


@flow(name="etl", retries=1)
def etl() -> int:
    rows = extract()                               # a plain call: runs on a worker, returns
    if not rows:                                   # branch and loop on results
        return 0
    scaled = scale.map(rows, unmapped(10))         # one task per row; futures at once
    check = scale.submit(rows[0], factor=2)        # a future: .result(), .wait(), .state
    total = load.submit(scaled, wait_for=[check])  # futures in arguments: results passed
    return total.result()


if __name__ == "__main__":
    state = etl(return_state=True)
    print(f"flow {state.name}: total = {state.result()} (run {state.flow_run_id})")
