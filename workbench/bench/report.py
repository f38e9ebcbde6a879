"""Turning the suite's raw measurements into rows, and rows into a markdown table.

A row is one figure: ours (median, min, max of the repetitions), the peer's where there is one,
and ``ratio``: ours against the peer taken pair by pair, oriented so that above 1 means we are
ahead (ours/peer for rates, peer/ours for times). A peer that is not installed makes a row with
``status: "missing"`` and the reason; a task that failed makes one with ``status: "failed"``.
"""

from __future__ import annotations

import math
from typing import Any

from workbench.bench.measure import percentile, stat

TOKENIZERS = "HF tokenizers"
TRANSFORMERS = "transformers Llama"
OURS_FP32 = "ours in fp32"  # a baseline of our own, not a peer
REFERENCE_TRAINERS = ("nanoGPT", "llama2.c")


def _ratio(ours: list[float], peer: list[float], better: str) -> dict | None:
    pairs = [(o, p) for o, p in zip(ours, peer) if o and p]
    if not pairs:
        return None
    return stat([o / p if better == "higher" else p / o for o, p in pairs])


def row(task: str, measure: str, unit: str, ours: Any, *, better: str = "higher", peer_name: str | None = None,
        peer: list[float] | None = None, missing: str | None = None, rss: tuple = (None, None),
        note: str | None = None) -> dict:
    r: dict[str, Any] = {"task": task, "measure": measure, "unit": unit, "better": better, "status": "ok"}
    r["ours"] = stat(ours) if isinstance(ours, list) else ours
    if peer_name:
        r["peer_name"] = peer_name
        if missing:
            r["status"], r["message"] = "missing", missing
        elif peer:
            r["peer"] = stat(peer)
            if isinstance(ours, list):
                r["ratio"] = _ratio(ours, peer, better)
    r["rss_mb"] = {"ours": rss[0], "peer": rss[1]}
    if note:
        r["note"] = note
    return r


def check_mfu(r: dict) -> dict:
    """An MFU row that says more than 100% cannot be right: the peak it divides by was measured
    low (a busy machine while the peak was taken). Such a row reports the inconsistency instead
    of the figure."""
    if r.get("unit") != "%" or "MFU" not in r.get("measure", "") or r.get("status") != "ok":
        return r
    top = max((s["max"] for s in (r.get("ours"), r.get("peer")) if isinstance(s, dict) and s.get("max") is not None),
              default=None)
    if top is None or top <= 100:
        return r
    return {**r, "status": "inconsistent",
            "message": f"an MFU of {top:.0f}% is impossible: the matmul peak it divides by was measured too low "
                       "(likely while the machine was busy); run the bench again on a quiet machine"}


def failed(task: str, message: str) -> dict:
    return {"task": task, "measure": "(failed)", "status": "failed", "message": message}


def build_rows(res: dict) -> list[dict]:
    rows: list[dict] = []
    tasks = res.get("tasks", {})
    peaks = {}
    for key, t in tasks.items():
        if t.get("error"):
            rows.append(failed(key, t["error"]))
            continue
        if key == "matmul":
            for dtype in ("float32", "bfloat16"):
                peaks[dtype] = stat(t[dtype])["median"]
                rows.append(row("machine", f"matmul peak {dtype} ({t['n']}², {t['threads']} threads)", "GFLOP/s",
                                t[dtype], rss=(t.get("process_peak_rss_mb"), None)))
        elif key == "tokenizer":
            rows += _tokenizer_rows(t)
        elif key == "vocab-sweep":
            rows += _vocab_sweep_rows(t)
        elif key == "prepare":
            rows += _prepare_rows(t)
        elif key == "prepare-rss":
            rows += _prepare_rss_rows(t)
        elif key.startswith("train "):
            rows += _train_rows(t, peaks)
        elif key == "memory-estimate":
            rows += _memory_estimate_rows(t)
        elif key.startswith("peers "):
            rows += _peer_rows(t, peaks)
        elif key == "parity":
            rows += _parity_rows(t)
        elif key.startswith("compile "):
            rows += _compile_rows(t)
        elif key == "anchor":
            rows += _anchor_rows(t)
        elif key.startswith("generate "):
            rows += _generate_rows(t)
        elif key == "app":
            rows += _app_rows(t)
    return [check_mfu(r) for r in rows]


def _tokenizer_rows(t: dict) -> list[dict]:
    rss = (t["rss_mb"]["ours"], t["rss_mb"]["peer"])
    kw = {"peer_name": TOKENIZERS, "missing": t.get("peer_missing")}
    bpt = t["bytes_per_token"]
    return [
        row("tokenizer", f"build, vocab {t['vocab']}, {t['text_MB']:.1f} MB", "s", t["build_s"]["ours"],
            better="lower", peer=t["build_s"]["peer"], rss=rss, **kw),
        row("tokenizer", f"encode, {t['threads']} threads", "MB/s", t["encode_MBps"]["ours"],
            peer=t["encode_MBps"]["peer"], **kw),
        row("tokenizer", f"bytes per token, {t['valid_MB']:.1f} MB held out", "B/token", [bpt["ours"]],
            peer=[bpt["peer"]] if "peer" in bpt else None,
            note="ours keeps 256 byte pieces so any text round-trips; the peer's trainer adds none, "
                 "and unseen characters become <unk>", **kw),
    ]


def _vocab_sweep_rows(t: dict) -> list[dict]:
    bpt = t["bytes_per_token"]
    note = "one build per size (deterministic); 256 of ours' pieces are bytes" + "".join(
        f"; vocab {v} left out: {why}" for v, why in t.get("skipped", {}).items())
    return [row("tokenizer", f"bytes per token at vocab {v}, {t['valid_MB']:.1f} MB held out", "B/token",
                [bpt["ours"][i]], peer_name=TOKENIZERS, peer=[bpt["peer"][i]] if bpt["peer"] else None,
                missing=t.get("peer_missing"), note=note if i == 0 else None)
            for i, v in enumerate(t["vocabs"])]


def _prepare_rows(t: dict) -> list[dict]:
    runs = t["runs"]
    bad = [r["error"] for r in runs if r.get("error")]
    if bad:
        return [failed("prepare", bad[0])]
    rss = [r["process_peak_rss_mb"] for r in runs if r.get("process_peak_rss_mb")]
    return [row("data prepare", f"{runs[0]['MB']:.1f} MB of text, {runs[0]['threads']} threads", "MB/s",
                [r["MBps"] for r in runs], rss=(stat(rss)["median"] if rss else None, None),
                note="peak RSS: the whole `workbench data prepare` process")]


def _prepare_rss_rows(t: dict) -> list[dict]:
    mb, rss = t["MB"], t["rss_mb"]
    note = (f"memory is bounded where the two peaks are alike; {stat(t['MBps']['big'])['median']:.1f} MB/s on "
            f"the {mb['big']:.0f} MB")
    return [row("data prepare", f"peak RSS of the whole process on {mb['big']:.0f} MB of text "
                                f"({t['scale']}× the bench text)", "MB", rss["big"], better="lower",
                peer_name=f"ours on {mb['small']:.1f} MB", peer=rss["small"], note=note)]


def _memory_estimate_rows(t: dict) -> list[dict]:
    note = "vs peer: the estimate over the measured peak; below 1× it promises less memory than training takes"
    return [row("memory estimate", f"{preset} ({e['params'] / 1e6:.2f}M, {e['batch']}×{e['seq_len']}, fp32, "
                                   f"attention {e['attention']}): the training-memory estimate", "MB",
                e["estimate_mb"], peer_name="measured: peak RSS of a fresh process training two steps",
                peer=e["peak_mb"], note=note if i == 0 else None)
            for i, (preset, e) in enumerate(t["presets"].items())]


def _train_rows(t: dict, peaks: dict) -> list[dict]:
    shape = f"{t['preset']} ({t['params'] / 1e6:.2f}M, {t['batch']}×{t['seq_len']}, vocab {t['vocab']})"
    ours, peer = t["tok_s"]["ours"], t["tok_s"]["peer"]
    kw = {"peer_name": TRANSFORMERS, "missing": t.get("peer_missing")}
    rows = [row("train fp32", shape, "tok/s", ours, peer=peer, rss=(t["rss_mb"]["ours"], t["rss_mb"]["peer"]), **kw)]
    fpt = t["train_flops_per_token"]
    if "float32" in peaks:
        mfu = [100 * x * fpt / (peaks["float32"] * 1e9) for x in ours]
        pmfu = [100 * x * fpt / (peaks["float32"] * 1e9) for x in peer]
        rows.append(row("train fp32", f"{t['preset']} MFU of the fp32 matmul peak", "%", mfu, peer=pmfu, **kw))
    bf16 = t["tok_s"].get("ours_bf16") or []
    if bf16:
        rows.append(row("train bf16", f"{shape}, autocast", "tok/s", bf16, peer_name="ours in fp32", peer=ours))
        if "bfloat16" in peaks:
            rows.append(row("train bf16", f"{t['preset']} MFU of the bf16 matmul peak", "%",
                            [100 * x * fpt / (peaks["bfloat16"] * 1e9) for x in bf16]))
    return rows


def _peer_rows(t: dict, peaks: dict) -> list[dict]:
    facts = t.get("ours_facts", {})
    prec = facts.get("precision", "?")
    shape = (f"dim {t['dim']} · {t['n_layers']}L · {t['n_heads']}H · V{t['vocab']} · {t['batch']}×{t['seq_len']}, "
             f"{t['threads']} threads; ours in {prec}, attention {facts.get('attention', '?')}")
    ours = t["tok_s"]["ours"]
    rows = []
    for name in REFERENCE_TRAINERS:
        rows.append(row("train default", f"{shape}", "tok/s", ours, peer_name=f"{name} model.py (fp32)",
                        peer=t["tok_s"].get(name), missing=t["peer_missing"].get(name)))
    peak_key = {"bf16": "bfloat16"}.get(prec, "float32")
    fpt = t["flops_per_token"]
    if peak_key in peaks:
        def mfu(xs, who, key):
            return [100 * x * fpt[who] / (peaks[key] * 1e9) for x in xs]
        for name in REFERENCE_TRAINERS:
            if t["tok_s"].get(name) and "float32" in peaks:
                # each against the peak of the precision it runs in: no ratio (the peaks differ)
                rows.append(row("train default", f"dim {t['dim']} MFU: ours of the {prec} peak, {name} of the fp32 peak",
                                "%", stat(mfu(ours, "ours", peak_key)), peer_name=f"{name} model.py (fp32)",
                                peer=mfu(t["tok_s"][name], name, "float32")))
                break
    mem = t.get("memory")
    if mem:
        rows.append(row("memory", f"peak RSS of a whole training process, dim {t['dim']} shape, 1 thread, "
                                  f"{mem['steps']} steps (`workbench train` beside nanoGPT's model trained as its "
                                  "train.py does)", "MB", [mem["ours_mb"]], better="lower",
                        peer_name="nanoGPT model.py (fp32)", peer=[mem["peer_mb"]] if mem.get("peer_mb") else None,
                        missing=mem.get("peer_missing")))
    return rows


def _parity_rows(t: dict) -> list[dict]:
    auto, fp32 = t["auto"], t["fp32"]
    d = t["relative_difference"]
    note = (f"auto trained in {auto['precision']}; difference {100 * d:+.2f}% "
            f"({'within' if abs(d) <= 0.01 else 'outside'} 1%); in its own precision it evaluates to "
            f"{auto['val_loss_own_eval']:.4f}")
    return [row("parity", f"validation loss after {t['steps']} steps, dim {t['dim']} shape, same seed, fp32 eval "
                          f"({t['eval_batches']} batches)", "loss", [auto["val_loss_fp32_eval"]], better="lower",
                peer_name=OURS_FP32, peer=[fp32["val_loss_fp32_eval"]], note=note)]


def _compile_rows(t: dict) -> list[dict]:
    shape = f"dim {t['dim']} · {t['n_layers']}L · V{t['vocab']} · {t['batch']}×{t['seq_len']}, {t['precision']}"
    cs = t["compile_s"]
    return [row("compile", f"{shape}: torch.compile (compiled in {cs.get('cold', 0):.0f} s cold, "
                           f"{cs.get('cached', 0):.0f} s with its cache)", "tok/s", t["tok_s"]["compiled"],
                peer_name="ours eager", peer=t["tok_s"]["eager"])]


def _anchor_rows(t: dict) -> list[dict]:
    if t.get("peer_missing"):
        return [row("budget", "bits per byte for a time budget", "bits/byte", [], peer_name="nanoGPT anchor",
                    missing=t["peer_missing"])]
    rows = []
    by_minutes: dict[float, list[dict]] = {}
    for p in t["pairs"]:
        by_minutes.setdefault(p["minutes"], []).append(p)
    for minutes, pairs in sorted(by_minutes.items()):
        o = pairs[0]["ours"]
        ratios = [p["ours"]["bpb"] / p["anchor"]["bpb"] for p in pairs]
        note = (f"workbench/anchor {stat(ratios)['median']:.3f} (goal <= 0.85); ours: {o['shape']}, "
                f"{o['params'] / 1e6:.2f}M, {o['recipe']}, {o['precision']}, {o['steps']:,} steps, "
                f"planner predicted {o['predicted_bpb']}; anchor: nanoGPT dim 128 · 4L · 4H, "
                f"{pairs[0]['anchor']['steps']:,} steps")
        rows.append(row("budget", f"validation bits per byte (all of it) after {minutes:g} minutes, both at once, "
                                  f"one thread each, {len(pairs)} seed(s)", "bits/byte",
                        [p["ours"]["bpb"] for p in pairs], better="lower", peer_name="nanoGPT anchor",
                        peer=[p["anchor"]["bpb"] for p in pairs], note=note))
    return rows


def _generate_rows(t: dict) -> list[dict]:
    what = f"{t['preset']} ({t['params'] / 1e6:.2f}M), prompt {t['prompt_len']}, {t['new_tokens']} new"
    kw = {"peer_name": f"{TRANSFORMERS} generate", "missing": t.get("peer_missing")}
    note = None if t.get("same_tokens") in (True, None) else "the two produced different tokens"
    return [
        row("decode", what, "tok/s", t["decode_tok_s"]["ours"], peer=t["decode_tok_s"]["peer"],
            rss=(t["rss_mb"]["ours"], t["rss_mb"]["peer"]), note=note, **kw),
        row("decode", f"{t['preset']} time to first token", "ms", t["ttft_ms"]["ours"], better="lower",
            peer=t["ttft_ms"]["peer"], **kw),
    ] + ([row("decode bf16", f"{t['preset']} in bf16 weights, greedy", "tok/s", t["decode_tok_s"]["ours_bf16"],
              peer_name=OURS_FP32, peer=t["decode_tok_s"]["ours"],
              note=f"{t['bf16_same_tokens']} of {t['new_tokens']} greedy tokens equal fp32's"
                   + ("" if t.get("bf16_first_difference") is None else
                      f", the first difference at token {t['bf16_first_difference'] + 1}"))]
         if t["decode_tok_s"].get("ours_bf16") else [])


def _app_rows(t: dict) -> list[dict]:
    ts = t["tok_s"]
    rows = [row("app", f"training {t['preset']} in the app, watched (steps {t['steps'] // 4 + 1}–{t['steps'] // 2})", "tok/s",
                ts["app"], peer_name="headless workbench train", peer=ts["headless"],
                rss=(t["rss_mb"]["app"], t["rss_mb"]["headless"])),
            row("app", f"training {t['preset']} in the app, a key every 0.25 s (the other steps)", "tok/s",
                ts["app_keys"], peer_name="headless workbench train", peer=ts["headless_2nd_half"])]
    for size, keys in t["keys"].items():
        if not keys["latency_ms"]:
            rows.append(failed("app", f"no key press was measured at {size} (the run ended before its steps "
                                      "were shown there)"))
            continue
        for name, xs in (("key press → action", keys["latency_ms"]),
                         ("key press → chart repainted", keys["painted_ms"])):
            rows.append(row("app", f"{name} while training at {size}, p50 / p95 of {len(xs)} keys", "ms",
                            {"p50": percentile(xs, 50), "p95": percentile(xs, 95)}, better="lower"))
    return rows


# --- markdown -----------------------------------------------------------------------------------


def fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    ax = abs(x)
    if ax >= 100:
        return f"{x:,.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def fmt_stat(s: Any) -> str:
    if s is None:
        return "–"
    if "p50" in s:
        return f"{fmt(s['p50'])} / {fmt(s['p95'])}"
    if s["n"] == 1 or s["min"] == s["max"]:
        return fmt(s["median"])
    return f"{fmt(s['median'])} ({fmt(s['min'])}–{fmt(s['max'])})"


def fmt_ratio(r: dict | None) -> str:
    if not r:
        return ""
    m = r["median"]
    text = f"{m:.2f}× ({r['min']:.2f}–{r['max']:.2f})" if r["n"] > 1 else f"{m:.2f}×"
    return f"**{text} behind**" if m < 0.98 else text


def render_markdown(res: dict, rows: list[dict], command: str = "") -> str:
    m = res.get("machine", {})
    lines = [
        f"# workbench bench ({res.get('mode', '?')})",
        "",
        f"{res.get('started', '')} · {m.get('cpu', '?')} ({_bf16_words(m)}), {m.get('cores', '?')} cores, "
        f"{m.get('ram_gb', '?')} GB RAM · Python {m.get('python', '?')} · {_versions(res)}",
        f"Training and decoding on the CPU. Data: {res.get('text', {}).get('source', res.get('data', '?'))}; "
        f"{res.get('options', {}).get('reps', '?')} repetitions per figure; took {res.get('seconds', '?')} s.",
    ]
    if command:
        lines += ["", f"Command: `{command}`"]
    lines += [
        "",
        "Figures are medians (min–max) of the repetitions. *vs peer* is ours against the peer taken pair "
        "by pair, oriented so that above 1× means workbench is ahead; **bold** marks where it is behind. "
        "Peak RSS is of each side's phase in its task's process (MB).",
        "",
        "| Task | Measure | Unit | workbench | Peer | Peer's figure | vs peer | Peak RSS ours / peer |",
        "|---|---|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        if r["status"] == "failed":
            lines.append(f"| {r['task']} | **failed** | | | | | | {_cell(r['message'])} |")
            continue
        if r["status"] == "inconsistent":
            lines.append(f"| {r['task']} | {_cell(r['measure'])} | {r['unit']} | **inconsistent**: "
                         f"{_cell(r['message'])} | | | | |")
            continue
        peer_name = r.get("peer_name", "")
        if r["status"] == "missing":
            peer_fig, ratio = f"**missing**: {_cell(r['message'])}", ""
        else:
            peer_fig, ratio = (fmt_stat(r.get("peer")) if peer_name else ""), fmt_ratio(r.get("ratio"))
        rss = r.get("rss_mb", {})
        rss_cell = " / ".join(fmt(v) for v in (rss.get("ours"), rss.get("peer")) if v is not None) if any(
            v is not None for v in rss.values()) else ""
        if rss_cell and rss.get("peer") is None and peer_name and rss.get("ours") is not None:
            rss_cell += " / –"
        measure = r["measure"] + (f" ({r['note']})" if r.get("note") else "")
        lines.append(f"| {r['task']} | {_cell(measure)} | {r['unit']} | {fmt_stat(r['ours'])} | {peer_name} | "
                     f"{peer_fig} | {ratio} | {rss_cell} |")
    # rows against a baseline of our own ("ours in fp32", "ours eager") are not behind a peer
    behind = [r for r in rows if r.get("ratio") and r["ratio"]["median"] < 0.98
              and not r.get("peer_name", "").startswith("ours")]
    missing = sorted({r["message"] for r in rows if r["status"] == "missing"})
    lines.append("")
    busy = busy_line(m)
    if busy:
        lines.append(busy)
    if behind:
        lines.append("Behind a peer: " + "; ".join(
            f"{r['task']} {r['measure']}: {r['ratio']['median']:.2f}× {r['peer_name']}" for r in behind) + ".")
    if missing:
        lines.append("Missing peers: " + "; ".join(missing) + ".")
    return "\n".join(lines).rstrip() + "\n"


def busy_line(machine: dict) -> str | None:
    """A warning when the load average went above the cores while the bench ran: other work
    shared the CPU, so absolute figures may be low (ratios taken pair by pair less so)."""
    loads = [x for x in machine.get("load") or [] if isinstance(x, (int, float))]
    cores = machine.get("cores")
    if not loads or not isinstance(cores, int) or max(loads) <= cores:
        return None
    return (f"**Busy machine**: the 1-minute load average reached {max(loads):.2f} on {cores} cores while it ran; "
            "figures may be low (the ratios, taken pair by pair, less so).")


def _bf16_words(m: dict) -> str:
    flag = m.get("native_bf16_flag")
    return "native bf16: " + ("yes" if flag else "no" if flag is False else "unknown") + " by its CPU flags"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _versions(res: dict) -> str:
    seen: dict[str, str] = {}
    for t in res.get("tasks", {}).values():
        for entry in t.get("runs", [t]):
            seen.update(entry.get("versions", {}))
    return ", ".join(f"{k} {v}" for k, v in sorted(seen.items())) or "versions unknown"
