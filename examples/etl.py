"""Functional style: upstream results become arguments. Run: python examples/etl.py"""

from balancer import Flow, task


@task
def extract() -> list[int]:
    return [1, 2, 3, 4]


@task(retries=2, retry_delay=0.1)
def transform(rows: list[int], factor: int = 10) -> list[int]:
    return [r * factor for r in rows]


@task
def load(rows: list[int]) -> int:
    print(f"loaded {len(rows)} rows: {rows}")
    return sum(rows)


if __name__ == "__main__":
    with Flow("etl") as flow:
        rows = extract()
        total = load(transform(rows, factor=10))
    run = flow.run(timeout=60)
    print(f"flow {run.state}: total = {run.result(total)}")
