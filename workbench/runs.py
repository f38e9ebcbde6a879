"""The run folder format: ``trained_models/<run>/`` — create, read, list, load, compare.

A run folder holds ``config.yaml`` (model, train, data source, tokenizer), ``tokenizer/`` (a copy
of the tokenizer it was trained with), ``metrics.jsonl`` (append-only: one JSON object per line,
``kind`` train or eval), ``samples.jsonl``, ``status.json`` and ``checkpoints/`` with a
``latest`` pointer (see :mod:`workbench.checkpoint`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from . import checkpoint, fileio
from .config import RUN_ONLY_KEYS, Config, config_from_dict
from .errors import WorkbenchError
from .workspace import Workspace, check_name

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
SAMPLES = "samples.jsonl"
STATUS = "status.json"
TOKENIZER_DIR = "tokenizer"


@dataclass
class Run:
    name: str
    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    def config(self) -> Config:
        return run_config(self)

    def raw_config(self) -> dict:
        import yaml

        return yaml.safe_load(self.config_path.read_text(encoding="utf-8")) or {}

    def status(self) -> dict:
        p = self.path / STATUS
        if not p.is_file():
            return {"state": "new"}
        try:
            st = json.loads(p.read_text(encoding="utf-8"))
        except ValueError:
            return {"state": "unknown"}
        # A run marked running whose process is gone was killed: say so.
        if st.get("state") in ("running", "paused") and not _pid_alive(st.get("pid")):
            st["state"] = "interrupted"
        return st

    def set_status(self, state: str, **extra) -> None:
        st = {"state": state, "pid": os.getpid(), "updated": time.time(), **extra}
        fileio.write_json(self.path / STATUS, st)

    def metrics(self) -> list[dict]:
        return read_jsonl(self.path / METRICS)

    def samples(self) -> list[dict]:
        return read_jsonl(self.path / SAMPLES)

    def latest_checkpoint(self) -> str | None:
        return checkpoint.latest_name(self.path)

    def checkpoints(self) -> list[str]:
        return checkpoint.list_checkpoints(self.path)

    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_DIR

    def summary(self) -> dict:
        """One row for `runs list` and the Runs pane."""
        raw = {}
        try:
            raw = self.raw_config()
        except (OSError, ValueError):
            pass
        rows = self.metrics()
        evals = [r for r in rows if r.get("kind") == "eval"]
        trains = [r for r in rows if r.get("kind") == "train"]
        best = min(evals, key=lambda r: r["val_loss"]) if evals else None
        n_params = None
        try:
            n_params = self.config().model.n_params
        except (WorkbenchError, ValueError, OSError):
            pass
        tok_s = [r["tok_s"] for r in trains if r.get("tok_s")]
        return {
            "name": self.name,
            "preset": raw.get("name"),
            "params": n_params,
            "tokens": trains[-1]["tokens"] if trains else 0,
            "steps": trains[-1]["step"] if trains else 0,
            "best_val_loss": best["val_loss"] if best else None,
            "best_bpb": best.get("bpb") if best else None,
            "final_val_loss": evals[-1]["val_loss"] if evals else None,
            "tok_s": sorted(tok_s)[len(tok_s) // 2] if tok_s else None,
            "created": raw.get("created"),
            "status": self.status().get("state"),
            "checkpoint": self.latest_checkpoint(),
        }


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON-lines file; a torn last line (a killed writer) is ignored."""
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
    except FileNotFoundError:
        pass
    return out


def append_jsonl(path: Path, row: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    return str(o)


def list_runs(ws: Workspace) -> list[Run]:
    root = ws.runs_dir()
    if not root.is_dir():
        return []
    return [Run(p.name, p) for p in sorted(root.iterdir()) if p.is_dir() and (p / CONFIG).is_file()]


def get_run(ws: Workspace, name: str) -> Run:
    path = ws.run_path(name)
    if not (path / CONFIG).is_file():
        names = [r.name for r in list_runs(ws)]
        have = f"runs: {', '.join(names)}" if names else "no runs yet"
        raise WorkbenchError(f"run {name!r} not found in {str(ws.runs_dir())!r} ({have})")
    return Run(name, path)


def _refuse_if_live(run: Run, what: str) -> None:
    state = run.status().get("state")
    if state in ("running", "paused"):
        raise WorkbenchError(f"run {run.name!r} is {state} in another process; stop it before you {what} it")


def rename_run(ws: Workspace, name: str, new: str) -> Run:
    """Rename a run folder (refused while it trains, or onto an existing name)."""
    run = get_run(ws, name)
    check_name("run", new)
    if ws.run_path(new).exists():
        raise WorkbenchError(f"run {new!r} already exists; choose another name")
    _refuse_if_live(run, "rename")
    try:
        os.rename(run.path, ws.run_path(new))
    except OSError as e:
        raise WorkbenchError(f"cannot rename run {name!r}: {e.strerror}") from None
    return Run(new, ws.run_path(new))


def delete_run(ws: Workspace, name: str) -> None:
    """Delete a run and its checkpoints (refused while it trains)."""
    run = get_run(ws, name)
    _refuse_if_live(run, "delete")
    # Rename first, so a half-deleted folder never looks like a run.
    trash = run.path.parent / f".{name}{fileio.TMP_MARK}deleting-{os.getpid()}"
    try:
        os.rename(run.path, trash)
    except OSError as e:
        raise WorkbenchError(f"cannot delete run {name!r}: {e.strerror}") from None
    shutil.rmtree(trash, ignore_errors=True)


def new_run_name(ws: Workspace, base: str) -> str:
    base = check_name("run", base)
    if not ws.run_path(base).exists():
        return base
    i = 2
    while ws.run_path(f"{base}-{i}").exists():
        i += 1
    return f"{base}-{i}"


def create_run(ws: Workspace, name: str, config: Config, tokenizer_dir: Path, data_meta: dict) -> Run:
    """Make the run folder: config and tokenizer copy, written under a temp name then renamed."""
    root = ws.runs_dir()
    try:
        root.mkdir(parents=True, exist_ok=True)
        final = ws.run_path(name)
        if final.exists():
            raise WorkbenchError(f"run {name!r} already exists at {str(final)!r}; choose another --name or --resume it")
        tmp = root / f".{name}{fileio.TMP_MARK}{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as e:  # not writable, or trained_models is a file, ...
        raise WorkbenchError(f"cannot write the run folder under {str(root)!r}: {e.strerror}") from None
    try:
        shutil.copytree(tokenizer_dir, tmp / TOKENIZER_DIR)
        d = config.to_dict()
        d["data"] = data_meta
        d["created"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        fileio.write_yaml(tmp / CONFIG, d)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Run(name, final)


def run_config(run: Run) -> Config:
    raw = run.raw_config()
    raw = {k: v for k, v in raw.items() if k not in RUN_ONLY_KEYS}
    return config_from_dict(raw, run.config_path)


def record_resume(run: Run, config: Config, checkpoint_name: str, step: int, changes: dict) -> None:
    """Write the config a resumed run now trains with into its config.yaml and append what
    changed to its ``resumes`` history (changing a budget moves the schedule: see the README)."""
    raw = run.raw_config()
    d = config.to_dict()
    for k in ("data", "tokenizer", *RUN_ONLY_KEYS):
        if k in raw:
            d[k] = raw[k]
    d["resumes"] = list(raw.get("resumes") or []) + [
        {"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "from": checkpoint_name, "step": step, "changes": changes}]
    fileio.write_yaml(run.config_path, d)


def load_run_model(run: Run, checkpoint_name: str | None = None, device: str = "cpu"):
    """The run's model with a checkpoint's weights (latest by default), in eval mode, and its tokenizer."""
    from .model import build_model
    from .tokenizer import Tokenizer

    cfg = run_config(run)
    model = build_model(cfg.model, device=device)
    name = checkpoint.load_weights(model, run.path, checkpoint_name)
    model.eval()
    tok = Tokenizer.load(run.tokenizer_path())
    return model, tok, cfg, name


# --- comparing runs --------------------------------------------------------------------------


def eval_curve(run: Run) -> list[tuple[int, float]]:
    return [(r["tokens"], r["val_loss"]) for r in run.metrics() if r.get("kind") == "eval"]


def interp(curve: list[tuple[int, float]], x: float) -> float | None:
    """Linear interpolation of a (tokens, loss) curve; None outside its range."""
    if not curve or x < curve[0][0] or x > curve[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return curve[-1][1]


def tokens_to_reach(curve: list[tuple[int, float]], target: float) -> float | None:
    """Tokens at which a loss curve first reaches ``target`` (interpolated), or None."""
    for (x0, y0), (x1, y1) in zip([curve[0]] + curve, curve):
        if y1 <= target:
            if y0 == y1 or x0 == x1:
                return float(x1)
            return x0 + (y0 - target) * (x1 - x0) / (y0 - y1)
    return None


def compare(runs: list[Run], baseline: Run | None = None) -> dict:
    """Final and best validation loss per run; against a baseline, the difference at the
    baseline's eval points and the tokens each run needed to reach the baseline's final loss."""
    out = {"runs": [r.summary() for r in runs]}
    if baseline is not None:
        base = eval_curve(baseline)
        if not base:
            raise WorkbenchError(f"baseline run {baseline.name!r} has no evaluations yet")
        target = base[-1][1]
        out["baseline"] = baseline.name
        out["baseline_final_loss"] = target
        rows = []
        for r in runs:
            c = eval_curve(r)
            diffs = [(x, interp(c, x) - y) for x, y in base if interp(c, x) is not None]
            rows.append({
                "name": r.name,
                "tokens_to_baseline_final": tokens_to_reach(c, target) if c else None,
                "diff_vs_baseline": diffs,
            })
        out["vs_baseline"] = rows
    return out
