"""One logging format for every process: time, level, component, then the event with ids.

Every line is scrubbed of the secrets of the Redis URLs the process connected with
(``common.urls``): a password must not reach a log through an exception's text or a
traceback, whoever formatted it.
"""

from __future__ import annotations

import logging

from balancer.common.urls import scrub

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class ScrubbingFormatter(logging.Formatter):
    """The line as usual, tracebacks included, then scrubbed (a few microseconds: one
    substring search per remembered secret)."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


def setup(level: str = "INFO") -> None:
    # FORMAT names no source line, thread or process: not collecting them saves a stack
    # walk and three lookups per line (the logging HOWTO's "Optimization"), a tenth of the
    # dispatcher's CPU while it assigns at full speed.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    handler.setFormatter(ScrubbingFormatter(FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
