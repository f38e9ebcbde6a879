"""TrainRequest: what `workbench train` and the Train pane ask for, and what it resolves to.

A request is a new run (a config — a preset name, a YAML path or the Config pane's form — or
only a time budget, which the planner turns into a config; a tokenizer; a data source) or the
resume of a run with new train settings. ``resolve`` turns it into the exact config a run
trains with, the notices that say what was changed on the way (the vocab the tokenizer
dictates), and the plan where the planner chose. ``train.start_training`` is the one function
both clients call with it; ``child_args`` hands a resolved request to ``workbench train``
under torchrun, with as many processes as ``max_procs`` allows this machine. Torch-free, so
the app checks a request on the UI thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from workbench.config.schema import Config, TrainConfig, load_config
from workbench.config.overrides import apply_overrides, check_minutes, train_changes
from workbench.config.fields import fields_of, format_field
from workbench.data.sources import DEFAULT_HUB_ID
from workbench.errors import ConfigError, WorkbenchError



def _no_overrides() -> dict[str, dict[str, Any]]:
    return {"model": {}, "train": {}}


@dataclass(frozen=True)
class TrainRequest:
    """One training request. ``overrides`` are typed field values by section (the CLI's
    ``--set`` items parsed by ``config.parse_overrides``; the Train pane's resume budget)."""

    tokenizer: str | None = None
    data: str | None = None  # a new run's text; None: the hub's TinyStories
    config: str | Config | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=_no_overrides)
    minutes: float | None = None
    name: str | None = None
    text_column: str = "text"
    resume: str | None = None
    init_from: str | None = None  # RUN or RUN:CHECKPOINT whose weights a new run starts from

    def __post_init__(self):
        unknown = set(self.overrides) - {"model", "train"}
        if unknown:
            raise ConfigError(f"unknown section(s) {', '.join(sorted(unknown))}; valid sections: model, train")
        if self.minutes is not None:
            check_minutes(self.minutes)
        if self.name is not None:
            from workbench.workspace import check_name

            check_name("run", self.name)
        if self.resume is not None:
            given = [what for what, value in (("tokenizer", self.tokenizer), ("data", self.data), ("name", self.name),
                                               ("text column", None if self.text_column == "text" else self.text_column))
                     if value is not None]
            if given:  # never dropped unsaid: a resume goes on with the run's own
                raise WorkbenchError(f"a resumed run keeps its own {' and '.join(given)}: resume {self.resume!r} "
                                     f"without {'them' if len(given) > 1 else 'it'}, or start a new run to train "
                                     "on other data")
            if self.overrides.get("model"):
                raise WorkbenchError("model fields cannot change when a run is resumed (its weights have that "
                                     "shape); only train fields can")
            if self.config is not None:
                raise WorkbenchError(f"a resumed run trains with its own config: resume {self.resume!r} "
                                     "without a config")
            if self.init_from is not None:
                raise WorkbenchError(f"a resumed run goes on from its own weights: resume {self.resume!r} without "
                                     "--init-from, or start a new run from it")
        elif self.init_from is not None:
            run, _, ckpt = self.init_from.partition(":")
            from workbench.workspace import check_name

            check_name("run", run)
            if ":" in self.init_from and not ckpt:
                raise WorkbenchError(f"--init-from {self.init_from!r}: give RUN or RUN:CHECKPOINT (e.g. first:step_000200)")
            if self.data is None:
                object.__setattr__(self, "data", DEFAULT_HUB_ID)
        else:
            if self.data is None:
                object.__setattr__(self, "data", DEFAULT_HUB_ID)
            if not self.tokenizer:
                raise WorkbenchError("choose a tokenizer (build one first: `workbench tokenizer build`, or the "
                                     "Tokenizer pane)")
            if self.config is None and self.minutes is None:
                raise WorkbenchError("give a config (a preset, a YAML file) or a time budget in minutes for the "
                                     "planner to choose one")


@dataclass
class Resolved:
    """A request made concrete: the config the run trains with (for a resume, the run's own
    with the new train settings), what changed on the way, and the plan if one chose it."""

    config: Config
    notices: list[str] = field(default_factory=list)
    plan: Any = None                      # planner.Plan, when the planner chose the config
    train_overrides: dict[str, Any] = field(default_factory=dict)  # a resume's train changes
    tokenizer: str | None = None          # when not the request's own (--init-from: the origin's)
    init_from: tuple[str, str] | None = None  # (run, checkpoint) whose weights a new run starts from


def resolve(ws, req: TrainRequest, say: Callable[[str], None] | None = None) -> Resolved:
    """The config ``req`` trains, checked whole; ``say`` hears the planner's progress."""
    if req.resume is not None:
        return _resolve_resume(ws, req)
    if req.init_from is not None:
        return _resolve_init_from(ws, req)
    from workbench.tokenizer.tokenizer import fit_config, load_tokenizer

    load_tokenizer(ws, req.tokenizer)  # a missing or broken tokenizer is refused before the planner measures
    planned = None
    if req.config is None:
        from workbench.training.distributed import broadcast_object, dist_info
        from workbench.planning.planner import PlanRequest, plan

        # Under torchrun rank 0 measures and plans alone, and every rank trains its plan: ranks
        # measuring apart could pick different shapes (and would measure each other's load).
        rank, _, world = dist_info()
        planned = broadcast_object(plan(ws, PlanRequest(req.tokenizer, req.minutes), say=say) if rank == 0
                                   else None, world)
        cfg = planned.config
    elif isinstance(req.config, Config):
        cfg = req.config
    else:
        cfg = load_config(req.config, ws)
    cfg = apply_overrides(cfg, req.overrides, minutes=req.minutes)
    cfg, notice = fit_config(ws, cfg, req.tokenizer, pinned="vocab_size" in (req.overrides.get("model") or {}))
    return Resolved(cfg, [notice] if notice else [], planned)


def origin_of(ws, init_from: str) -> tuple:
    """``--init-from RUN[:CHECKPOINT]``: the run and the checkpoint its weights come from (the one
    verbs use by default when none is named)."""
    from workbench.runs.folder import get_run

    name, _, ckpt = init_from.partition(":")
    run = get_run(ws, name)
    ckpt = ckpt or run.latest_checkpoint()
    if ckpt is None:
        raise WorkbenchError(f"run {name!r} has no checkpoint yet: there are no weights to start from")
    if ckpt not in run.checkpoints():
        raise WorkbenchError(f"checkpoint {ckpt!r} of run {name!r} is missing; available: "
                             f"{', '.join(run.checkpoints()) or 'none'}")
    return run, ckpt


def _resolve_init_from(ws, req: TrainRequest) -> Resolved:
    """A new run starting from another run's weights: that run's config (or ``req.config``) with
    the overrides; the tokenizer must be the one the weights were trained with (by its hash)."""
    from workbench.runs.folder import run_config
    from workbench.tokenizer.tokenizer import load_tokenizer

    origin, ckpt = origin_of(ws, req.init_from)
    want = (origin.raw_config().get("data") or {}).get("tokenizer_sha256") or origin.load_tokenizer().sha256
    tok_name = req.tokenizer or (origin.raw_config().get("data") or {}).get("tokenizer")
    if not tok_name:
        raise WorkbenchError(f"choose the tokenizer run {origin.name!r} was trained with (--tokenizer)")
    if load_tokenizer(ws, tok_name).sha256 != want:
        raise WorkbenchError(f"tokenizer {tok_name!r} is not the one run {origin.name!r} was trained with, so its "
                             "ids would mean other text to these weights; use that tokenizer (its copy is in "
                             f"{origin.tokenizer_path()})")
    if isinstance(req.config, Config):
        cfg = req.config
    elif req.config is not None:
        cfg = load_config(req.config, ws)
    else:
        cfg = run_config(origin)
    cfg = apply_overrides(cfg, req.overrides, minutes=req.minutes)
    notices = [f"starting from the weights of run {origin.name!r} at {ckpt} (tokenizer {tok_name!r}); a new "
               "optimizer and schedule"]
    return Resolved(cfg, notices, None, tokenizer=tok_name, init_from=(origin.name, ckpt))


def _resolve_resume(ws, req: TrainRequest) -> Resolved:
    from workbench.runs.folder import get_run, run_config

    cfg = run_config(get_run(ws, req.resume))
    wanted = dict(req.overrides.get("train") or {})
    if req.minutes is not None:
        wanted = {"max_minutes": float(req.minutes), **wanted}
    cfg, changes = train_changes(cfg, wanted)
    return Resolved(cfg, [], None, {k: new for k, (_, new) in changes.items()})


def child_args(req: TrainRequest, res: Resolved, run_name: str | None = None) -> tuple[list[str], str | None]:
    """``workbench train`` arguments for the resolved request (under torchrun), and the YAML of
    the config to hand over as a file (None for a resume: the run has its config)."""
    if req.resume is not None:
        infos = {f.name: f for f in fields_of(TrainConfig)}
        args = ["--resume", req.resume]
        for k, v in res.train_overrides.items():
            args += ["--set", f"train.{k}={'null' if v is None else format_field(infos[k], v)}"]
        return args, None
    import yaml

    args = ["--tokenizer", str(res.tokenizer or req.tokenizer), "--data", req.data, "--text-column", req.text_column]
    if res.init_from is not None:
        args += ["--init-from", ":".join(res.init_from)]
    if run_name or req.name:
        args += ["--name", run_name or req.name]
    return args, yaml.safe_dump(res.config.to_dict(), sort_keys=False)



# --- how many processes (the Train pane starts N under torchrun) ---------------------------

MAX_PROCS = 64


def max_procs(devices: list[dict]) -> tuple[int, str]:
    """How many processes this machine can train with, and why: one per GPU where there are
    GPUs, else one per CPU core (more would only wait for each other). ``devices`` as
    ``device.describe_devices`` lists them; while they are unknown, the ceiling alone."""
    gpus = [d for d in devices if str(d.get("device", "")).startswith("cuda")]
    if gpus:
        return len(gpus), f"one per GPU; this machine has {len(gpus)}"
    cores = next((d.get("cores") for d in devices if d.get("device") == "cpu"), None)
    if isinstance(cores, int) and cores > 0:
        return min(cores, MAX_PROCS), f"one per CPU core; this machine has {cores}"
    return MAX_PROCS, ""


def parse_procs(text: str, devices: list[dict]) -> int:
    """The number of processes as typed (empty: 1), within ``max_procs``; a WorkbenchError
    names the value and what is allowed."""
    text = text.strip() or "1"
    try:
        n = int(text)
    except ValueError:
        n = 0
    limit, why = max_procs(devices)
    if not 1 <= n <= limit:
        raise WorkbenchError(f"processes {text!r} is not allowed: expected an integer from 1 to {limit}"
                             + (f" ({why})" if why else ""))
    return n
