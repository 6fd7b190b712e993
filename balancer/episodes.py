"""Runs of failed dispatcher steps, logged when they start, change cause and end: never at
every failure, which would flood the log at each backoff."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from balancer.common.retry import error_code, error_message, is_outage

log = logging.getLogger("balancer.dispatcher")

# Steps without a failure for this long end an episode of failed steps: failures that come
# and go within it (a step that needs no write succeeds while Redis refuses writes) are one
# episode, logged once.
EPISODE_QUIET = 5.0


@dataclass
class Episode:
    """A run of failed steps."""

    cause: str
    outage: bool  # Redis could not serve (the rest: unexpected errors)
    started: float
    last: float
    failures: int = 1


class Episodes:
    def __init__(self, who: str) -> None:
        self.who = who  # "dispatcher=<id>", for the log
        self.current: Episode | None = None

    def failed(self, exc: Exception, now: float) -> None:
        """A step failed: count it in the episode, logged once per episode and cause."""
        outage = is_outage(exc)
        cause = (("unreachable" if not isinstance(exc, redis.ResponseError)
                  else error_code(exc)) if outage else type(exc).__name__)
        episode = self.current
        if episode is None:
            episode = self.current = Episode(cause, outage, now, now, 0)
        episode.failures += 1
        episode.last = now
        if episode.failures > 1 and episode.cause == cause:
            log.debug("%s: step failed again (%s: %s)", self.who, cause, exc)
            return
        episode.cause, episode.outage = cause, episode.outage and outage
        if isinstance(exc, redis.ResponseError) and outage:
            log.warning("%s: Redis refuses commands (%s %s); retrying with backoff",
                        self.who, cause, error_message(exc))
        elif outage:
            log.warning("%s lost Redis (%s); retrying with backoff", self.who, exc)
        else:
            log.exception("%s: unexpected error; retrying with backoff", self.who)

    def succeeded(self, now: float) -> None:
        """A step succeeded: the episode ends once none failed for EPISODE_QUIET."""
        episode = self.current
        if episode is None or now - episode.last <= EPISODE_QUIET:
            return
        self.current = None
        what = "Redis serves again" if episode.outage else "steps succeed again"
        log.info("%s: %s, after %d failed steps over %.1fs", self.who, what,
                 episode.failures, episode.last - episode.started)
