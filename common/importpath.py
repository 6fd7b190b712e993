"""How a task is named (``module:qualname``) and found again in a worker.

A function defined in a script run as ``python examples/etl.py`` lives in ``__main__``,
which means nothing to a worker. It is named after the script instead: ``examples.etl``
when the script sits under the current folder (workers started from the project folder
import it), or the script's absolute path otherwise (workers load the file).

A worker runs only what its operator allowed (``TaskPolicy``): a ``@task`` object, found
in a module given by ``--import``, under an allowed package, or in an allowed folder (by
default the folder the worker runs in). A task record names its function, and anyone who
can write to Redis can write a task record: without this, ``os:system`` or
``builtins:exec`` would run on every worker. The module is checked before it is imported
(importing is running code), the object after.
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
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from balancer.common import statehandlers

_state = threading.local()
# Slots of a thread pool may import the same module at once; importing under one lock
# keeps any of them from seeing a half-initialised module.
_import_lock = threading.RLock()
_resolved: dict[str, Callable[..., Any]] = {}
# Paths of the tasks loaded that log what they print (Prefect 1's log_stdout=True).
_logs_stdout: set[str] = set()
# The tasks loaded that have state handlers (common/statehandlers.py) or a retry
# condition, by path: the @task, or the task class, with its handlers.
_handled: dict[str, tuple[Any, list[Any]]] = {}
# Tasks (by path, loaded) with a task_run_name: its template or function.
_run_names: dict[str, Any] = {}
# Tasks (by path, loaded) whose cache policy has key functions: the @task.
_keyed: dict[str, Any] = {}


# Set by ``@task`` on the objects it makes: only they may run on a worker.
TASK_MARKER = "__balancer_task__"
# Modules of tasks the product itself defines, which every worker may import: Prefect 1's
# control flow (case, merge, ifelse) adds their tasks to users' flows.
BUILTIN_TASK_MODULES = frozenset({"balancer.control_flow"})
# The keyword under which a task class's constructor arguments travel with its call.
INIT_KEYWORD = "__balancer_init__"
# The keyword under which a task copy's run name template travels with its call
# (``with_options(task_run_name=...)``: balancer/runnames.py).
RUN_NAME_KEYWORD = "__balancer_run_name__"
# Folders under which a module is installed, never the project's own.
_INSTALLED = frozenset({"site-packages", "dist-packages"})


class TaskNotFound(LookupError):
    """The task's import path does not lead to a callable."""


class TaskNotAllowed(LookupError):
    """The task record names something this worker may not run: not a ``@task``, or in a
    module its operator did not allow. Never retried: another try cannot succeed."""


@dataclass(frozen=True)
class TaskPolicy:
    """Which modules a worker may import tasks from.

    ``modules``: exact module names (``--import``); ``packages``: a package and all under
    it (``--allow``); ``folders``: top-level modules and packages sitting directly in one
    of these folders, and script files anywhere under them (outside installed packages
    and hidden folders such as a project's ``.venv``)."""

    modules: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    folders: tuple[str, ...] = ()

    @classmethod
    def of(cls, imports: tuple[str, ...] | list[str] = (), allow: tuple[str, ...] | list[str]
           = (), folder: str | None = None) -> TaskPolicy:
        """The policy of a worker: its ``--import`` modules, its ``--allow`` entries (a
        package name, or a folder when it holds a path separator) and its own folder."""
        folders = [str(Path(folder or os.getcwd()).resolve())]
        packages = []
        for entry in allow:
            if os.sep in entry or entry.startswith("."):
                folders.append(str(Path(entry).resolve()))
            else:
                packages.append(entry)
        return cls(tuple(imports), tuple(packages), tuple(dict.fromkeys(folders)))

    def refusal(self, module: str) -> str | None:
        """None when ``module`` (a dotted name or a script path) may be imported, else
        why not, in a phrase."""
        if module.endswith(".py") or os.sep in module:
            return None if self._holds_file(Path(module)) else (
                f"the script {module} is outside the allowed folders")
        if module in self.modules or module in BUILTIN_TASK_MODULES or any(
                module == p or module.startswith(p + ".") for p in self.packages):
            return None
        top = module.partition(".")[0]
        try:
            spec = importlib.util.find_spec(top)  # finds, without running anything
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            return None  # not found anywhere: importing it fails as TaskNotFound
        places = list(spec.submodule_search_locations or [])
        if not places and spec.origin and spec.has_location:
            places = [spec.origin]
        if any(str(Path(p).resolve().parent) in self.folders for p in places):
            return None
        return f"module {module!r} is not in the worker's folder nor an allowed package"

    def _holds_file(self, path: Path) -> bool:
        path = path.resolve()
        for folder in self.folders:
            try:
                parts = path.relative_to(folder).parts
            except ValueError:
                continue
            if not any(p in _INSTALLED or p.startswith(".") for p in parts[:-1]):
                return True
        return False


_policy: TaskPolicy | None = None


def set_policy(policy: TaskPolicy) -> None:
    """What this process may import to run tasks (a worker sets it once at start)."""
    global _policy
    _policy = policy
    _resolved.clear()


def policy() -> TaskPolicy:
    """This process's policy; by default its own folder and nothing else."""
    return _policy if _policy is not None else TaskPolicy.of()


HOW_TO_ALLOW = ("a worker runs @task functions of its own folder, of modules given by"
                " --import, and of packages or folders given by --allow (or"
                " BALANCER_ALLOWED_TASKS)")


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


def logs_stdout(path: str) -> bool:
    """Whether the task at ``path`` (loaded) asked for its prints to go to its logger
    (Prefect 1's ``log_stdout=True``: common/taskstdout.py)."""
    return path in _logs_stdout


def run_name(path: str) -> Any:
    """The ``task_run_name`` of the task at ``path`` (loaded), or None."""
    return _run_names.get(path)


def keyed_task(path: str) -> Any:
    """The task at ``path`` (loaded) if its cache policy has key functions of its own
    (balancer/cache_policies.py), else None."""
    return _keyed.get(path)


def handled(path: str) -> tuple[Any, list[Any]] | None:
    """The task at ``path`` (loaded) and its state handlers, if it has any."""
    return _handled.get(path)


def load(path: str) -> Callable[..., Any]:
    """The plain function behind ``module:qualname`` (unwrapping a ``@task``)."""
    fn = _resolved.get(path)
    if fn is None:
        with _import_lock:
            fn = _resolved[path] = _resolve(path)
    return fn


def _run_class(cls: type, *args: Any, **kwargs: Any) -> Any:
    """Build a task class with the constructor arguments that came with the call (under
    INIT_KEYWORD), and run it."""
    init = kwargs.pop(INIT_KEYWORD, None) or [[], {}]
    try:
        init_args, init_kwargs = init
        instance = cls(*init_args, **init_kwargs)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"task class {cls.__qualname__} could not be built on the worker"
                        f" with the arguments it was given: {exc}") from exc
    return instance.run(*args, **kwargs)


def _resolve(path: str) -> Callable[..., Any]:
    module, sep, qualname = path.partition(":")
    if not sep or not module or not qualname:
        raise TaskNotFound(f"task path {path!r} is not of the form 'module:qualname'")
    why = policy().refusal(module)
    if why is not None:
        raise TaskNotAllowed(f"task {path!r} may not run on this worker: {why} ({HOW_TO_ALLOW})")
    try:
        obj: Any = _import(module)
    except TaskNotFound:
        raise
    except (Exception, SystemExit) as exc:  # SystemExit: a module parsing sys.argv (argparse)
        raise TaskNotFound(
            f"cannot import module {module!r} of task {path!r}: {type(exc).__name__}: {exc}"
            f" (the worker's sys.path starts with {sys.path[:3]})"
        ) from exc
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TaskNotFound(f"module {module!r} has no {qualname!r} (task {path!r})") from None
    if getattr(obj, TASK_MARKER, False) is not True:
        raise TaskNotAllowed(f"{path!r} is not a @task: a worker runs only functions"
                             " decorated with @task")
    if getattr(obj, "log_stdout", False) is True:  # a @task's, or a task class's own
        _logs_stdout.add(path)
    if getattr(obj, "task_run_name", None) is not None:  # a @task's (balancer/runnames.py)
        _run_names[path] = obj.task_run_name
    if getattr(getattr(obj, "cache_policy", None), "key_fns", ()):  # worker/cachekeys.py
        _keyed[path] = obj
    handlers = statehandlers.of(obj)
    if handlers or getattr(obj, "retry_condition_fn", None) is not None:
        _handled[path] = (obj, handlers)
    if isinstance(obj, type):  # a task class (balancer.Task subclass): built, then run
        return functools.partial(_run_class, obj)
    fn: Callable[..., Any] = obj.fn  # a @task wraps the function it runs
    if not callable(fn):
        raise TaskNotFound(f"task {path!r} is not callable")
    return fn
