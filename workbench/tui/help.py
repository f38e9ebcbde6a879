"""The help screen's text, generated from the App's bindings: every key the app answers appears
under its pane with its Footer label and, where one is written here, a longer explanation.
What has no key of its own (tables, boxes, charts) is described in ``NOTES``."""

from __future__ import annotations

from rich.text import Text

SECTIONS = [("app", "Anywhere"), ("tokenizer", "Tokenizer"), ("config", "Config"), ("train", "Train"),
            ("trace", "Trace"), ("chat", "Chat"), ("runs", "Runs")]

DETAIL = {
    "app.quit": "quit (asks first while a build or a run is going; a run keeps a checkpoint)",
    "app.help": "this help",
    "app.theme": "choose a theme",
    "app.focus_tabs": "leave a text box (focus the pane tabs; ←/→ switch there); number keys type "
                      "digits while a text box has focus",
    "tokenizer.build": "build with the settings shown",
    "tokenizer.cancel": "cancel the build (nothing is written)",
    "tokenizer.browse": "browse for a data file or folder",
    "config.save": "save as models/<name>.yaml (blocked while a value is bad)",
    "config.load": "load a preset or a YAML file from models/",
    "config.reload": "read the experiments folder again (after adding or editing a file): says what "
                     "is new, gone or broken",
    "config.plan": "plan for the budget box's minutes on this machine: fills the form (every field "
                   "stays editable) and says why",
    "train.start": "start training the form's config (or resume the run named there)",
    "train.pause": "pause the run between steps",
    "train.unpause": "go on after a pause",
    "train.stop": "stop after this step, keeping a checkpoint (every process of a multi-process run)",
    "train.log_y": "loss chart on a log scale",
    "train.x_axis": "x axis: steps, tokens or time",
    "train.smooth_more": "smooth the loss curve more (a debiased EMA, weight shown on the chart, up to 0.99)",
    "train.smooth_less": "smooth the loss curve less (down to 0: the raw curve)",
    "train.outliers": "loss chart's y-range: ignore outliers (5-95% of points, the rest on the edge, "
                      "marked; the default) or hold every point",
    "train.health": "side charts: learning rate and tokens/s, then a heatmap of each model-health quantity "
                    "(update/weight, gradient norm, activation RMS, attention entropy) over layers × steps",
    "train.panels": "pick metrics (every one the run logged) to draw as a grid of charts instead of the "
                    "loss and side charts; none picked: those charts again",
    "train.view": "next view where the pane is too small for every chart at once",
    "trace.run": "trace one forward pass of the text",
    "trace.head_prev": "previous head of the attention heatmap",
    "trace.head_next": "next head of the attention heatmap",
    "trace.pin": "pin this trace as the diff baseline (or pick a saved one)",
    "trace.save": "save traces/<name>.json and traces/<name>.txt",
    "chat.generate": "generate from the prompt (enter adds a line)",
    "chat.stop": "stop the reply that is streaming",
    "chat.regenerate": "regenerate (a fixed seed moves to the next one)",
    "chat.probs": "colour tokens by probability; in a reply, ←/→ pick a token to see the model's top 5 there",
    "chat.copy": "copy the reply",
    "chat.clear": "clear the conversation",
    "runs.select": "select the run under the cursor for the overlay",
    "runs.baseline": "make it the baseline: the difference chart and tokens-to-reach compare against it",
    "runs.resume": "resume it in the Train pane (a finished run with a new budget: steps, tokens or minutes)",
    "runs.trace": "open it in the Trace pane",
    "runs.chat": "chat with it",
    "runs.export": "export it (GGUF, llama2.c, Hugging Face, plain weights)",
    "runs.filter": "show only the runs whose name or a tag matches a regular expression (empty: all)",
    "runs.tag": "add tags to it (space-separated; -TAG removes one); they show in its line and the filter",
    "runs.note": "write a note on it (shown in its line; `workbench runs note`)",
    "runs.csv": "write the selected runs' (or this run's) curves as CSV under exports/, and with a "
                "baseline each one's difference from it",
    "runs.rename": "rename it",
    "runs.delete": "delete it and its checkpoints (asks first)",
    "runs.view": "next view: the curves and the baseline comparison take turns where the pane is too "
                 "small for both; the metric panels are a view of their own once picked",
    "runs.sort": "order the table by name, best bits per byte, or any metric the runs logged: its best or last "
                 "value after the charts' smoothing (best: lowest, but highest for top1/top5/accuracies and "
                 "tok_s; `runs list --sort METRIC:best`); pinned runs stay first",
    "runs.pin": "pin it (or unpin): listed first, marked ⚑, always drawn in the charts even where the filter "
                "hides it (`workbench runs pin`)",
    "runs.panels": "pick metrics (every one the shown runs logged) for a grid of small charts, one per metric",
    "runs.smooth_more": "smooth the curves and panels more (a debiased EMA, weight shown in their titles, up to "
                        "0.99); the baseline comparison stays raw",
    "runs.smooth_less": "smooth them less (down to 0: the raw curves, the default here)",
    "runs.outliers": "charts' y-range: ignore outliers (5-95% of points, the rest on the edge, marked; the "
                     "default) or hold every point",
    "runs.sweep": "start a sweep: a grid of configs from a preset or the Config pane's form, each "
                  "trained for a budget, ranked by bits per byte (as `workbench sweep`)",
    "runs.stop_sweep": "stop the sweep (each of its runs stops with a checkpoint)",
}

NOTES = {
    "app": [("tab", "next field (shift+tab: previous)"),
            ("^p", "command palette: panes, themes, help, build, save, quit")],
    "tokenizer": [("data", "a hub id (roneneldan/TinyStories) or a local .txt/.jsonl/.json/.parquet file "
                           "or folder of them"),
                  ("table", "move the cursor to a tokenizer to try it and browse it"),
                  ("Try it", "type: tokens in alternating colours, their ids, the count"),
                  ("Vocabulary", "pieces in merge order; the search box filters them"),
                  ("Chart", "bytes per token (held-out text) across built vocab sizes")],
    "config": [("fields", "checked as you type; the focused field's help shows below"),
               ("estimates", "parameters, memory, speed here, what the budget buys; the diff against the "
                             "loaded preset follows your edits")],
    "train": [("form", "config, tokenizer, data, name, processes; the run's curves, samples and status")],
    "trace": [("model", "a config (random init) or a run and checkpoint"),
              ("meta", "shapes only, for configs too large for RAM"),
              ("tree", "↑/↓ move, space unfolds layers ×N, a block, attention's q k v scores probs; the "
                       "right side details the node")],
    "chat": [("side by side", "a second checkpoint answers the same prompt")],
    "runs": [("table", "every run: params, tokens, best val, bits per byte, speed, date, status; ⚑ pinned, "
                       "B baseline, ● selected")],
}

KEY_WIDTH = 15


def help_text(bindings, key_display, width: int = 72) -> Text:
    """The help as rich Text: one section per pane, each binding's key and what it does.
    ``key_display(binding)`` is the App's own rendering of a key (what the Footer shows)."""
    by_section: dict[str, list] = {s: [] for s, _ in SECTIONS}
    panes = []
    for b in bindings:
        bid = getattr(b, "id", None) or ""
        if bid.startswith("app.pane."):
            panes.append(b)
            continue
        section = bid.split(".")[0]
        if section in by_section:
            by_section[section].append(b)
    out = Text()
    out.append("workbench", style="bold")
    out.append(" — build and study tiny language models.\n")
    for section, title in SECTIONS:
        out.append(f"\n{title}\n", style="bold")
        rows: list[tuple[str, str, bool]] = []
        if section == "app" and panes:
            rows.append((f"{key_display(panes[0])}-{key_display(panes[-1])}",
                         "switch pane: " + ", ".join(b.description for b in panes), True))
        merged: dict[str, list[str]] = {}
        for b in by_section[section]:
            merged.setdefault(key_display(b), []).append(DETAIL.get(b.id, b.description))
        rows += [(key, "; ".join(texts), True) for key, texts in merged.items()]
        rows += [(label, text, False) for label, text in NOTES.get(section, [])]
        for key, text, is_key in rows:
            _row(out, key, text, is_key, width)
    out.append("\nPress esc or ? to close.", style="dim")
    return out


def _row(out: Text, key: str, text: str, is_key: bool, width: int) -> None:
    import textwrap

    lines = textwrap.wrap(text, max(20, width - KEY_WIDTH - 2), break_on_hyphens=False) or [""]
    out.append("  ")
    out.append(key.ljust(KEY_WIDTH - 2) + " ", style="bold" if is_key else "italic")
    out.append(lines[0] + "\n")
    for line in lines[1:]:
        out.append(" " * (KEY_WIDTH + 1) + line + "\n")
