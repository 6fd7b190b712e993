"""The in-process Redis of the embedded cluster (``memory://``): a fakeredis server whose
BLMOVE blocks.

fakeredis (2.41 and before) answers BLMOVE on a missing source list at once, with nil,
instead of blocking: its signature gives a missing key a default reply. A worker's inbox
is a missing list whenever it is empty, so every idle slot of the embedded worker sent
BLMOVE in a loop, and an idle embedded cluster kept about half a core busy for as long as
its process lived (a script that ran one flow and went on with other work; every test
after the first to use it). BLMOVE is registered here again the way fakeredis's own
BRPOPLPUSH is written: each pass reads both lists afresh, and an empty source blocks until
a push wakes it or the timeout passes.

fakeredis keeps no stable API for a command of one's own: should its internals move, the
server is still made, with fakeredis's BLMOVE, and one warning says what that costs.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

import fakeredis

log = logging.getLogger("balancer")

_lock = threading.Lock()
_blmove_fixed: bool | None = None  # None: not tried yet


def new_server() -> fakeredis.FakeServer:
    """A fresh in-process server; the first call mends BLMOVE for the whole process."""
    global _blmove_fixed
    with _lock:
        if _blmove_fixed is None:
            _blmove_fixed = _register_blocking_blmove()
    return fakeredis.FakeServer()


def _register_blocking_blmove() -> bool:
    try:
        from fakeredis import _msgs as msgs
        from fakeredis._command_args_parsing import Timeout
        from fakeredis._commands import command
        from fakeredis._core import CommandItem
        from fakeredis._helpers import SimpleError, casematch
        from fakeredis.commands_mixins.list_mixin import ListCommandsMixin
    except ImportError as exc:
        return _cannot(exc)

    def end(where: bytes) -> bool:
        """True for LEFT."""
        if casematch(where, b"left"):
            return True
        if casematch(where, b"right"):
            return False
        raise SimpleError(msgs.SYNTAX_ERROR_MSG)

    def blmove_pass(self: Any, source: bytes, destination: bytes, from_left: bool,
                    to_left: bool, first_pass: bool) -> Any:
        src = CommandItem(source, self._db, item=self._db.get(source), default=[])
        if not isinstance(src.value, list):
            if first_pass:
                raise SimpleError(msgs.WRONGTYPE_MSG)
            return None
        if not src.value:
            return None
        dst = src if destination == source else CommandItem(
            destination, self._db, item=self._db.get(destination), default=[])
        if not isinstance(dst.value, list):
            raise SimpleError(msgs.WRONGTYPE_MSG)
        element = src.value.pop(0 if from_left else -1)
        if to_left:
            dst.value.insert(0, element)
        else:
            dst.value.append(element)
        src.updated()
        src.writeback()
        if dst is not src:
            dst.updated()
            dst.writeback()
        return element

    def blmove(self: Any, source: bytes, destination: bytes, wherefrom: bytes,
               whereto: bytes, timeout: float) -> Any:
        return self._blocking(timeout, functools.partial(
            blmove_pass, self, source, destination, end(wherefrom), end(whereto)))

    try:
        blmove.__name__ = "blmove"
        registered = command(name="BLMOVE", fixed=(bytes, bytes, bytes, bytes, Timeout))(blmove)
        ListCommandsMixin.blmove = registered  # type: ignore[method-assign]
    except (AttributeError, TypeError) as exc:
        return _cannot(exc)
    return True


def _cannot(exc: Exception) -> bool:
    log.warning("embedded cluster: cannot make fakeredis's BLMOVE block (%s): idle embedded"
                " workers poll it and keep a core busy", exc)
    return False
