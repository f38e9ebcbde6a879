"""The budget a resumed run trains to, as the Train pane's form asks for it: a number of steps,
tokens or minutes (in all, counted from the run's start).

No Textual here: plain functions the pane and the tests call. The answer is a set of
``train_overrides`` for ``Trainer.resume`` (or ``--set train.FIELD=VALUE`` under torchrun), so a
run extended in the app is recorded in its ``resumes`` history exactly as one extended by the CLI.
"""

from __future__ import annotations

import math

from workbench.config.fields import fields_of
from workbench.config.schema import TrainConfig
from workbench.errors import WorkbenchError

KINDS = ("steps", "tokens", "minutes")
FIELDS = {"steps": "max_steps", "tokens": "max_tokens", "minutes": "max_minutes"}
# the bounds of the train field each budget sets (its metadata is the one place they are written)
LIMITS = {kind: (info.min, info.max) for kind in KINDS
          for info in fields_of(TrainConfig) if info.name == FIELDS[kind]}


def current(train) -> tuple[str, str]:
    """The kind and value (as the form writes it) of a train config's budget: the first of
    steps, tokens, minutes that is set."""
    for kind in KINDS:
        if value(train, kind):
            return kind, value(train, kind)
    return "steps", ""


def value(train, kind: str) -> str:
    """A train config's budget of ``kind`` as the form writes it ("" where it has none)."""
    v = getattr(train, FIELDS[kind])
    return "" if v is None else fmt(kind, v)


def fmt(kind: str, value) -> str:
    return f"{value:g}" if kind == "minutes" else str(int(value))


def progress(run) -> dict:
    """Where the run's latest checkpoint stands: steps, tokens and minutes trained (what a
    resume continues from)."""
    from workbench.runs.checkpoint import latest_name

    name = latest_name(run.path) or ""
    tail = name.rsplit("_", 1)[-1]
    step = int(tail) if tail.isdigit() else 0
    rows = [r for r in run.metrics() if r.get("kind") == "train" and int(r.get("step", 0)) <= step]
    last = rows[-1] if rows else {}
    return {"steps": step, "tokens": int(last.get("tokens") or 0),
            "minutes": float(last.get("elapsed") or 0.0) / 60}


def parse(kind: str, text: str):
    """The budget typed into the form; a WorkbenchError names the field and what is allowed."""
    lo, hi = LIMITS[kind]
    raw = text.strip().replace("_", "")
    if kind == "minutes":
        allowed = f"a number of minutes above 0, up to {hi:,}"
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        ok = math.isfinite(value) and lo < value <= hi
    else:
        allowed = f"a whole number of {kind} from {lo:,} to {hi:,}"
        try:
            value = int(raw)
        except ValueError:
            value = 0
        ok = lo <= value <= hi
    if not ok:
        raise WorkbenchError(f"budget {text.strip()!r} is not allowed: expected {allowed}")
    return value


def overrides(run_name: str, train, kind: str, text: str, done: dict) -> dict:
    """The ``train_overrides`` that make run ``run_name`` (config ``train``, at ``done``) train
    to the budget in the form: that budget alone (the other two cleared, or the run would stop at
    the one it has spent). Empty when the budget is the run's own and some of it is left."""
    value = parse(kind, text)
    if value <= done[kind]:
        have = fmt(kind, done[kind]) if kind != "minutes" else f"{done[kind]:.1f}"
        raise WorkbenchError(f"budget {fmt(kind, value)} {kind} is not allowed: run {run_name!r} has already "
                             f"trained {have} {kind}; enter more than that to train on")
    wanted = {field: None for field in FIELDS.values()}
    wanted[FIELDS[kind]] = value
    return {k: v for k, v in wanted.items() if getattr(train, k) != v}


def resume_point(ws, name: str) -> dict:
    """What a resume of run ``name`` goes on from: its train config (the budget it had) and
    its ``progress``, as ``overrides`` takes them."""
    from workbench.runs.folder import get_run, run_config

    run = get_run(ws, name)
    return {"name": name, "train": run_config(run).train, "done": progress(run)}
