"""Measuring helpers for the benchmark suite: statistics, peak memory, the matmul peak, peers.

Nothing here imports torch at module level: the tokenizer task runs without it.
"""

from __future__ import annotations

import importlib
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

INSTALL_HINT = "pip install -e '.[bench]'"


def stat(xs: list[float]) -> dict[str, float]:
    """The median of the repetitions with their min and max (and how many there were)."""
    xs = [float(x) for x in xs]
    if not xs:
        raise ValueError("no measurements")
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def percentile(xs: list[float], p: float) -> float:
    """The p-th percentile, interpolating linearly between the nearest ranks (as numpy does)."""
    xs = sorted(xs)
    if not xs:
        return math.nan
    k = p / 100 * (len(xs) - 1)
    lo = math.floor(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


# --- peak resident memory ---------------------------------------------------------------------
#
# A task's own peak is its process's high-water mark. Where one process measures two sides
# (ours and a peer), Linux lets it reset the mark between them (``/proc/self/clear_refs``,
# value 5); elsewhere only the whole process's peak is known and per-side peaks are left out.

_CLEAR = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _maxrss_mb(who: int) -> float:
    r = resource.getrusage(who).ru_maxrss
    return r / 2**20 if sys.platform == "darwin" else r / 1024  # bytes on macOS, KiB elsewhere


def reset_peak() -> bool:
    """Reset this process's peak RSS to its current RSS; False where the OS cannot."""
    try:
        _CLEAR.write_text("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    """Peak RSS of this process since start or the last ``reset_peak``, in MB (2^20 bytes)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return _maxrss_mb(resource.RUSAGE_SELF)


def children_peak_mb() -> float:
    """The largest peak RSS of any finished child process of this one, in MB."""
    return _maxrss_mb(resource.RUSAGE_CHILDREN)


class PhasePeak:
    """Peak RSS of a stretch of work in this process: ``with PhasePeak() as p: ...; p.mb``.

    ``p.mb`` is None where the peak cannot be reset (then only the process peak is known).
    Memory the process already holds when the phase starts (imported modules, say) counts
    toward the phase's peak, as it would in a process doing only that work.
    """

    def __init__(self, include_children: bool = False):
        self.include_children = include_children
        self.mb: float | None = None

    def __enter__(self) -> "PhasePeak":
        import gc

        gc.collect()
        self._ok = reset_peak()
        return self

    def __exit__(self, *exc) -> None:
        if self._ok:
            self.mb = peak_mb()
            if self.include_children:
                self.mb = max(self.mb, children_peak_mb())


# --- the machine's matmul peak ----------------------------------------------------------------


def matmul_peak_gflops(dtype_name: str, n: int = 1024, seconds: float = 0.4) -> float:
    """Best sustained GFLOP/s of an n x n matmul in ``dtype_name`` on the CPU, over ~seconds."""
    import torch

    from workbench.machine.probe import best_matmul_seconds

    dtype = getattr(torch, dtype_name)
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    return 2 * n**3 / best_matmul_seconds(a, b, seconds, windows=5, max_reps=50) / 1e9


# --- peers ------------------------------------------------------------------------------------


class PeerMissing(Exception):
    """A peer library is not installed (or fails to import); the reason says which and why."""


def load_peer(module: str) -> Any:
    """Import a peer library, or raise PeerMissing naming it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise PeerMissing(f"{module} is not installed ({e}); {INSTALL_HINT}") from None


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def vm_hwm_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[int, float, float, str]:
    """Run a command to the end: (exit status, seconds, its peak RSS in MB, the tail of stderr).

    On Linux the peak is the child's own high-water mark (``VmHWM``), read every few ms while it
    runs: ``ru_maxrss`` from wait4 also counts the parent's memory at fork, so a parent that has
    trained a model would inflate every child it starts. Elsewhere ru_maxrss it is."""
    import subprocess
    import tempfile

    with tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env)
        hwm = None
        try:
            while True:
                pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                now = vm_hwm_mb(proc.pid)
                if now is not None:
                    hwm = max(hwm or 0.0, now)
                time.sleep(0.01)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        secs = time.perf_counter() - t
        err.seek(0)
        tail = err.read()[-2000:].decode("utf-8", "replace")
    peak = hwm if hwm is not None else ru.ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)
    return proc.returncode, secs, peak, tail
