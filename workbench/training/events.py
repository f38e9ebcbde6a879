"""What a training run tells its readers: one frozen dataclass per kind of event.

The trainer (``training.trainer``) and the follower of a torchrun child run
(``training.follower``) produce them; ``workbench train``, the Train pane and the notices
(``training.notices``) read them with ``match``/``isinstance``, never by a kind string. Metrics
rows (``Logged``, ``Evaluated``) keep the dict that is appended to ``metrics.jsonl``, because a
row's keys are the metrics file's format, not a Python API. No torch here: the pane reads events
on the UI thread.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True, kw_only=True)
class TrainEvent:
    """The base: ``step`` is the optimizer step the run had reached (0 when not known)."""

    step: int = 0


@dataclass(frozen=True, kw_only=True)
class Started(TrainEvent):
    """The run is set up: its size, device, processes, and the precision and attention kernel
    with why each was chosen. A run followed from its folder may lack some of them."""

    run: str | None = None
    params: int = 0
    device: str | None = None
    world: int = 1
    resumed_from: str | None = None
    tokens_per_step: int | None = None
    data: str | None = None
    precision: str | None = None
    precision_reason: str | None = None
    attention: str | None = None
    attention_reason: str | None = None

    @classmethod
    def from_facts(cls, step: int = 0, **facts: Any) -> "Started":
        """From a status file's facts, keeping the ones this event has (others are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(step=step, **{k: v for k, v in facts.items() if k in names and v is not None})


@dataclass(frozen=True, kw_only=True)
class Stepped(TrainEvent):
    """One optimizer step done (every step; readers keep the last, they do not list them)."""

    loss: float
    lr: float
    tokens: int
    grad_norm: float
    elapsed: float


@dataclass(frozen=True, kw_only=True)
class Logged(TrainEvent):
    """A train row of ``metrics.jsonl`` (loss over the log window, tok/s, lr, progress ...)."""

    row: dict


@dataclass(frozen=True, kw_only=True)
class Evaluated(TrainEvent):
    """An eval row of ``metrics.jsonl`` (val_loss, val_ppl, bpb, top-1/top-5 ...)."""

    row: dict


@dataclass(frozen=True, kw_only=True)
class HealthLogged(TrainEvent):
    """A row of ``health.jsonl``: per-layer lists of gradient norm, update/weight, activation RMS
    and attention entropy at one step (``training.health``)."""

    row: dict


@dataclass(frozen=True, kw_only=True)
class Sampled(TrainEvent):
    texts: list = field(default_factory=list)
    precision: str | None = None


@dataclass(frozen=True, kw_only=True)
class CheckpointSaved(TrainEvent):
    name: str


@dataclass(frozen=True, kw_only=True)
class Paused(TrainEvent):
    """Every process of the run has paused between steps."""


@dataclass(frozen=True, kw_only=True)
class Resumed(TrainEvent):
    """The run goes on after a pause."""


@dataclass(frozen=True, kw_only=True)
class Notice(TrainEvent):
    """A line for the user (a measurement that takes a while, a feature not available here)."""

    text: str


@dataclass(frozen=True, kw_only=True)
class Finished(TrainEvent):
    """The run ended without an error: ``state`` is finished (its budget spent) or stopped."""

    state: str = "finished"
    run: str | None = None
    checkpoint: str | None = None
    summary: dict = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Failed(TrainEvent):
    message: str


class EventBuffer:
    """Thread-safe queue of events that a UI drains on a timer (bounded: old events drop)."""

    def __init__(self, maxlen: int = 20000):
        self._q: collections.deque = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def put(self, ev: TrainEvent) -> None:
        with self._lock:
            self._q.append(ev)

    def drain(self) -> list[TrainEvent]:
        with self._lock:
            out = list(self._q)
            self._q.clear()
        return out
