"""Benchmark tasks that check a claim across sizes, each run in a fresh child process.

    python -m workbench.bench.sizes TASK ARGS.json OUT.json

* ``vocab-sweep``: bytes per token on the held-out text at several vocab sizes, ours beside HF
  ``tokenizers`` trained on the same text at the same size (what a bigger vocab buys).
* ``prepare-rss``: the peak RSS of a whole ``workbench data prepare`` on the bench text and on
  that text repeated, alternating: memory stays bounded when the two peaks are alike.
* ``memory-estimate``: the training-memory estimate (``estimate.training_memory``, which the
  Config pane, ``plan`` and ``sweep`` judge "fits" by) beside the measured peak RSS of a fresh
  process doing two training steps of the same shape.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.bench.measure import run_measured
from workbench.bench.tasks import _hf_train, _peer, child_main, say

# --- bytes per token across vocab sizes ---------------------------------------------------------


def task_vocab_sweep(a: dict) -> dict:
    """One build per vocab size on each side: a build on the same text is deterministic, so its
    bytes per token is one figure, not a spread. A size the text cannot fill is left out, saying why."""
    from workbench.data.sources import resolve_source
    from workbench.tokenizer.tokenizer import TokenizerSettings, load_tokenizer
    from workbench.tokenizer.build import build_tokenizer
    from workbench.workspace import Workspace

    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    ws = Workspace.at(a["workspace"])
    valid = list(resolve_source(a["valid_txt"]).documents("train"))
    vbytes = sum(len(d.encode()) for d in valid)
    tk, missing = _peer("tokenizers")
    docs = list(resolve_source(a["train_txt"]).documents("train")) if tk is not None else []
    threads = os.cpu_count() or 1
    out: dict[str, Any] = {"valid_MB": vbytes / 1e6, "peer_missing": missing, "vocabs": [], "skipped": {},
                           "bytes_per_token": {"ours": [], "peer": []}}
    for v in a["vocabs"]:
        name = f"{a['tokenizer']}-sweep-{v}"
        try:
            build_tokenizer(ws, name, TokenizerSettings(vocab_size=v, data=a["train_txt"], sample_mb=a["sample_mb"]),
                            overwrite=True)
        except WorkbenchError as e:
            out["skipped"][str(v)] = str(e)
            say(f"vocab {v}: left out ({e})")
            continue
        tok = load_tokenizer(ws, name)
        ours = vbytes / sum(map(len, tok.encode_batch(valid, num_threads=threads)))
        shutil.rmtree(ws.tokenizer_path(name), ignore_errors=True)
        out["vocabs"].append(v)
        out["bytes_per_token"]["ours"].append(ours)
        if tk is not None:
            hf = _hf_train(tk, docs, v)
            out["bytes_per_token"]["peer"].append(vbytes / sum(len(e.ids) for e in hf.encode_batch(valid)))
        say(f"vocab {v}: ours {ours:.3f} bytes/token"
            + (f", tokenizers {out['bytes_per_token']['peer'][-1]:.3f}" if tk is not None else ""))
    if not out["vocabs"]:
        raise WorkbenchError(f"no vocab size of {a['vocabs']} could be built on this text: {out['skipped']}")
    out["versions"] = {m: getattr(sys.modules[m], "__version__", "?") for m in ("sentencepiece", "tokenizers")
                       if m in sys.modules}
    return out


# --- data prepare's peak RSS as the input grows ---------------------------------------------------


def task_prepare_rss(a: dict) -> dict:
    """``workbench data prepare`` processes on the bench's training text and on it repeated
    ``scale`` times, alternating, each a whole process as a user runs it (its own peak RSS)."""
    root = Path(a["workspace"])
    work = root / "prepare-rss"
    work.mkdir(parents=True, exist_ok=True)
    small = Path(a["train_txt"])
    big = work / f"train-x{a['scale']}.txt"
    text = small.read_bytes()
    with open(big, "wb") as f:
        f.writelines(itertools.repeat(text, a["scale"]))
    sizes = {"small": small.stat().st_size / 1e6, "big": big.stat().st_size / 1e6}
    out: dict[str, Any] = {"scale": a["scale"], "MB": sizes, "rss_mb": {"small": [], "big": []},
                           "MBps": {"small": [], "big": []}}
    try:
        for r in range(a["reps"]):
            for side, path in (("small", small), ("big", big)):
                name = f"bench-rss-{side}-{r}-{time.monotonic_ns()}"
                code, secs, mb, err = run_measured([sys.executable, "-m", "workbench", "--workspace", str(root), "data",
                                                    "prepare", "--tokenizer", a["tokenizer"], "--data", str(path),
                                                    "--name", name])
                shutil.rmtree(root / "data" / name, ignore_errors=True)
                if code != 0:
                    raise WorkbenchError(f"`workbench data prepare` on {sizes[side]:.1f} MB exited with status "
                                         f"{code}: {err.strip()[-400:]}")
                out["rss_mb"][side].append(mb)
                out["MBps"][side].append(sizes[side] / secs)
            say(f"prepare peak RSS {r + 1}/{a['reps']}: {out['rss_mb']['small'][-1]:.0f} MB on {sizes['small']:.1f} MB, "
                f"{out['rss_mb']['big'][-1]:.0f} MB on {sizes['big']:.1f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


# --- the training-memory estimate beside a measured peak -----------------------------------------


def _step_peak(conn, preset: str) -> None:
    """In a fresh process: two fp32 training steps of ``preset``'s model at its batch size, as
    the planner measures them (the fused loss, clipping, AdamW, the attention kernel training
    would pick; the second step holds the AdamW moments), then this process's peak RSS. The
    estimate is made after the peak is read, so nothing it does counts."""
    try:
        import torch

        from workbench.config.schema import load_config
        from workbench.config.sizes import param_count
        from workbench.machine.estimate import training_memory
        from workbench.planning.planner import measure_throughput
        from workbench.bench.measure import peak_mb

        cfg = load_config(preset)
        batch, model = cfg.train.batch_size, cfg.model
        facts = measure_throughput(model, batch, "fp32", steps=1)
        peak = peak_mb()
        est = training_memory(model, batch, model.max_seq_len, "fp32", "cpu")
        parts = {k: getattr(est, k) / 2**20 for k in ("weights", "grads", "optimizer", "activations", "runtime")}
        conn.send({"peak_mb": peak, "estimate_mb": est.total / 2**20, "parts_mb": parts, "params": param_count(model),
                   "batch": batch, "seq_len": model.max_seq_len, "attention": facts["attention"],
                   "threads": facts["threads"], "torch": str(torch.__version__)})
    except BaseException as e:  # the parent reports it; a traceback here would be lost
        conn.send({"error": f"{type(e).__name__}: {e}"})
    finally:
        conn.close()


def _measure_in_child(preset: str) -> dict:
    # spawn, not fork: a forked child does not count the library pages that importing torch
    # touched (about 50 MB here), which a user's training process holds
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_step_peak, args=(send, preset))
    proc.start()
    send.close()
    try:
        got = recv.recv()
    except EOFError:
        got = {"error": "the process died without a result"}
    proc.join()
    if "error" in got or proc.exitcode != 0:
        raise WorkbenchError(f"measuring {preset}'s training memory failed (exit code {proc.exitcode}): "
                             f"{got.get('error', '')}")
    return got


def task_memory_estimate(a: dict) -> dict:
    """Each preset at its own batch size, repetitions alternating between the presets, each
    measurement a fresh interpreter (as ``workbench train`` is)."""
    out: dict[str, Any] = {"presets": {}}
    for r in range(a["reps"]):
        for p in a["presets"]:
            got = _measure_in_child(p)
            out["versions"] = {"torch": got.pop("torch")}
            entry = out["presets"].setdefault(p, {"peak_mb": [], "estimate_mb": []})
            entry["peak_mb"].append(got.pop("peak_mb"))
            entry["estimate_mb"].append(got.pop("estimate_mb"))
            entry.update(got)
            say(f"memory {p} {r + 1}/{a['reps']}: estimate {entry['estimate_mb'][-1]:,.0f} MB, "
                f"peak RSS {entry['peak_mb'][-1]:,.0f} MB ({got['batch']}×{got['seq_len']})")
    return out


TASKS = {"vocab-sweep": task_vocab_sweep, "prepare-rss": task_prepare_rss, "memory-estimate": task_memory_estimate}

if __name__ == "__main__":
    sys.exit(child_main(TASKS, sys.argv[1:]))
