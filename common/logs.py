"""One logging format for every process: time, level, component, then the event with ids.

Every line is scrubbed of the secrets of the Redis URLs the process connected with
(``common.urls``): a password must not reach a log through an exception's text or a
traceback, whoever formatted it.
"""

from __future__ import annotations

import json
import logging
import re

from balancer.common.printable import one_line
from balancer.common.urls import scrub

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class ScrubbingFormatter(logging.Formatter):
    """The line as usual, tracebacks included, then scrubbed (a few microseconds: one
    substring search per remembered secret). The message is kept on one line, its control
    characters escaped (``common.printable``): a task's error or name cannot forge a line
    or reach the terminal that shows the log."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = one_line(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


# key=value pairs in a message (task=..., worker=...): JSON lines carry them as fields.
_PAIRS = re.compile(r"\b([a-z_]+)=([^\s,;:()]+)")
FORMATS = ("text", "json")


class JsonFormatter(ScrubbingFormatter):
    """One JSON object per line, for log pipelines: time, level, logger, message, the
    message's key=value ids as fields, and the traceback if any. Scrubbed the same."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line: dict[str, object] = {
            "time": self.formatTime(record), "level": record.levelname,
            "logger": record.name, "message": message}
        for key, value in _PAIRS.findall(message):
            line.setdefault(key, value)
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return scrub(json.dumps(line))


def setup(level: str = "INFO", fmt: str = "text") -> None:
    """Log to stderr at ``level``, as text lines or (``fmt="json"``) JSON lines."""
    # FORMAT names no source line, thread or process: not collecting them saves a stack
    # walk and three lookups per line (the logging HOWTO's "Optimization"), a tenth of the
    # dispatcher's CPU while it assigns at full speed.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else ScrubbingFormatter(FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
