"""A training run in a child process (``torchrun`` with N processes), followed from its files.

The Train pane treats it like an in-process ``Trainer``: ``buffer.drain()`` gives the same
events (log, eval, sample, checkpoint, message, done, error), made here by tailing the run's
``metrics.jsonl`` and ``samples.jsonl`` and watching its checkpoints and the process.

Pause, resume and stop go through the run folder (``train.request_control``), which every rank
reads between steps and agrees on, so all workers pause together and stop at the same step
with one checkpoint. (Signals cannot do that: torchrun starts its workers in sessions of their
own.) A request is written again until ``status.json`` shows it took effect, because one written
while the workers are still setting up is not acted on.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from workbench.procs import ends_with_parent
from workbench.runs.folder import METRICS, SAMPLES, STATUS, get_run, read_jsonl
from workbench.training.events import (CheckpointSaved, Evaluated, EventBuffer, Failed, Finished, HealthLogged, Logged,
                                       Notice, Paused, Resumed, Sampled, Started, TrainEvent)
from workbench.training.health import HEALTH
from workbench.training.trainer import request_control
from workbench.workspace import Workspace

RESEND_AFTER = 1.0  # seconds before a request the run has not acted on is written again
STOP_GRACE = 120.0  # seconds for the workers to stop together before they are ended the hard way


def torchrun_argv(ws: Workspace, nproc: int, train_args: list[str]) -> list[str]:
    """``torchrun --standalone --nproc_per_node=N -m workbench --workspace WS train ...``."""
    exe = Path(sys.executable).with_name("torchrun")
    head = [str(exe)] if exe.is_file() else (
        [shutil.which("torchrun")] if shutil.which("torchrun") else [sys.executable, "-m", "torch.distributed.run"])
    return [*head, "--standalone", f"--nproc_per_node={nproc}", "-m", "workbench",
            "--workspace", str(ws.root), "train", *train_args]


class ChildRun:
    """A ``workbench train`` under torchrun, followed by tailing the run folder."""

    def __init__(self, ws: Workspace, run_name: str, nproc: int, train_args: list[str],
                 config_yaml: str | None = None):
        self.ws, self.run_name, self.nproc = ws, run_name, nproc
        self.buffer = EventBuffer()
        self.paused = False
        self._tmp = Path(tempfile.mkdtemp(prefix="workbench-torchrun-"))
        args = list(train_args)
        if config_yaml is not None:  # the Config pane's form, unsaved: hand it over as a file
            cfg_path = self._tmp / "config.yaml"
            cfg_path.write_text(config_yaml, encoding="utf-8")
            args = ["--config", str(cfg_path), *args]
        self.argv = torchrun_argv(ws, nproc, args)
        self.proc: subprocess.Popen | None = None
        self._offsets = {METRICS: 0, SAMPLES: 0, HEALTH: 0}
        self._partial = {METRICS: "", SAMPLES: "", HEALTH: ""}
        self._ckpt: str | None = None
        self._finished = False
        self._stop_at: float | None = None
        self._seen: set = set()
        self._want: str | None = None  # the last request: pause, resume or stop
        self._sent_at: float | None = None
        self.run_state: str | None = None  # status.json's state, as last read
        self.polls = 0
        self._started = False  # the start event was passed on
        self._old_pid = None  # a resumed run's status.json is the last run's until the workers start

    @classmethod
    def for_request(cls, ws: Workspace, req, res, nproc: int) -> "ChildRun":
        """``workbench train`` under torchrun for a resolved ``TrainRequest`` (a new run that
        names none is named as ``workbench train`` would name it)."""
        from workbench.runs.folder import default_run_name
        from workbench.training.request import child_args

        run = req.resume or req.name or default_run_name(ws, res.config)
        return cls(ws, run, nproc, *child_args(req, res, run))

    # --- process control -----------------------------------------------------------------

    def start(self) -> None:
        self._log = open(self._tmp / "stderr.log", "wb")
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS",
                                                               str(max(1, (os.cpu_count() or 1) // self.nproc)))}
        # torchrun ends with the app, even a killed one: its SIGTERM reaches the workers, which
        # stop with a checkpoint (call this on a thread that lives as long as the app: the
        # kernel's parent-death signal follows the thread that started the child)
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True, env=env,
                                     preexec_fn=ends_with_parent(signal.SIGTERM))
        self.buffer.put(Notice(text="started: " + " ".join(self.argv)))
        run_path = self.ws.run_path(self.run_name)
        if run_path.is_dir():  # resuming: what is already there was shown; only new rows count
            from workbench.runs.checkpoint import latest_name

            self._ckpt = latest_name(run_path)
            self._old_pid = self._read_status(run_path).get("pid")
            self._seen = {_row_key(r) for f in (METRICS, SAMPLES, HEALTH) for r in read_jsonl(run_path / f)}

    def _workers(self) -> list:
        import psutil

        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            return []

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _request(self, what: str) -> None:
        self._want = what
        self._send()

    def _send(self) -> None:
        run_dir = self.ws.run_path(self.run_name)
        if not run_dir.is_dir():
            return  # the workers are still preparing data: sent once the run folder exists
        try:
            request_control(run_dir, self._want)
        except OSError:
            return  # tried again on the next poll
        self._sent_at = time.monotonic()

    def pause(self) -> None:
        if self.alive:
            self.paused = True
            self._request("pause")

    def unpause(self) -> None:
        if self.alive:
            self.paused = False
            self._request("resume")

    def stop(self) -> None:
        """Every rank stops after the same step and one checkpoint is kept."""
        if not self.alive:
            return
        self.paused = False
        self._stop_at = time.monotonic()
        if not self.ws.run_path(self.run_name).is_dir():
            self.kill()  # nothing trained yet (still preparing data): nothing to keep
            return
        self._request("stop")

    def kill(self) -> None:
        """End torchrun and its workers (they run in sessions of their own)."""
        if not self.alive:
            return
        workers = self._workers()
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # torchrun passes it on to the workers
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        for p in workers:
            try:
                p.kill()
            except Exception:
                pass

    @property
    def finished(self) -> bool:
        return self._finished

    def follow(self, period: float) -> None:
        """``poll`` every ``period`` seconds until the run has ended (in a worker thread)."""
        while not self._finished:
            self.poll()
            time.sleep(period)

    # --- following -----------------------------------------------------------------------

    def poll(self) -> None:
        """Read what the run wrote since the last call into ``buffer`` (cheap; call a few
        times per second from a worker or a timer)."""
        if self._finished or self.proc is None:
            return
        path = self.ws.run_path(self.run_name)
        for row in self._tail(path / METRICS, METRICS):
            ev = metrics_event(row)
            if ev is not None:
                self.buffer.put(ev)
        for row in self._tail(path / HEALTH, HEALTH):
            self.buffer.put(HealthLogged(step=int(row.get("step", 0)), row=row))
        by_step: dict[int, list[str]] = {}
        for row in self._tail(path / SAMPLES, SAMPLES):
            by_step.setdefault(int(row.get("step", 0)), []).append(row.get("text", ""))
        for step, texts in by_step.items():
            self.buffer.put(Sampled(step=step, texts=texts))
        from workbench.runs.checkpoint import latest_name

        ck = latest_name(path) if path.is_dir() else None
        if ck and ck != self._ckpt:
            self._ckpt = ck
            self.buffer.put(CheckpointSaved(name=ck))
        self.polls += 1
        self._follow_state(path)
        if self._stop_at is not None and time.monotonic() - self._stop_at > STOP_GRACE:
            self.kill()  # workers that did not stop together are ended the hard way
        rc = self.proc.poll()
        if rc is None:
            return
        self._finished = True
        self._log.close()
        if rc == 0:
            state = self._read_state(path)
            if state not in ("finished", "stopped"):
                state = "stopped" if self._stop_at is not None else "finished"
            self.buffer.put(Finished(state=state, run=self.run_name, checkpoint=self._ckpt))
        else:
            self.buffer.put(Failed(message=self._failure(rc)))
        shutil.rmtree(self._tmp, ignore_errors=True)

    @staticmethod
    def _read_status(path: Path) -> dict:
        import json

        try:
            st = json.loads((path / STATUS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return st if isinstance(st, dict) else {}

    @classmethod
    def _read_state(cls, path: Path) -> str | None:
        return cls._read_status(path).get("state")

    def _follow_state(self, path: Path) -> None:
        """Announce the start (as the trainer's own start event), notice the run pausing and
        going on, and write a request again that it has not acted on (one written while the
        workers set up is not read)."""
        st = self._read_status(path)
        state = st.get("state")
        if not self._started and isinstance(st.get("start"), dict) and st.get("pid") != self._old_pid:
            self._started = True
            facts = {k: st.get(k) for k in ("precision", "precision_reason", "attention", "attention_reason")}
            self.buffer.put(Started.from_facts(**{"run": self.run_name, **facts, **st["start"]}))
        if state != self.run_state:
            if state == "paused" and self._want == "pause":
                self.buffer.put(Paused())
            elif self.run_state == "paused" and state == "running":
                self.buffer.put(Resumed())
            self.run_state = state
        if self._want is None or not self.alive:
            return
        done = {"pause": state == "paused", "resume": state != "paused", "stop": False}[self._want]
        if not done and (self._sent_at is None or time.monotonic() - self._sent_at > RESEND_AFTER):
            self._send()

    def _tail(self, path: Path, key: str) -> list[dict]:
        import json

        try:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_size < self._offsets[key]:
                    # a resume rewrote the file without the rows after its checkpoint: reread
                    self._offsets[key], self._partial[key] = 0, ""
                f.seek(self._offsets[key])
                chunk = f.read()
        except FileNotFoundError:
            return []
        self._offsets[key] += len(chunk)
        text = self._partial[key] + chunk.decode("utf-8", errors="replace")
        lines = text.split("\n")
        self._partial[key] = lines.pop()  # a line still being written
        out = []
        for line in lines:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            k = _row_key(row)
            if k not in self._seen:
                self._seen.add(k)
                out.append(row)
        return out

    def _failure(self, rc: int) -> str:
        try:
            lines = (self._tmp / "stderr.log").read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        for line in reversed(lines):
            if line.startswith("error: "):
                return line[len("error: "):]
        try:
            st = get_run(self.ws, self.run_name).status()
            if st.get("message"):
                return st["message"]
        except Exception:
            pass
        tail = " | ".join(line.strip() for line in lines[-3:] if line.strip())
        return f"torchrun exited with status {rc}" + (f": {tail[-300:]}" if tail else "")


def _row_key(row: dict) -> tuple:
    return (row.get("kind"), row.get("step"), row.get("text"), "update_ratio" in row)


def read_history(ws: Workspace, run_name: str) -> list[TrainEvent]:
    """A run's recorded metrics and health records as events, up to its latest checkpoint (to show a resumed run's
    past: the resume goes on from there, so later rows are about to be trained again)."""
    from workbench.runs.checkpoint import default_name

    tail = (default_name(ws.run_path(run_name)) or "").rsplit("_", 1)[-1]
    upto = int(tail) if tail.isdigit() else None
    out = []
    for row in read_jsonl(ws.run_path(run_name) / METRICS):
        ev = metrics_event(row)
        if ev is not None and (upto is None or ev.step <= upto):
            out.append(ev)
    out += [HealthLogged(step=int(row.get("step", 0)), row=row) for row in read_jsonl(ws.run_path(run_name) / HEALTH)
            if upto is None or int(row.get("step", 0)) <= upto]
    return out


def wait_stopped(job, period: float) -> None:
    """Wait (off the event loop, checking every ``period`` seconds) until a job asked to stop
    has ended: a ``Trainer`` stops after its step with a checkpoint; a ``ChildRun`` is polled,
    which writes the stop request again until its workers act on it, and is ended the hard way
    if it outlives its grace time."""
    deadline = time.monotonic() + STOP_GRACE + 15
    if isinstance(job, ChildRun):
        while not job.finished and time.monotonic() < deadline:
            job.poll()
            time.sleep(period)
        job.kill()  # only if it outlived its stop
        return
    while job.state not in ("finished", "stopped", "failed") and time.monotonic() < deadline:
        time.sleep(period)


def metrics_event(row: dict) -> TrainEvent | None:
    """The event a ``metrics.jsonl`` row stands for: an eval row or a train row (None for the
    rows `eval --data` adds, which are not part of training)."""
    kind = row.get("kind")
    if kind not in ("eval", "train"):
        return None
    cls = Evaluated if kind == "eval" else Logged
    return cls(step=int(row.get("step", 0)), row=row)
