"""The Chat pane: talk to a run's checkpoint, or two side by side on the same prompt.

Each reply is generated in a thread worker that fills a ``Stream``; a timer drains the
streams at 25 Hz, so the reply repaints in batches however fast tokens come. Escape sets
the streams' stop events; the engine checks them between tokens.
"""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Input, Label, Select, Static, Switch, TextArea

from workbench.tui.panes.base import Pane
from workbench.errors import WorkbenchError, user_message
from workbench.generation.generate import LoadedModels
from workbench.tui.widgets.chat_views import ReplyColumn, ReplyView, Stream, beams_text, transcript
from workbench.tui.widgets.form_fields import FormInput, FormSelect, FormSwitch

DRAIN_HZ = 25
NONE = "@none"
SEP = "\x1f"  # between run and checkpoint in a select value
DEFAULT_PROMPT = "Once upon a time"
FIELDS = (  # id, SamplingParams field, label, default, placeholder
    ("ch-temp", "temperature", "temperature", "0.8", "0 = greedy"),
    ("ch-topk", "top_k", "top-k", "", "off"),
    ("ch-topp", "top_p", "top-p", "", "off"),
    ("ch-max", "max_tokens", "max tokens", "200", ""),
    ("ch-seed", "seed", "seed", "", "random"),
)
BEAM_FIELDS = (  # id, BeamSearch field, label, default, placeholder
    ("ch-beams", "beams", "beams", "4", "1-256"),
    ("ch-lenpen", "length_penalty", "length penalty", "1", "1 = mean"),
)
SAMPLING_ONLY = ("ch-temp", "ch-topk", "ch-topp", "ch-seed")
DECODINGS = (("sample", "sample"), ("beam search", "beam"))


class ChatPane(Pane):
    """Sample from checkpoints with streaming replies."""

    def __init__(self, ws, probe, **kw):
        super().__init__(**kw)
        self.ws, self.probe = ws, probe
        self.streams: list[Stream] = []
        self.last_prompt: str | None = None
        self._models = LoadedModels(ws)
        self._timer = None
        self._run_opts = None

    # --- layout --------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="ch-columns"):
            with VerticalScroll(id="ch-controls", can_focus=False):
                yield Label("model", classes="section-title")
                yield FormSelect([], id="ch-run", compact=True, prompt="run")
                yield FormSelect([], id="ch-ckpt", compact=True, prompt="checkpoint")
                yield Label("side by side with", classes="hint")
                yield FormSelect([("nothing", NONE)], id="ch-ckpt2", value=NONE, allow_blank=False,
                             compact=True)
                yield Label("decoding", classes="section-title")
                with Horizontal(classes="form-row"):
                    yield Label("method", classes="field-label")
                    yield FormSelect(DECODINGS, value="sample", id="ch-decoding", allow_blank=False, compact=True)
                for wid, _, label, default, placeholder in FIELDS + BEAM_FIELDS:
                    with Horizontal(classes="form-row", id=f"{wid}-row"):
                        yield Label(label, classes="field-label")
                        yield FormInput(default, id=wid, compact=True, placeholder=placeholder)
                with Horizontal(classes="form-row"):
                    yield Label("stop at EOS", classes="field-label")
                    yield FormSwitch(True, id="ch-eos")
                    yield Label("on", id="ch-eos-state", classes="hint")
                with Horizontal(classes="form-row"):
                    yield Label("colour by p", classes="field-label")
                    yield FormSwitch(False, id="ch-colour")
                    yield Label("off", id="ch-colour-state", classes="hint")
            with Vertical(id="ch-main"):
                yield TextArea(DEFAULT_PROMPT, id="ch-prompt", soft_wrap=True, show_line_numbers=False)
                with Horizontal(id="ch-replies"):
                    yield ReplyColumn(id="ch-reply-a")
                    yield ReplyColumn(id="ch-reply-b")
                yield Static("", id="ch-alts")
                yield Static("", id="ch-status")

    def on_mount(self) -> None:
        self.query_one("#ch-reply-b").display = False
        self._show_decoding("sample")
        self.refresh_runs()
        self._timer = self.set_interval(1 / DRAIN_HZ, self._drain, pause=True)

    def on_show(self) -> None:
        self.refresh_runs()

    # --- choosing a checkpoint -----------------------------------------------------------

    def refresh_runs(self) -> None:
        from workbench.runs.folder import list_runs

        runs = list_runs(self.ws)
        opts = [(r.name, r.name) for r in runs]
        if opts == self._run_opts:
            return
        self._run_opts = opts
        self._ckpts = {r.name: list(reversed(r.checkpoints())) for r in runs}
        sel = self.query_one("#ch-run", Select)
        current = sel.value
        with self.prevent(Select.Changed):
            sel.set_options(opts)
        names = [v for _, v in opts]
        if current in names:
            with self.prevent(Select.Changed):
                sel.value = current
            self._fill_checkpoints(current)
        elif names:
            with self.prevent(Select.Changed):
                sel.value = names[0]
            self._fill_checkpoints(names[0])
        else:
            self.show_error("no runs yet: train one in the Train pane (3), then chat with it here")
        self._fill_compare()

    def _fill_checkpoints(self, run: str, checkpoint: str | None = None) -> None:
        names = self._ckpts.get(run, [])
        sel = self.query_one("#ch-ckpt", Select)
        with self.prevent(Select.Changed):
            sel.set_options([(n, n) for n in names])
            if names:
                sel.value = checkpoint if checkpoint in names else names[0]
        if not names:
            self.show_error(f"run {run} has no checkpoint yet")
        else:
            self.show_error("")
        self._fill_compare()

    def _fill_compare(self) -> None:
        sel = self.query_one("#ch-ckpt2", Select)
        opts = [("nothing", NONE)]
        run = self.query_one("#ch-run", Select).value
        for r, names in getattr(self, "_ckpts", {}).items():
            opts += [(f"{n}" if r == run else f"{r} {n}", f"{r}{SEP}{n}") for n in names]
        current = sel.value
        with self.prevent(Select.Changed):
            sel.set_options(opts)
            sel.value = current if current in [v for _, v in opts] else NONE

    @on(Select.Changed, "#ch-run")
    def _run_changed(self, event: Select.Changed) -> None:
        event.stop()
        if isinstance(event.value, str):
            self._fill_checkpoints(event.value)

    @on(Select.Changed, "#ch-decoding")
    def _decoding_changed(self, event: Select.Changed) -> None:
        event.stop()
        self._show_decoding(event.value)

    def _show_decoding(self, how) -> None:
        """Only the settings of the chosen decoding are shown (and read)."""
        beam = how == "beam"
        for wid in SAMPLING_ONLY:
            self.query_one(f"#{wid}-row").display = not beam
        for wid, *_ in BEAM_FIELDS:
            self.query_one(f"#{wid}-row").display = beam

    @property
    def beam(self) -> bool:
        return self.query_one("#ch-decoding", Select).value == "beam"

    def search(self):
        """BeamSearch from the form; raises WorkbenchError naming the bad field by its label."""
        from workbench.generation.beam import BeamSearch

        fields = [f for f in (*FIELDS, *BEAM_FIELDS) if f[1] in ("max_tokens", "beams", "length_penalty")]
        values = {}
        for wid, key, label, *_ in fields:
            text = self.query_one(f"#{wid}", Input).value.strip()
            kind = float if key == "length_penalty" else int
            try:
                values[key] = kind(text)
            except ValueError:  # the range is BeamSearch.validate's to say
                raise WorkbenchError(f"{label} {text!r} is not allowed: expected "
                                     f"{'a number' if kind is float else 'an integer'}") from None
        try:
            return BeamSearch(**values, stop_at_eos=self.query_one("#ch-eos", Switch).value).validate()
        except WorkbenchError as e:
            msg = str(e)
            for _, key, label, *_ in fields:
                msg = msg.replace(key, label)
            raise WorkbenchError(msg) from None

    @on(Select.Changed, "#ch-ckpt2")
    def _compare_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.query_one("#ch-reply-b").display = event.value != NONE

    def open_run(self, run_name: str, purpose: str = "open", checkpoint: str | None = None) -> None:
        """Select a run (its latest checkpoint unless one is named), ready to chat."""
        self._run_opts = None
        self.refresh_runs()
        if run_name not in self._ckpts:
            self.show_error(f"run {run_name!r} not found in {self.ws.runs_dir()}")
            return
        with self.prevent(Select.Changed):
            self.query_one("#ch-run", Select).value = run_name
        self._fill_checkpoints(run_name, checkpoint)
        self.query_one("#ch-prompt", TextArea).focus()
        self._set_status(f"chatting with {run_name}: write a prompt, then ctrl+g")

    # --- sampling settings ---------------------------------------------------------------

    def params(self):
        """SamplingParams from the form; raises WorkbenchError naming the bad field."""
        from workbench.generation.sampling import sampling_params

        texts = {key: self.query_one(f"#{wid}", Input).value for wid, key, *_ in FIELDS}
        return sampling_params({key: label for _, key, label, *_ in FIELDS}, **texts,
                               stop_at_eos=self.query_one("#ch-eos", Switch).value, alternatives=5)

    def targets(self) -> list[tuple[str, str]]:
        run, ckpt = self.query_one("#ch-run", Select).value, self.query_one("#ch-ckpt", Select).value
        if not isinstance(run, str) or not isinstance(ckpt, str):
            raise WorkbenchError("checkpoint: choose a run with a checkpoint (train one in the Train pane)")
        out = [(run, ckpt)]
        other = self.query_one("#ch-ckpt2", Select).value
        if isinstance(other, str) and other != NONE:
            out.append(tuple(other.split(SEP, 1)))
        return out

    # --- generating ----------------------------------------------------------------------

    @property
    def generating(self) -> bool:
        return any(not s.done for s in self.streams)

    def action_generate(self, prompt: str | None = None) -> None:
        if self.generating:
            return
        self.show_error("")
        if prompt is None:
            prompt = self.query_one("#ch-prompt", TextArea).text
        try:
            params = self.search() if self.beam else self.params()
            targets = self.targets()
        except WorkbenchError as e:
            self.show_error(str(e))
            return
        if not self.app.trusted_or_ask([run for run, _ in targets], lambda: self.action_generate(prompt)):
            return  # asked first: a run's experiment code comes from another workspace
        if not self.beam and params.seed is None:  # one seed for both columns, so they are comparable
            import random

            params.seed = random.SystemRandom().randrange(2**31)
        self.last_prompt = prompt
        cols = [self.query_one("#ch-reply-a", ReplyColumn), self.query_one("#ch-reply-b", ReplyColumn)]
        self.streams = []
        for col, (run, ckpt) in zip(cols, targets):
            stream = Stream(f"{run} · {ckpt}")
            self.streams.append(stream)
            col.start(stream, prompt)
            if self.beam:
                self._beam_worker(stream, run, ckpt, prompt, params)
            else:
                self._generate_worker(stream, run, ckpt, prompt, params)
        self._set_status("")
        self.query_one("#ch-alts", Static).update("")
        self._timer.resume()
        self.app.refresh_bindings()

    @work(thread=True, exit_on_error=False)
    def _generate_worker(self, stream: Stream, run: str, ckpt: str, prompt: str, params) -> None:
        from workbench.generation.generate import Generation

        try:
            model, tok = self._models.get(run, ckpt, self.probe.device_for("auto"))
            gen = Generation(model, tok, prompt, params, stop_event=stream.stop)
            for step in gen.steps():
                stream.push(step)
            stream.result = gen.result
        except Exception as e:  # never a traceback in the user's face
            stream.error = user_message(e)
        finally:
            stream.done = True

    @work(thread=True, exit_on_error=False)
    def _beam_worker(self, stream: Stream, run: str, ckpt: str, prompt: str, search) -> None:
        """Beam search (each column its own copy of the settings): the best beam's tokens, then
        every beam with its log-probability under the replies."""
        import dataclasses

        from workbench.generation.generate import beam_generation

        try:
            model, tok = self._models.get(run, ckpt, self.probe.device_for("auto"))
            res = beam_generation(model, tok, prompt, dataclasses.replace(search, notes=[]), stop_event=stream.stop)
            stream.beams = res
            for step in res.steps:
                stream.push(step)
        except Exception as e:  # never a traceback in the user's face
            stream.error = user_message(e)
        finally:
            stream.done = True

    def _drain(self) -> None:
        more = False
        for col in self.query(ReplyColumn):
            if col.display and col.stream is not None:
                more |= col.drain()
        if not more:
            self._timer.pause()
            self.app.refresh_bindings()
            beams = [s for s in self.streams if s.beams is not None]
            if beams:
                self.query_one("#ch-alts", Static).update(beams_text(beams))

    def action_stop(self) -> None:
        for s in self.streams:
            s.stop.set()

    async def shutdown(self) -> None:
        """Stop any generation and wait for its worker (used on quit)."""
        self.action_stop()
        for w in list(self.workers):
            try:
                await w.wait()
            except Exception:
                pass

    def action_regenerate(self) -> None:
        if self.last_prompt is None:
            self.show_error("nothing to regenerate yet: write a prompt and press ctrl+g")
            return
        seed = self.query_one("#ch-seed", Input)
        if seed.value.strip().isdigit():  # a fixed seed would repeat the reply: take the next
            seed.value = str(int(seed.value) + 1)
        self.action_generate(self.last_prompt)

    def action_clear(self) -> None:
        self.action_stop()
        for col in self.query(ReplyColumn):
            col.clear()
        self.streams = []
        self.query_one("#ch-alts", Static).update("")
        self._set_status("")
        self.app.refresh_bindings()

    def action_copy(self) -> None:
        cols = [c for c in self.query(ReplyColumn) if c.display and c.stream is not None]
        if not cols:
            self.notify("nothing to copy yet", severity="warning")
            return
        text = transcript(cols)
        self.app.copy_to_clipboard(text)
        self.notify(f"copied {len(text):,} characters")

    def action_probs(self) -> None:
        sw = self.query_one("#ch-colour", Switch)
        sw.value = not sw.value

    @on(Switch.Changed, "#ch-colour")
    def _colour_changed(self, event: Switch.Changed) -> None:
        event.stop()
        for col in self.query(ReplyColumn):
            col.set_colour(event.value)
        if event.value:
            self._set_status("colours: [#ff5f5f]p<0.05[/] [#ff9f43]<0.2[/] [#f6d743]<0.5[/] "
                             "[#9be564]<0.8[/] [#4fd1a1]≥0.8[/] · focus a reply, ←/→ select a token")

    @on(ReplyColumn.TokenSelected)
    def _token_selected(self, event: ReplyColumn.TokenSelected) -> None:
        event.stop()
        self.query_one("#ch-alts", Static).update(event.column.alternatives())

    def check_pane_action(self, action: str) -> bool | None:
        if action == "stop":
            return self.generating
        if action in ("generate", "regenerate"):
            return None if self.generating else True
        return True

    def _set_status(self, text: str) -> None:
        box = self.query_one("#ch-status", Static)
        box.remove_class("error")
        box.update(text)

    def show_error(self, text: str) -> None:
        self.show_line("ch-status", text, error=bool(text))


__all__ = ["ChatPane", "ReplyView"]
