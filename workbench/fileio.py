"""Atomic file writes: a temp name in the same folder, fsync, then ``os.replace``; and reads of
the small text files the workbench writes, where damage is one line naming the file.

A reader (or a process killed half-way) sees either the old file or the new one, never a
partial file. Temp names carry the writer's pid (``.<name>.tmp-<pid>-...``), so a cleanup removes
only the temps of writers that are gone (``is_stale_temp``), never a live writer's.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from workbench.errors import WorkbenchError

TMP_MARK = ".tmp-"
# mkstemp creates files 0600; finished files get the usual permissions. The umask can only be
# read by setting it, so it is read once, at import.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARK}{os.getpid()}-", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except OSError as e:  # the error names the file meant, not its temp
        raise OSError(e.errno, e.strerror, str(path)) from None


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_yaml(path: str | os.PathLike, obj: Any) -> None:
    import yaml

    write_text(path, yaml.safe_dump(obj, sort_keys=False, allow_unicode=True))


def temp_owner(name: str) -> int | None:
    """The pid in a temp name made here (``.<name>.tmp-<pid>...``), or None."""
    if not name.startswith(".") or TMP_MARK not in name:
        return None
    rest = name.rsplit(TMP_MARK, 1)[1]
    for prefix in ("deleting-", "old-"):
        rest = rest[len(prefix):] if rest.startswith(prefix) else rest
    digits = ""
    for ch in rest:
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits else None


def is_stale_temp(p: Path) -> bool:
    """A temp left by a writer that is gone (an unmarked one only when older than a minute)."""
    if not p.name.startswith(".") or TMP_MARK not in p.name:
        return False
    pid = temp_owner(p.name)
    if pid is None:
        import time

        try:
            return time.time() - p.stat().st_mtime > 60
        except OSError:
            return False
    from workbench.locks import owner_alive

    return not owner_alive(pid)


def remove_stale_temps(folder: str | os.PathLike) -> None:
    """Delete temp files that killed writers left behind in ``folder`` (live writers' stay)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.is_file() and is_stale_temp(p):
            with contextlib.suppress(OSError):
                p.unlink()


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file's contents. A file that cannot be read, or is not UTF-8 (a damaged or
    foreign file), raises one WorkbenchError naming it; FileNotFoundError is left to the caller."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise
    except OSError as e:
        raise WorkbenchError(f"cannot read {str(path)!r}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise WorkbenchError(f"{str(path)!r} is damaged: not UTF-8 text (byte {e.start:,} is 0x{e.object[e.start]:02x})") from None


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's value; damage (not UTF-8, not JSON) is one WorkbenchError naming the file."""
    text = read_text(path)
    try:
        return json.loads(text)
    except ValueError as e:
        raise WorkbenchError(f"{str(path)!r} is damaged: not JSON ({e})") from None
