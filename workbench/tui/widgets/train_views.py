"""What the Train pane writes in its header, notices and device line: the run's numbers, packed
into as many lines as the pane's width needs (with fewer words when it is narrow), the newest
notices that fit their box, the machine's devices, and what a resume or data preparation is at.
Plain functions (no widgets here)."""

from __future__ import annotations

import math

from rich.cells import cell_len
from rich.markup import escape, render

from workbench.training import budget
from workbench.machine.estimate import fmt_bytes

VIEWS = ("loss", "rates", "samples")  # what a narrow or short Train pane shows, one at a time
VIEW_NAMES = {"loss": "loss", "rates": "learning rate · tokens/s", "samples": "samples"}


def header_parts(state: str, run_name: str | None, total_steps: int | None, step: int, s: dict, lg: dict,
                 ev: dict, ema: float | None, x_mode: str, log_y: bool, short: bool,
                 view: str | None = None) -> tuple[list[str], list[str]]:
    """The header's pieces (markup): where the run is (state, step, tokens, speed, time, grad
    norm, memory), then its losses and how the charts are drawn. ``short`` uses fewer words;
    ``view`` names the view shown when the pane shows one at a time."""
    tokens = s.get("tokens") or lg.get("tokens") or 0
    elapsed = s.get("elapsed") or lg.get("elapsed") or 0.0
    total = f"/{total_steps}" if total_steps else ""
    frac = lg.get("progress") or (step / total_steps if total_steps else 0)
    eta = elapsed * (1 - frac) / frac if frac and 0 < frac < 1 and state == "running" else None
    gn = s.get("grad_norm", lg.get("grad_norm"))
    eta_text = clock(eta) if eta is not None else "—"
    gn_text = f"{gn:.3f}" if isinstance(gn, (int, float)) else "—"
    mem = fmt_bytes(lg["mem"]) if lg.get("mem") else "—"
    speed = f"{si(lg['tok_s'])} tok/s" if lg.get("tok_s") else "— tok/s"
    head = f"[b]{state}[/b]" + (f" {escape(run_name)}" if run_name else "")
    if short:
        parts = [head, f"step {step}{total}", f"{si(tokens)} tok", speed,
                 f"{clock(elapsed)} (ETA {eta_text})", f"gn {gn_text}", f"mem {mem}"]
    else:
        parts = [head, f"step {step}{total}", f"{si(tokens)} tokens", speed, f"elapsed {clock(elapsed)}",
                 f"ETA {eta_text}", f"grad norm {gn_text}", f"mem {mem}"]
    loss = s.get("loss", lg.get("loss"))
    line2 = []
    if isinstance(loss, (int, float)):
        line2.append(f"loss {loss:.4f}")
    if ema is not None:
        line2.append(f"ema {ema:.4f}")
    if ev:
        line2.append(f"val {ev['val_loss']:.4f}")
        if ev.get("bpb") is not None:
            line2.append(f"{ev['bpb']:.3f} {'bpb' if short else 'bits/byte'}")
    line2.append(f"x: {x_mode}" + (" · log y" if log_y else ""))
    if view is not None:
        line2.append(f"[b]view: {VIEW_NAMES[view]}[/b] (ctrl+f: next)")
    return parts, line2


def resume_hint(info: dict, kind: str) -> str:
    """The header while a run to resume is chosen: where it stands in the budget's ``kind``
    (``info`` as ``budget.resume_point`` gives it) and what to do next."""
    done = info["done"]
    have = f"{done['minutes']:.1f}" if kind == "minutes" else budget.fmt(kind, done.get(kind, 0))
    return f"resume {info['name']} from {have} {kind}: set the budget (in all) to train on, then ctrl+r"


def prepare_text(split: str, done: float, total: float | None, msg: str) -> str:
    """The header while the data is being prepared, before the run starts."""
    pct = f" {100 * done / total:.0f}%" if total else ""
    return f"preparing data: {split}{pct} {msg}"


def samples_text(step: int, texts: list[str]) -> str:
    """The samples box (markup): the texts sampled at ``step``, each cut to 400 characters."""
    body = "\n".join(f"› {t.strip()[:400]}" for t in texts)
    return f"[b]samples at step {step}[/b]\n" + escape(body)


def devices_text(devices: list[dict], short: bool) -> str:
    """The machine's devices in one line (plain text): for the CPU its cores, memory and the
    precision ``auto`` picks with the measured bf16 speed-up behind it. ``short`` uses fewer words."""
    parts = []
    for d in devices:
        mem = fmt_bytes(d["memory_bytes"]) if d.get("memory_bytes") else "?"
        if d["device"] == "cpu":
            prec = ""
            if d.get("precision"):
                speed = f"{d['bf16_speedup']:.1f}× fp32" if d.get("bf16_speedup") else "not measured"
                why = speed if short or not d.get("bf16_speedup") else f"bf16 matmul {speed}"
                prec = f", auto {d['precision']} ({why})"
            parts.append(f"cpu: {d.get('cores')} cores, {mem}{'' if short else ' RAM'}{prec}")
        else:
            parts.append(f"{d['device']}: {d.get('name')}, {mem}")
    return " · ".join(parts)


def pack(parts: list[str], width: int, sep: str = " · ") -> list[str]:
    """Markup pieces joined by ``sep`` into lines of at most ``width`` cells, never splitting a
    piece (a piece longer than the width gets a line of its own)."""
    lines: list[str] = []
    used = 0
    for part in parts:
        w = cell_len(render(part).plain)
        if lines and used + len(sep) + w <= width:
            lines[-1] += sep + part
            used += len(sep) + w
        else:
            lines.append(part)
            used = w
    return lines


def newest_that_fit(notices: list[str], width: int, height: int) -> list[str]:
    """The newest notices whose wrapped lines fill at most ``height`` rows of ``width``, oldest
    first (so the box shows the latest at its bottom, whatever its size)."""
    out: list[str] = []
    rows = 0
    for text in reversed(notices):
        n = max(1, math.ceil(cell_len(text) / max(1, width)))
        if out and rows + n > height:
            break
        out.append(text)
        rows += n
    return out[::-1]


def si(n) -> str:
    n = float(n or 0)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}"


def clock(seconds) -> str:
    s = int(seconds or 0)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
