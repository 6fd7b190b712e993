"""``balancer dashboard``: a live web view of the cluster, its actions, and /metrics."""
