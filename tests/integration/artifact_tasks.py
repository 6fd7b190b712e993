"""Tasks and a flow that make artifacts (balancer/artifacts.py), for the artifact tests."""

from __future__ import annotations

from balancer import flow, task
from balancer.artifacts import (
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)


@task
def report(rows: list[dict[str, object]]) -> int:
    progress = create_progress_artifact(0.0, description="loading")
    create_table_artifact(rows, key="loaded-rows")
    create_markdown_artifact(f"# Daily report\n{len(rows)} rows loaded", key="daily-report",
                             description="the day's load")
    update_progress_artifact(progress, 100.0)
    return len(rows)


@task
def hostile(text: str) -> None:
    """What anyone who can run a task could make: text, table cells and links that must
    stay text in a browser."""
    create_markdown_artifact(text)
    create_table_artifact({"cell": [text]})
    create_link_artifact("javascript:window.__xss=3", link_text="click me")
    create_link_artifact("https://example.com/report", link_text="the report")


@task
def markdown(text: str) -> None:
    create_markdown_artifact(text, key="rendered")


@flow
def reporting(rows: list[dict[str, object]]) -> int:
    create_link_artifact("https://example.com/dash", link_text="dashboard", key="dash-link")
    return report(rows)
