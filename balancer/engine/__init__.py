"""Where Prefect 1 code finds its signals: ``from balancer.engine import signals``."""
