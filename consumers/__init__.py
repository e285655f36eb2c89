"""The stage workers: the consumer-group runner, normalize, execute."""

from patchlog.consumers.execute import ExecuteStage
from patchlog.consumers.normalize import NormalizeStage
from patchlog.consumers.runner import Runner, Stage

__all__ = ["ExecuteStage", "NormalizeStage", "Runner", "Stage"]
