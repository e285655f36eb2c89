"""The stage workers: the consumer-group runner, normalize, execute."""

from consumers.execute import ExecuteStage
from consumers.normalize import NormalizeStage
from consumers.runner import RetryLater, Runner, Stage

__all__ = ["ExecuteStage", "NormalizeStage", "RetryLater", "Runner", "Stage"]
