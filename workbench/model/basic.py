"""Linear and Embedding layers that are LoggingModules, so every model module can be traced alike."""

from __future__ import annotations

from torch import nn

from ..trace import LoggingModule


class Linear(LoggingModule, nn.Linear):
    """``nn.Linear`` with the LoggingModule base (no behaviour change)."""


class Embedding(LoggingModule, nn.Embedding):
    """``nn.Embedding`` with the LoggingModule base (no behaviour change)."""


class Dropout(LoggingModule, nn.Dropout):
    """``nn.Dropout`` with the LoggingModule base; only built when dropout > 0."""


class Identity(LoggingModule, nn.Identity):
    """Stands in for dropout when it is off, so a disabled dropout costs no kernel call."""


def dropout(p: float) -> nn.Module:
    return Dropout(p) if p > 0 else Identity()
