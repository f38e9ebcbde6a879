"""A run's tags and note, kept in its folder (``labels.json``, written atomically), so they move
with it on a rename and go with it on a delete. Tags are short words (``baseline``, ``lr-sweep``,
``exp:vnorm``); the note is free text. ``matches`` is the runs filter: a regular expression
searched in a run's name and tags (``workbench runs list --filter``, the Runs pane's ``/``).
A pinned run (``workbench runs pin``, the Runs pane's ``p``) is listed first and always drawn.
"""

from __future__ import annotations

import re
from pathlib import Path

from workbench import fileio
from workbench.errors import WorkbenchError

FILE = "labels.json"
TAG_CHARS = re.compile(r"[A-Za-z0-9_.:+-]{1,40}")


def check_tag(tag: str) -> str:
    if not isinstance(tag, str) or not TAG_CHARS.fullmatch(tag):
        raise WorkbenchError(f"tag {tag!r} is not allowed: 1 to 40 letters, digits or _ . : + -")
    return tag


def read_labels(run_dir: Path) -> dict:
    """``{"tags": [...], "note": "...", "pinned": bool}`` (empty when the run has none); a damaged
    file is one line."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return {"tags": [], "note": "", "pinned": False}
    d = fileio.read_json(path)
    if not isinstance(d, dict) or not isinstance(d.get("tags", []), list) or not isinstance(d.get("note", ""), str) \
            or not isinstance(d.get("pinned", False), bool):
        raise WorkbenchError(f"{str(path)!r} is damaged: expected "
                             f"{{\"tags\": [...], \"note\": \"...\", \"pinned\": true|false}}")
    return {"tags": [str(t) for t in d.get("tags", [])], "note": d.get("note", ""), "pinned": d.get("pinned", False)}


def _write(run_dir: Path, labels: dict) -> None:
    # "pinned" is written only while true: an unpinned run's file is the tags and the note
    fileio.write_json(Path(run_dir) / FILE, {k: v for k, v in labels.items() if k != "pinned" or v})


def set_tags(run_dir: Path, add=(), remove=()) -> list[str]:
    """Add and remove tags (each checked first: nothing is written for a bad one); the tags now."""
    add, remove = [check_tag(t) for t in add], set(remove)
    labels = read_labels(run_dir)
    tags = [t for t in labels["tags"] if t not in remove]
    tags += [t for t in add if t not in tags]
    _write(run_dir, {**labels, "tags": tags})
    return tags


def set_note(run_dir: Path, note: str) -> str:
    labels = read_labels(run_dir)
    _write(run_dir, {**labels, "note": note.strip()})
    return note.strip()


def set_pinned(run_dir: Path, pinned: bool) -> bool:
    """Pin the run (listed first, always drawn) or unpin it; whether it is pinned now."""
    _write(run_dir, {**read_labels(run_dir), "pinned": bool(pinned)})
    return bool(pinned)


def compile_filter(pattern: str | None):
    """The filter's regular expression (case-insensitive), or None for no filter; a bad one is
    one line naming it."""
    if not pattern:
        return None
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as e:
        raise WorkbenchError(f"filter {pattern!r} is not a regular expression: {e}") from None


def matches(rx, row: dict) -> bool:
    """Whether a ``Run.summary`` row's name or one of its tags contains a match of ``rx``."""
    return rx is None or any(rx.search(s) for s in [row["name"], *(row.get("tags") or [])])
