"""The Train pane: pick a config, tokenizer and data (or a run to resume), train with live
charts, pause/resume/stop, and read samples and notices as they come.

One process trains in a Textual thread worker (``Trainer.run``); N processes train under
``torchrun`` in a child process (``ChildRun``) followed through the run folder. Either way the
pane drains an event buffer on a 4 Hz timer and redraws the charts at most twice a second, so
the UI thread stays light while torch uses the cores. Either way pause, resume and stop act on
every process alike (a child run is asked through its run folder), and quitting stops the run
after a step, keeping a checkpoint.

Resuming takes a budget from the form (steps, tokens or minutes, in all), so a finished run can
be extended. Where the pane is narrow or short (the screen's ``one-view`` class) its charts and
samples share the space and ``ctrl+f`` switches between them.
"""

from __future__ import annotations

import asyncio
import collections
import time

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.validation import Integer
from textual.widgets import Button, Input, Label, Select, Static

from workbench.data.sources import DEFAULT_HUB_ID
from workbench.errors import WorkbenchError, user_message
from workbench.tui.panes.base import Pane, RunsChanged
from workbench.procs import ensure_resource_tracker
from workbench.training import budget
from workbench.training.events import (Evaluated, Failed, Finished, HealthLogged, Logged, Paused, Resumed, Sampled, Started,
                                       Stepped)
from workbench.training.health import LABELS as HEALTH_LABELS
from workbench.training.health import QUANTITIES as HEALTH_QUANTITIES
from workbench.training.notices import notices
from workbench.training.request import MAX_PROCS, parse_procs
from workbench.tui.widgets.charts import X_MODES, LineChart, MetricGrid, MetricsHistory, Series, x_label
from workbench.tui.widgets.health_map import HealthMap
from workbench.tui.widgets.train_views import (VIEWS, devices_text, header_parts, newest_that_fit, pack, prepare_text, resume_hint, samples_text)
from workbench.tui.widgets.form_fields import FormInput, FormSelect

FORM = "@form"  # the Config pane's current form
NEW = "@new"  # a new run (not a resume)
DRAIN_PERIOD = 0.25
# plotext builds in pure Python and holds the GIL, which a tiny model's training thread needs
# too: redraw the loss chart once a second and the side charts every other time.
CHART_PERIOD = 1.0
SIDE_EVERY = 2
NOTICE_LINES = 12  # notices shown before the box has a size
SHORT_HEADER_BELOW = 100  # columns: the header uses fewer words


class TrainPane(Pane):
    """Train a model and watch it learn."""

    ACTIONS = {"train-start": "start", "train-pause": "toggle_pause", "train-stop": "stop",
               "train-data": "start", "train-procs": "start", "train-budget": "start"}

    class Finished(Message):
        """The training worker returned (its summary: state finished|stopped|failed)."""

        def __init__(self, summary: dict):
            super().__init__()
            self.summary = summary

    class Devices(Message):
        def __init__(self, devices: list[dict]):
            super().__init__()
            self.devices = devices

    def __init__(self, ws, probe, **kw):
        super().__init__(**kw)
        self.ws, self.probe = ws, probe
        self.history = MetricsHistory()
        self.clip_outliers = True  # the loss chart's y-range ignores outliers (key: o)
        self.health_rows: list[dict] = []  # the run's health.jsonl rows, as they come
        self.side = "rates"  # the side charts, or a health quantity's heatmap (key: h)
        self.panels: list[str] = []  # metrics drawn as a grid of charts instead of the charts (key: m)
        self.notices: collections.deque[str] = collections.deque(maxlen=200)
        self.job = None  # a Trainer or a ChildRun while running
        self.running = False
        self.state = "idle"
        self.run_name: str | None = None
        self.total_steps: int | None = None
        self.x_mode = "steps"
        self.log_y = False
        self._worker = None
        self._stop_requested = False
        self._prepare: tuple | None = None
        self._last_step: dict = {}
        self._last_log: dict = {}
        self._last_eval: dict = {}
        self._dirty = False
        self._drawn_at = 0.0
        self.view = VIEWS[0]
        self.devices: list[dict] = []
        self._resume_info: dict | None = None  # the run chosen to resume: its train config, progress
        self._form: tuple = (None, "the Config pane has not been opened yet; choose a preset instead")

    # --- layout --------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(classes="train-row", id="train-row1"):
            yield Label("config", classes="train-label")
            yield FormSelect([("Config pane's form", FORM)], value=FORM, id="train-config",
                         allow_blank=False, compact=True)
            yield Label("tokenizer", classes="train-label")
            yield FormSelect([], id="train-tokenizer", compact=True, prompt="build one first")
            yield Label("data", classes="train-label")
            yield FormInput("", id="train-data", compact=True, placeholder=DEFAULT_HUB_ID)
        with Horizontal(classes="train-row", id="train-row2"):
            yield Label("resume", classes="train-label")
            yield FormSelect([("new run", NEW)], value=NEW, id="train-resume", allow_blank=False, compact=True)
            yield Label("budget", classes="train-label")
            yield FormSelect([(k, k) for k in budget.KINDS], value="steps", id="train-budget-kind",
                         allow_blank=False, compact=True, disabled=True)
            yield FormInput("", id="train-budget", compact=True, placeholder="config's", disabled=True)
            yield Label("processes", classes="train-label")
            yield FormInput("1", id="train-procs", compact=True, type="integer",
                        validators=[Integer(1, MAX_PROCS)])
        with Horizontal(classes="train-row", id="train-row3"):
            yield Button("Start", id="train-start", variant="primary", compact=True)
            yield Button("Pause", id="train-pause", compact=True, disabled=True)
            yield Button("Stop", id="train-stop", variant="error", compact=True, disabled=True)
            yield Static("devices: checking …", id="train-devices")
        yield Static("", id="train-header")
        yield Static("", id="train-error", classes="error")
        with Horizontal(id="train-charts"):
            yield LineChart("loss", id="chart-loss")
            with Horizontal(id="train-side"):
                yield LineChart("learning rate", id="chart-lr")
                yield LineChart("tokens/s", id="chart-toks")
                yield HealthMap(id="train-health")
        yield MetricGrid("train", id="train-grid")
        with Horizontal(id="train-bottom"):
            yield Static("", id="train-samples")
            yield Static("", id="train-log")

    def on_mount(self) -> None:
        self.show_error("")
        self._timer = self.set_interval(DRAIN_PERIOD, self._tick, pause=True)
        self.set_class(True, f"view-{self.view}")
        self.refresh_choices()
        self._render_header()
        self.redraw_charts()
        self._devices_worker()

    def on_resize(self) -> None:
        self.call_after_refresh(self._relaid)  # once the boxes have their new sizes

    def _relaid(self) -> None:
        self._render_header()  # fewer words, more lines, when narrow
        self._show_notices()
        self._show_devices()
        self.redraw_charts()  # thinned to the new width

    @property
    def one_view(self) -> bool:
        """True where the charts and samples share the space (a narrow or short screen)."""
        return self.screen.has_class("one-view")

    def action_next_view(self) -> None:
        self.set_class(False, f"view-{self.view}")
        self.view = VIEWS[(VIEWS.index(self.view) + 1) % len(VIEWS)]
        self.set_class(True, f"view-{self.view}")
        self._render_header()
        self.redraw_charts()

    def on_show(self) -> None:
        if not self.running:
            self.refresh_choices()
        if self._dirty:
            self.redraw_charts()

    # --- choices -------------------------------------------------------------------------

    def refresh_choices(self) -> None:
        from workbench.config.schema import preset_names
        from workbench.runs.folder import list_runs
        from workbench.tokenizer.tokenizer import list_tokenizers

        sel = self.query_one("#train-config", Select)
        opts = [("Config pane's form", FORM)] + [(n, n) for n in preset_names(self.ws)]
        keep = sel.value if sel.value in [v for _, v in opts] else FORM
        with sel.prevent(Select.Changed):
            sel.set_options(opts)
            sel.value = keep
        try:
            self.tokenizers = {t.name: t for t in list_tokenizers(self.ws)}
        except WorkbenchError as e:
            self.tokenizers = {}
            self.show_error(str(e))
        tsel = self.query_one("#train-tokenizer", Select)
        keep = tsel.value
        tsel.set_options([(n, n) for n in self.tokenizers])
        if keep in self.tokenizers:
            tsel.value = keep
        elif self.tokenizers:
            tsel.value = next(iter(self.tokenizers))
        rsel = self.query_one("#train-resume", Select)
        runs = self._resumable = [r.name for r in list_runs(self.ws) if r.latest_checkpoint()]
        keep = rsel.value if rsel.value in runs else NEW
        with rsel.prevent(Select.Changed):
            rsel.set_options([("new run", NEW)] + [(n, n) for n in runs])
            rsel.value = keep
        self._show_resume(keep)

    @on(Select.Changed, "#train-resume")
    def _resume_changed(self, event: Select.Changed) -> None:
        self._show_resume(event.value)

    def _show_resume(self, name) -> None:
        """Fill the budget with the chosen run's own (or leave it to the config for a new run)."""
        kind_sel = self.query_one("#train-budget-kind", Select)
        field = self.query_one("#train-budget", Input)
        info = None
        if name not in (NEW, None, Select.NULL):
            if not self.app.trusted_or_ask([str(name)], lambda: self._show_resume(name)):
                return  # asked first: reading the run loads experiment code from another workspace
            try:
                info = budget.resume_point(self.ws, str(name))
            except (WorkbenchError, OSError) as e:
                self.show_error(f"resume: {e}")
        if info is not None and (self._resume_info or {}).get("name") == info["name"]:
            info["keep"] = True  # the same run again: keep what the user typed
        self._resume_info = info
        kind_sel.disabled = field.disabled = info is None
        if info is None:
            field.value = ""
        elif not info.get("keep"):
            kind, value = budget.current(info["train"])
            with kind_sel.prevent(Select.Changed):
                kind_sel.value = kind
            field.value = value
        self._render_header()

    @on(Select.Changed, "#train-budget-kind")
    def _budget_kind_changed(self, event: Select.Changed) -> None:
        info = self._resume_info
        if info is None or not isinstance(event.value, str):
            return
        self.query_one("#train-budget", Input).value = budget.value(info["train"], event.value)
        self._render_header()

    @on(Select.Changed, "#train-tokenizer")
    def _tokenizer_changed(self, event: Select.Changed) -> None:
        info = self.tokenizers.get(event.value) if event.value is not Select.NULL else None
        data = self.query_one("#train-data", Input)
        src = (info.settings.get("data") if info else None) or ""
        if src and (not data.value or data.value == getattr(self, "_auto_data", None)):
            data.value = src  # train on what the tokenizer was built from, unless told otherwise
            self._auto_data = src

    def form_changed(self, config, error: str) -> None:
        self._form = (config, error)

    def _chosen_config(self):
        """The preset's name, or the Config pane's form as a Config (as it last said)."""
        spec = self.query_one("#train-config", Select).value
        if spec != FORM:
            return str(spec)
        config, error = self._form
        if config is None:
            raise WorkbenchError(f"the Config pane's form is invalid: {error}")
        return config

    def _request(self):
        """The form as a TrainRequest (checked; a WorkbenchError says what is wrong)."""
        from workbench.training.request import TrainRequest

        resume = self.query_one("#train-resume", Select).value
        if resume != NEW:
            return TrainRequest(resume=str(resume),
                                overrides={"model": {}, "train": self._budget_overrides(str(resume))})
        tok = self.query_one("#train-tokenizer", Select).value  # none chosen: the request says so
        data = self.query_one("#train-data", Input).value.strip() or DEFAULT_HUB_ID
        return TrainRequest(tokenizer=tok if isinstance(tok, str) else None, data=data, config=self._chosen_config())

    # --- starting ------------------------------------------------------------------------

    def busy_text(self) -> str | None:
        return "Training is running (stopping keeps a checkpoint)" if self.running else None

    def open_run(self, run: str, purpose: str = "resume") -> None:
        """Resume run ``run`` (from the Runs pane) with the budget in the form."""
        if self.running:
            self.show_error(f"training is already running ({self.run_name}); stop it before resuming {run!r}")
            return
        self.refresh_choices()
        rsel = self.query_one("#train-resume", Select)
        if run not in self._resumable:
            self.show_error(f"run {run!r} has no checkpoint to resume from")
            return
        rsel.value = run
        self._show_resume(run)
        self.action_start()

    def action_start(self) -> None:
        from workbench.training.request import resolve

        if self.running:
            self.notify("training is already running", severity="warning")
            return
        self.show_error("")
        try:
            nproc = parse_procs(self.query_one("#train-procs", Input).value, self.devices)
            req = self._request()
            if req.resume is not None and not self.app.trusted_or_ask([req.resume], self.action_start):
                return  # asked first: the run's experiment code comes from another workspace
            res = resolve(self.ws, req)
        except WorkbenchError as e:
            self.show_error(str(e))
            return
        cfg = res.config
        ensure_resource_tracker()  # data preparation and torchrun start child processes
        self.history.clear()
        self.health_rows = []
        self._last_step, self._last_log, self._last_eval = {}, {}, {}
        self.query_one("#train-samples", Static).update("")
        self.notices.clear()
        self.notices.extend(res.notices)  # e.g. the vocab the tokenizer set
        self._show_notices()
        self.total_steps = cfg.train.max_steps
        self._stop_requested = False
        self._prepare = None
        if req.resume is not None:
            from workbench.training.follower import read_history

            self.feed(read_history(self.ws, req.resume))
        self.run_name = req.resume
        self.redraw_charts()  # the last run's curves go now, not at this run's first draw
        self._set_running(True, "preparing")
        if nproc > 1:
            self._start_child(req, res, nproc)
        else:
            self.job = None
            self._worker = self._train_worker(req, res)
        self._timer.resume()

    def _budget_overrides(self, run_name: str) -> dict:
        info = self._resume_info
        if info is None or info["name"] != run_name:
            self._show_resume(run_name)
            info = self._resume_info
        kind = str(self.query_one("#train-budget-kind", Select).value)
        return budget.overrides(run_name, info["train"], kind, self.query_one("#train-budget", Input).value,
                                info["done"])

    @on(Input.Changed, "#train-procs")
    def _procs_changed(self) -> None:
        try:
            parse_procs(self.query_one("#train-procs", Input).value, self.devices)
        except WorkbenchError as e:
            self.show_error(str(e))
            self._procs_error = True
            return
        if getattr(self, "_procs_error", False):
            self.show_error("")
            self._procs_error = False

    def _start_child(self, req, res, nproc: int) -> None:
        from workbench.training.follower import ChildRun

        try:
            child = ChildRun.for_request(self.ws, req, res, nproc)
            child.start()
        except (WorkbenchError, OSError) as e:
            self._set_running(False, "failed")
            self.show_error(f"could not start torchrun: {e}")
            return
        self.job = child
        self.run_name = child.run_name
        self._set_running(True, "running")
        self._worker = self._follow_worker(child)

    @work(thread=True, exclusive=True, group="train", exit_on_error=False)
    def _follow_worker(self, child) -> None:
        child.follow(DRAIN_PERIOD)  # tailing touches the disk: keep it off the UI thread too
        self.post_message(self.Finished({"state": "child"}))

    @work(thread=True, exclusive=True, group="train", exit_on_error=False)
    def _train_worker(self, req, res) -> None:
        from workbench.training.trainer import start_training

        try:
            trainer = start_training(self.ws, req, res, prepare_progress=self._on_prepare)
        except Exception as e:  # never a traceback in the user's face
            self.post_message(self.Finished({"state": "failed", "message": user_message(e)}))
            return
        self.job = trainer
        if self._stop_requested:
            trainer.stop()
        try:
            summary = trainer.run()
        except Exception as e:
            summary = {"state": "failed", "message": user_message(e)}
        self.post_message(self.Finished(summary))

    def _on_prepare(self, split, done, total, msg) -> None:
        self._prepare = (split, done, total, msg)  # read by the timer; no widget touched here

    # --- control -------------------------------------------------------------------------

    def action_pause(self) -> None:
        if self.running and self.job is not None and not self.job.paused:
            self.job.pause()
            self.state = "pausing"  # "paused" once the run says it is (a "paused" message)
            self._update_buttons()
            self._render_header()

    def action_unpause(self) -> None:
        if self.running and self.job is not None and self.job.paused:
            self.job.unpause()
            self.state = "running"
            self._update_buttons()
            self._render_header()

    def action_toggle_pause(self) -> None:
        if self.job is not None and self.job.paused:
            self.action_unpause()
        else:
            self.action_pause()

    def action_stop(self) -> None:
        if not self.running:
            return
        self._stop_requested = True
        if self.job is not None:
            self.job.stop()
        self.state = "stopping"
        self._render_header()
        self._update_buttons()

    async def shutdown(self) -> None:
        """On quit, and however else the app ends, even with this pane already unmounted (no
        widget is touched): every process stops after the same step with a checkpoint kept,
        and nothing is left running."""
        self._stop_requested = True  # a trainer still being made stops as soon as it exists
        if not self.running:
            return
        job = self.job
        if job is not None:
            from workbench.training.follower import wait_stopped

            job.stop()
            await asyncio.to_thread(wait_stopped, job, DRAIN_PERIOD)
        worker = self._worker
        if worker is not None and not worker.is_finished:
            try:
                await worker.wait()  # the trainer still being made, or a child run's follower
            except Exception:
                pass
        job = self.job
        if job is not None and hasattr(job, "kill"):
            job.kill()  # only if it outlived its stop (ChildRun gives it STOP_GRACE seconds)

    def action_toggle_log_y(self) -> None:
        self.log_y = not self.log_y
        self._render_header()
        self.redraw_charts(side=False)  # log-y is the loss chart's only

    def action_next_x_axis(self) -> None:
        self.x_mode = X_MODES[(X_MODES.index(self.x_mode) + 1) % len(X_MODES)]
        self._render_header()
        self.redraw_charts()

    def check_pane_action(self, action: str) -> bool | None:
        """Which of this pane's actions the Footer shows now (None: shown greyed out)."""
        paused = self.job is not None and self.job.paused
        if action == "pause":
            return (self.running and self.job is not None) if not paused else False
        if action == "unpause":
            return self.running and paused
        if action == "stop":
            return self.running or None
        if action == "start":
            return None if self.running else True
        if action == "next_view":
            return self.one_view
        return True

    def _set_running(self, on: bool, state: str) -> None:
        self.running, self.state = on, state
        self._update_buttons()
        self._render_header()

    def _update_buttons(self) -> None:
        paused = self.job is not None and self.job.paused
        self.query_one("#train-start", Button).disabled = self.running
        pause = self.query_one("#train-pause", Button)
        pause.disabled = not self.running or self.job is None
        pause.label = "Resume" if paused else "Pause"
        self.query_one("#train-stop", Button).disabled = not self.running
        self.app.refresh_bindings()

    # --- events --------------------------------------------------------------------------

    def _tick(self) -> None:
        job = self.job
        if job is not None:
            self.feed(job.buffer.drain())
        elif self._prepare is not None:
            self.query_one("#train-header", Static).update(prepare_text(*self._prepare))
        if self._dirty and time.monotonic() - self._drawn_at >= CHART_PERIOD and self.is_on_screen:
            self._draws = getattr(self, "_draws", 0) + 1
            self.redraw_charts(side=self._draws % SIDE_EVERY == 0)

    def feed(self, events) -> None:
        """Take a batch of training events (from a buffer, a tail, or a recording)."""
        if not events:
            return
        log = self.notices
        n_notices = len(log)
        step_ev = None
        for ev in events:
            match ev:
                case Stepped():
                    step_ev = ev
                case Logged(row=row):
                    self.history.add_train(row)
                    self._last_log = row
                    self._dirty = True
                case Evaluated(row=row):
                    self.history.add_eval(row)
                    self._last_eval = row
                    self._dirty = True
                case HealthLogged(row=row):
                    self.health_rows.append(row)
                    self._dirty = True
                    continue
                case Started():
                    self.run_name = ev.run or self.run_name
                    self.state = "running"
                    self._update_buttons()
                case Sampled(texts=texts):
                    self.query_one("#train-samples", Static).update(samples_text(ev.step, texts or []))
                case Paused():  # a state (every process paused), not a notice
                    if self.job is not None and self.job.paused:
                        self.state = "paused"
                    continue
                case Resumed():
                    if self.state == "paused":
                        self.state = "running"
                    continue
                case Finished(state=state):
                    self.state = state
                case Failed(message=message):
                    self.state = "failed"
                    self.show_error(message or "training failed")
            log.extend(notices(ev, self.current_step))
        if step_ev is not None:
            self._last_step = {"step": step_ev.step, "loss": step_ev.loss, "lr": step_ev.lr, "tokens": step_ev.tokens,
                               "grad_norm": step_ev.grad_norm, "elapsed": step_ev.elapsed}
        if len(log) != n_notices or (log and log[-1] is not getattr(self, "_shown_notice", None)):
            self._shown_notice = log[-1] if log else None
            self._show_notices()
        self._render_header()

    def on_train_pane_finished(self, msg: "TrainPane.Finished") -> None:
        if self.job is not None:
            self.feed(self.job.buffer.drain())
        s = msg.summary
        if s.get("state") == "failed" and s.get("message"):
            self.show_error(s["message"])
            self.state = "failed"
        elif s.get("state") in ("finished", "stopped"):
            self.state = s["state"]
        self._timer.pause()
        self._set_running(False, self.state)
        self.job = None
        self.redraw_charts()
        self.refresh_choices()
        self.post_message(RunsChanged())

    def on_train_pane_devices(self, msg: "TrainPane.Devices") -> None:
        self.devices = msg.devices
        self._show_devices()
        if self.query_one("#train-procs", Input).value.strip() not in ("", "1"):
            self._procs_changed()  # the limit is known now

    def _show_devices(self) -> None:
        if self.devices:
            text = devices_text(self.devices, short=self.size.width < SHORT_HEADER_BELOW)
            self.query_one("#train-devices", Static).update(_escape(text))

    @work(thread=True, group="train-devices", exit_on_error=False)
    def _devices_worker(self) -> None:
        self.post_message(self.Devices(self.probe.devices()))

    # --- drawing -------------------------------------------------------------------------

    @property
    def current_step(self) -> int:
        """The last step this pane has seen of the run it shows."""
        return int(self._last_step.get("step") or self._last_log.get("step") or 0)

    def _render_header(self) -> None:
        ema = self.history.smoothed()[-1] if self.history.train else None
        box = self.query_one("#train-header", Static)
        width = max(20, box.content_size.width or self.size.width - 2)
        status, losses = header_parts(self.state, self.run_name, self.total_steps, self.current_step, self._last_step,
                                      self._last_log, self._last_eval, ema, self.x_mode, self.log_y,
                                      short=self.size.width < SHORT_HEADER_BELOW,
                                      view=self.view if self.is_mounted and self.one_view else None)
        info = self._resume_info
        if info is not None and not self.running:
            losses = [_escape(resume_hint(info, self.query_one("#train-budget-kind", Select).value))]
        box.update("\n".join(pack(status, width) + pack(losses, width)))

    def _show_notices(self) -> None:
        box = self.query_one("#train-log", Static)
        size = box.content_size
        shown = newest_that_fit(list(self.notices), size.width or 80, size.height or NOTICE_LINES)
        box.update(_escape("\n".join(shown)))

    def action_toggle_outliers(self) -> None:
        """Scale the loss chart to a quantile band (outliers on its edge, marked) or to all points."""
        self.clip_outliers = not self.clip_outliers
        self.redraw_charts(side=False)
        self.notify("loss chart: " + ("outliers ignored in the y-range" if self.clip_outliers
                                      else "the y-range holds every point"), timeout=3)

    def action_smooth(self, direction: int) -> None:
        """Smooth the loss curve more (1) or less (-1): TensorBoard's slider, by keys."""
        from workbench.runs.smooth import step

        self.history.smoothing = step(self.history.smoothing, direction)
        self.redraw_charts(side=False)
        self._render_header()

    def action_next_health(self) -> None:
        """Cycle the side area: learning rate and tokens/s, then each health quantity's heatmap."""
        order = ("rates", *HEALTH_QUANTITIES)
        self.side = order[(order.index(self.side) + 1) % len(order)]
        self.set_class(self.side != "rates", "side-health")
        self.redraw_charts()
        what = "learning rate and tokens/s" if self.side == "rates" else f"{HEALTH_LABELS[self.side]} per layer"
        self.notify(f"side charts: {what} (h: next)", timeout=3)

    def action_panels(self) -> None:
        """Pick metrics (from every one the run logged) to draw as a grid of charts instead of
        the loss and side charts; none picked: the charts again."""
        from workbench.runs.metrics import metric_names
        from workbench.tui.widgets.metric_dialogs import PanelsScreen

        rows = self.history.train + self.history.evals
        metrics = metric_names(rows)
        if not metrics:
            self.notify("no metrics logged yet: start or resume a run first", severity="warning", timeout=3)
            return

        def note(m: str) -> str:
            n = sum(1 for r in rows if isinstance(r.get(m), (int, float)))
            return f"{n} point{'s' if n != 1 else ''}"

        def answer(picked: list[str] | None) -> None:
            if picked is None:
                return
            self.panels = picked
            self.set_class(bool(picked), "panels-on")
            self.redraw_charts()
            self.notify(f"panels: {', '.join(picked)} (m: change)" if picked else "the loss and side charts",
                        timeout=3)

        self.app.push_screen(PanelsScreen([(m, note(m)) for m in metrics], self.panels,
                                          title="Metric panels: one chart per ticked metric, instead of the "
                                                "loss and side charts"), answer)

    def _draw_grid(self) -> None:
        """One chart per picked metric (smoothed and scaled as the loss chart is); made again only
        when the metrics or the columns change (``MetricGrid``)."""
        from workbench.runs.smooth import debiased_ema

        grid = self.query_one("#train-grid", MetricGrid)
        if grid.set_metrics(self.panels, self.size.width or 0):
            self.call_after_refresh(self.redraw_charts)  # drawn once the new charts have a size
            return
        h, mode, w = self.history, self.x_mode, self.history.smoothing
        for chart in grid.charts():
            metric = str(chart.name)
            xs, ys = h.series(metric, mode)
            series = [Series(metric, xs, ys, color="gray" if w else "cyan")]
            if w and len(ys) > 1:
                series.append(Series(f"ema {w:.2f}", xs, debiased_ema(ys, w), color="cyan"))
            chart.title = metric
            chart.set_series(series, xlabel=x_label(mode), clip_outliers=self.clip_outliers)
            chart.redraw()

    def redraw_charts(self, side: bool = True) -> None:
        self._dirty = self._dirty and not side
        self._drawn_at = time.monotonic()
        if self.panels:
            self._draw_grid()
            return
        h, mode = self.history, self.x_mode
        xl = x_label(mode)
        loss = self.query_one("#chart-loss", LineChart)
        loss.set_series([
            Series("train", *h.series("loss", mode), color="gray"),
            Series(f"ema {h.smoothing:.2f}", *h.series("ema", mode), color="cyan"),
            Series("val", *h.series("val_loss", mode), color="orange", marker="●", scatter=True),
        ], xlabel=xl, log_y=self.log_y, clip_outliers=self.clip_outliers)
        loss.title = "loss (log y)" if self.log_y else "loss"
        loss.redraw()
        if not side:
            return
        if self.side != "rates":
            hm = self.query_one("#train-health", HealthMap)
            hm.quantity = self.side
            hm.set_rows(self.health_rows)
            return
        lr = self.query_one("#chart-lr", LineChart)
        lr.set_series([Series("lr", *h.series("lr", mode), color="green")], xlabel=xl)
        lr.redraw()
        toks = self.query_one("#chart-toks", LineChart)
        toks.set_series([Series("tok/s", *h.series("tok_s", mode), color="magenta")], xlabel=xl)
        toks.redraw()

    def show_error(self, text: str) -> None:
        self.show_line("train-error", text, error=True, hide_empty=True, escape=True)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)

