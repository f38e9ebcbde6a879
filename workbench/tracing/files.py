"""Traces on disk and as text: what ``workbench trace`` prints, and the ``traces/`` folder of a
workspace where the Trace pane saves a trace (``NAME.json``, the whole trace; ``NAME.txt``, the
text the CLI prints) and reads one back as a baseline to diff against.

Torch is imported only to write the tree as text (``trace.render_text``), never at import, so
the Trace pane imports this module on the UI thread.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from workbench.errors import WorkbenchError
from workbench.tracing.request import header_text


def traces_dir(ws) -> Path:
    return Path(ws.root) / "traces"


def trace_text(result: dict, depth: Optional[int] = None) -> str:
    """A traced forward pass as text: what was traced on what input, then the tree of calls
    (at most ``depth`` levels below the model; None = all)."""
    from workbench.tracing.render import render_text

    return header_text(result) + "\n" + render_text(result, depth=depth)


def save_trace(ws, name: str, result: dict) -> Path:
    """``traces/NAME.json`` and ``traces/NAME.txt``, each written atomically; the folder."""
    from workbench import fileio
    from workbench.workspace import check_name

    folder = traces_dir(ws)
    check_name("trace", name)
    fileio.write_json(folder / f"{name}.json", result)
    fileio.write_text(folder / f"{name}.txt", trace_text(result) + "\n")
    return folder


def saved_traces(ws) -> list[Path]:
    """The workspace's saved traces (their JSON files), by name."""
    folder = traces_dir(ws)
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def load_trace(path: str | Path) -> dict:
    """A saved trace; a WorkbenchError says why a file is not one."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(d, dict) or "root" not in d:
            raise ValueError("no 'root' call")
    except (OSError, ValueError) as e:
        raise WorkbenchError(f"cannot read {path}: {e}") from None
    return d
