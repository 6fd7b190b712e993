"""One logging format for every process: time, level, component, then the event with ids."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup(level: str = "INFO") -> None:
    # FORMAT names no source line, thread or process: not collecting them saves a stack
    # walk and three lookups per line (the logging HOWTO's "Optimization"), a tenth of the
    # dispatcher's CPU while it assigns at full speed.
    logging._srcfile = None  # type: ignore[assignment]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.basicConfig(level=level.upper(), format=FORMAT)
