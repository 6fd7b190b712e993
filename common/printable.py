"""Text from outside, made safe to show on a terminal or in a log line.

Whoever submits a flow or writes to Redis chooses some of what `balancer status`, `flow`,
`flows`, `dlq` and `schedule ls` print and what every process logs: a flow's or task's
name, a task's error and traceback, a worker's host and release. A control character in
them would be read by the operator's terminal (an ANSI escape sequence: colours, the
window's title, the clipboard through OSC 52), or forge log lines (a newline, then a
made-up line). Here each such character is shown as its escape (``\\x1b``, ``\\n``), as
`balancer events` already did, and so are Unicode's bidirectional controls, which reorder
what a line seems to say.
"""

from __future__ import annotations

import re

_CONTROLS = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0),  # C0, DEL, C1
             0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]  # bidi
_ANY = re.compile("[" + "".join(re.escape(chr(c)) for c in _CONTROLS) + "]")
_KEPT = (ord("\n"), ord("\t"))  # the lines of a table or a traceback


def _escape(code: int) -> str:
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_ONE_LINE = {c: _escape(c) for c in _CONTROLS}
_LINES = {c: e for c, e in _ONE_LINE.items() if c not in _KEPT}


def one_line(text: str) -> str:
    """``text`` on one line, every control character escaped (a log line's message)."""
    return text.translate(_ONE_LINE) if _ANY.search(text) else text


def lines(text: str) -> str:
    """``text`` with its line breaks and tabs kept, every other control character escaped
    (what a command prints)."""
    return text.translate(_LINES) if _ANY.search(text) else text
