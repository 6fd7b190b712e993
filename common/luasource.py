"""A Lua script's source as Redis runs it: its own file behind the prelude helpers it uses.

Every EVALSHA runs its whole chunk, prelude included, so each helper defined costs every
call: behind the whole prelude, a bare ``return 1`` took 6.9 us of Redis's one thread
instead of 2.8 us (measured on this kind of machine). A script gets only the top-level
definitions of ``_prelude.lua`` it names, directly or through the helpers it names, in the
prelude's order (a definition only uses those above it). A name is looked for as a whole
word anywhere in the text, comments included: a helper included for nothing costs a few
microseconds, one left out would fail the script at run time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

_DEFINITION = re.compile(r"^local (?:function )?(\w+)")


@dataclass(frozen=True)
class Definition:
    """One top-level ``local`` of the prelude, with the comment lines just above it."""

    name: str
    text: str


@cache
def lua(name: str) -> str:
    """The text of ``common/lua/<name>.lua``."""
    return (resources.files("balancer.common") / "lua" / f"{name}.lua").read_text()


@cache
def definitions() -> tuple[Definition, ...]:
    """The prelude's top-level definitions, in order. A definition runs from the comment
    block right above its ``local`` line to the next definition's comment block."""
    lines = lua("_prelude").splitlines(keepends=True)
    starts: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        match = _DEFINITION.match(line)
        if match:
            first = i
            while first > 0 and lines[first - 1].startswith("--"):
                first -= 1
            starts.append((first, match.group(1)))
    return tuple(Definition(name, "".join(lines[at:starts[n + 1][0] if n + 1 < len(starts)
                                                  else len(lines)]))
                 for n, (at, name) in enumerate(starts))


def used(text: str) -> list[Definition]:
    """The prelude definitions ``text`` reaches, in the prelude's order."""
    reached: set[str] = set()
    todo = [text]
    while todo:
        chunk = todo.pop()
        for d in definitions():
            if d.name not in reached and re.search(rf"\b{d.name}\b", chunk):
                reached.add(d.name)
                todo.append(d.text)
    return [d for d in definitions() if d.name in reached]


@cache
def source(name: str) -> str:
    """Script ``name`` as it is sent to Redis."""
    body = lua(name)
    return "".join(d.text for d in used(body)) + "\n" + body
