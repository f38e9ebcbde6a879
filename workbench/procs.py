"""Starting child processes from inside hosts that replace ``sys.stderr`` (such as a Textual app).

Textual replaces ``sys.stderr`` with an object whose ``fileno()`` is -1; multiprocessing's
resource tracker passes ``sys.stderr.fileno()`` to its own child, and the spawn then fails
with "bad value(s) in fds_to_keep". Start the tracker with the real stderr, on the UI thread,
before the first child process.
"""

from __future__ import annotations

import sys


def ensure_resource_tracker() -> None:
    """Idempotent; call before starting a spawn-context process."""
    from multiprocessing import resource_tracker

    saved = sys.stderr
    try:
        if sys.__stderr__ is not None and _fileno(saved) < 0:
            sys.stderr = sys.__stderr__
        resource_tracker.ensure_running()
    finally:
        sys.stderr = saved


def _fileno(stream) -> int:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return -1
