"""Where an export lands: the ``--to`` folder, checked before any work and replaced atomically.

Every export folder carries a marker, ``.workbench-export.json`` (format, run, checkpoint,
options, time, and the files it wrote). The marker is what makes ``--force`` safe: a folder is
only ever replaced when it is an earlier export — it holds the marker and nothing the marker
does not list. Anything else named by ``--to`` (a file, a non-empty folder without the marker,
an export someone has added their own files to) is refused with the reason, force or not.

An export is written under a temporary name beside the target and renamed into place, so a
failed or killed export leaves nothing half-written: the target is either absent, the previous
export, or the complete new one.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from workbench import fileio
from workbench.errors import WorkbenchError

MARKER = ".workbench-export.json"


def read_marker(folder: Path) -> dict | None:
    """The export marker of ``folder``, or None when it has none (or an unreadable one)."""
    try:
        m = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and isinstance(m.get("files"), list) else None


def check_destination(dest: Path, overwrite: bool) -> None:
    """Refuse a ``--to`` that must not be written; passes for a new or empty folder, and for an
    earlier export when ``overwrite`` is set."""
    where = repr(str(dest))
    if not dest.exists() and not dest.is_symlink():
        return
    if not dest.is_dir():
        raise WorkbenchError(f"--to {where} is a file, not a folder; an export never replaces a "
                             "file: choose another --to")
    try:
        entries = sorted(p.name for p in dest.iterdir())
    except OSError as e:
        raise WorkbenchError(f"--to {where} cannot be read: {e.strerror}") from None
    if not entries:
        return
    marker = read_marker(dest)
    if marker is None:
        raise WorkbenchError(f"--to {where} is not empty and is not a workbench export (it has no "
                             f"{MARKER}); it is never replaced, even with --force: choose a new "
                             "or empty folder")
    foreign = [n for n in entries if n != MARKER and n not in marker["files"]]
    if foreign:
        raise WorkbenchError(f"--to {where} is an earlier export but also holds {foreign[0]!r}, "
                             "which the export did not write; it is never replaced: move that "
                             "out or choose another --to")
    if not overwrite:
        raise WorkbenchError(f"--to {where} already holds an export ({marker.get('format')} of run "
                             f"{marker.get('run')!r}); pass --force to replace it (in the app: tick \"replace an "
                             "earlier export\"), or choose another --to")


def write_folder(dest: Path, fill: Callable[[Path], None], marker: dict) -> list[str]:
    """Run ``fill(tmp)`` on a fresh temporary folder beside ``dest``, add the marker, and move
    it into place (replacing an earlier export already checked by ``check_destination``).
    Returns the names of the files ``fill`` wrote."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{dest.name}{fileio.TMP_MARK}{os.getpid()}-{time.monotonic_ns()}"
        tmp.mkdir()
    except OSError as e:
        raise WorkbenchError(f"cannot write the export beside {str(dest)!r}: {e.strerror}") from None
    old = None
    try:
        fill(tmp)
        files = sorted(p.name for p in tmp.iterdir())
        (tmp / MARKER).write_text(json.dumps({**marker, "files": files}, indent=2) + "\n",
                                  encoding="utf-8")
        for p in tmp.iterdir():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
        if dest.exists():  # replace: move the old one aside first so a crash loses nothing
            old = dest.parent / f".{dest.name}{fileio.TMP_MARK}old-{os.getpid()}-{time.monotonic_ns()}"
            os.rename(dest, old)
        try:
            os.rename(tmp, dest)
        except OSError:
            if old is not None:  # put the previous export back
                os.rename(old, dest)
                old = None
            raise
        fileio._fsync_dir(dest.parent)
    except OSError as e:
        raise WorkbenchError(f"cannot write the export to {str(dest)!r}: {e.strerror or e}"
                             + ("; the disk is full (the previous export, if any, is kept)" if e.errno == errno.ENOSPC
                                else "")) from None
    except Exception as e:
        # safetensors and gguf writers report a failed write as their own error type
        if "No space left" in str(e) or "Errno 28" in str(e) or "os error 28" in str(e):
            raise WorkbenchError(f"cannot write the export to {str(dest)!r}: the disk is full (the previous "
                                 "export, if any, is kept)") from None
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return files
