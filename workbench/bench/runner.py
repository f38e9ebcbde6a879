"""Running one benchmark task in a fresh child process, with its peak RSS, progress and cancel."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from workbench.errors import Cancelled
from workbench.bench.measure import vm_hwm_mb


@dataclass
class ChildResult:
    result: dict
    returncode: int
    seconds: float
    peak_rss_mb: float | None  # the whole child process (its own children included)


def run_task(module: str, task: str, args: dict, tmp: Path, *, echo: Callable[[str], None] | None = None,
             cancel_event: threading.Event | None = None, env: dict | None = None) -> ChildResult:
    """Run ``python -m module task ARGS OUT`` and return what it wrote to OUT.

    The child's stdout and stderr go to a log file that is echoed line by line while it runs
    (so the parent's own stdout stays clean for the report); its last lines are kept as the
    error when it fails without saying why. Ctrl+C or ``cancel_event`` kills the child's whole
    process group and raises Cancelled.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    stem = f"{task}-{time.monotonic_ns()}"
    args_path, out_path, log_path = tmp / f"{stem}.args.json", tmp / f"{stem}.out.json", tmp / f"{stem}.log"
    args_path.write_text(json.dumps(args))
    child_env = {**os.environ, "TORCH_CPP_LOG_LEVEL": "ERROR", "PYTHONUNBUFFERED": "1", **(env or {})}
    t0 = time.perf_counter()
    try:
        return _run(module, task, args_path, out_path, log_path, t0, echo, cancel_event, child_env)
    finally:
        for p in (args_path, out_path, log_path):
            p.unlink(missing_ok=True)


def _run(module, task, args_path, out_path, log_path, t0, echo, cancel_event, child_env) -> ChildResult:
    with open(log_path, "wb") as log, open(log_path, "rb") as tail:
        proc = subprocess.Popen([sys.executable, "-m", module, task, str(args_path), str(out_path)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=child_env,
                                start_new_session=True)
        lines: list[str] = []
        pending = b""
        status = rusage = hwm = None
        try:
            while True:
                pid, st, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    status, rusage = st, ru
                else:  # the child's own high-water mark (see measure.run_measured)
                    now = vm_hwm_mb(proc.pid)
                    hwm = now if hwm is None or (now is not None and now > hwm) else hwm
                chunk = tail.read()
                if chunk:
                    pending += chunk
                    *done, pending = pending.split(b"\n")
                    for raw in done:
                        line = raw.decode("utf-8", "replace")
                        lines = (lines + [line])[-40:]
                        if echo:
                            echo(line)
                if status is not None:
                    break
                if cancel_event is not None and cancel_event.is_set():
                    raise Cancelled(f"the benchmark was cancelled during {task}")
                time.sleep(0.05)
        except BaseException:
            _kill(proc)
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        if pending and echo:
            echo(pending.decode("utf-8", "replace"))
    seconds = time.perf_counter() - t0
    code = proc.returncode
    peak = hwm if hwm is not None else (
        rusage.ru_maxrss / (2**20 if sys.platform == "darwin" else 1024) if rusage is not None else None)
    try:
        result = json.loads(out_path.read_text())
    except (OSError, ValueError):
        tail_text = "\n".join(line for line in lines if line.strip())[-600:]
        result = {"error": f"the {task} task exited with status {code} and wrote no result"
                           + (f"; its last output:\n{tail_text}" if tail_text else "")}
    if code != 0 and "error" not in result:
        result["error"] = f"the {task} task exited with status {code}"
    return ChildResult(result, code, seconds, peak)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        os.waitpid(proc.pid, 0)
    except ChildProcessError:
        pass
    proc.returncode = -9
