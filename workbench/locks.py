"""Advisory locks: one process at a time trains a run or prepares a data folder.

A lock is a small JSON file (``lock.json`` in a run folder, ``.<name>.lock`` beside a data
folder) naming its holder: pid, the process's start time (so a recycled pid is not mistaken for
the holder), host, what it is doing and since when. It is created with ``O_EXCL``. A lock whose
holder is gone (no such pid, or a pid started at another time) is stale and is taken over. A lock
held on another host cannot be checked from here and counts as held. Everything that changes a
run or a data folder (train, resume, prepare, rename, delete, in the CLI and the app) takes or
checks the lock, and a refusal names who holds it.

Temporary files carry their writer's pid (``fileio.TMP_MARK`` + pid), so cleaning up after a
killed writer removes only the temps of processes that are gone (``owner_alive``).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

from workbench.errors import WorkbenchError

_HELD: set[str] = set()  # lock files this process holds (a second holder in-process is refused too)
_HELD_LOCK = threading.Lock()


class Locked(WorkbenchError):
    """Another process (or another job in this one) holds the lock."""


def _start_time(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:
        return None


def owner_alive(pid: int, started: float | None = None) -> bool:
    """Whether process ``pid`` runs (and, given ``started``, is the process that started then)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    t = _start_time(pid)
    if t is None:
        return False
    return started is None or abs(t - started) < 2.0


def holder(path: str | os.PathLike) -> dict | None:
    """Who holds the lock at ``path``; None when nobody does (or its holder is gone)."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        # half-written by a holder killed between create and write: stale only if old
        try:
            return None if time.time() - path.stat().st_mtime > 10 else {"pid": None, "what": "starting"}
        except OSError:
            return None
    if not isinstance(d, dict):
        return None
    if d.get("host") not in (None, socket.gethostname()):
        return d  # cannot check a process on another machine: it counts as held
    if d.get("pid") == os.getpid():
        with _HELD_LOCK:
            return d if str(path) in _HELD else None
    return d if owner_alive(d.get("pid"), d.get("started")) else None


def describe(h: dict) -> str:
    since = time.strftime("%H:%M:%S", time.localtime(h["since"])) if h.get("since") else "?"
    where = "" if h.get("host") in (None, socket.gethostname()) else f" on {h['host']}"
    who = "this app" if h.get("pid") == os.getpid() else f"process {h.get('pid')}{where}"
    return f"{who} ({h.get('what', '?')}, since {since})"


def remove_stale(folder: str | os.PathLike) -> None:
    """Remove the ``.<name>.lock`` files in ``folder`` whose holders are gone (killed ones)."""
    for p in Path(folder).glob(".*.lock"):
        if holder(p) is None:
            p.unlink(missing_ok=True)


class Lock:
    """A held lock; release it with ``release()`` or by leaving a ``with`` block."""

    def __init__(self, path: Path):
        self.path = path

    def release(self) -> None:
        with _HELD_LOCK:
            if str(self.path) not in _HELD:
                return
            _HELD.discard(str(self.path))
        try:
            d = json.loads(self.path.read_text(encoding="utf-8"))
            if d.get("pid") == os.getpid():
                self.path.unlink()
        except (OSError, ValueError):
            pass

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire(path: str | os.PathLike, what: str, subject: str) -> Lock:
    """Take the lock at ``path`` for ``what`` (e.g. "training"), or raise ``Locked`` saying who
    holds it; ``subject`` names the thing locked in that message (e.g. "run 'first'")."""
    path = Path(path)
    me = {"pid": os.getpid(), "started": _start_time(os.getpid()), "host": socket.gethostname(),
          "what": what, "since": time.time()}
    data = json.dumps(me).encode()
    for _ in range(3):
        with _HELD_LOCK:
            if str(path) in _HELD:
                raise Locked(f"{subject} is busy: this app is already {what} it")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            h = holder(path)
            if h is not None:
                raise Locked(f"{subject} is busy: {describe(h)} holds it; wait for it to finish "
                             "or stop it first") from None
            try:  # stale: its holder is gone
                path.unlink()
            except FileNotFoundError:
                pass
            continue
        except OSError as e:
            raise WorkbenchError(f"cannot lock {subject} ({path}): {e.strerror}") from None
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        with _HELD_LOCK:
            _HELD.add(str(path))
        return Lock(path)
    raise Locked(f"{subject} is busy: another process keeps taking its lock ({path})")
