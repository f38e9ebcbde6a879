"""What the Trace pane shows, as plain functions of a trace dict (``Trace.to_dict()`` plus a
header): the status line over it, tree labels with repeated blocks folded, the detail of one
node, anomalies, the attention heatmap and the diff of two traces; and ``fill_tree``, which puts
the calls in the pane's Tree. Besides that one, no widgets: easy to test.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from rich.console import Group
from rich.table import Table
from rich.text import Text


LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)(?:\.|$)")
NUM_TAIL = re.compile(r"^(.*)\.(\d+)$")
HEATMAP_MAX = 48  # positions shown at most (the most recent ones)
# dark to bright, readable on dark and light themes; index by probability
RAMP = ("#15122b", "#2c1f5e", "#4b2a85", "#7a3291", "#a8408a", "#d25a6e", "#ef8250",
        "#fbb13c", "#f9e04b", "#fcffa4")


def fmt_count(n: float) -> str:
    """1.56M, 152K: like the engine's text trace (which imports torch; this module must not)."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:g}"


@dataclass
class Node:
    """What a tree node stands for: a call, a folded group of calls, or one named tensor."""

    kind: str                      # call | group | log
    call: dict | None = None       # the call (for log: the call that logged it)
    calls: list = field(default_factory=list)  # group members
    name: str = ""                 # group prefix, or the log's name
    rec: dict | None = None        # log record

    @property
    def path(self) -> str:
        if self.kind == "group":
            return self.name
        return self.call["path"] if self.call else ""


# ---------------------------------------------------------------- shapes and anomalies

def shape_str(rec: dict | None) -> str:
    if not rec:
        return "-"
    return "(" + ", ".join(map(str, rec["shape"])) + ")" if "shape" in rec else rec.get("type", "?")


def rec_flags(rec: dict) -> list[str]:
    """Anomalies of one tensor record: non-finite values, all zeros."""
    out = []
    if rec.get("nonfinite"):
        out.append(f"{rec['nonfinite']:,} non-finite")
    if rec.get("min") == 0 and rec.get("max") == 0 and "shape" in rec:
        out.append("all zero")
    return out


def call_records(c: dict):
    """(kind, name, record) for a call's inputs, outputs and logs."""
    for kind in ("inputs", "outputs", "logs"):
        for name, rec in c.get(kind, {}).items():
            yield kind, name, rec


def call_flags(c: dict) -> list[str]:
    """This call's own anomalies (outputs and logs; bad inputs are the caller's problem)."""
    flags = []
    if c.get("nan_origin"):
        flags.append("non-finite appears here")
    for kind, name, rec in call_records(c):
        if kind != "inputs":
            flags += [f"{name}: {f}" for f in rec_flags(rec)]
    return flags


def has_anomaly(c: dict) -> bool:
    return bool(call_flags(c)) or any(has_anomaly(k) for k in c.get("children", []))


def anomaly_list(root: dict) -> list[tuple[str, str]]:
    out = []

    def visit(c):
        for f in call_flags(c):
            out.append((c["path"] or "(model)", f))
        for k in c.get("children", []):
            visit(k)
    visit(root)
    return out


def summary(r: dict) -> str:
    """The status line over a trace (markup): what was traced on what input, its size and
    FLOPs, and its first anomalies or that there are none."""
    B, T = r["input_shape"]
    where = r["device"] + (" (shapes only)" if r["device"] == "meta" else "")
    text = (f"{r['source']}{', ' + r['checkpoint'] if r.get('checkpoint') else ''}: input ({B}, {T}) on "
            f"{where} · {r['params']:,} parameters · {fmt_count(r.get('total_flops', 0))} FLOPs")
    anomalies = anomaly_list(r["root"])
    if not anomalies:
        return text + " · no anomalies"
    text += f"\n[b red]!! {len(anomalies)} anomalies[/]: " + "; ".join(f"{p} {f}" for p, f in anomalies[:3])
    first = r.get("first_nonfinite")
    return text + (f" — first non-finite: {first['name']} at {first['path'] or '(model)'}" if first else "")


# ---------------------------------------------------------------- folding and labels

def fold(children: list[dict]) -> list[Node]:
    """Children as nodes; a run of two or more calls ``prefix.0, prefix.1, ...`` of one class
    becomes a single group node ``prefix ×N``."""
    out: list[Node] = []
    i = 0
    while i < len(children):
        c = children[i]
        m = NUM_TAIL.match(c["path"])
        j = i + 1
        if m:
            while j < len(children):
                n = NUM_TAIL.match(children[j]["path"])
                if not n or n.group(1) != m.group(1) or children[j]["class"] != c["class"]:
                    break
                j += 1
        if j - i >= 2:
            out.append(Node("group", calls=children[i:j], name=m.group(1)))
        else:
            out.append(Node("call", call=c))
        i = j if j - i >= 2 else i + 1
    return out


def _short(path: str, parent: str) -> str:
    if not path:
        return "(model)"
    return path[len(parent) + 1:] if parent and path.startswith(parent + ".") else path


def _main_in(c: dict) -> dict | None:
    return next(iter(c.get("inputs", {}).values()), None)


def _main_out(c: dict) -> dict | None:
    return next(iter(c.get("outputs", {}).values()), None)


def _share(flops: int, total: int) -> str:
    return f"{100 * flops / total:.0f}%" if total else "-"


def call_label(c: dict, parent: str, total_flops: int) -> Text:
    t = Text()
    bad = has_anomaly(c)
    t.append(_short(c["path"], parent), style="bold red" if bad else "bold")
    t.append(f" {c['class']}", style="dim")
    t.append(f"  {shape_str(_main_in(c))} → {shape_str(_main_out(c))}", style="cyan")
    if c.get("flops") and total_flops:
        t.append(f"  {_share(c['flops'], total_flops)}", style="dim")
    if bad:
        t.append("  !!", style="bold red")
    return t


def group_label(n: Node, parent: str, total_flops: int) -> Text:
    first, flops = n.calls[0], sum(c.get("flops", 0) for c in n.calls)
    bad = any(has_anomaly(c) for c in n.calls)
    t = Text()
    t.append(f"{_short(n.name, parent)} ×{len(n.calls)}", style="bold red" if bad else "bold")
    t.append(f" {first['class']}", style="dim")
    t.append(f"  {shape_str(_main_in(first))} → {shape_str(_main_out(n.calls[-1]))}", style="cyan")
    if flops and total_flops:
        t.append(f"  {_share(flops, total_flops)}", style="dim")
    if bad:
        t.append("  !!", style="bold red")
    return t


def log_label(name: str, rec: dict) -> Text:
    flags = rec_flags(rec)
    t = Text()
    t.append(f"· {name}", style="bold red" if flags else "magenta")
    t.append(f"  {shape_str(rec)}", style="cyan")
    if flags:
        t.append("  !! " + ", ".join(flags), style="bold red")
    return t


# ---------------------------------------------------------------- the detail panel

def _num(v) -> str:
    if v is None:
        return "—"
    return f"{v:.1e}" if v and abs(v) < 1e-3 else f"{v:.3g}"  # at most 7 characters


def _stats_row(name: str, rec: dict, base: dict | None, diffing: bool) -> list:
    flags = rec_flags(rec)
    dtype = rec.get("dtype", "")
    shape = shape_str(rec) + ("" if dtype in ("float32", "") else f" {dtype}")
    row = [Text(name, style="bold red" if flags else "bold"), shape]
    if "mean" in rec:
        row += [_num(rec.get("mean")), _num(rec.get("std")), _num(rec.get("min")), _num(rec.get("max"))]
    else:
        row += ["—"] * 4
    row.append(Text(", ".join(flags), style="bold red") if flags else "")
    if diffing:
        row.append(_delta(rec, base))
    return row


def _delta(rec: dict, base: dict) -> Text:
    if base is None:
        return Text("new", style="yellow")
    if base.get("shape") != rec.get("shape"):
        return Text(f"shape was {shape_str(base)}", style="yellow")
    a, b = base.get("std"), rec.get("std")
    if a is None or b is None:
        return Text("—", style="dim")
    dm = (rec.get("mean") or 0) - (base.get("mean") or 0)
    return Text(f"std {a:.3g}→{b:.3g}  Δmean {dm:+.3g}", style="yellow" if abs(b - a) > 0.1 * max(abs(a), 1e-12) else "dim")


def records_table(title: str, records: dict, base: dict | None = None) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=None,
                  padding=(0, 1, 0, 0), show_edge=False, expand=False)
    for col in ("name", "shape", "mean", "std", "min", "max", "", *(("vs baseline",) if base is not None else ())):
        table.add_column(col, no_wrap=col not in ("", "vs baseline"), min_width=4 if col == "name" else None)
    for name, rec in records.items():
        table.add_row(*_stats_row(name, rec, None if base is None else base.get(name), base is not None))
    return table


def detail(node: Node, trace: dict, base_calls: dict | None = None):
    """A renderable for the selected node. ``base_calls``: path -> call dict of a baseline."""
    total = trace.get("total_flops", 0)
    parts: list = []
    if node.kind == "log":
        c, rec = node.call, node.rec
        parts.append(Text.assemble((f"{node.name}", "bold magenta"), f"  logged by {c['path'] or '(model)'} [{c['class']}]"))
        base = (base_calls or {}).get(c["path"], {}).get("logs") if base_calls is not None else None
        parts.append(records_table("tensor", {node.name: rec}, base))
        parts.append(Text(f"{rec.get('dtype', '?')} on {rec.get('device', '?')}", style="dim"))
        return Group(*parts)
    calls = node.calls if node.kind == "group" else [node.call]
    c = calls[0]
    flops = sum(x.get("flops", 0) for x in calls)
    params = sum(x.get("params", 0) for x in calls)
    title = f"{node.name} ×{len(calls)}" if node.kind == "group" else (c["path"] or "(model)")
    head = Text.assemble((title, "bold"), (f"  [{c['class']}]", "dim"))
    parts.append(head)
    out = _main_out(c) or {}
    parts.append(Text(
        f"parameters {params:,} · FLOPs {fmt_count(flops)} ({_share(flops, total)} of {fmt_count(total)})"
        f" · {out.get('dtype', '—')} on {out.get('device', '—')}"))
    if node.kind == "group":
        parts.append(Text(f"{len(calls)} repeated {c['class']} calls; expand to see each. "
                          f"The first one's tensors:", style="dim"))
    flags = [f for x in calls for f in call_flags(x)]
    if flags:
        parts.append(Text("!! " + "; ".join(flags[:6]), style="bold red"))
    base = (base_calls or {}).get(c["path"]) if base_calls is not None else None
    bsec = (lambda k: (base or {}).get(k, {})) if base_calls is not None else (lambda k: None)
    if c.get("inputs"):
        parts.append(records_table("inputs", c["inputs"], bsec("inputs")))
    if c.get("outputs"):
        parts.append(records_table("outputs", c["outputs"], bsec("outputs")))
    if c.get("logs"):
        parts.append(records_table("intermediates", c["logs"], bsec("logs")))
    return Group(*parts)


def layer_of(path: str) -> int | None:
    m = LAYER_RE.search(path)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------- the heatmap

def ramp(p: float) -> str:
    p = 0.0 if not math.isfinite(p) else min(1.0, max(0.0, p))
    return RAMP[min(len(RAMP) - 1, int(math.sqrt(p) * len(RAMP)))]  # sqrt: small weights stay visible


def layer_heatmap(r: dict, tensors: dict, layer: int, head: int):
    """The heatmap of ``layer``'s attention at ``head`` (taken round its number of heads), or a
    line saying why there is none; and the head shown."""
    key = next((k for k in tensors if k[1] == "probs" and layer_of(k[0]) == layer), None)
    if key is None:
        why = "shapes only on the meta device" if r["device"] == "meta" else "no attention values in this trace"
        return f"[dim]attention heatmap: {why}[/dim]", head
    probs = tensors[key]
    H = probs.shape[1]
    head %= H
    return heatmap(probs[0, head], r.get("labels", []), layer, head, H), head


def heatmap(probs, labels: list[str], layer: int, head: int, n_heads: int) -> Text:
    """Attention probabilities (T, T) of one head as coloured cells: rows are queries (labelled
    on the left), columns keys (labelled on top by their tokens' first characters, and by their
    positions); future (masked) cells are dots. Shows the most recent HEATMAP_MAX positions."""
    T = probs.shape[-1]
    start = max(0, T - HEATMAP_MAX)
    cell = 2 if T - start <= 24 else 1
    out = Text()
    out.append(f"attention · layer {layer} · head {head + 1}/{n_heads}", style="bold")
    out.append("  [ ] head\n", style="dim")
    if start:
        out.append(f"positions {start}–{T - 1} of {T}\n", style="dim")
    width = 8

    def label(i: int) -> str:
        lab = labels[i] if i < len(labels) else str(i)
        return lab.replace("\n", "↵").replace(" ", "·")

    # column labels: each key's token (first characters, as wide as a cell), then its position
    out.append("keys →".rjust(width) + " ", style="dim")
    for j in range(start, T):
        out.append(label(j)[:cell].ljust(cell), style="bold" if (j - start) % 2 == 0 else "")
    out.append("\n")
    out.append(" " * (width + 1))
    for j in range(start, T):
        out.append((str(j % 10) if cell == 1 else f"{j:<2d}"[:2]), style="dim")
    out.append("\n")
    for i in range(start, T):
        out.append(label(i)[:width].rjust(width) + " ", style="dim")
        for j in range(start, T):
            if j > i:
                out.append("·" * cell, style="dim")
            else:
                out.append(" " * cell, style=f"on {ramp(float(probs[i, j]))}")
        out.append("\n")
    out.append(" " * (width + 1) + "0 ", style="dim")
    for c in RAMP:
        out.append("  ", style=f"on {c}")
    out.append(" 1  row: query", style="dim")
    return out


# ---------------------------------------------------------------- diff of two traces

def calls_by_path(trace: dict) -> dict:
    out = {}

    def visit(c):
        out[c["path"]] = c
        for k in c.get("children", []):
            visit(k)
    visit(trace["root"])
    return out


def diff_rows(base: dict, cur: dict, limit: int = 12) -> list[tuple[str, str, str]]:
    """The records whose values moved most between two traces: (where, what, change),
    largest relative change in std first; shape changes and missing calls first of all."""
    a, b = calls_by_path(base), calls_by_path(cur)
    rows: list[tuple[float, str, str, str]] = []
    for path, c in b.items():
        where = path or "(model)"
        if path not in a:
            rows.append((math.inf, where, "call", "only in this trace"))
            continue
        for kind in ("outputs", "logs"):
            for name, rec in c.get(kind, {}).items():
                old = a[path].get(kind, {}).get(name)
                if old is None:
                    continue
                if old.get("shape") != rec.get("shape"):
                    rows.append((math.inf, where, name, f"shape {shape_str(old)} → {shape_str(rec)}"))
                    continue
                s0, s1 = old.get("std"), rec.get("std")
                if s0 is None or s1 is None:
                    continue
                rel = abs(s1 - s0) / max(abs(s0), 1e-12)
                rows.append((rel, where, name, f"std {s0:.3g} → {s1:.3g}, mean "
                             f"{old.get('mean', 0):.3g} → {rec.get('mean', 0):.3g}"))
    missing = [p for p in a if p not in b]
    rows += [(math.inf, p or "(model)", "call", "only in the baseline") for p in missing]
    rows.sort(key=lambda r: -r[0])
    return [(w, n, ch) for _, w, n, ch in rows[:limit]]


def diff_summary(base: dict, cur: dict, base_label: str) -> Text:
    t = Text()
    t.append(f"diff vs {base_label}", style="bold yellow")
    fa, fb = base.get("total_flops", 0), cur.get("total_flops", 0)
    t.append(f"   FLOPs {fmt_count(fa)} → {fmt_count(fb)}\n", style="dim")
    rows = diff_rows(base, cur)
    if not rows:
        t.append("no differences in shapes or statistics\n", style="dim")
    for where, name, change in rows:
        t.append(f"  {where}", style="bold")
        t.append(f" {name}: ", style="magenta")
        t.append(change + "\n")
    return t


# ---------------------------------------------------------------- the call tree

def fill_tree(tree, result: dict) -> None:
    """Put a trace's calls in a Textual ``Tree`` (``layers ×N`` folded; each node's data a
    ``Node``), the root expanded and under the cursor."""
    tree.clear()
    root, total = result["root"], result.get("total_flops", 0)
    tree.root.set_label(call_label(root, "", total))
    tree.root.data = Node("call", call=root)
    _add_children(tree.root, root, total)
    tree.root.expand()
    tree.move_cursor(tree.root)


def _add_children(parent, call: dict, total: int) -> None:
    for name, rec in call.get("logs", {}).items():
        parent.add_leaf(log_label(name, rec), data=Node("log", call=call, name=name, rec=rec))
    for item in fold(call.get("children", [])):
        if item.kind == "group":
            g = parent.add(group_label(item, call["path"], total), data=item)
            for c in item.calls:
                _add_call(g, c, call["path"], total)
        else:
            _add_call(parent, item.call, call["path"], total)


def _add_call(parent, c: dict, parent_path: str, total: int) -> None:
    label, data = call_label(c, parent_path, total), Node("call", call=c)
    if c.get("children") or c.get("logs"):
        _add_children(parent.add(label, data=data), c, total)
    else:
        parent.add_leaf(label, data=data)
