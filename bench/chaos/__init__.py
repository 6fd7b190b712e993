"""Chaos runs: ``driver`` kills the cluster's processes while flows run and checks what
came out; ``tasks`` holds the tasks its workers run."""
