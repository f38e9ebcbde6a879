"""The base of every model module: ``LoggingModule``, and the torch layers made LoggingModules.

Inside a module, ``self.log(name, tensor)`` records a named intermediate (attention's q, k, v,
scores, probs) while a trace is active (``workbench.tracing.tracer`` sets ``_tracer`` on each
module for the duration of one traced forward). Outside a trace it is one attribute test and a
return, so it costs nothing and never leaks into another model or thread. This lives with the
model, not with the tracer, so the model package imports nothing above it.
"""

from __future__ import annotations

from torch import nn

from typing import Optional

import torch


class LoggingModule(nn.Module):
    """Base of every model module: ``self.log`` records a named tensor while a trace is active."""

    _tracer = None  # a tracing.tracer._Tracer, set on instances only for the duration of a trace

    def log(self, name: str, tensor: torch.Tensor, where: Optional[torch.Tensor] = None) -> None:
        """Record ``tensor`` as ``name``; ``where`` (broadcastable bool) limits the stats."""
        tracer = self._tracer
        if tracer is not None:
            tracer.record_log(self, name, tensor, where)


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
