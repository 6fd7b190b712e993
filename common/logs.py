"""One logging format for every process: time, level, component, then the event with ids."""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup(level: str = "INFO") -> None:
    logging.basicConfig(level=level.upper(), format=FORMAT)
