"""The Grafana dashboard shipped in docs/grafana: every expression names metrics that
/metrics serves (balancer/dashboard/metrics.py: METRICS), and each served metric is shown."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from balancer.dashboard.metrics import METRICS

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana" / "balancer.json"
NAME = re.compile(r"\bbalancer_[a-z_]+\b")


def _exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from _exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _exprs(item)


def _served(name: str) -> str | None:
    """The METRICS entry a sample name belongs to (histograms: _bucket, _sum, _count)."""
    if name in METRICS:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name.removesuffix(suffix)
        if base != name and METRICS.get(base, ("",))[0] == "histogram":
            return base
    return None


def test_every_expression_names_a_metric_that_exists() -> None:
    exprs = list(_exprs(json.loads(DASHBOARD.read_text())))
    assert exprs
    for expr in exprs:
        names = NAME.findall(expr)
        assert names, expr
        for name in names:
            assert _served(name), f"{name} in {expr!r} is not a metric /metrics serves"


def test_every_metric_is_on_the_dashboard() -> None:
    shown = {_served(n) for e in _exprs(json.loads(DASHBOARD.read_text()))
             for n in NAME.findall(e)}
    assert set(METRICS) <= shown


def test_the_readme_documents_every_metric() -> None:
    readme = (DASHBOARD.parents[2] / "README.md").read_text()
    for name in METRICS:
        assert f"`{name}`" in readme, name
