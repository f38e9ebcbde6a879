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


def _prctl():
    """libc's ``prctl``, or None where there is none (not Linux)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


PR_SET_PDEATHSIG = 1


def set_parent_death_signal(signum: int) -> bool:
    """Ask the kernel to send ``signum`` to this process when its parent dies (Linux
    ``PR_SET_PDEATHSIG``; killed even with SIGKILL, the parent then leaves no orphan). Call it
    in the child, first thing in a spawned process. False where the platform has no such call:
    the caller keeps its own watch."""
    prctl = _prctl()
    return prctl is not None and prctl(PR_SET_PDEATHSIG, signum) == 0


def ends_with_parent(signum: int):
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``signum`` when this process
    dies (SIGTERM lets a `workbench train` child stop with a checkpoint). The C function is
    looked up here, in the parent: between fork and exec the child only calls it (an import
    there could wait forever on a lock another thread of the parent held at the fork)."""
    prctl = _prctl()

    def preexec() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signum)

    return preexec
