"""Text from outside shown on a terminal or in a log: control characters escaped."""

from __future__ import annotations

import logging

from balancer.common.logs import ScrubbingFormatter
from balancer.common.printable import lines, one_line


def test_escape_sequences_newlines_and_bidi_controls_are_shown_escaped() -> None:
    said = "\x1b]52;c;ZXZpbA==\x07ok\r\nforged\u202eevil\x9b"
    assert one_line(said) == "\\x1b]52;c;ZXZpbA==\\x07ok\\x0d\\x0aforged\\u202eevil\\x9b"
    assert lines("a\tb\nc\x1b[2J") == "a\tb\nc\\x1b[2J"
    plain = "task=1a2b name=étape failed: ValueError: 3 < 4"
    assert one_line(plain) is plain and lines(plain) is plain  # nothing to do: the same


def test_a_log_line_keeps_its_message_on_one_line_and_its_traceback_whole() -> None:
    formatter = ScrubbingFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord("worker", logging.WARNING, __file__, 1,
                               "task=%s failed: %s", ("t1", "boom\nINFO forged line\x1b[31m"),
                               None)
    assert formatter.format(record) == (
        "WARNING task=t1 failed: boom\\x0aINFO forged line\\x1b[31m")
    try:
        raise ValueError("inside")
    except ValueError:
        import sys
        record.exc_info = sys.exc_info()
    shown = formatter.format(record)
    assert shown.startswith("WARNING task=t1 failed: boom\\x0aINFO")
    assert "\nTraceback (most recent call last):\n" in shown  # the traceback's own lines
