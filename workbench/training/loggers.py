"""Metrics rows copied to the tools people read curves in: TensorBoard, Weights & Biases, trackio.

``train.log_to`` names them (``config.schema.LOG_TO_CHOICES``; each an optional extra of the
package). The trainer's rank 0 opens them when its loop starts, hands them every train and eval
row it appends to ``metrics.jsonl`` (each numeric value as the scalar ``KIND/KEY`` at the row's
step) and closes them when the run ends, however it ends.

``metrics.jsonl`` stays the record. When a tool opens, its copy of this run is rebuilt from the
rows the file holds (a resumed run has already dropped the rows after its checkpoint), so a
resume neither repeats nor reorders a step, and a tool first asked for on a resume gets the whole
history. A tool that fails is switched off for the rest of the run with one notice; training
goes on. Where each writes:

- tensorboard: event files in ``<run>/tensorboard/``, by ``torch.utils.tensorboard.SummaryWriter``
  (tensorboard's own event-file writer underneath).
- wandb: ``<run>/wandb/``, offline unless the user is logged in (``WANDB_API_KEY`` or a netrc
  entry for the wandb host); ``WANDB_MODE``, when set, decides instead. ``wandb sync`` uploads an
  offline run.
- trackio: trackio's local store (``$TRACKIO_DIR``, by default ``~/.cache/huggingface/trackio``),
  project ``workbench``; the trackio run's id is kept in ``<run>/trackio.json`` so a resume
  replaces that run and no other.

No torch at import, and none of the tools until a run asks for it.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from workbench.config.schema import LOG_TO_CHOICES
from workbench.errors import WorkbenchError
from workbench.training.health import HEALTH, as_scalars

KINDS = ("train", "eval", "health")  # the rows training writes (health: ``training.health.as_scalars``)
PROJECT = "workbench"      # the wandb and trackio project (WANDB_PROJECT overrides it for wandb)
TRACKIO_RECORD = "trackio.json"


def names_of(log_to: str) -> list[str]:
    """``"tensorboard,wandb"`` -> ["tensorboard", "wandb"] (``train.log_to`` as kept)."""
    return [n for n in log_to.split(",") if n]


def check_installed(log_to: str) -> None:
    """Refuse, in one line naming the extra to install, a tool ``log_to`` asks for that cannot be
    imported: called before a run starts, so no run begins without a tool it was asked to feed."""
    for name in names_of(log_to):
        try:
            importlib.import_module(name)
        except ImportError:
            raise WorkbenchError(f"train.log_to asks for {name}, which is not installed: "
                                 f"pip install 'workbench[{name}]'") from None
        except Exception as e:  # installed but broken (a clashing dependency): say so, in one line
            raise WorkbenchError(f"train.log_to asks for {name}, which fails to import ({type(e).__name__}: "
                                 f"{_first_line(e)}); reinstall it: pip install 'workbench[{name}]'") from None


def scalars(row: dict) -> dict[str, Any]:
    """A metrics row's numbers as the tools' scalars: ``{"train/loss": 2.1, ...}`` (the kind and
    the step are not values; None, text and flags are left out)."""
    kind = row.get("kind", "train")
    return {f"{kind}/{k}": v for k, v in row.items()
            if k not in ("kind", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)}


@contextlib.contextmanager
def _quiet():
    """The tools print banners and hints: keep them off the terminal (the app draws there, and
    `workbench train` prints its own lines)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:160] if text else ""


class _TensorBoard:
    name = "tensorboard"

    def open(self, run_dir: Path, run_name: str, config: dict) -> str:
        from torch.utils.tensorboard import SummaryWriter

        d = run_dir / "tensorboard"
        if d.exists():
            shutil.rmtree(d)  # rebuilt from metrics.jsonl
        self.writer = SummaryWriter(log_dir=str(d), flush_secs=10)
        return str(d)

    def write(self, step: int, values: dict) -> None:
        for tag, v in values.items():
            self.writer.add_scalar(tag, v, global_step=step)

    def close(self) -> None:
        self.writer.close()


def wandb_logged_in() -> bool:
    """Whether wandb would find an API key: ``WANDB_API_KEY``, or a netrc entry for its host."""
    import netrc
    from urllib.parse import urlparse

    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        auth = netrc.netrc(os.environ.get("NETRC") or None).authenticators(host or "")
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


class _Wandb:
    name = "wandb"

    def open(self, run_dir: Path, run_name: str, config: dict) -> str:
        import wandb

        d = run_dir / "wandb"
        if d.exists():
            shutil.rmtree(d)  # rebuilt from metrics.jsonl, as a new wandb run
        mode = None if os.environ.get("WANDB_MODE") else ("online" if wandb_logged_in() else "offline")
        settings = wandb.Settings(console="off", silent=True, x_disable_stats=True, save_code=False, disable_git=True)
        with _quiet():
            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or PROJECT, name=run_name, dir=str(run_dir),
                                  config=config, mode=mode, settings=settings, reinit="create_new")
        how = mode or os.environ.get("WANDB_MODE")
        return f"{d} ({how})" if how else str(d)

    def write(self, step: int, values: dict) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        import wandb

        with _quiet():
            self.run.finish()
            # finish() returns before wandb's service has written the last records of the run file
            # (measured with wandb 0.31: 5 runs in 15 had an empty file just after it); stopping
            # the service flushes them, and the next run starts another
            wandb.teardown()


class _Trackio:
    name = "trackio"

    def open(self, run_dir: Path, run_name: str, config: dict) -> str:
        import trackio
        from trackio.utils import TRACKIO_DIR

        from workbench import fileio

        record = run_dir / TRACKIO_RECORD
        old = fileio.read_json(record) if record.is_file() else None
        if isinstance(old, dict) and old.get("id"):  # this run's earlier copy goes: it is rebuilt
            for r in trackio.Api().runs(old.get("project") or PROJECT):
                if r.id == old["id"]:
                    r.delete()
        with _quiet():
            self.run = trackio.init(project=PROJECT, name=run_name, config=config, resume="never", embed=False,
                                    auto_log_cpu=False, auto_log_gpu=False, capture_console=False)
        fileio.write_json(record, {"project": PROJECT, "name": self.run.name, "id": self.run.id, "store": str(TRACKIO_DIR)})
        return f"project {PROJECT} in {TRACKIO_DIR}"

    def write(self, step: int, values: dict) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        import trackio

        with _quiet():
            if trackio.context_vars.current_run.get() is self.run:
                trackio.finish()  # also forgets it, so trackio's exit hook does not finish it again
            else:
                self.run.finish()


SINKS = {"tensorboard": _TensorBoard, "wandb": _Wandb, "trackio": _Trackio}
assert tuple(SINKS) == LOG_TO_CHOICES


class Loggers:
    """The tools one run's rows go to (none when ``log_to`` is empty). ``say`` hears the one
    line a start or a failure has to tell (the trainer makes it a Notice event)."""

    def __init__(self, log_to: str = "", say: Callable[[str], None] = lambda text: None):
        self.names = names_of(log_to)
        self.say = say
        self.live: list = []

    def open(self, run_dir: Path, run_name: str, config: dict, rows: list[dict]) -> None:
        """Start every tool and give it ``rows`` (the run's metrics so far) first."""
        rows = [r for r in rows if r.get("kind") in KINDS and isinstance(r.get("step"), int)]
        opened = []
        for name in self.names:
            sink = SINKS[name]()
            try:
                where = sink.open(run_dir, run_name, config)
                for r in rows:
                    sink.write(r["step"], scalars(r))
            except Exception as e:
                self._drop(sink, e, "could not start")
                continue
            self.live.append(sink)
            opened.append(f"{name} {where}")
        if opened:
            again = f" (the {len(rows)} rows so far copied from metrics.jsonl and health.jsonl)" if rows else ""
            self.say("metrics also go to " + "; ".join(opened) + again)

    def write(self, row: dict) -> None:
        """One row just appended to metrics.jsonl, to every tool still working."""
        if not self.live or row.get("kind") not in KINDS:
            return
        values = scalars(row)
        for sink in list(self.live):
            try:
                sink.write(row["step"], values)
            except Exception as e:
                self.live.remove(sink)
                self._drop(sink, e, f"failed at step {row['step']}")

    def close(self) -> None:
        sinks, self.live = self.live, []
        for sink in sinks:
            try:
                sink.close()
            except Exception as e:
                self.say(f"{sink.name} logging could not finish ({type(e).__name__}: {_first_line(e)}); "
                         "metrics.jsonl has every row")

    def _drop(self, sink, e: Exception, what: str) -> None:
        with contextlib.suppress(Exception):
            sink.close()
        self.say(f"{sink.name} logging {what} ({type(e).__name__}: {_first_line(e)}); it is off for the rest of "
                 "this run, and metrics.jsonl has every row")


def open_loggers(log_to: str, run, config: dict, say: Callable[[str], None]) -> Loggers:
    """The run's tools, opened and brought up to date with its ``metrics.jsonl`` (and the
    per-layer figures of its ``health.jsonl``)."""
    from workbench.runs.folder import read_jsonl

    loggers = Loggers(log_to, say)
    if loggers.names:
        rows = read_jsonl(run.path / "metrics.jsonl") + [as_scalars(r) for r in read_jsonl(run.path / HEALTH)]
        rows.sort(key=lambda r: r.get("step", 0) if isinstance(r.get("step"), int) else 0)  # stable: wandb wants steps in order
        loggers.open(run.path, run.name, config, rows)
    return loggers
