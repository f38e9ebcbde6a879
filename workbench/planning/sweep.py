"""``workbench sweep``: train a list or grid of configs, each for a budget, and rank them.

A sweep is one ``SweepRequest``: a base config, overrides applied to all runs (``sets``), and
either a grid (every combination of the values given per field) or an explicit list of override
sets, a budget (minutes, tokens or steps), and how many runs train at once (``parallel``; the
cores are split between them). Runs whose memory estimate does not fit this machine are skipped
with the reason; the others are ordinary runs under ``trained_models/`` named
``<sweep>-<i>``, each a real ``workbench train`` process (so a run's speed is what that command
gets). The result ranks them by validation bits per byte — their own last evaluation, or a full
pass over the validation split with ``full_eval``. The CLI and the app both call ``run_sweep``.
"""

from __future__ import annotations

import itertools
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from workbench.config.schema import Config, load_config, save_config
from workbench.config.overrides import apply_overrides, sections_of
from workbench.data.sources import DEFAULT_HUB_ID
from workbench.errors import Cancelled, WorkbenchError
from workbench.procs import ends_with_parent
from workbench.workspace import Workspace, check_name

BUDGETS = ("minutes", "tokens", "steps")


@dataclass
class SweepRequest:
    base: str | Config                        # config path or preset, or a Config (the Config pane's form)
    tokenizer: str
    data: str
    name: str                                 # run names are <name>-<i>
    budget: str = "minutes"                   # minutes | tokens | steps
    amount: float = 10.0
    sets: dict[str, Any] = field(default_factory=dict)         # "model.dim": 128, ...
    grid: dict[str, list[Any]] = field(default_factory=dict)   # "model.dim": [96, 128], ...
    runs: list[dict[str, Any]] = field(default_factory=list)   # explicit override sets
    parallel: int = 1
    full_eval: bool = False
    text_column: str = "text"

    def validate(self, ws: Workspace) -> list[tuple[str, Config]]:
        """Every run's name and config, checked before anything trains (a bad field names it)."""
        check_name("sweep", self.name)
        if self.budget not in BUDGETS:
            raise WorkbenchError(f"sweep budget {self.budget!r} is not one of {', '.join(BUDGETS)}")
        amount = self.amount
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount) \
                or not amount > 0:  # inf would reach int() below
            raise WorkbenchError(f"the sweep's {self.budget} budget must be a finite number > 0, got {amount!r}")
        cores = os.cpu_count() or 1
        if not 1 <= self.parallel <= cores:
            raise WorkbenchError(f"--parallel {self.parallel} is not allowed: 1 to {cores} (this machine's cores)")
        if self.grid and self.runs:
            raise WorkbenchError("a sweep takes a grid or a list of runs, not both")
        variants = self.runs or ([dict(zip(self.grid, combo)) for combo in itertools.product(*self.grid.values())]
                                 if self.grid else [])
        if not variants:
            raise WorkbenchError("the sweep has no runs: give --grid FIELD=V1,V2 (repeatable) or a list of runs")
        if len(variants) > 200:
            raise WorkbenchError(f"the sweep has {len(variants)} runs; at most 200 are allowed")
        from workbench.tokenizer.tokenizer import fit_config

        base = self.base if isinstance(self.base, Config) else load_config(self.base, ws)
        out = []
        for i, v in enumerate(variants, 1):
            wanted = {**self.sets, **self._budget(), **v}  # a run's own values win
            cfg = apply_overrides(base, sections_of(wanted))
            cfg, _ = fit_config(ws, cfg, self.tokenizer, pinned="model.vocab_size" in wanted)
            cfg.train = cfg.train.replace(num_threads=max(1, cores // self.parallel))
            out.append((f"{self.name}-{i}", cfg))
        for run_name, _ in out:
            if ws.run_path(run_name).exists():
                raise WorkbenchError(f"run {run_name!r} already exists; choose another sweep --name")
        return out

    def _budget(self) -> dict:
        if self.budget == "minutes":
            return {"train.max_minutes": float(self.amount), "train.max_steps": None, "train.max_tokens": None}
        if self.budget == "tokens":
            return {"train.max_tokens": int(self.amount), "train.max_steps": None, "train.max_minutes": None}
        return {"train.max_steps": int(self.amount), "train.max_tokens": None, "train.max_minutes": None}


def parse_pairs(items: list[str], flag: str, many: bool) -> dict[str, Any]:
    """``--set``/``--grid`` items (the app's grid box too) by dotted key, each value parsed as its
    field's type: ``["model.dim=96,128"]`` -> ``{"model.dim": [96, 128]}`` with ``many``."""
    from workbench.config.overrides import field_info
    from workbench.config.fields import parse_field

    out: dict[str, Any] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        if not eq or "." not in key:
            raise WorkbenchError(f"{flag} {item!r} is not SECTION.FIELD=VALUE" + ("S" if many else ""))
        section, info = field_info(key, f"{flag} {item!r}")
        values = [parse_field(section, info, v) for v in (raw.split(",") if many else [raw])]
        out[f"{section}.{info.name}"] = values if many else values[0]
    return out


def request_from_text(ws: Workspace, answers: dict[str, Any], base: str | Config) -> SweepRequest:
    """The app's sweep dialog: its text answers (grid "SECTION.FIELD=V1,V2 ...", a budget kind
    and amount, runs at once, a name, a tokenizer and data) as a request, checked as the CLI's is
    (``validate``), so a bad one is refused before anything trains."""
    def number(key: str, text: Any, kind=float):
        try:
            value = kind(str(text).strip())
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not value > 0:
            raise WorkbenchError(f"{key} {str(text).strip()!r} is not allowed: expected "
                                 + ("a whole number >= 1" if kind is int else "a finite number > 0"))
        return value

    if not answers.get("tokenizer"):
        raise WorkbenchError("choose a tokenizer (build one first in the Tokenizer pane)")
    req = SweepRequest(base=base, tokenizer=answers["tokenizer"], data=(answers.get("data") or "").strip()
                       or DEFAULT_HUB_ID, name=(answers.get("name") or "").strip(),
                       budget=answers.get("budget") or "minutes",
                       amount=number(answers.get("budget") or "budget", answers.get("amount")),
                       grid=parse_pairs(str(answers.get("grid") or "").split(), "grid", many=True),
                       parallel=number("at once", answers.get("parallel") or "1", int),
                       full_eval=bool(answers.get("full_eval")))
    req.validate(ws)
    return req


def best_line(res: "SweepResult") -> str:
    """The sweep's outcome in one line: its best run, or why there is none."""
    done = [r for r in res.rows if r.get("bpb") is not None]
    if not done:
        return f"sweep {res.name}: no run finished with an evaluation ({len(res.rows)} run(s))"
    best = done[0]
    c = best.get("config") or {}
    return (f"sweep {res.name}: best {best['name']} at {best['bpb']:.4f} bits/byte (dim {c.get('dim')}, "
            f"{c.get('n_layers')} layers, lr {c.get('lr')}) of {len(res.rows)} run(s)")


class SweepJob:
    """``run_sweep`` in a thread, for a client that must stay responsive (the Runs pane): what
    the sweep says piles up for ``drain``; ``cancel`` stops it (each run keeps a checkpoint);
    ``line`` is its outcome once ``finished`` (``error`` says whether it failed)."""

    def __init__(self, ws: Workspace, req: SweepRequest):
        self.ws, self.req = ws, req
        self._said: list[str] = []
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"sweep-{req.name}", daemon=True)
        self.finished = False
        self.line: str | None = None
        self.error = False

    def start(self) -> "SweepJob":
        self._thread.start()
        return self

    def _say(self, text: str) -> None:
        with self._lock:
            self._said.append(text)

    def _run(self) -> None:
        from workbench.errors import user_message

        try:
            self.line = best_line(run_sweep(self.ws, self.req, say=self._say, cancel_event=self._cancel))
        except BaseException as e:  # reported, never raised into the client
            self.line, self.error = f"sweep {self.req.name}: {user_message(e)}", True
        self.finished = True

    def drain(self) -> list[str]:
        with self._lock:
            said, self._said = self._said, []
        return said

    def cancel(self) -> None:
        self._cancel.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)


def fits(cfg: Config, share: int = 1) -> tuple[bool, str]:
    """Whether a run's memory estimate fits this machine's free RAM (shared by ``share`` runs)."""
    from workbench.machine.estimate import available_memory, fmt_bytes, training_memory

    mem = training_memory(cfg.model, cfg.train.batch_size, None, cfg.train.precision, "cpu", cfg.train.optimizer)
    free = available_memory("cpu")["available"] // max(1, share)
    if mem.total > free:
        return False, f"needs about {fmt_bytes(mem.total)}, {fmt_bytes(free)} is free for it"
    return True, ""


@dataclass
class SweepResult:
    name: str
    rows: list[dict]  # ranked by bits per byte, best first; skipped and failed runs last


def run_sweep(ws: Workspace, req: SweepRequest, say: Callable[[str], None] = print,
              cancel_event: threading.Event | None = None) -> SweepResult:
    """Train the sweep's runs (``parallel`` at a time) and rank them."""
    from workbench.data.prepare import ensure_prepared

    plan = req.validate(ws)
    say(f"sweep {req.name}: {len(plan)} run(s), {req.parallel} at a time")
    ensure_prepared(ws, req.tokenizer, req.data, req.text_column, cancel_event=cancel_event)  # once, for all
    results: dict[str, dict] = {}
    todo = []
    for run_name, cfg in plan:
        ok, why = fits(cfg, req.parallel)
        if ok:
            todo.append((run_name, cfg))
        else:
            results[run_name] = {"name": run_name, "status": "skipped", "message": why}
            say(f"{run_name}: skipped ({why})")
    cfg_dir = ws.root / "sweeps" / req.name
    cfg_dir.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // req.parallel)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TORCH_CPP_LOG_LEVEL": "ERROR"}
    live: list[tuple[str, subprocess.Popen, Any]] = []
    queue = list(todo)
    for run_name, cfg in todo:  # all configs first, so a stopped sweep can say how to train the rest
        save_config(cfg_dir / f"{run_name}.yaml", cfg)

    def train_cmd(run_name: str) -> list[str]:
        return ["train", "--config", str(cfg_dir / f"{run_name}.yaml"), "--tokenizer", req.tokenizer,
                "--data", req.data, "--text-column", req.text_column, "--name", run_name]

    try:
        while queue or live:
            if cancel_event is not None and cancel_event.is_set():
                raise Cancelled(f"sweep {req.name!r} was cancelled")
            while queue and len(live) < req.parallel:
                run_name, cfg = queue.pop(0)
                log = open(cfg_dir / f"{run_name}.log", "wb")
                cmd = [sys.executable, "-m", "workbench", "--workspace", str(ws.root), *train_cmd(run_name)]
                # A trainer ends with the sweep, even a killed one (SIGTERM: it stops with a
                # checkpoint). Its own session: a Ctrl+C or hang-up of the terminal reaches the
                # sweep only, which passes on one stop (two would abort the trainer).
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True, preexec_fn=ends_with_parent(signal.SIGTERM))
                live.append((run_name, proc, log))
                say(f"{run_name}: training ({_describe(cfg)})")
            for item in list(live):
                run_name, proc, log = item
                if proc.poll() is None:
                    continue
                log.close()
                live.remove(item)
                results[run_name] = _result(ws, run_name, proc.returncode, cfg_dir)
                r = results[run_name]
                say(f"{run_name}: {r['status']}" + (f", {r['bpb']:.4f} bits/byte" if r.get("bpb") else "")
                    + (f" ({r['message']})" if r.get("message") else ""))
            time.sleep(0.2)
    except BaseException:
        for _, proc, log in live:  # a cancelled sweep stops its runs (each keeps a checkpoint)
            proc.send_signal(signal.SIGINT)
        for _, proc, log in live:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
        if live:
            say(f"sweep {req.name!r} stopped {', '.join(n for n, _, _ in live)} (each keeps its last checkpoint; "
                "go on with `workbench train --resume RUN`)")
        if queue:
            say(f"sweep {req.name!r} did not start {', '.join(n for n, _ in queue)}; train one with "
                f"`workbench {' '.join(shlex.quote(a) for a in train_cmd(queue[0][0]))}` (its config is in {cfg_dir})")
        raise
    if req.full_eval:  # after all training, so no timed run shares the cores with an evaluation
        for r in results.values():
            if r["status"] == "finished":
                say(f"{r['name']}: evaluating on the whole validation split")
                r.update(full_validation(ws, r["name"]))
    rows = sorted(results.values(), key=lambda r: (r.get("bpb") is None, r.get("bpb") or 0.0, r["name"]))
    from workbench import fileio

    fileio.write_json(cfg_dir / "results.json", {"request": _request_dict(req), "rows": rows})
    return SweepResult(req.name, rows)


def _describe(cfg: Config) -> str:
    m = cfg.model
    return f"dim {m.dim}, {m.n_layers} layers, {m.n_heads} heads, {m.n_params / 1e6:.2f}M parameters"


def _result(ws: Workspace, run_name: str, code: int, cfg_dir) -> dict:
    from workbench.runs.folder import get_run

    try:
        run = get_run(ws, run_name)
    except WorkbenchError:
        tail = (cfg_dir / f"{run_name}.log").read_text(errors="replace").strip().splitlines()[-1:]
        return {"name": run_name, "status": "failed", "message": tail[0] if tail else f"exit status {code}"}
    s = run.summary()
    row = {"name": run_name, "status": s["status"], "params": s["params"], "tokens": s["tokens"],
           "steps": s["steps"], "bpb": s["best_bpb"], "val_loss": s["best_val_loss"]}
    cfg = run.config()
    row["config"] = {"dim": cfg.model.dim, "n_layers": cfg.model.n_layers, "n_heads": cfg.model.n_heads,
                     "lr": cfg.train.lr, "batch_size": cfg.train.batch_size, "max_seq_len": cfg.model.max_seq_len}
    if code != 0:
        row["message"] = run.status().get("message") or f"exit status {code}"
    return row


def full_validation(ws: Workspace, run_name: str) -> dict:
    """Loss and bits per byte on every window of the run's validation split (`workbench eval`)."""
    from workbench.training.evaluate import EvalRequest, evaluate_run

    m = evaluate_run(ws, EvalRequest(run_name))
    return {"bpb": m["bpb"], "val_loss": m["val_loss"], "val_tokens": m["val_tokens"], "full_eval": True}


def _request_dict(req: SweepRequest) -> dict:
    from dataclasses import asdict

    return asdict(req)
