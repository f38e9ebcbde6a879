"""The Config pane's answers without the pane: what a config is, what it costs, whether it fits.

One validated ``ConfigRequest`` (a preset name or YAML path, ``--set`` items, a tokenizer whose
vocab the config takes, a time budget) becomes a ``ConfigReport`` (``config_report``): the
config, the base it was loaded from, the notices, every field, the diff against the base and
the estimates — parameters, FLOPs, training memory and the verdict for this machine, and the
tokens a time budget buys at this machine's measured speed. ``new_config`` saves such a config
as ``models/NAME.yaml`` (through ``save_as``, as the Config pane saves its form); ``list_configs``
lists what ``load_config`` can load.

The text of the estimates, the diff and a field's help is made here once, as lines of (text,
style) segments: the Config pane renders them with Rich markup, ``workbench config`` as plain text.
Neither torch nor textual is imported at module level: the pane calls the formatters on every
keystroke, and only the machine's device and speed (``machine_now``, ``config_report``) need torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.config import sizes
from workbench.machine import estimate as est
from workbench.machine.device import device_name
from workbench.config.schema import (PRESETS_DIR, Config, ModelConfig, TrainConfig, load_config, preset_names, resolve_config_path)
from workbench.config.overrides import (check_minutes, SECTIONS, apply_overrides, config_diff, parse_overrides)
from workbench.config.fields import fields_of, format_field
from workbench.errors import ConfigError, WorkbenchError

@dataclass(frozen=True)
class ConfigRequest:
    """A config to look at: ``spec`` (a preset name — workspace ``models/`` first — or a YAML
    path), then ``sets`` (``section.field=value`` items, each parsed by its field's own parser),
    ``minutes`` (a time budget: ``train.max_minutes``, with the step and token budgets cleared;
    a ``--set`` train value wins over it) and ``tokenizer`` (the config takes its vocab).
    Checked on construction, so a bad item is refused before anything is read or written."""

    spec: str
    sets: tuple[str, ...] = ()
    tokenizer: str | None = None
    minutes: float | None = None
    overrides: dict = field(init=False, repr=False, compare=False)  # ``sets`` parsed, by section

    def __post_init__(self):
        if not isinstance(self.spec, str) or not self.spec.strip():
            raise WorkbenchError("config: give a preset name or a YAML path (see `workbench config list`)")
        object.__setattr__(self, "sets", tuple(self.sets))
        object.__setattr__(self, "overrides", parse_overrides(list(self.sets)))
        if self.minutes is not None:
            check_minutes(self.minutes)
        if self.tokenizer is not None:
            from workbench.workspace import check_name

            check_name("tokenizer", self.tokenizer)


@dataclass(frozen=True)
class NewConfigRequest:
    """Save what ``source`` describes as ``models/NAME.yaml``; an existing file only with ``force``."""

    name: str
    source: ConfigRequest
    force: bool = False

    def __post_init__(self):
        from workbench.workspace import check_name

        check_name("config", self.name)


# --- resolving a request -------------------------------------------------------------------

@dataclass
class Resolved:
    """A request made concrete: the config, the one it started from, and what changed on the way."""

    config: Config
    base: Config
    base_label: str       # "debug (preset)", "mine (models/)" or the file's path
    notices: list[str]

    @property
    def diff(self) -> list[tuple[str, Any, Any]]:
        return config_diff(self.base, section_values(self.config))


def section_values(cfg: Config) -> dict[str, dict[str, Any]]:
    return {s: getattr(cfg, s).to_dict() for s in SECTIONS}


def source_of(path: Path | None, ws) -> str:
    """Where a config file lives, in the words the app uses: preset, models/ or its path."""
    if path is None:
        return "form"
    path = Path(path).resolve()
    if path.parent == PRESETS_DIR.resolve():
        return "preset"
    if ws is not None and path.parent == ws.models_dir().resolve():
        return "models/"
    return str(path)


def resolve(ws, req: ConfigRequest) -> Resolved:
    """The config ``req`` asks for, checked whole (cross-field rules too)."""
    base = load_config(req.spec, ws)
    where = source_of(base.source, ws)
    label = f"{req.spec} ({where})" if where in ("preset", "models/") else where
    cfg = apply_overrides(base, req.overrides, minutes=req.minutes)
    notices: list[str] = []
    if req.tokenizer is not None:
        from workbench.tokenizer.tokenizer import fit_config

        cfg, notice = fit_config(ws, cfg, req.tokenizer, pinned="vocab_size" in req.overrides["model"])
        notices += [notice] if notice else []
    return Resolved(cfg, base, label, notices)


def check_form(values: dict[str, dict[str, Any]], errors: dict[str, str]):
    """A form's config checked whole once each field is parsed (``errors``: a message by
    "section.name" for each that did not parse): (model, train) — None while anything is wrong —,
    the message to show beside each field (a rule across fields, "n_heads must divide dim",
    beside every field it names) and one line for the form (that rule, or how many fields are
    invalid)."""
    if errors:
        return None, None, dict(errors), f"{len(errors)} fields have invalid values" if len(errors) > 1 else ""
    try:
        return ModelConfig.from_dict(values["model"]), TrainConfig.from_dict(values["train"]), {}, ""
    except ConfigError as e:
        return None, None, {where: str(e) for where in e.fields}, str(e)


# --- estimates -----------------------------------------------------------------------------

@dataclass
class Estimates:
    """The numbers the Config pane shows for one model + train config. ``machine`` (the device
    and its memory) is None until known; so are ``memory`` and ``verdict``."""

    params: int
    breakdown: dict[str, int]
    flops: dict[str, int]           # per token: forward, train, attention_forward
    head_dim: int
    ffn_dim: int
    kv_heads: int
    optimizer: str
    max_minutes: float | None
    machine: dict | None = None  # device, available, total[, note]
    memory: est.MemoryEstimate | None = None
    verdict: est.Verdict | None = None
    speed: dict | None = None    # this machine's cached training speed for the shape (a budget on CPU)
    exports: list[dict] = field(default_factory=list)  # export.formats_for: which formats can hold it

    @property
    def budget_applies(self) -> bool:
        """A time budget on the CPU: what the measured speed turns into tokens."""
        return bool(self.max_minutes) and self.machine is not None and self.machine["device"] == "cpu"

    def to_dict(self) -> dict:
        d = {"params": self.params, "params_breakdown": self.breakdown, "flops_per_token": self.flops,
             "head_dim": self.head_dim, "ffn_dim": self.ffn_dim, "kv_heads": self.kv_heads,
             "machine": self.machine, "memory": self.memory.to_dict() if self.memory else None,
             "verdict": None, "exports": self.exports}
        if self.verdict is not None:
            d["verdict"] = {**dataclasses.asdict(self.verdict), "message": self.verdict.message}
        if self.budget_applies:
            d["budget"] = {"minutes": self.max_minutes, "measured": self.speed is not None and "tok_s" in self.speed}
            if d["budget"]["measured"]:
                tokens = budget_tokens(self.speed, self.max_minutes)
                d["budget"].update(tok_s=self.speed["tok_s"], precision=self.speed.get("precision"),
                                   threads=self.speed.get("threads"), tokens=tokens,
                                   tokens_per_param=round(tokens / max(self.params, 1), 2))
        return d


def estimates(model: ModelConfig, train: TrainConfig, machine: tuple[str, dict] | None = None) -> Estimates:
    """Estimates from the config alone; ``machine`` is (device, memory dict) as ``machine_now``
    gives it (the pane probes it in a worker), or None while unknown."""
    from workbench.export import formats_for  # the export package sits above config: imported when used

    e = Estimates(sizes.param_count(model), sizes.param_breakdown(model), sizes.flops_per_token(model),
                  model.head_dim, model.ffn_dim, model.kv_heads, train.optimizer, train.max_minutes,
                  exports=formats_for(model))
    if machine is not None:
        device, memory = machine
        e.machine = {**memory, "device": device}
        e.memory = est.training_memory(model, train.batch_size, None, train.precision, device, train.optimizer)
        e.verdict = est.verdict(e.memory.total, memory.get("available", 0), device)
    return e


def machine_now(device_choice: str) -> tuple[str, dict]:
    """The device ``device_choice`` means here and its free memory (may import torch)."""
    device = device_name(device_choice)
    return device, est.available_memory(device)


def budget_tokens(speed: dict, minutes: float) -> int:
    """Training tokens ``minutes`` buy at a measured speed (the planner's share of time in steps)."""
    from workbench.planning.planner import STEP_SHARE

    return int(speed["tok_s"] * minutes * 60 * STEP_SHARE)


# --- the report (`workbench config show`) --------------------------------------------------

@dataclass(frozen=True)
class FieldRow:
    section: str
    name: str
    value: Any
    default: Any
    allowed: str
    help: str
    changed: bool  # differs from the base the config was loaded from


@dataclass
class ConfigReport:
    config: Config
    base: Config
    base_label: str
    notices: list[str]
    fields: list[FieldRow]
    diff: list[tuple[str, Any, Any]]
    estimates: Estimates

    def to_dict(self) -> dict:
        return {"base": self.base_label, "source": str(self.base.source) if self.base.source else None,
                "description": self.config.description, "notices": self.notices,
                "config": self.config.to_dict(),
                "fields": [dataclasses.asdict(f) for f in self.fields],
                "diff": [{"field": k, "old": old, "new": new} for k, old, new in self.diff],
                "estimates": self.estimates.to_dict()}


def field_rows(cfg: Config, base: Config) -> list[FieldRow]:
    rows = []
    for section in SECTIONS:
        now, was = getattr(cfg, section).to_dict(), getattr(base, section).to_dict()
        for info in getattr(cfg, section).infos():
            rows.append(FieldRow(section, info.name, now[info.name], info.default, info.allowed(), info.help,
                                 now[info.name] != was.get(info.name)))
    return rows


def config_report(ws, req: ConfigRequest, machine: tuple[str, dict] | None = None) -> ConfigReport:
    """The show verb: ``req`` resolved, with its fields, diff and estimates for this machine
    (``machine`` as ``machine_now`` gives it; measured here when None). A time budget on the
    CPU shows the tokens it buys where this machine's speed for the shape is already cached."""
    r = resolve(ws, req)
    model, train = r.config.model, r.config.train
    e = estimates(model, train, machine if machine is not None else machine_now(train.device))
    if e.budget_applies:
        from workbench.planning.planner import budget_speed

        e.speed = budget_speed(model, train, measure=False)
    return ConfigReport(r.config, r.base, r.base_label, r.notices, field_rows(r.config, r.base), r.diff, e)


def new_config(ws, req: NewConfigRequest) -> tuple[Path, Resolved]:
    """The new verb: the config ``req.source`` resolves to, saved as ``models/NAME.yaml``."""
    r = resolve(ws, req.source)
    if models_path(ws, req.name).exists() and not req.force:
        raise WorkbenchError(f"models/{req.name}.yaml exists: pass --force to replace it, or choose another name")
    path, r.config = save_as(ws, req.name, r.config)
    return path, r


def models_path(ws, name: str) -> Path:
    """Where config ``name`` is saved: ``models/NAME.yaml`` (the name checked first)."""
    from workbench.workspace import check_name

    return ws.models_dir() / f"{check_name('config', name)}.yaml"


def save_as(ws, name: str, cfg: Config) -> tuple[Path, Config]:
    """``cfg`` written atomically as ``models/NAME.yaml``, named NAME (its description and
    data/tokenizer sections kept), replacing any file there; the path and the config saved."""
    from workbench.config.schema import save_config

    cfg = dataclasses.replace(cfg, name=name, source=None)
    path = models_path(ws, name)
    ws.models_dir(create=True)
    save_config(path, cfg)
    return path, cfg


# --- listing (`workbench config list`) -----------------------------------------------------

@dataclass
class ConfigEntry:
    name: str
    source: str               # "preset" or "models/"
    path: str
    description: str | None = None
    params: int | None = None
    error: str | None = None  # a models/ file that does not load says why, without hiding the rest

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def list_configs(ws) -> list[ConfigEntry]:
    """Every name ``load_config`` takes: the workspace's models/ first, then the presets (a
    preset of the same name as a models/ file is shadowed, so it is not listed)."""
    out = []
    for name in preset_names(ws):
        path = resolve_config_path(name, ws)
        entry = ConfigEntry(name, source_of(path, ws), str(path))
        try:
            cfg = load_config(str(path), ws)
        except WorkbenchError as e:
            entry.error = str(e)
        else:
            entry.description, entry.params = cfg.description, sizes.param_count(cfg.model)
        out.append(entry)
    return out


# --- text: lines of (text, style) segments -------------------------------------------------

Segment = tuple[str, str]  # (text, Rich style; "" = plain)
Line = list[Segment]
LABEL_WIDTH = 16


def render(lines: list[Line], markup: bool = False) -> str:
    """Lines as text: with Rich markup for the app, or plain for a terminal or a file."""
    def seg(text: str, style: str) -> str:
        if not markup:
            return text
        text = text.replace("[", "\\[")  # a value's brackets are text, not markup
        return f"[{style}]{text}[/]" if style else text

    return "\n".join("".join(seg(t, s) for t, s in line) for line in lines)


def _row(label: str, *value: Segment | str) -> Line:
    return [(label.ljust(LABEL_WIDTH - 1) + " ", "")] + [(v, "") if isinstance(v, str) else v for v in value]


def si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:g}"


def show_value(v: Any) -> str:
    return "null" if v is None else str(v)


def value_text(info, v: Any) -> str:
    """A field's value as a YAML file or ``--set`` writes it."""
    return "null" if v is None else format_field(info, v)


def field_help(section: str, info) -> list[Line]:
    """What field ``section.name`` is for, what it allows and its default (the Config pane
    shows it for the focused field)."""
    return [[(f"{section}.{info.name}", "b"), (f": {info.help}", "")],
            [(f"allowed: {info.allowed()}; default {value_text(info, info.default)}", "dim")]]


VERDICT_STYLE = {"fits": "b green", "tight": "b yellow"}
NOT_MEASURED = "not measured on this machine yet (the Config pane measures it)"


def estimate_lines(e: Estimates | None, pending: str = NOT_MEASURED) -> list[Line]:
    """The Estimates block (None: the config does not validate). Without the machine the
    memory line says it is being checked; under a time budget on the CPU, ``budget_lines``
    follow (``pending`` says why there is no speed yet)."""
    lines = _estimate_lines(e)
    return lines + budget_lines(e, pending) if e is not None and e.budget_applies else lines


def _estimate_lines(e: Estimates | None) -> list[Line]:
    lines: list[Line] = [[("Estimates", "b")]]
    if e is None:
        return lines + [[("fix the invalid values to see estimates", "dim")]]
    fl = e.flops
    lines += [
        _row("parameters", f"{si(e.params)}  ({e.params:,})"),
        [("  " + ", ".join(f"{k} {si(v)}" for k, v in e.breakdown.items() if v), "")],
        _row("FLOPs/token", f"{si(fl['train'])} train, {si(fl['forward'])} forward"),
        [(f"head_dim {e.head_dim}, ffn {e.ffn_dim}, kv heads {e.kv_heads}", "")],
    ]
    lines += export_lines(e.exports)
    if e.machine is None or e.memory is None or e.verdict is None:
        return lines + [_row("memory", ("checking the machine …", "dim"))]
    mem, m, device = e.memory, e.machine, e.machine["device"]
    optimizer = {"adamw": "adam", "muon": "muon"}.get(e.optimizer, f"{e.optimizer} (state counted as AdamW's)")
    kind = "RAM" if device == "cpu" else f"{device} memory"
    return lines + [
        _row("training memory", f"{est.fmt_bytes(mem.total)} at batch {mem.batch_size} × {mem.seq_len} "
                                f"({mem.precision}, {device})"),
        [((f"  weights+grads+{optimizer} {est.fmt_bytes(mem.weights + mem.grads + mem.optimizer)}, "
           f"activations {est.fmt_bytes(mem.activations)}"), "")],
        _row(f"available {kind}", f"{est.fmt_bytes(m.get('available', 0))} of {est.fmt_bytes(m.get('total', 0))}"
             + (f" ({m['note']})" if m.get("note") else "")),
        _row("verdict", (e.verdict.verdict, VERDICT_STYLE.get(e.verdict.verdict, "b red"))),
    ]


def export_lines(exports: list[dict]) -> list[Line]:
    """Which export formats can hold the model (before training it), and why the others cannot."""
    if not exports:
        return []
    ok = [x["format"] for x in exports if not x["why_not"]]
    lines = [_row("exports to", (", ".join(ok), "b green") if ok else ("no format", "b red"))]
    return lines + [[(f"  not {x['format']}: {x['why_not']}", "dim")] for x in exports if x["why_not"]]


def budget_lines(e: Estimates, pending: str) -> list[Line]:
    """This machine's measured speed for the shape (``e.speed``) and the tokens the time budget
    buys; ``pending`` says why there is no speed yet (the pane is measuring it; the CLI has none)."""
    speed = e.speed
    if speed is None:
        return [_row("speed here", (pending, "dim"))]
    if "error" in speed:
        return [_row("speed here", (f"not measured: {speed['error']}", "dim"))]
    tokens = budget_tokens(speed, e.max_minutes)
    return [
        _row("speed here", f"{speed['tok_s']:,.0f} tok/s measured ({speed['precision']}, "
                           f"{speed['threads']} thread(s))"),
        _row("budget buys", f"{si(tokens)} tokens in {e.max_minutes:g} min "
                            f"({tokens / max(e.params, 1):.1f} per parameter)"),
    ]


def diff_lines(diff: list[tuple[str, Any, Any]], base_label: str) -> list[Line]:
    """The changes against the base, new values in bold."""
    head: Line = [(f"Changes vs {base_label}", "b")]
    if not diff:
        return [head, [("none", "dim")]]
    return [head] + [[(f"{key}: {show_value(old)} → ", ""), (show_value(new), "b")] for key, old, new in diff]


def report_lines(rep: ConfigReport) -> list[Line]:
    """``workbench config show``: the header, notices, fields (changed ones marked), the
    estimates and the diff."""
    cfg = rep.config
    lines: list[Line] = [[(rep.base_label + (f": {cfg.description}" if cfg.description else ""), "b")]]
    if cfg.source is not None:
        lines.append([(f"from {cfg.source}", "dim")])
    lines += [[(f"notice: {n}", "")] for n in rep.notices]
    lines += [[], [(f"* = changed from {rep.base_label}", "dim")]]
    width = max(len(f.name) for f in rep.fields) + 2
    for section in SECTIONS:
        lines += [[(section, "b")]]
        infos = {f.name: f for f in getattr(cfg, section).infos()}
        for f in (f for f in rep.fields if f.section == section):
            text = value_text(infos[f.name], f.value)
            none = infos[f.name].none_means if f.value is None else None
            lines.append([(f"{'*' if f.changed else ' '} {f.name.ljust(width)}", ""),
                          (text, "b" if f.changed else ""), (f"  ({none})" if none else "", "dim")])
    lines += [[]] + estimate_lines(rep.estimates)
    lines += [[]] + diff_lines(rep.diff, rep.base_label)
    return lines
