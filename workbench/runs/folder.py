"""The run folder format: ``trained_models/<run>/`` — create, read, list, rename, delete.

A run folder holds ``config.yaml`` (model, train, data source, tokenizer), ``tokenizer/`` (a copy
of the tokenizer it was trained with), ``metrics.jsonl`` (append-only: one JSON object per line,
``kind`` train or eval), ``samples.jsonl``, ``status.json`` and ``checkpoints/`` with a
``latest`` pointer (see :mod:`workbench.runs.checkpoint`).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from workbench.runs import checkpoint
from workbench import fileio
from workbench.config.schema import RUN_ONLY_KEYS, Config, config_from_dict
from workbench.errors import WorkbenchError, not_found
from workbench.runs.labels import read_labels
from workbench.runs.code import CODE_DIR, copy_code, load_run_code, untrusted_code
from workbench.workspace import Workspace, check_name

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
SAMPLES = "samples.jsonl"
STATUS = "status.json"
TOKENIZER_DIR = "tokenizer"
LOCK = "lock.json"  # held while the run trains (workbench.locks)


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
        """The run's config.yaml as a mapping; a damaged one raises a WorkbenchError naming it."""
        import yaml

        try:
            d = yaml.safe_load(fileio.read_text(self.config_path))
        except OSError as e:
            raise WorkbenchError(f"cannot read {self.config_path}: {e.strerror}") from None
        except yaml.YAMLError as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise WorkbenchError(f"{self.config_path} is damaged (not plain YAML: {first})") from None
        if d is None:
            return {}
        if not isinstance(d, dict):
            raise WorkbenchError(f"{self.config_path} is damaged: expected a mapping, found {type(d).__name__}")
        if "data" in d and d["data"] is not None and not isinstance(d["data"], dict):
            raise WorkbenchError(f"{self.config_path} is damaged: 'data' must be a mapping, found "
                                 f"{type(d['data']).__name__}")
        return d

    def lock_path(self) -> Path:
        return self.path / LOCK

    def trainer(self) -> dict | None:
        """Who is training this run right now (the lock's holder), or None."""
        from workbench.locks import holder

        return holder(self.lock_path())

    def status(self) -> dict:
        p = self.path / STATUS
        if not p.is_file():
            return {"state": "new"}
        try:
            st = json.loads(p.read_text(encoding="utf-8"))
            if not isinstance(st, dict):
                raise ValueError
        except (OSError, ValueError):
            return {"state": "unknown"}
        # Marked running but nobody holds its lock: the process was killed, or failed without
        # being able to write its status (a full disk). Say so.
        if st.get("state") in ("running", "paused") and self.trainer() is None:
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
        """The checkpoint verbs use by default (``checkpoint.default_name``)."""
        return checkpoint.default_name(self.path)

    def checkpoints(self) -> list[str]:
        return checkpoint.list_checkpoints(self.path)

    def tokenizer_path(self) -> Path:
        return self.path / TOKENIZER_DIR

    def _tokenizer_problem(self, raw: dict) -> str | None:
        """Whether the run's tokenizer copy is missing, empty or another one (hash only: cheap)."""
        from workbench.tokenizer.tokenizer import file_sha256

        path = self.tokenizer_path() / "tokenizer.model"
        try:
            if path.stat().st_size == 0:
                return f"tokenizer {str(path)!r} is empty (a damaged or interrupted copy)"
            have = file_sha256(path)
        except OSError as e:
            return f"cannot read tokenizer {str(path)!r}: {e.strerror}"
        want = (raw.get("data") or {}).get("tokenizer_sha256")
        if want and have != want:
            return f"{path} is not the tokenizer run {self.name!r} was trained with"
        return None

    def _checkpoint_problem(self, name: str) -> str | None:
        """What is visibly wrong with checkpoint ``name`` (a cheap read), and which one the verbs
        fall back to."""
        problem = checkpoint.quick_problem(self.path, name)
        if problem is None:
            return None
        older = [n for n in reversed(self.checkpoints()) if n != name and checkpoint.quick_problem(self.path, n) is None]
        return problem + (f"; verbs fall back to {older[0]}" if older else "; no other checkpoint is whole")

    def load_tokenizer(self):
        """The run's copy of its tokenizer, checked against the hash recorded when the run was
        made: another tokenizer in its place would turn every id into the wrong text."""
        from workbench.tokenizer.tokenizer import Tokenizer

        tok = Tokenizer.load(self.tokenizer_path())
        want = (self.raw_config().get("data") or {}).get("tokenizer_sha256")
        if want and tok.sha256 != want:
            raise WorkbenchError(
                f"{self.tokenizer_path() / 'tokenizer.model'} is not the tokenizer run {self.name!r} was trained "
                f"with (sha256 {tok.sha256[:12]}…, the run recorded {want[:12]}…); put the original back")
        return tok

    def summary(self) -> dict:
        """One row for `runs list` and the Runs pane. A run whose files are damaged gets the
        status ``damaged`` and a ``problem`` naming the file, so one broken run never hides the
        others."""
        problem = None
        raw: dict = {}
        n_params = None
        try:
            raw = self.raw_config()
            n_params = self.config().model.n_params
            problem = self._tokenizer_problem(raw)
        except WorkbenchError as e:
            problem = str(e)
        rows = self.metrics()
        evals = [r for r in rows if r.get("kind") == "eval" and _num(r.get("val_loss"))]
        trains = [r for r in rows if r.get("kind") == "train"]
        data_evals = [r for r in rows if r.get("kind") == "data_eval" and _num(r.get("val_loss"))]
        best = min(evals, key=lambda r: r["val_loss"]) if evals else None
        tok_s = sorted(r["tok_s"] for r in trains if _num(r.get("tok_s")))
        try:
            ckpt = self.latest_checkpoint()
        except OSError as e:
            ckpt, problem = None, problem or f"cannot read {self.path / checkpoint.LATEST}: {e.strerror}"
        if ckpt is not None and problem is None:
            problem = self._checkpoint_problem(ckpt)
        status = self.status().get("state")
        try:
            labels = read_labels(self.path)
        except WorkbenchError as e:
            labels, problem = {"tags": [], "note": "", "pinned": False}, problem or str(e)
        return {
            "name": self.name,
            "preset": raw.get("name"),
            "params": n_params,
            "tokens": trains[-1].get("tokens", 0) if trains else 0,
            "steps": trains[-1].get("step", 0) if trains else 0,
            "best_val_loss": best["val_loss"] if best else None,
            "best_bpb": best.get("bpb") if best else None,
            "final_val_loss": evals[-1]["val_loss"] if evals else None,
            "tok_s": tok_s[len(tok_s) // 2] if tok_s else None,
            "created": raw.get("created"),
            "status": "damaged" if problem else status,
            "problem": problem,
            "checkpoint": ckpt,
            "tags": labels["tags"],
            "note": labels["note"],
            "pinned": labels["pinned"],
            "last_data_eval": {k: data_evals[-1].get(k) for k in DATA_EVAL_KEYS} if data_evals else None,
        }


# what a summary keeps of a run's newest `eval --data` row (``training.evaluate``)
DATA_EVAL_KEYS = ("data", "split", "checkpoint", "val_loss", "bpb", "top1")


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def summary_cells(row: dict, count, missing: str) -> dict[str, str]:
    """A ``Run.summary`` row as text by column key, for `runs list` and the Runs pane alike:
    counts as ``count`` writes them, losses to 4 places, bits per byte to 3, and ``missing``
    for what is unknown (a damaged run's row may lack any number)."""
    def num(v, fmt: str) -> str:
        return missing if v is None else fmt.format(v)

    def n(v) -> str:
        return missing if v is None else count(v)

    return {"name": row["name"], "preset": row.get("preset") or missing, "params": n(row.get("params")),
            "tokens": n(row.get("tokens")), "val": num(row.get("best_val_loss"), "{:.4f}"),
            "bpb": num(row.get("best_bpb"), "{:.3f}"), "tok_s": n(row.get("tok_s")),
            "created": row.get("created") or missing, "status": row.get("status") or missing}


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
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    out.append(row)
    except FileNotFoundError:
        pass
    return out


def append_jsonl(path: Path, row: dict) -> None:
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=_json_default) + "\n")
    except OSError as e:  # name the file: a full disk fails a write with no file in its error
        raise OSError(e.errno, e.strerror, str(path)) from None


def _json_default(o):
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    return str(o)


def eval_curve(run: Run, metric: str = "val_loss", rows: list[dict] | None = None) -> list[tuple[int, float]]:
    """(tokens, ``metric``) of every evaluation the run logged (validation loss, or ``top1``:
    the share of next tokens the model ranked first); ``rows``: its metrics, already read."""
    rows = run.metrics() if rows is None else rows
    return [(r["tokens"], r[metric]) for r in rows if r.get("kind") == "eval" and r.get(metric) is not None]


def list_runs(ws: Workspace) -> list[Run]:
    root = ws.runs_dir()
    if not root.is_dir():
        return []
    return [Run(p.name, p) for p in sorted(root.iterdir()) if p.is_dir() and (p / CONFIG).is_file()]


def summaries(ws: Workspace, curves: bool = False) -> tuple[list[dict], dict[str, dict[str, list]]]:
    """Every run's ``summary`` (for `runs list` and the Runs pane) and, with ``curves``, every
    metric it logged as a (tokens, value) curve (``runs.metrics.curves``: ``{"val_loss": ...,
    "top1": ..., "loss": ...}``). A run whose files cannot be read at all still gets a row,
    saying so: one broken run never hides the others."""
    from workbench.runs.metrics import curves as metric_curves

    rows, evals = [], {}
    checked: dict = {}  # runs share data folders: each is read once
    for run in list_runs(ws):
        try:
            row = run.summary()
            problem = None if row["problem"] else _data_problem(ws, run, checked)
            if problem:
                row.update(status="damaged", problem=problem)
            rows.append(row)
            if curves:
                evals[run.name] = metric_curves(run.metrics())
        except Exception as e:
            rows.append({"name": run.name, "status": f"unreadable: {type(e).__name__}"})
    return rows, evals


def _data_problem(ws: Workspace, run: Run, checked: dict) -> str | None:
    """What resume and eval would refuse in the prepared data a run trained on, read cheaply:
    its meta.json, the token files' sizes, and the ids of the (small) validation file. Data that
    is gone is not damage: those verbs say how to prepare it again."""
    # numpy comes in here, when runs are listed, not when the app starts
    from workbench.data.tokens import META_FILE, read_data_info

    raw = run.raw_config()
    name = (raw.get("data") or {}).get("name")
    if not isinstance(name, str) or not (ws.data_path(name) / META_FILE).is_file():
        return None
    vocab = (raw.get("model") or {}).get("vocab_size")
    if (name, vocab) not in checked:
        try:
            info = read_data_info(ws.data_path(name))
            if isinstance(vocab, int):
                info.val.check_ids(vocab)
            checked[name, vocab] = None
        except WorkbenchError as e:
            checked[name, vocab] = f"its data: {e}"
    return checked[name, vocab]


def get_run(ws: Workspace, name: str) -> Run:
    path = ws.run_path(name)
    if not (path / CONFIG).is_file():
        raise not_found("run", name, ws.runs_dir(), [r.name for r in list_runs(ws)], "runs", "no runs yet")
    return Run(name, path)


def _refuse_if_live(run: Run, what: str) -> None:
    from workbench.locks import Locked, describe

    h = run.trainer()
    if h is not None:
        raise Locked(f"run {run.name!r} is training in {describe(h)}; stop it before you {what} it")


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


def default_run_name(ws: Workspace, config: Config) -> str:
    """A new run's name when none is given: the config's name and the time, made unique."""
    return new_run_name(ws, f"{config.name or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}")


def create_run(ws: Workspace, name: str, config: Config, tokenizer_dir: Path, data_meta: dict,
               extra: dict | None = None, fill=None) -> Run:
    """Make the run folder: config and tokenizer copy, written under a temp name then renamed;
    ``fill(folder)`` adds files of the caller's first (an import's checkpoint), so the run
    appears whole or not at all."""
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
        d.update(extra or {})  # run-only keys (config.RUN_ONLY_KEYS): the plan that chose it
        code = copy_code(ws.root, config, tmp)  # the experiment files it uses, kept with it
        if code:
            d["experiments"] = code
        fileio.write_yaml(tmp / CONFIG, d)
        if fill is not None:
            fill(tmp)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Run(name, final)


def untrusted_files(ws: Workspace, name: str) -> list[Path]:
    """The experiment files of run ``name`` that may not run until the user says so (made in
    another workspace; ``runs.code.untrusted_code``); empty when they may, or the run cannot be
    read (whatever reads it next says why)."""
    try:
        run = get_run(ws, name)
        raw = run.raw_config()
    except WorkbenchError:
        return []
    return [run.path / CODE_DIR / f for f in untrusted_code(run.path, raw.get("experiments"), ws.root)]


def run_config(run: Run) -> Config:
    """The config the run trains with. Its experiment variants come from the run's own copies of
    their files (``runs.code``), loaded first."""
    raw = run.raw_config()
    load_run_code(run.path, raw.get("experiments"), run.path.parent.parent)
    raw = {k: v for k, v in raw.items() if k not in RUN_ONLY_KEYS}
    return config_from_dict(raw, run.config_path)


def record_resume(run: Run, config: Config, checkpoint_name: str | None, step: int, changes: dict) -> None:
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
