"""Recorded training streams and run folders for the Train and Runs pane tests: fixed numbers,
so snapshots are the same on every machine."""

from __future__ import annotations

import json
import math

from workbench.training.events import CheckpointSaved, Evaluated, Logged, Sampled, Started, Stepped, TrainEvent


def log_row(step: int, seed: float = 0.0, scale: float = 1.0) -> dict:
    loss = scale * (1.0 + 5.0 * math.exp(-step / 40)) + 0.15 * math.sin(step * 1.7 + seed)
    lr = 0.003 * min(1.0, step / 10) * (0.55 + 0.45 * math.cos(math.pi * step / 200))
    return {"kind": "train", "step": step, "tokens": step * 512, "loss": loss, "lr": lr,
            "grad_norm": 0.5 + 0.1 * math.cos(step), "tok_s": 9000 + 400 * math.sin(step / 7),
            "elapsed": step * 0.06, "mem": 300 * 2**20, "progress": step / 200}


def eval_row(step: int, scale: float = 1.0) -> dict:
    v = scale * (1.1 + 5.0 * math.exp(-step / 45))
    return {"kind": "eval", "step": step, "tokens": step * 512, "elapsed": step * 0.06, "val_loss": v,
            "val_ppl": math.exp(v), "bpb": v / math.log(2) / 2.5, "top1": 0.3, "top5": 0.6}


def train_events(upto: int = 120) -> list[TrainEvent]:
    evs = [Started(run="debug-recorded", params=30_000, device="cpu", precision="fp32", world=1, resumed_from=None,
                   precision_reason="auto; bf16 is not faster on this CPU (bf16 matmul 50 vs fp32 100 GFLOP/s, 0.50x)",
                   attention="sdpa", attention_reason="measured fwd+bwd: sdpa 1.00 ms, explicit 2.00 ms",
                   tokens_per_step=512, data="stories")]
    for step in range(1, upto + 1):
        r = log_row(step)
        evs.append(Stepped(step=step, loss=r["loss"], lr=r["lr"], tokens=r["tokens"], grad_norm=r["grad_norm"],
                           elapsed=r["elapsed"]))
        if step % 5 == 0:
            evs.append(Logged(step=step, row=r))
        if step % 50 == 0:
            evs.append(Evaluated(step=step, row=eval_row(step)))
            evs.append(Sampled(step=step, texts=["Once upon a time, there was a little cat named Tom.",
                                                 "Lily liked to play in the park with her ball."]))
        if step % 100 == 0:
            evs.append(CheckpointSaved(step=step, name=f"step_{step:06d}"))
    return evs


def train_run(ws, name: str, lr: float, steps: int = 20) -> None:
    """Run ``name`` trained by the real engine on the tokenizer's corpus (the tiny config of
    ``trained.py``, learning rate ``lr``): what `workbench train` writes, checkpoints included."""
    from workbench.tokenizer.tokenizer import tokenizer_info
    from workbench.training.trainer import Trainer

    from .trained import tiny_cfg

    cfg = tiny_cfg()
    cfg.train = cfg.train.replace(lr=lr, min_lr=lr / 10, max_steps=steps)
    state = Trainer.new(ws, cfg, "stories-400", tokenizer_info(ws, "stories-400").settings["data"], name=name).run()
    assert state["state"] == "finished", state


def write_run(ws, name: str, scale: float, steps: int = 200, created: str = "2024-01-02T03:04:05") -> None:
    """For snapshots only: a run the real engine trained (``train_run``), whose metrics, status
    and date are then replaced by fixed numbers, so the picture is the same on every machine
    (real tokens/s, dates and float rounding are not)."""
    import yaml

    train_run(ws, name, lr=3e-3, steps=2)
    path = ws.run_path(name)
    cfg = yaml.safe_load((path / "config.yaml").read_text())
    cfg["created"] = created
    (path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    rows = []
    for step in range(5, steps + 1, 5):
        rows.append({**log_row(step, seed=scale, scale=scale), "progress": step / steps})
        if step % 25 == 0:
            rows.append(eval_row(step, scale))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    status = json.loads((path / "status.json").read_text())
    (path / "status.json").write_text(json.dumps({**status, "state": "finished", "pid": 0, "step": steps}))
