"""The best model a budget buys, beside a plain nanoGPT run: the planner's figure.

Two processes train at once, one thread each (``OMP_NUM_THREADS=1``), for the same minutes of
wall clock on the same token files (our 4096-piece sentencepiece BPE with byte fallback, built on
the training text):

* the **anchor**: nanoGPT's ``model.py`` (from ``shared/peers``, unmodified) at dim 128, 4 layers,
  4 heads, context 256, batch 16, its own ``configure_optimizers`` (AdamW, lr 1e-3, weight decay
  0.1), 100 warm-up steps then a constant rate, fp32 — a plain script as people write it;
* **workbench**: ``workbench train --tokenizer T --data D --minutes M``, the planner's recipe.

Both are then scored on every window of the validation split, in bits per byte. Run with
``workbench bench --tasks anchor`` (it takes the budget and then some; not part of the default
suite or CI).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError
from workbench.bench.measure import PeerMissing
from workbench.bench.peers import build_peer, load_peer_file, peer_step, say

ANCHOR = dict(dim=128, n_layers=4, n_heads=4, vocab=4096, batch=16, seq_len=256)
WARMUP, LR = 100, 1e-3


def anchor_process(args_path: str) -> int:
    """Train nanoGPT's model for the budget as the anchor does, then score it on the whole
    validation split; writes steps, tokens and bits per byte to the args' ``out``."""
    import numpy as np
    import torch

    from workbench import fileio

    a = json.loads(Path(args_path).read_text())
    torch.set_num_threads(1)
    torch.manual_seed(a.get("seed", 1337))
    shape = {**ANCHOR, "vocab": a["vocab"]}
    B, T = shape["batch"], shape["seq_len"]
    model, opt = build_peer("nanoGPT", load_peer_file("nanoGPT"), shape)
    dtype = np.dtype(a["dtype"])
    rng = np.random.default_rng(a.get("seed", 1337))
    step, trained, t_last = 0, 0.0, time.perf_counter()
    while trained < a["minutes"] * 60:
        lr = LR * min(1.0, (step + 1) / WARMUP)
        for g in opt.param_groups:
            g["lr"] = lr
        mm = np.memmap(a["train_bin"], dtype=dtype, mode="r")
        ix = rng.integers(0, len(mm) - T - 1, size=B)
        x = torch.from_numpy(np.stack([mm[i:i + T] for i in ix]).astype(np.int64))
        y = torch.from_numpy(np.stack([mm[i + 1:i + 1 + T] for i in ix]).astype(np.int64))
        del mm
        loss = peer_step("nanoGPT", model, opt, x, y)
        if not math.isfinite(loss):
            raise WorkbenchError(f"the anchor's loss became {loss} at step {step + 1}")
        step += 1
        now = time.perf_counter()
        trained += now - t_last
        t_last = now
    model.eval()
    total, n = 0.0, 0
    val = np.memmap(a["val_bin"], dtype=dtype, mode="r")
    windows = (len(val) - 1) // T
    with torch.no_grad():
        for start in range(0, windows, B):
            rows = range(start, min(windows, start + B))
            xy = torch.from_numpy(np.stack([val[r * T:r * T + T + 1] for r in rows]).astype(np.int64))
            x, y = xy[:, :-1].contiguous(), xy[:, 1:].contiguous()  # nanoGPT views its targets
            logits, _ = model(x, y)
            total += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                                       reduction="sum").item()
            n += y.numel()
    loss = total / n
    fileio.write_json(a["out"], {"steps": step, "tokens": step * B * T, "val_loss": loss,
                                 "bpb": loss / math.log(2) / a["val_bytes_per_token"], "val_tokens": n,
                                 "train_seconds": trained})
    return 0


def _start(cmd: list[str], log: Path):
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_CPP_LOG_LEVEL": "ERROR"}
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env)


def task_anchor(a: dict) -> dict:
    """One pair (anchor and workbench) per budget and seed, both at once."""
    import subprocess

    from workbench import fileio
    from workbench.data.prepare import ensure_prepared
    from workbench.workspace import Workspace

    try:
        load_peer_file("nanoGPT")
    except PeerMissing as e:
        return {"peer_missing": str(e), "pairs": []}
    ws = Workspace.at(a["workspace"])
    info = ensure_prepared(ws, a["tokenizer"], a["text_dir"])
    root = Path(a["workspace"]) / "anchor"
    root.mkdir(exist_ok=True)
    out: dict[str, Any] = {"pairs": [], "vocab": a["vocab"], "anchor": {**ANCHOR, "vocab": a["vocab"], "lr": LR,
                                                                        "warmup": WARMUP}}
    for minutes in a["minutes"]:
        for seed in range(a.get("seeds", 1)):
            stem = f"m{minutes:g}-s{seed}"
            args = root / f"{stem}.json"
            fileio.write_json(args, {"minutes": minutes, "seed": 1337 + seed, "vocab": a["vocab"],
                                     "train_bin": str(info.train.path), "val_bin": str(info.val.path),
                                     "dtype": str(info.dtype), "val_bytes_per_token": info.bytes_per_token("val"),
                                     "out": str(root / f"{stem}.anchor.json")})
            run = f"anchor-{stem}-{time.monotonic_ns()}"
            say(f"anchor pair, {minutes:g} minutes, seed {seed}: nanoGPT and `workbench train --minutes {minutes:g}` "
                "at once, one thread each")
            peer = _start([sys.executable, "-m", "workbench.bench.anchor", "anchor-process", str(args)],
                          root / f"{stem}.anchor.log")
            ours = _start([sys.executable, "-m", "workbench", "--workspace", str(ws.root), "train", "--tokenizer",
                           a["tokenizer"], "--data", a["text_dir"], "--minutes", f"{minutes:g}", "--name", run,
                           "--set", f"train.seed={1337 + seed}"], root / f"{stem}.ours.log")
            codes = (ours.wait(), peer.wait())
            if codes != (0, 0):
                tail = (root / f"{stem}.{'ours' if codes[0] else 'anchor'}.log").read_text(errors="replace")[-600:]
                raise WorkbenchError(f"the {minutes:g}-minute pair failed: {tail}")
            ev = subprocess.run([sys.executable, "-m", "workbench", "--workspace", str(ws.root), "eval", run, "--json"],
                                capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            if ev.returncode != 0:
                raise WorkbenchError(f"evaluating {run} failed: {ev.stderr[-400:]}")
            mine = json.loads(ev.stdout)
            from workbench.runs.folder import get_run

            r = get_run(ws, run)
            trains = [x for x in r.metrics() if x.get("kind") == "train"]
            plan = r.raw_config().get("plan") or {}
            peer_res = json.loads((root / f"{stem}.anchor.json").read_text())
            cfg = r.config()
            pair = {"minutes": minutes, "seed": seed, "anchor": peer_res,
                    "ours": {"bpb": mine["bpb"], "val_loss": mine["val_loss"], "steps": trains[-1]["step"] if trains else 0,
                             "tokens": trains[-1]["tokens"] if trains else 0, "precision": mine.get("precision"),
                             "predicted_bpb": plan.get("predicted_bpb"), "planned_tokens": plan.get("tokens"),
                             "shape": f"dim {cfg.model.dim} · {cfg.model.n_layers}L · {cfg.model.n_heads}H",
                             "params": cfg.model.n_params, "recipe": f"{cfg.train.optimizer}, lr {cfg.train.lr:g}, "
                                                                     f"{cfg.train.schedule}"}}
            pair["ratio"] = pair["ours"]["bpb"] / peer_res["bpb"]
            say(f"  {minutes:g} min, seed {seed}: workbench {pair['ours']['bpb']:.4f} bits/byte "
                f"({pair['ours']['shape']}, {pair['ours']['steps']} steps), nanoGPT anchor {peer_res['bpb']:.4f} "
                f"({peer_res['steps']} steps): {pair['ratio']:.3f}x")
            out["pairs"].append(pair)
            shutil.rmtree(ws.run_path(run), ignore_errors=True)
    return out


TASKS = {"anchor": task_anchor}

if __name__ == "__main__":
    if sys.argv[1:2] == ["anchor-process"]:
        sys.exit(anchor_process(sys.argv[2]))
    from workbench.bench.tasks import child_main

    sys.exit(child_main(TASKS, sys.argv[1:]))
