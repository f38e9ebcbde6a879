"""The Config pane: a form generated from ``fields_of(ModelConfig)`` and ``fields_of(TrainConfig)``,
with live estimates, a diff against the loaded preset, and save-as into ``models/``.

Every field is checked as it is typed (``config.parse_field``), then the whole config is built
(cross-field rules such as "n_heads must divide dim"); any error blocks saving.

A budget in minutes and ``ctrl+b`` fill the form from the planner (``planner.plan``, the same
function as ``workbench plan``) for the form's vocab, with its reasons in the status line; every
field stays editable. Where the form has a time budget, the estimates show the tokens it buys at
this machine's measured speed for the form's shape (measured once per shape, in a worker).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.message import Message
from textual.widgets import Button, Input, Label, Select, Static, Switch

from workbench.config import report
from workbench.experiments.registry import Choices, chosen_options, section_parts
from workbench.experiments.registry import get as get_variant
from workbench.config.schema import Config, ModelConfig, TrainConfig, load_config, preset_names
from workbench.config.overrides import config_diff
from workbench.config.fields import fields_of, format_field, parse_field
from workbench.errors import ConfigError, WorkbenchError
from workbench.planning.planner import BudgetSpeeds
from workbench.tui.widgets.form_fields import FieldValidator, FormInput, FormSelect, FormSwitch, HelpLine
from workbench.tui.panes.base import FormChanged, Pane

SECTIONS = (("model", ModelConfig), ("train", TrainConfig))
DEFAULT_PRESET = "debug"


class ConfigPane(Pane):
    """Edit, check and save a model + training config."""

    ACTIONS = {"cfg-plan": "plan", "cfg-minutes": "plan", "cfg-save": "save", "cfg-save-name": "save"}

    class Probed(Message):
        def __init__(self, choice: str, device: str, memory: dict):
            super().__init__()
            self.choice, self.device, self.memory = choice, device, memory

    def __init__(self, ws, probe, **kw):
        super().__init__(**kw)
        self.ws, self.probe = ws, probe
        self.base: Config | None = None
        self.base_label = ""
        self.fields = {section: {f.name: f for f in fields_of(cls)} for section, cls in SECTIONS}
        self.options: dict[str, dict] = {section: {} for section, _ in SECTIONS}  # shown option rows
        self._kept: dict[str, Any] = {}  # "section.name" -> the value of an option row taken away
        self.errors: dict[str, str] = {}
        self.form_error = ""
        self.machine: dict[str, tuple[str, dict]] = {}  # device choice -> (device, memory)
        self._loading = False
        self.saved_path = None
        self._shown_errors: dict[str, str] = {}
        self.planning = False
        self.plan = None  # the last plan applied to the form
        self.speeds = BudgetSpeeds()  # this machine's speed per shape, once measured
        self._measuring: set[str] = set()

    # --- layout --------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="cfg-top"):
            yield Label("load", classes="top-label")
            yield FormSelect(self._load_options(), id="cfg-load", allow_blank=True, compact=True,
                         prompt="preset or models/*.yaml")
            yield Label("save as", classes="top-label")
            yield FormInput("", id="cfg-save-name", compact=True, placeholder="name")
            yield Button("Save", id="cfg-save", variant="primary", compact=True)
        with Horizontal(id="cfg-plan-row"):
            yield Label("tokenizer", classes="top-label")
            yield FormSelect([], id="cfg-tokenizer", allow_blank=True, compact=True, prompt="none")
            yield Label("plan for", classes="top-label")
            yield FormInput("", id="cfg-minutes", compact=True, placeholder="minutes", type="number")
            yield Label("minutes here", classes="top-label")
            yield Button("Plan", id="cfg-plan", compact=True)
        yield Static("", id="cfg-status")
        with Horizontal(id="cfg-body"):
            with VerticalScroll(id="cfg-form", can_focus=False):
                for section, _ in SECTIONS:
                    yield Label(section, classes="section-title")
                    for info in self.fields[section].values():
                        yield from self._field_row(section, info)
                    # the chosen variants' own fields (``options``), rows that come and go
                    yield Vertical(id=f"cfg-options-{section}", classes="cfg-options")
                yield Static("", id="cfg-form-error", classes="error")
            with VerticalScroll(id="cfg-side"):
                yield Static("", id="cfg-estimates")
                yield Static("", id="cfg-diff")
        yield HelpLine(id="cfg-help")

    def _field_row(self, section: str, info, value: Any = None, option: bool = False) -> list:
        """A field's row (label and editor) and the line for its error, as widgets: composed for
        the built-in fields, mounted for a chosen variant's options."""
        wid = f"{section}-{info.name}"
        value = info.default if value is None else value
        if info.type is bool:
            editors = [FormSwitch(bool(value), id=wid, states=("false", "true")),
                       Label(report.show_value(value).lower(), id=f"{wid}-state", classes="hint")]
        elif info.choices:
            editors = [FormSelect([(choice_label(info.choices, c), c) for c in info.choices], value=value,
                                  id=wid, allow_blank=False, compact=True)]
        else:
            editors = [FormInput(format_field(info, value), id=wid, compact=True,
                                 placeholder=info.none_means or "", validators=[FieldValidator(section, info)],
                                 validate_on=["changed", "submitted"])]
        row = Horizontal(Label(info.name, classes="field-label"), *editors,
                         classes="form-row" + (" option-row" if option else ""), id=f"{wid}-row" if option else None)
        return [row, Static("", id=f"{wid}-error", classes="field-error")]

    # --- the chosen variants' own fields -------------------------------------------------

    def _chosen(self, section: str) -> dict:
        """The options the part fields of ``section`` choose now: name -> FieldInfo."""
        picked = {}
        for name in section_parts(section):
            w = self.query_one(f"#{section}-{name}", Select)
            picked[name] = w.value
        return {k: info for k, (_, info) in chosen_options(section, picked).items()}

    def sync_options(self, values: dict[str, dict[str, Any]] | None = None) -> bool:
        """Show a row for each option of the chosen variants (with ``values``' value, else the
        one typed before, else its default) and none for the others; whether rows changed."""
        changed = False
        for section, _ in SECTIONS:
            wanted = self._chosen(section)
            shown = self.options[section]
            box = self.query_one(f"#cfg-options-{section}", Vertical)
            for name in [n for n in shown if wanted.get(n) != shown[n]]:
                self._kept[f"{section}.{name}"] = self._option_value(section, name)
                box.query_one(f"#{section}-{name}-row").remove()
                box.query_one(f"#{section}-{name}-error").remove()
                self._shown_errors.pop(f"{section}.{name}", None)
                del shown[name]
                changed = True
            for name, info in wanted.items():
                given = (values or {}).get(section, {}).get(name)
                if name in shown:
                    if given is not None:
                        self._set_widget(section, info, given)
                    continue
                value = given if given is not None else self._kept.get(f"{section}.{name}")
                box.mount_all(self._field_row(section, info, value, option=True))
                shown[name] = info
                changed = True
        return changed

    def _option_value(self, section: str, name: str) -> Any:
        """An option row's value as typed (text for an input), kept while its row is gone."""
        w = self.query_one(f"#{section}-{name}")
        if isinstance(w, (Switch, Select)):
            return w.value
        try:
            return parse_field(section, self.options[section][name], w.value)
        except ConfigError:
            return None

    def _infos(self, section: str) -> dict:
        """Every field row of ``section`` now: the built-in fields, then the shown options."""
        return {**self.fields[section], **self.options[section]}

    def on_mount(self) -> None:
        names = preset_names(self.ws)
        start = DEFAULT_PRESET if DEFAULT_PRESET in names else (names[0] if names else None)
        if start is not None:
            self.query_one("#cfg-load", Select).value = start
        self.refresh_tokenizers()
        self.probe_machine()

    def on_show(self) -> None:
        self.refresh_tokenizers()  # one built in the Tokenizer pane since

    def refresh_tokenizers(self) -> None:
        from workbench.tokenizer.tokenizer import list_tokenizers

        try:
            names = [t.name for t in list_tokenizers(self.ws)]
        except WorkbenchError:
            names = []
        sel = self.query_one("#cfg-tokenizer", Select)
        keep = sel.value
        with sel.prevent(Select.Changed):
            sel.set_options([(n, n) for n in names])
            if keep in names:
                sel.value = keep

    @on(Select.Changed, "#cfg-tokenizer")
    def _tokenizer_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.fit_tokenizer_vocab()

    def fit_tokenizer_vocab(self) -> None:
        """Set model.vocab_size to the chosen tokenizer's, and say so in one line."""
        from workbench.config.overrides import vocab_notice
        from workbench.tokenizer.tokenizer import load_tokenizer

        name = self.query_one("#cfg-tokenizer", Select).value
        if name is Select.NULL or name is None:
            return
        try:
            vocab = load_tokenizer(self.ws, str(name)).vocab_size
        except WorkbenchError as e:
            self.set_status(f"tokenizer: {e}", error=True)
            return
        box = self.query_one("#model-vocab_size", Input)
        if box.value.strip() != str(vocab):
            old = box.value.strip() or "null"
            box.value = str(vocab)
            self.set_status(vocab_notice(old, vocab, str(name)))

    def _load_options(self) -> list[tuple[str, str]]:
        mine = {p.stem for p in self.ws.models_dir().glob("*.yaml")} if self.ws.models_dir().is_dir() else set()
        return [(f"{n}  (models/)" if n in mine else f"{n}  (preset)", n) for n in preset_names(self.ws)]

    # --- loading -------------------------------------------------------------------------

    @on(Select.Changed, "#cfg-load")
    def _load_changed(self, event: Select.Changed) -> None:
        event.stop()
        if event.value is not Select.NULL and event.value is not None:
            self.load(str(event.value))

    def load(self, spec: str) -> None:
        try:
            cfg = load_config(spec, self.ws)
        except WorkbenchError as e:
            self.set_status(str(e), error=True)
            return
        where = report.source_of(cfg.source, self.ws)  # a name from the list: models/ or preset
        self.apply_config(cfg, f"{spec} ({where})")
        self.query_one("#cfg-save-name", Input).value = spec if where == "models/" else f"my-{spec}"
        self.set_status(f"loaded {self.base_label}" + (f": {cfg.description}" if cfg.description else ""))
        self.fit_tokenizer_vocab()  # a config made for another vocab takes the chosen tokenizer's
        self.recompute()

    def apply_config(self, cfg: Config, label: str) -> None:
        """Put ``cfg`` in the form; it becomes the base the diff is taken against."""
        self.base = cfg
        self.base_label = label
        self._loading = True
        try:
            values = {}
            for section, _ in SECTIONS:
                values[section] = getattr(cfg, section).to_dict()
                for name, info in self.fields[section].items():
                    self._set_widget(section, info, values[section][name])
            self._kept.clear()
            self.sync_options(values)
        finally:
            self._loading = False

    def _set_widget(self, section: str, info, value: Any) -> None:
        w = self.query_one(f"#{section}-{info.name}")
        if isinstance(w, Switch):
            w.value = bool(value)  # its state label follows (FormSwitch)
        elif isinstance(w, Select):
            w.value = value
        else:
            w.value = format_field(info, value)

    # --- reading the form ----------------------------------------------------------------

    def read_form(self) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """Values by section, and an error message per field ("model.dim") that does not parse."""
        values: dict[str, dict[str, Any]] = {}
        errors: dict[str, str] = {}
        for section, _ in SECTIONS:
            values[section] = {}
            for name, info in self._infos(section).items():
                wid = f"{section}-{name}"
                try:
                    w = self.query_one(f"#{wid}")
                except NoMatches:  # an option row being mounted: its value is the one it is given
                    continue
                if isinstance(w, (Switch, Select)):
                    values[section][name] = w.value
                    continue
                try:
                    values[section][name] = parse_field(section, info, w.value)
                except ConfigError as e:
                    errors[f"{section}.{name}"] = str(e)
        return values, errors

    def values(self) -> dict[str, dict[str, Any]]:
        return self.read_form()[0]

    def current(self) -> tuple[ModelConfig, TrainConfig]:
        """The form as validated configs; raises ConfigError with the first problem."""
        values, errors = self.read_form()
        if errors:
            raise ConfigError(next(iter(errors.values())))
        return ModelConfig.from_dict(values["model"]), TrainConfig.from_dict(values["train"])

    @on(Input.Changed, "#cfg-form Input")
    @on(Select.Changed, "#cfg-form Select")
    @on(Switch.Changed, "#cfg-form Switch")
    def _field_changed(self, event) -> None:
        event.stop()
        if not self._loading:
            if isinstance(event, Select.Changed) and self.sync_options():
                self.call_after_refresh(self.recompute)  # once the new option rows are mounted
            self.recompute()
            if event.control.id == "train-device":
                self.probe_machine()

    def recompute(self) -> None:
        values, self.errors = self.read_form()
        model, train, shown, self.form_error = report.check_form(values, self.errors)
        for section, _ in SECTIONS:
            for name in self._infos(section):
                key = f"{section}.{name}"
                msg = shown.get(key, "")
                if msg != self._shown_errors.get(key, ""):  # touch only what changed
                    try:
                        box = self.query_one(f"#{section}-{name}-error", Static)
                    except NoMatches:
                        continue  # a row still being mounted; the next recompute shows it
                    box.update(msg)
                    box.display = bool(msg)
        self._shown_errors = shown
        err = self.query_one("#cfg-form-error", Static)
        err.update(self.form_error)
        err.display = len(self.errors) > 1  # the count; each message stands beside its own field
        self.post_message(FormChanged(self.form_config(model, train), self.form_error or
                                      (next(iter(self.errors.values())) if self.errors else "")))
        self.query_one("#cfg-estimates", Static).update(self._estimates_text(model, train))
        self.query_one("#cfg-diff", Static).update(self._diff_text(values))

    def form_config(self, model: ModelConfig | None, train: TrainConfig | None) -> Config | None:
        """The form as a Config named after the one it was loaded from (None while invalid)."""
        if model is None or train is None:
            return None
        base = self.base
        return Config(model, train, name=base.name if base else "run",
                      description=base.description if base else None)

    @property
    def valid(self) -> bool:
        return not self.errors and not self.form_error

    # --- estimates and diff --------------------------------------------------------------

    def _estimates_text(self, model: ModelConfig | None, train: TrainConfig | None) -> str:
        """The estimates ``workbench config show`` prints, with the machine once probed."""
        e = report.estimates(model, train, self.machine.get(train.device)) if model and train else None
        if e is not None and e.budget_applies:
            e.speed = self.speeds.known(model, train)
            if e.speed is None:
                self._measure_speed(model, train)
        return report.render(report.estimate_lines(e, pending="measuring this shape's training speed …"),
                             markup=True)

    def _measure_speed(self, model: ModelConfig, train: TrainConfig) -> None:
        key = self.speeds.key(model, train)
        if key in self._measuring or self._measuring:
            return  # one at a time; the form's latest shape is measured next
        self._measuring.add(key)
        self._speed_worker(key, model, train)

    @work(thread=True, group="config-speed", exit_on_error=False)
    def _speed_worker(self, key: str, model: ModelConfig, train: TrainConfig) -> None:
        self.speeds.measure(model, train)
        self.post_message(self.Measured(key))

    class Measured(Message):
        def __init__(self, key: str):
            super().__init__()
            self.key = key

    def on_config_pane_measured(self, msg: "ConfigPane.Measured") -> None:
        self._measuring.discard(msg.key)
        self.recompute()

    # --- the planner ---------------------------------------------------------------------

    def action_plan(self) -> None:
        """Fill the form with what the planner picks for the budget and the form's vocab."""
        if self.planning:
            return
        from workbench.config.overrides import parse_minutes

        try:
            minutes = parse_minutes(self.query_one("#cfg-minutes", Input).value.strip())
        except WorkbenchError as e:
            self.set_status(f"plan: {e}", error=True)
            self.query_one("#cfg-minutes", Input).focus()
            return
        values, errors = self.read_form()
        vocab = values["model"].get("vocab_size")
        if "model.vocab_size" in errors or not isinstance(vocab, int):
            self.set_status("plan: fix model.vocab_size first (the planner keeps the tokenizer's vocab)", error=True)
            return
        self.planning = True
        self.query_one("#cfg-plan", Button).disabled = True
        self.set_status(f"planning {minutes:g} minutes for vocab {vocab} …")
        self._plan_worker(minutes, vocab)

    @work(thread=True, group="config-plan", exit_on_error=False)
    def _plan_worker(self, minutes: float, vocab: int) -> None:
        from workbench.planning import planner

        def say(text: str) -> None:
            self.app.call_from_thread(self.set_status, text)

        try:
            result = planner.plan(self.ws, planner.PlanRequest(None, minutes, vocab=vocab), say=say)
        except WorkbenchError as e:
            result = e
        except Exception as e:  # shown, never raised into the app
            result = WorkbenchError(f"the planner failed: {type(e).__name__}: {e}")
        self.post_message(self.Planned(result))

    class Planned(Message):
        def __init__(self, result):
            super().__init__()
            self.result = result

    def on_config_pane_planned(self, msg: "ConfigPane.Planned") -> None:
        self.planning = False
        self.query_one("#cfg-plan", Button).disabled = False
        if isinstance(msg.result, WorkbenchError):
            self.set_status(f"plan: {msg.result}", error=True)
            return
        pl = msg.result
        self.plan = pl
        self.apply_config(pl.config, f"the plan for {pl.minutes:g} min")
        self.query_one("#cfg-save-name", Input).value = pl.config.name or "plan"
        self.recompute()
        self.set_status(" · ".join(pl.reasons[1:4]) + (f" · {pl.vocab_advice}" if pl.vocab_advice else ""))

    def _diff_text(self, values: dict) -> str:
        if self.base is None:
            return ""
        return report.render(report.diff_lines(config_diff(self.base, values), self.base_label), markup=True)

    # --- the machine (may import torch for cuda/mps; never on the UI thread) --------------

    def probe_machine(self) -> None:
        try:
            choice = str(self.query_one("#train-device", Select).value)
        except Exception:
            choice = "auto"
        if choice not in self.machine:
            self._probe_worker(choice)

    @work(thread=True, group="config-probe", exit_on_error=False)
    def _probe_worker(self, choice: str) -> None:
        from workbench.machine.sysinfo import machine

        self.post_message(self.Probed(choice, *machine(self.probe, choice)))

    def on_config_pane_probed(self, msg: "ConfigPane.Probed") -> None:
        self.machine[msg.choice] = (msg.device, msg.memory)
        self.recompute()

    # --- help for the focused field ------------------------------------------------------

    def on_descendant_focus(self, event) -> None:
        wid = getattr(event.widget, "id", None) or ""
        section, _, name = wid.partition("-")
        info = self._infos(section).get(name) if section in self.fields else None
        help_box = self.query_one("#cfg-help", HelpLine)
        if info is None:
            help_box.update("[dim]tab moves between fields; ctrl+s saves; ctrl+l loads a preset[/dim]")
            return
        help_box.update(report.render(report.field_help(section, info), markup=True))

    # --- experiments ---------------------------------------------------------------------

    def action_reload_experiments(self) -> None:
        """Read the experiment folders again; the part selects offer what is registered now."""
        from workbench.experiments.loader import experiment_dirs, reload_experiments

        dirs = experiment_dirs(self.ws.root)
        report, new, gone = reload_experiments(dirs)
        self._loading = True
        try:
            for section, _ in SECTIONS:
                for name in section_parts(section):
                    sel = self.query_one(f"#{section}-{name}", Select)
                    info = self.fields[section][name]
                    keep = sel.value if sel.value in info.choices else info.default
                    with sel.prevent(Select.Changed):
                        sel.set_options([(choice_label(info.choices, c), c) for c in info.choices])
                        sel.value = keep
            self.sync_options()
        finally:
            self._loading = False
        self.call_after_refresh(self.recompute)
        said = [f"new: {', '.join(f'{p} {n!r}' for p, n in new)}" if new else "",
                f"gone: {', '.join(f'{p} {n!r}' for p, n in gone)}" if gone else "",
                *(f"not loaded: {line}" for line in report.errors)]
        where = ", ".join(str(d) for d in dirs) or f"{self.ws.root / 'experiments'} (none yet)"
        self.set_status(f"experiments from {where}: " + ("; ".join(filter(None, said)) or "nothing changed"),
                        error=bool(report.errors))

    # --- saving --------------------------------------------------------------------------

    def action_focus_load(self) -> None:
        self.query_one("#cfg-load", Select).focus()

    def action_save(self) -> None:
        self.recompute()
        if not self.valid:
            first = self.form_error or next(iter(self.errors.values()))
            self.set_status(f"not saved: {first}", error=True)
            return
        name = self.query_one("#cfg-save-name", Input).value.strip()
        try:
            path = report.models_path(self.ws, name)
        except WorkbenchError as e:
            self.set_status(f"not saved: {e}", error=True)
            return
        if path.exists() and path not in (self.base.source if self.base else None, self.saved_path):
            from workbench.tui.widgets.modals import ConfirmScreen

            self.app.push_screen(ConfirmScreen(f"models/{name}.yaml exists. Replace it?", "Replace",
                                               "Keep"), lambda yes: yes and self.save(name))
            return
        self.save(name)

    def save(self, name: str) -> None:
        model, train = self.current()
        cfg = dataclasses.replace(self.base, model=model, train=train) if self.base else Config(model, train)
        path = report.models_path(self.ws, name)
        try:
            report.save_as(self.ws, name, cfg)
        except OSError as e:
            self.set_status(f"not saved: cannot write {path}: {e.strerror}", error=True)
            return
        sel = self.query_one("#cfg-load", Select)
        with sel.prevent(Select.Changed):
            sel.set_options(self._load_options())
            sel.value = name
        self.set_status(f"saved models/{name}.yaml")
        self.saved_path = path

    def set_status(self, text: str, error: bool = False) -> None:
        self.show_line("cfg-status", text, error=error)


def choice_label(choices, name: str) -> str:
    """A select's text for a choice: a variant from an experiment file is marked as such."""
    if isinstance(choices, Choices) and not get_variant(choices.part, name).builtin:
        return f"{name} (experiment)"
    return name
