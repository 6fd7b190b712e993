"""How a process pool starts its children: several forked from one forkserver that has
imported their code; a single one spawned."""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import subprocess
import sys

import pytest
from balancer.worker.childwatch import PRELOAD, pool_context


@pytest.mark.skipif("forkserver" not in multiprocessing.get_all_start_methods(),
                    reason="no forkserver on this platform")
def test_several_children_come_from_a_forkserver_that_imported_the_child_code() -> None:
    assert pool_context(1).get_start_method() == "spawn"
    ctx = pool_context(4)
    assert ctx.get_start_method() == "forkserver"
    # multiprocessing's one forkserver per process, as set_forkserver_preload set it
    assert multiprocessing.forkserver._forkserver._preload_modules == [PRELOAD]


def test_the_forkserver_preload_ignores_sigterm_and_freezes_what_it_imported() -> None:
    """Imported in a process of its own, as the forkserver imports it."""
    out = subprocess.run(
        [sys.executable, "-c", "import gc, signal, sys, balancer.worker.preload;"
         " print(signal.getsignal(signal.SIGTERM) == signal.SIG_IGN,"
         " gc.get_freeze_count() > 1000, 'balancer.worker.child' in sys.modules)"],
        capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["True", "True", "True"]
