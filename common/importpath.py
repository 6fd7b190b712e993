"""How a task is named (``module:qualname``) and found again in a worker.

A function defined in a script run as ``python examples/etl.py`` lives in ``__main__``,
which means nothing to a worker. It is named after the script instead: ``examples.etl``
when the script sits under the current folder (workers started from the project folder
import it), or the script's absolute path otherwise (workers load the file).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

_state = threading.local()
# Slots of a thread pool may import the same module at once; importing under one lock
# keeps any of them from seeing a half-initialised module.
_import_lock = threading.RLock()
_resolved: dict[str, Callable[..., Any]] = {}


class TaskNotFound(LookupError):
    """The task's import path does not lead to a callable."""


@contextmanager
def importing_tasks() -> Iterator[None]:
    """Marks that a worker imports task modules: a top-level ``flow.run()`` must not fire."""
    previous = getattr(_state, "importing", False)
    _state.importing = True
    try:
        yield
    finally:
        _state.importing = previous


def is_importing_tasks() -> bool:
    return bool(getattr(_state, "importing", False))


def _script_module_name(file: str) -> str:
    return _module_name_in(file, os.getcwd())


@functools.lru_cache(maxsize=64)
def _module_name_in(file: str, cwd: str) -> str:
    """Cached: every submit names its tasks, and resolving paths costs more than the rest
    of a one-task submit on the client."""
    path = Path(file).resolve()
    try:
        relative = path.relative_to(Path(cwd).resolve())
    except ValueError:
        return str(path)
    parts = relative.with_suffix("").parts
    if all(p.isidentifier() for p in parts):
        return ".".join(parts)
    return str(path)


def task_path(fn: Callable[..., Any]) -> str:
    module = fn.__module__
    if module == "__main__":
        main_file = getattr(sys.modules["__main__"], "__file__", None)
        if main_file is None:
            raise ValueError(
                f"task {fn.__qualname__!r} is defined in an interactive session; workers can only"
                " run tasks defined in a module or a script file"
            )
        module = _script_module_name(main_file)
    if "<locals>" in fn.__qualname__:
        raise ValueError(
            f"task {fn.__qualname__!r} is defined inside a function; define it at module level"
            " so that workers can import it"
        )
    return f"{module}:{fn.__qualname__}"


def _main_module_for(module: str) -> ModuleType | None:
    main = sys.modules.get("__main__")
    main_file = getattr(main, "__file__", None)
    if main_file and _script_module_name(main_file) == module:
        return main
    return None


def _import(module: str) -> ModuleType:
    main = _main_module_for(module)
    if main is not None:
        return main
    with importing_tasks():
        if module.endswith(".py") or os.sep in module:
            name = "balancer_script_" + Path(module).stem
            if name in sys.modules:
                return sys.modules[name]
            spec = importlib.util.spec_from_file_location(name, module)
            if spec is None or spec.loader is None:
                raise TaskNotFound(f"cannot load script {module}")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
            return mod
        return importlib.import_module(module)


def load(path: str) -> Callable[..., Any]:
    """The plain function behind ``module:qualname`` (unwrapping a ``@task``)."""
    fn = _resolved.get(path)
    if fn is None:
        with _import_lock:
            fn = _resolved[path] = _resolve(path)
    return fn


def _resolve(path: str) -> Callable[..., Any]:
    module, sep, qualname = path.partition(":")
    if not sep or not module or not qualname:
        raise TaskNotFound(f"task path {path!r} is not of the form 'module:qualname'")
    try:
        obj: Any = _import(module)
    except TaskNotFound:
        raise
    except Exception as exc:
        raise TaskNotFound(
            f"cannot import module {module!r} of task {path!r}: {type(exc).__name__}: {exc}"
            f" (the worker's sys.path starts with {sys.path[:3]})"
        ) from exc
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TaskNotFound(f"module {module!r} has no {qualname!r} (task {path!r})") from None
    fn = getattr(obj, "fn", obj)  # a @task wraps the function it runs
    if not callable(fn):
        raise TaskNotFound(f"task {path!r} is not callable")
    return fn  # type: ignore[no-any-return]
