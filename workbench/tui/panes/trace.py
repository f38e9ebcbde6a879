"""The Trace pane: one traced forward pass of a config (random init) or a run's checkpoint,
as a tree of calls with repeated blocks folded, a detail panel, the attention heatmap,
anomalies, meta-device mode, saving (JSON and text) and a diff against a baseline trace.

The forward runs in a thread worker that posts one message when done; the tree is filled on
the UI thread. Saved traces go to ``traces/`` in the workspace.
"""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Button, Input, Label, Select, Static, Switch, Tree

from workbench.errors import WorkbenchError, user_message
from workbench.tui.panes.base import Pane
from workbench.tracing.files import load_trace, save_trace, saved_traces, traces_dir
from workbench.tracing.request import INIT, TraceRequest
from workbench.tui.widgets import trace_views as tv
from workbench.tui.widgets.form_fields import FormInput, FormSelect, FormSwitch

DEFAULT_TEXT = "Once upon a time, there was a little girl named Lily."
RANDOM_IDS = "@random"  # tokenizer choice: random token ids instead of text
RUN_TOK = "@run"        # tokenizer choice: the run's own
NO_BASE, PINNED = "@none", "@pinned"
N_RANDOM = 8


class TracePane(Pane):
    """Trace a model and look inside it."""

    ACTIONS = {"tr-run": "trace", "tr-text": "trace", "tr-save-name": "save"}

    class Done(Message):
        def __init__(self, result: dict | None = None, tensors: dict | None = None, error: str = ""):
            super().__init__()
            self.result, self.tensors, self.error = result, tensors or {}, error

    def __init__(self, ws, probe, **kw):
        super().__init__(**kw)
        self.ws, self.probe = ws, probe
        self.tracing = False
        self.result: dict | None = None   # header + Trace.to_dict()
        self.tensors: dict = {}           # (path, "probs") -> (B, H, T, T)
        self.baseline: tuple[str, dict] | None = None
        self.pinned: tuple[str, dict] | None = None
        self.head = 0
        self.attn_layer = 0
        self._node: tv.Node | None = None

    # --- layout --------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(classes="tr-row first"):
            yield Label("model", classes="top-label")
            yield FormSelect([], id="tr-source", allow_blank=True, compact=True, prompt="config or run")
            yield Label("weights", classes="top-label")
            yield FormSelect([("random init", INIT)], id="tr-ckpt", value=INIT, allow_blank=False,
                         compact=True)
            yield Label("meta", classes="top-label")
            yield FormSwitch(False, id="tr-meta")
            yield Label("off", id="tr-meta-state", classes="hint")
            yield Button("Trace", id="tr-run", variant="primary", compact=True)
        with Horizontal(classes="tr-row"):
            yield Label("text", classes="top-label")
            yield FormInput(DEFAULT_TEXT, id="tr-text", compact=True, placeholder="input text")
            yield Label("tokenizer", classes="top-label")
            yield FormSelect([], id="tr-tok", allow_blank=True, compact=True, prompt="tokenizer")
        yield Static("", id="tr-status")
        with Horizontal(id="tr-body"):
            tree: Tree = Tree("no trace yet: choose a model and press ctrl+g", id="tr-tree")
            tree.show_root = True
            tree.guide_depth = 2
            yield tree
            with VerticalScroll(id="tr-side"):
                yield Static("", id="tr-detail")
                yield Static("", id="tr-heatmap")  # moved above the detail on attention nodes
        with Horizontal(classes="tr-row", id="tr-bottom"):
            yield Label("save as", classes="top-label")
            yield FormInput("", id="tr-save-name", compact=True, placeholder="name")
            yield Label("diff vs", classes="top-label")
            yield FormSelect([("none", NO_BASE)], id="tr-base", value=NO_BASE, allow_blank=False,
                         compact=True)

    def on_mount(self) -> None:
        self.refresh_sources()
        self._set_status("")

    def on_show(self) -> None:
        self.refresh_sources()  # runs trained since the pane was last shown

    # --- choices -------------------------------------------------------------------------

    def refresh_sources(self) -> None:
        from workbench.config.schema import preset_names
        from workbench.runs.folder import list_runs

        opts = [(f"{r.name}  (run)", f"run:{r.name}") for r in list_runs(self.ws)]
        opts += [(f"{n}  (config)", f"config:{n}") for n in preset_names(self.ws)]
        src = self.query_one("#tr-source", Select)
        current = src.value
        values = [v for _, v in opts]
        if opts != getattr(self, "_source_opts", None):
            self._source_opts = opts
            with self.prevent(Select.Changed):
                src.set_options(opts)
            if current in values:
                with self.prevent(Select.Changed):
                    src.value = current
            else:
                default = "config:debug" if "config:debug" in values else (values[0] if values else None)
                if default is not None:
                    src.value = default
                    self._source_changed_to(default)
        self._refresh_baselines()

    @on(Select.Changed, "#tr-source")
    def _source_changed(self, event: Select.Changed) -> None:
        event.stop()
        if isinstance(event.value, str):
            self._source_changed_to(event.value)

    def _source_changed_to(self, value: str, checkpoint: str | None = None) -> None:
        from workbench.runs.folder import get_run
        from workbench.tokenizer.tokenizer import list_tokenizers

        kind, _, name = value.partition(":")
        ckpt = self.query_one("#tr-ckpt", Select)
        tok = self.query_one("#tr-tok", Select)
        if kind == "run":
            try:
                names = list(reversed(get_run(self.ws, name).checkpoints()))
            except WorkbenchError as e:
                self.show_error(str(e))
                names = []
            ckpt.set_options([(n, n) for n in names] + [("random init", INIT)])
            ckpt.value = checkpoint if checkpoint in names else (names[0] if names else INIT)
            ckpt.disabled = False
            tok.set_options([("the run's own", RUN_TOK)])
            tok.value = RUN_TOK
            tok.disabled = True
        else:
            ckpt.set_options([("random init", INIT)])
            ckpt.value = INIT
            ckpt.disabled = True
            try:
                toks = [i.name for i in list_tokenizers(self.ws)]
            except WorkbenchError:
                toks = []
            prev = tok.value
            tok.set_options([(t, t) for t in toks] + [(f"{N_RANDOM} random ids", RANDOM_IDS)])
            tok.value = prev if prev in toks else (toks[0] if toks else RANDOM_IDS)
            tok.disabled = False
        self.query_one("#tr-save-name", Input).placeholder = self._default_name()

    def open_run(self, run_name: str, purpose: str = "open", checkpoint: str | None = None) -> None:
        """Select a run (its latest checkpoint unless one is named), ready to trace."""
        self.refresh_sources()
        src = self.query_one("#tr-source", Select)
        value = f"run:{run_name}"
        if value not in [v for _, v in self._source_opts]:
            self.show_error(f"run {run_name!r} not found in {self.ws.runs_dir()}")
            return
        with self.prevent(Select.Changed):
            src.value = value
        self._source_changed_to(value, checkpoint)
        self._set_status(f"run {run_name} selected: press ctrl+g to trace it")

    def _default_name(self) -> str:
        src = self.query_one("#tr-source", Select).value
        name = str(src).partition(":")[2] if isinstance(src, str) else "trace"
        ck = self.query_one("#tr-ckpt", Select).value
        return f"{name}-{'init' if ck == INIT else ck}"

    def request(self) -> TraceRequest:
        """The trace request from the form; raises WorkbenchError naming the bad field (the
        request checks it: a model is chosen, the text is not empty)."""
        src = self.query_one("#tr-source", Select).value
        kind, _, name = src.partition(":") if isinstance(src, str) else ("", "", None)
        tok = self.query_one("#tr-tok", Select).value
        run = kind == "run"
        return TraceRequest(config=None if run else name, run=name if run else None,
                            checkpoint=self.query_one("#tr-ckpt", Select).value if run else None,
                            text=None if tok == RANDOM_IDS else self.query_one("#tr-text", Input).value,
                            tokenizer=None if tok in (RANDOM_IDS, RUN_TOK) else tok, tokens=N_RANDOM,
                            meta=self.query_one("#tr-meta", Switch).value, keep=("probs",))

    # --- tracing -------------------------------------------------------------------------

    def action_trace(self) -> None:
        if self.tracing:
            return
        self.show_error("")
        try:
            req = self.request()
        except WorkbenchError as e:
            self.show_error(str(e))
            return
        if req.run and not self.app.trusted_or_ask([req.run], self.action_trace):
            return  # asked first: the run's experiment code comes from another workspace
        self.tracing = True
        self.app.refresh_bindings()
        self.query_one("#tr-run", Button).disabled = True
        self._set_status(f"tracing {req.run or req.config} …")
        self._trace_worker(req)

    @work(thread=True, exclusive=True, group="trace", exit_on_error=False)
    def _trace_worker(self, req: TraceRequest) -> None:
        from workbench.tracing.run import run_trace

        try:
            result, tensors = run_trace(self.ws, req, available=self.probe.available)
        except Exception as e:  # never a traceback in the user's face
            self.post_message(self.Done(error=user_message(e)))
        else:
            self.post_message(self.Done(result, tensors))

    def on_trace_pane_done(self, msg: "TracePane.Done") -> None:
        self.tracing = False
        self.app.refresh_bindings()
        self.query_one("#tr-run", Button).disabled = False
        if msg.error:
            self._set_status("")
            self.show_error(msg.error)
            return
        self.result, self.tensors = msg.result, msg.tensors
        self.show_trace()
        self.query_one("#tr-tree", Tree).focus()

    def show_trace(self) -> None:
        r = self.result
        tree = self.query_one("#tr-tree", Tree)
        tv.fill_tree(tree, r)
        self._set_status(tv.summary(r))
        self.query_one("#tr-save-name", Input).placeholder = self._default_name()
        self._show_node(tree.root.data)

    # --- the detail panel and heatmap ----------------------------------------------------

    @on(Tree.NodeHighlighted, "#tr-tree")
    def _highlighted(self, event: Tree.NodeHighlighted) -> None:
        event.stop()
        if isinstance(event.node.data, tv.Node):
            self._show_node(event.node.data)

    def _show_node(self, node: tv.Node) -> None:
        from rich.console import Group

        self._node = node
        if self.result is None:
            return
        base = tv.calls_by_path(self.baseline[1]) if self.baseline else None
        parts = []
        if self.baseline and node.kind == "call" and node.call is self.result["root"]:
            parts.append(tv.diff_summary(self.baseline[1], self.result, self.baseline[0]))
        parts.append(tv.detail(node, self.result, base))
        self.query_one("#tr-detail", Static).update(Group(*parts))
        layer = tv.layer_of(node.path)
        if layer is not None:
            self.attn_layer = layer
        self._show_heatmap()
        # on an attention node the heatmap is what you came for: it goes above the detail
        side, heat, det = (self.query_one(q) for q in ("#tr-side", "#tr-heatmap", "#tr-detail"))
        on_attention = ".attn" in (node.path or "")
        if (side.children.index(heat) < side.children.index(det)) != on_attention:
            if on_attention:
                side.move_child(heat, before=det)
            else:
                side.move_child(det, before=heat)

    def _show_heatmap(self) -> None:
        box = self.query_one("#tr-heatmap", Static)
        r = self.result
        if r is None:
            box.update("")
            return
        shown, self.head = tv.layer_heatmap(r, self.tensors, self.attn_layer, self.head)
        box.update(shown)

    def action_head(self, step: int) -> None:
        self.head += step
        self._show_heatmap()

    # --- save and diff -------------------------------------------------------------------

    def action_save(self) -> None:
        self.show_error("")
        if self.result is None:
            self.show_error("nothing to save yet: trace a model first (ctrl+g)")
            return
        name = self.query_one("#tr-save-name", Input).value.strip() or self._default_name()
        try:
            folder = save_trace(self.ws, name, self.result)
        except WorkbenchError as e:
            self.show_error(f"save as: {e}")
            return
        except OSError as e:
            self.show_error(f"cannot write {traces_dir(self.ws)}: {e.strerror or e}")
            return
        self._refresh_baselines()
        self.notify(f"saved traces/{name}.json and traces/{name}.txt")
        self._set_status(f"saved {folder / name}.json and .txt")

    def action_pin(self) -> None:
        if self.result is None:
            self.show_error("nothing to pin yet: trace a model first (ctrl+g)")
            return
        self.pinned = (f"pinned {self._default_name()}", self.result)
        self._refresh_baselines()
        self.query_one("#tr-base", Select).value = PINNED
        self.notify("pinned as the diff baseline: trace another model or checkpoint to compare")

    def _refresh_baselines(self) -> None:
        sel = self.query_one("#tr-base", Select)
        opts = [("none", NO_BASE)]
        if self.pinned:
            opts.append((self.pinned[0], PINNED))
        opts += [(f"traces/{p.name}", str(p)) for p in saved_traces(self.ws)]
        if opts == getattr(self, "_base_opts", None):
            return
        self._base_opts = opts
        current = sel.value
        with self.prevent(Select.Changed):
            sel.set_options(opts)
            sel.value = current if current in [v for _, v in opts] else NO_BASE

    @on(Select.Changed, "#tr-base")
    def _base_changed(self, event: Select.Changed) -> None:
        event.stop()
        v = event.value
        self.show_error("")
        if v == PINNED and self.pinned:
            self.baseline = self.pinned
        elif isinstance(v, str) and v not in (NO_BASE, PINNED):
            try:
                self.baseline = (f"traces/{Path(v).name}", load_trace(v))
            except WorkbenchError as e:
                self.baseline = None
                self.show_error(f"diff vs: {e}")
        else:
            self.baseline = None
        if self._node is not None:
            self._show_node(self._node)

    # --- small handlers ------------------------------------------------------------------

    def check_pane_action(self, action: str) -> bool | None:
        if action == "trace":
            return None if self.tracing else True
        if action in ("head_prev", "head_next"):
            return bool(self.tensors)
        return True

    def action_head_prev(self) -> None:
        self.action_head(-1)

    def action_head_next(self) -> None:
        self.action_head(1)

    @on(Select.Changed, "#tr-ckpt")
    def _ckpt_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.query_one("#tr-save-name", Input).placeholder = self._default_name()

    def _set_status(self, text: str) -> None:
        box = self.query_one("#tr-status", Static)
        box.remove_class("error")
        box.update(text)

    def show_error(self, text: str) -> None:
        self.show_line("tr-status", text, error=bool(text))
