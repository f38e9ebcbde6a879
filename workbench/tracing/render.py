"""A trace as indented text: the tree ``workbench trace`` prints (and the Trace pane's
copyable text), one line per call with shapes, logged intermediates and, optionally, stats.
"""

from __future__ import annotations

from typing import Optional

from workbench.tracing.tracer import Trace


# ---------------------------------------------------------------- text rendering

def _fmt_count(n: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:g}"


def _fmt_shape(rec: dict) -> str:
    return "(" + ", ".join(map(str, rec["shape"])) + ")" if "shape" in rec else rec.get("type", "?")


def _fmt_record(name: str, rec: dict, stats: bool = True) -> str:
    if "shape" not in rec:
        return f"{name}: {rec.get('type', '?')}"
    text = f"{name} {_fmt_shape(rec)} {rec['dtype']}"
    if stats and rec.get("mean") is not None:
        text += f"  mean {rec['mean']:.3g} std {rec['std']:.3g} [{rec['min']:.3g}, {rec['max']:.3g}]"
    if rec.get("nonfinite"):
        text += f"  !! {rec['nonfinite']} non-finite"
    return text


def render_text(trace: Trace | dict, depth: Optional[int] = None, show_logs: bool = True) -> str:
    """An indented tree of calls, at most ``depth`` levels below the root (None = all).

    Each call shows its input shapes, its outputs with value stats, and what it logged.
    """
    d = trace.to_dict() if isinstance(trace, Trace) else trace
    lines: list[str] = []

    def visit(c: dict, level: int, prefix: str, last: bool) -> None:
        branch = "" if level == 0 else ("└─ " if last else "├─ ")
        name = c["path"] or "(model)"
        flag = "  !! non-finite appears here" if c.get("nan_origin") else ""
        ins = ", ".join(f"{k} {_fmt_shape(r)}" for k, r in c["inputs"].items())
        lines.append(f"{prefix}{branch}{name} [{c['class']}]  in: {ins or '-'}"
                     f"  params {_fmt_count(c['params'])}  flops {_fmt_count(c['flops'])}{flag}")
        inner = prefix + ("" if level == 0 else ("   " if last else "│  "))
        kids = c["children"] if depth is None or level < depth else []
        bar = "│ " if kids else "  "
        for k, r in c["outputs"].items():
            lines.append(f"{inner}{bar}  -> {_fmt_record(k, r)}")
        if show_logs:
            for k, r in c["logs"].items():
                lines.append(f"{inner}{bar}   · {_fmt_record(k, r)}")
        for i, child in enumerate(kids):
            visit(child, level + 1, inner, i == len(kids) - 1)

    visit(d["root"], 0, "", True)
    lines.append(f"total FLOPs {_fmt_count(d['total_flops'])} ({d['total_flops']:,})")
    first = d.get("first_nonfinite")
    if first:
        lines.append(f"first non-finite value: {first['name']} at {first['path'] or '(model)'}")
    return "\n".join(lines)
