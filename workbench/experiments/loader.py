"""Loading users' experiment files: every ``*.py`` in the workspace's ``experiments/`` folder,
in each folder given with ``--experiments DIR``, and in ``$WORKBENCH_EXPERIMENTS`` (folders
separated by the path separator). Importing a file runs its ``@register`` decorators.

A file that fails to import is reported in one line naming its own file and line (the user's
traceback, trimmed to their file) and registers nothing; it never takes the app or another
command down. Loading a file again (after an edit) first forgets what it registered.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import workbench.config.schema  # noqa: F401  (the config's field names, reserved before any file registers)
from workbench.experiments.registry import unregister_source, variants

ENV = "WORKBENCH_EXPERIMENTS"
FOLDER = "experiments"


@dataclass
class LoadReport:
    files: list[str] = field(default_factory=list)     # files imported
    errors: list[str] = field(default_factory=list)    # one line per file that failed
    registered: list[tuple[str, str, str]] = field(default_factory=list)  # (part, name, file)

    def lines(self) -> list[str]:
        return [f"experiment {part} {name!r} from {file}" for part, name, file in self.registered] + self.errors


def experiment_dirs(root: Path | None, extra: list[str] | tuple = ()) -> list[Path]:
    """The folders experiments are read from: the workspace's, ``extra``, then the variable's."""
    env = os.environ.get(ENV, "")
    dirs = ([Path(root) / FOLDER] if root is not None else []) + [Path(p) for p in extra] \
        + [Path(p) for p in env.split(os.pathsep) if p]
    out: list[Path] = []
    for d in dirs:
        d = d.expanduser().resolve()
        if d.is_dir() and d not in out:
            out.append(d)
    return out


def failure_line(e: BaseException, path: Path) -> str:
    """``path:LINE: Type: message``, LINE being where in the user's own file it failed."""
    line = "?"
    if isinstance(e, SyntaxError) and e.filename and Path(e.filename).resolve() == path:
        line = str(e.lineno)
    else:
        frames = [f for f in traceback.extract_tb(e.__traceback__) if Path(f.filename).resolve() == path]
        if frames:
            line = str(frames[-1].lineno)
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{path}:{line}: {type(e).__name__}" + (f": {text}" if text else "")


def load_file(path: Path) -> list[tuple[str, str]]:
    """Import one experiment file (again); returns the (part, name) it registered. Raises
    ``ExperimentError`` with ``failure_line`` when it does not import."""
    path = Path(path).resolve()
    unregister_source(str(path))
    name = "workbench_experiment_" + hashlib.sha256(str(path).encode()).hexdigest()[:12] + "_" + \
        "".join(c if c.isalnum() else "_" for c in path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # inspect finds the class's file through it
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:  # the user's code: anything can happen in it
        sys.modules.pop(name, None)
        unregister_source(str(path))
        raise ExperimentError(failure_line(e, path)) from None
    return [(v.part, v.name) for v in variants() if v.source == str(path)]


class ExperimentError(Exception):
    """An experiment file that could not be imported; the message is one line."""


def reload_experiments(dirs: list[Path]) -> tuple[LoadReport, list[tuple[str, str]], list[tuple[str, str]]]:
    """Read ``dirs`` again after files were added, edited or deleted: (the report, the variants
    new since, the variants gone). A variant of a deleted or now broken file is gone; the
    copies inside run folders are not touched."""
    from workbench.experiments.registry import unregister_source

    before = {(v.part, v.name) for v in variants() if not v.builtin}
    roots = [Path(d).resolve() for d in dirs]
    for source in {v.source for v in variants() if v.source}:
        if Path(source).parent in roots:
            unregister_source(source)
    report = load_experiments(dirs)
    after = {(v.part, v.name) for v in variants() if not v.builtin}
    return report, sorted(after - before), sorted(before - after)


def load_experiments(dirs: list[Path]) -> LoadReport:
    """Import every ``*.py`` (not starting with ``_``) of ``dirs``, in name order."""
    report = LoadReport()
    for d in dirs:
        for path in sorted(d.glob("*.py")):
            if path.name.startswith("_"):
                continue
            try:
                got = load_file(path)
            except ExperimentError as e:
                report.errors.append(str(e))
                continue
            report.files.append(str(path))
            report.registered += [(part, name, path.name) for part, name in got]
    return report
