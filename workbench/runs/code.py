"""The experiment code a run was trained with, kept in the run folder.

A run whose config names a variant from an experiment file (not a built-in part) gets a copy of
that file in ``experiments/`` of its folder, its SHA-256 and the id of the workspace that made
it recorded under ``experiments`` in ``config.yaml``. Reading the run's config again (resume,
eval, trace, generate, chat, export) loads that copy, never today's workspace file, so an edited
or deleted file does not change an old run.

Code inside a run folder runs only when the run was made in this workspace (same workspace id)
or the user says it may (``--trust-code``, ``$WORKBENCH_TRUST_CODE=1``, the app's confirmation);
a run copied from elsewhere is refused in one line otherwise.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.experiments.loader import ExperimentError, load_file
from workbench.experiments.registry import PARTS, get

CODE_DIR = "experiments"
ID_FILE = ".workbench-id"
TRUST_ENV = "WORKBENCH_TRUST_CODE"


def workspace_id(root: Path, create: bool = False) -> str | None:
    """This workspace's id (a random one, written once), or None when it has none yet."""
    path = Path(root) / ID_FILE
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except OSError:
        if not create:
            return None
    Path(root).mkdir(parents=True, exist_ok=True)
    try:  # created once: a second process making a run at the same moment reads the first's
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(uuid.uuid4().hex + "\n")
    except FileExistsError:
        pass
    return path.read_text(encoding="utf-8").strip()


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def experiment_files(config) -> list[Path]:
    """The experiment files the variants of ``config`` (model and train) come from (built-in
    parts: none)."""
    out: list[Path] = []
    for part, (field, _) in PARTS.items():
        section, _, name = field.partition(".")
        variant = get(part, getattr(getattr(config, section), name))
        if not variant.builtin and Path(variant.source) not in out:
            out.append(Path(variant.source))
    return out


def copy_code(ws_root: Path, config, run_dir: Path) -> dict | None:
    """Copy the experiment files ``config`` uses into ``run_dir``; the record for config.yaml
    (None when it uses built-in parts only)."""
    files = experiment_files(config)
    if not files:
        return None
    dest = run_dir / CODE_DIR
    dest.mkdir(parents=True, exist_ok=True)
    names = {}
    for f in files:
        shutil.copy2(f, dest / f.name)
        names[f.name] = sha256(dest / f.name)
    return {"workspace": workspace_id(ws_root, create=True), "files": names}


_TRUSTED_RUNS: set[str] = set()  # run folders the user let run in this process (the app's dialog)


def trusted() -> bool:
    return os.environ.get(TRUST_ENV, "") not in ("", "0")


def trust_run(run_dir: Path) -> None:
    """Let this one run's code run from now on in this process (the user read it and said yes)."""
    _TRUSTED_RUNS.add(str(Path(run_dir).resolve()))


class UntrustedCode(WorkbenchError):
    """A run holds experiment code made in another workspace, and nobody said it may run."""

    def __init__(self, run_dir: Path, files: list[str]):
        self.run_dir, self.files = Path(run_dir), files
        super().__init__(f"run {self.run_dir.name!r} holds experiment code made in another workspace "
                         f"({', '.join(files)} in {str(self.run_dir / CODE_DIR)!r}); read it, then pass "
                         "--trust-code to let it run")


def untrusted_code(run_dir: Path, record, workspace_root: Path) -> list[str]:
    """The experiment files of a run that may not run without the user's word: those of a run
    made in another workspace, unless code is trusted (``--trust-code``) or this run was let."""
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        return []
    if record.get("workspace") == workspace_id(workspace_root) or trusted() \
            or str(Path(run_dir).resolve()) in _TRUSTED_RUNS:
        return []
    return list(record["files"])


def load_run_code(run_dir: Path, record, workspace_root: Path) -> None:
    """Register the variants of the run's own copies of its experiment files (checked against
    their recorded hashes), if the run was made here or code is trusted; else ``UntrustedCode``."""
    if not record:
        return
    name = Path(run_dir).name
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        raise WorkbenchError(f"run {name!r}: config.yaml is damaged: 'experiments' must be a mapping with 'files'")
    files = dict(record["files"])
    if untrusted_code(run_dir, record, workspace_root):
        raise UntrustedCode(Path(run_dir), list(files))
    for fname, digest in files.items():
        path = Path(run_dir) / CODE_DIR / fname
        if not path.is_file():
            raise WorkbenchError(f"run {name!r} is missing its experiment file {str(path)!r}")
        if sha256(path) != digest:
            raise WorkbenchError(f"run {name!r}: {str(path)!r} is not the file the run was trained with "
                                 "(its SHA-256 differs from the one recorded)")
        try:
            load_file(path)
        except ExperimentError as e:
            raise WorkbenchError(f"run {name!r}: its experiment file does not load: {e}") from None
