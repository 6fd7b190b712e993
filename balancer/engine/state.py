"""Prefect 1's ``prefect.engine.state`` states that ENDRUN takes: Success, Failed, Skipped."""

from balancer.common.runsignals import Failed, Skipped, State, Success

__all__ = ["Failed", "Skipped", "State", "Success"]
