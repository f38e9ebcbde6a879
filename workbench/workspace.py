"""The workspace: the folder workbench works in.

It holds ``models/`` (saved configs), ``tokenizers/`` (built tokenizers), ``data/``
(pretokenized token files) and ``trained_models/`` (runs). Folders are created on demand.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import WorkbenchError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(kind: str, name: str) -> str:
    """Names become folder names: refuse anything that is not a plain, short file name."""
    if not NAME_RE.match(name or ""):
        raise WorkbenchError(
            f"{kind} name {name!r} is not allowed: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def at(cls, root: str | os.PathLike | None = None) -> "Workspace":
        root = Path(root) if root is not None else Path.cwd()
        if root.exists() and not root.is_dir():
            raise WorkbenchError(f"workspace {str(root)!r} is not a folder")
        return cls(root.resolve())

    def _sub(self, name: str, create: bool) -> Path:
        p = self.root / name
        if create:
            p.mkdir(parents=True, exist_ok=True)
        return p

    def models_dir(self, create: bool = False) -> Path:
        return self._sub("models", create)

    def tokenizers_dir(self, create: bool = False) -> Path:
        return self._sub("tokenizers", create)

    def data_dir(self, create: bool = False) -> Path:
        return self._sub("data", create)

    def runs_dir(self, create: bool = False) -> Path:
        return self._sub("trained_models", create)

    def tokenizer_path(self, name: str) -> Path:
        return self.tokenizers_dir() / check_name("tokenizer", name)

    def data_path(self, name: str) -> Path:
        return self.data_dir() / check_name("data", name)

    def run_path(self, name: str) -> Path:
        return self.runs_dir() / check_name("run", name)
