"""Starting child processes: ones that end with their parent, and from inside hosts that replace
``sys.stderr`` (such as a Textual app).

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


def set_parent_death_signal(signum: int) -> bool:
    """Ask the kernel to send ``signum`` to this process when its parent dies (Linux
    ``PR_SET_PDEATHSIG``; killed even with SIGKILL, the parent then leaves no orphan). Call it
    in the child (a ``preexec_fn``, or first thing in a spawned process). False where the
    platform has no such call: the caller keeps its own watch."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(1, signum) == 0  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def ends_with_parent(signum: int):
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``signum`` when this process
    dies (SIGTERM lets a `workbench train` child stop with a checkpoint)."""
    def preexec() -> None:
        set_parent_death_signal(signum)

    return preexec
