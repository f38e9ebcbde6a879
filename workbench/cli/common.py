"""Helpers shared by the CLI command modules: JSON output and a one-line progress display."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any


def _plain_every() -> float:
    try:
        return max(0.0, float(os.environ.get(PLAIN_EVERY_ENV, "30")))
    except ValueError:
        return 30.0


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def say_note(text: str) -> None:
    """What a verb says beside its result (a fall-back it made), on stderr."""
    print(f"note: {text}", file=sys.stderr, flush=True)


def add_command(sub, name: str, help: str, func, *positionals: str):
    """A subcommand that takes ``positionals`` and ``--json`` and runs ``func(args, ws)``."""
    p = sub.add_parser(name, help=help)
    for a in positionals:
        p.add_argument(a)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=func)
    return p


def listed(infos: list, as_json: bool, nothing: str) -> bool:
    """For a ``list`` command: print ``infos`` as JSON or say there are none (True: done), else
    False and the caller prints its table."""
    if as_json:
        print_json([i.to_dict() for i in infos])
        return True
    if not infos:
        print(nothing)
        return True
    return False


def fmt_seconds(s: float | None) -> str:
    if s is None or s != s or s == float("inf"):
        return "--:--"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


QUIET_ENV = "WORKBENCH_QUIET"  # set (to anything but 0) by `workbench --quiet`: no progress at all
PLAIN_EVERY_ENV = "WORKBENCH_PROGRESS_EVERY"  # seconds between plain progress lines (default 30)


class ProgressLine:
    """Progress on stderr: on a terminal one self-rewriting line (redrawn at most ~10 times a
    second, so progress never slows the work); anywhere else (a log, a pipe, `nohup`, CI) one
    plain line when the work starts, then every 30 seconds (``$WORKBENCH_PROGRESS_EVERY``) or
    each tenth of it, whichever comes first, which a log can follow.

    ``update(done, total, text)`` shows a percentage and ETA when ``total`` is known.
    """

    def __init__(self, label: str, stream=None, min_interval: float = 0.1):
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.monotonic()
        self.last = 0.0
        self.min_interval = min_interval
        self.width = 0
        self.plain_every = _plain_every()
        self.quiet = os.environ.get(QUIET_ENV, "0") not in ("", "0")
        self.next_tenth = 0.0  # off a terminal: the share of the work at which the next line is due
        self.plain_at: float | None = None

    def update(self, done: float | None = None, total: float | None = None, text: str = "", force=False) -> None:
        if self.quiet:
            return
        now = time.monotonic()
        if not self.tty:
            self._plain(now, done, total, text)
            return
        if not force and now - self.last < self.min_interval:
            return
        self.last = now
        self._draw(self._line(now, done, total, text))

    def _plain(self, now: float, done, total, text: str) -> None:
        frac = min(max(done / total, 0.0), 1.0) if done is not None and total else None
        due = (self.plain_at is None or now - self.plain_at >= self.plain_every
               or (frac is not None and frac >= self.next_tenth))
        if not due:
            return
        self.plain_at = now
        if frac is not None:
            self.next_tenth = (int(frac * 10 + 1e-9) + 1) / 10
        print(self._line(now, done, total, text), file=self.stream, flush=True)

    def _line(self, now: float, done, total, text: str) -> str:
        elapsed = now - self.start
        parts = [self.label]
        if done is not None and total:
            frac = min(max(done / total, 0.0), 1.0)
            eta = elapsed * (1 - frac) / frac if frac > 0 else None
            parts.append(f"{frac * 100:5.1f}%")
            parts.append(f"ETA {fmt_seconds(eta)}")
        parts.append(f"elapsed {fmt_seconds(elapsed)}")
        if text:
            parts.append(text)
        return "  ".join(parts)

    def _draw(self, line: str) -> None:
        pad = max(0, self.width - len(line))
        self.width = len(line)
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
