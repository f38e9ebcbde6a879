"""Property 1: the engine never imports Textual; and the app does not import torch to open."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import workbench

ROOT = Path(workbench.__file__).parent
TUI = ROOT / "tui"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_only_tui_imports_textual():
    offenders = []
    for path in ROOT.rglob("*.py"):
        if TUI in path.parents:
            continue
        for name in _imports(path):
            if name.split(".")[0] in ("textual", "textual_plotext"):
                offenders.append(f"{path.relative_to(ROOT.parent)} imports {name}")
    assert offenders == []
    assert any("textual" in n for p in TUI.rglob("*.py") for n in _imports(p))  # the walk works


def test_app_opens_without_torch():
    code = ("import sys, workbench.tui.app, workbench.cli; "
            "bad = [m for m in ('torch', 'datasets', 'sentencepiece') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
