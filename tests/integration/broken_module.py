"""A task module whose import fails: workers must report it on the task, not crash."""

raise RuntimeError("this module is broken at import time")
