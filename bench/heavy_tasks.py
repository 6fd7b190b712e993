"""A task module that loads something at import, as one that holds a model or a large
library does: ``BENCH_PAYLOAD_MB`` megabytes (default 40) of Python objects, and a few
standard-library packages. For bench/preload_bench.py."""

from __future__ import annotations

import decimal  # noqa: F401
import email.mime.text  # noqa: F401
import http.client  # noqa: F401
import os
import sqlite3  # noqa: F401
import xml.etree.ElementTree  # noqa: F401

from balancer import task

QUEUE = "heavy"
# 1 KiB each: a table, a vocabulary, a model's weights held as Python objects.
PAYLOAD = [bytes(1024) for _ in range(int(os.environ.get("BENCH_PAYLOAD_MB", "40")) * 1024)]


@task(queue_name=QUEUE)
def lookup(index: int) -> int:
    return len(PAYLOAD[index % len(PAYLOAD)])
