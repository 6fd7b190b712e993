"""balancer/flowtimeout.py: a block past its limit is stopped and raises
FlowRunTimeoutError, in the main thread by a timer's signal (which interrupts a sleep),
elsewhere by an exception raised in its thread; nothing lands once the block ended."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from balancer import FlowRunTimeoutError
from balancer.flowtimeout import limit
from tests.conftest import ROOT


def test_in_a_main_thread_a_sleep_is_interrupted_and_the_old_alarm_handler_restored() -> None:
    """In a process of its own: pytest arms a timer of its own in this one."""
    code = textwrap.dedent("""
        import signal, time
        from balancer.flowtimeout import FlowRunTimeoutError, limit
        def mine(signum, frame): pass
        signal.signal(signal.SIGALRM, mine)
        try:
            with limit(0.2, "flow 'sleeps'"):
                time.sleep(600)
        except FlowRunTimeoutError as exc:
            print("raised:", exc)
        print("restored:", signal.getsignal(signal.SIGALRM) is mine,
              signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0))
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.splitlines() == [
        "raised: flow 'sleeps' exceeded its timeout of 0.2 second(s)",
        "restored: True True"], done.stderr


def test_a_block_that_caught_what_landed_still_raises_the_timeout() -> None:
    with pytest.raises(FlowRunTimeoutError), limit(0.1, "flow 'stubborn'"):
        for _ in range(2000):
            try:
                time.sleep(0.001)
            except BaseException:  # swallowing it is the point
                break


def test_a_block_within_its_limit_or_with_none_raises_nothing_then_or_later() -> None:
    with limit(0.2, "flow 'quick'"):
        pass
    with limit(None, "flow 'unlimited'"):
        time.sleep(0.01)
    time.sleep(0.4)  # the timer was cancelled: nothing lands here
