"""A task module that writes the pid of each process importing it to the file named by
RECORD_IMPORTS_TO (a line each), where it is set."""

from __future__ import annotations

import os

from balancer import task

if "RECORD_IMPORTS_TO" in os.environ:
    with open(os.environ["RECORD_IMPORTS_TO"], "a") as _record:
        _record.write(f"{os.getpid()}\n")


@task
def pid() -> int:
    return os.getpid()
