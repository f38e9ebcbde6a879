"""Model health over training (``training.health``): each figure against a direct computation
from the model's parameters, gradients and attention at that step, the flags against hand-made
rows, resume, and ``workbench runs health`` on a run the engine wrote."""

from __future__ import annotations

import json
import math

import pytest
import torch

from workbench.cli import main
from workbench.runs.folder import get_run
from workbench.training import health
from workbench.training.events import HealthLogged, Stepped
from workbench.training.trainer import Trainer
from workbench.tracing.tracer import trace_model

from helpers import tiny_config


def _l2(tensors) -> float:
    return math.sqrt(sum(float((t.double() ** 2).sum()) for t in tensors))


def _oracle_probe(model, idx):
    """Block-output RMS and mean attention entropy per layer, computed here: forward hooks on
    the blocks, and the probabilities the tracer keeps, with entropy = -Σ p ln p."""
    rms = {}
    hooks = [layer.register_forward_hook(lambda m, a, out, i=i: rms.__setitem__(i, out.double().pow(2).mean().sqrt().item()))
             for i, layer in enumerate(model.layers)]
    model.eval()
    try:
        tr = trace_model(model, idx, flops=False, keep=("probs",))
    finally:
        model.train()
        for h in hooks:
            h.remove()
    ent = []
    for i in range(len(model.layers)):
        (p,) = [t for (path, name), t in tr.tensors.items() if name == "probs" and path.startswith(f"layers.{i}.")]
        p = p.double()
        terms = torch.where(p > 0, -p * p.clamp_min(1e-300).log(), torch.zeros_like(p))
        ent.append(terms.sum(-1).mean().item())
    return [rms[i] for i in range(len(model.layers))], ent


def test_health_figures_equal_a_direct_computation(built, corpus_dir):
    """At each measured step: per-layer gradient norm from p.grad before clipping (the hook sees
    the clipped gradients: clipping scaled every one by clip / total norm), update ratio from the weights before and after the step, activation RMS and attention
    entropy from a separate forward on the same probe batch."""
    cfg = tiny_config(max_steps=6, health_interval=3, grad_clip=0.05)
    evs = []
    t = Trainer.new(built, cfg, "tok", str(corpus_dir), name="h", on_event=evs.append)
    seen, prev = {}, {}

    def hook(tr):
        layers = tr.raw_model.layers
        now = [[p.detach().clone() for p in layer.parameters()] for layer in layers]
        if tr.step % 3 == 0:
            total = [e.grad_norm for e in evs if isinstance(e, Stepped) and e.step == tr.step][0]
            coef = min(1.0, 0.05 / (total + 1e-6))  # torch's clip_grad_norm_
            assert coef < 1  # so clipping did change the gradients
            grads = [_l2([p.grad for p in layer.parameters() if p.grad is not None]) / coef for layer in layers]
            ratios = [_l2([a - b for a, b in zip(n, o)]) / _l2(o) for n, o in zip(now, prev["w"])]
            act, ent = _oracle_probe(tr.raw_model, tr.health.probe_idx)
            seen[tr.step] = {"grad_norm": grads, "update_ratio": ratios, "act_rms": act, "attn_entropy": ent}
        prev["w"] = now

    t.step_hooks.append(hook)  # step 3 is measured against the weights step 2 left
    assert t.run()["state"] == "finished"
    rows = health.read_health(get_run(built, "h").path)
    assert [r["step"] for r in rows] == [3, 6] == sorted(seen)
    assert [e.step for e in evs if isinstance(e, HealthLogged)] == [3, 6]
    for r in rows:
        want = seen[r["step"]]
        for q in health.QUANTITIES:
            assert len(r[q]) == cfg.model.n_layers
            assert r[q] == pytest.approx(want[q], rel=1e-4, abs=1e-7), (r["step"], q)
        assert all(0 < e <= math.log(cfg.model.max_seq_len) for e in r["attn_entropy"])


def test_flags_name_layers_outside_the_band():
    row = {"step": 40, "lr": 1e-3, "update_ratio": [2e-3, 0.5, 1e-7, float("nan")],
           "grad_norm": [1.0, 1.0, 1.0, 1.0], "act_rms": [1.0] * 4, "attn_entropy": [2.0, 2.0, 2.0, None]}
    out = health.flags(row, peak_lr=1e-3)
    assert len(out) == 3
    assert out[0].startswith("layer 1: update/weight 0.5 > 0.1") and "diverge" in out[0]
    assert out[1].startswith("layer 2: update/weight 1e-07 < 1e-05") and "not learning" in out[1]
    assert out[2].startswith("layer 3: update/weight not finite")
    # at the end of the decay (lr under a tenth of its peak) a small ratio is expected
    calm = health.flags({**row, "lr": 5e-5}, peak_lr=1e-3)
    assert not any(line.startswith("layer 2") for line in calm) and len(calm) == 2
    assert health.flags({**row, "update_ratio": [1e-3] * 4}, peak_lr=1e-3) == []


def test_resume_keeps_one_health_history(built, corpus_dir):
    cfg = tiny_config(max_steps=12, health_interval=2, checkpoint_interval=6)
    t = Trainer.new(built, cfg, "tok", str(corpus_dir), name="hr")
    t.step_hooks.append(lambda tr: tr.stop() if tr.step == 9 else None)
    assert t.run()["state"] == "stopped"
    run = get_run(built, "hr")
    assert [r["step"] for r in health.read_health(run.path)][-1] == 8
    assert Trainer.resume(built, "hr").run()["state"] == "finished"
    # the checkpoint at the stop (step 9) is where it went on: 2..8 kept, 10 and 12 new
    assert [r["step"] for r in health.read_health(run.path)] == [2, 4, 6, 8, 10, 12]


def test_health_off_writes_nothing_and_the_verb_says_why(built, corpus_dir, capsys):
    cfg = tiny_config(max_steps=4, health_interval=0)
    assert Trainer.new(built, cfg, "tok", str(corpus_dir), name="off").run()["state"] == "finished"
    assert not (get_run(built, "off").path / health.HEALTH).exists()
    assert main(["--workspace", str(built.root), "runs", "health", "off"]) != 0
    err = capsys.readouterr().err
    assert "no health records" in err and "train.health_interval" in err


def test_runs_health_prints_the_engines_records(built, corpus_dir, capsys):
    cfg = tiny_config({"n_layers": 3}, max_steps=8, health_interval=4)
    assert Trainer.new(built, cfg, "tok", str(corpus_dir), name="hv").run()["state"] == "finished"
    rows = health.read_health(get_run(built, "hv").path)
    ws = ["--workspace", str(built.root)]
    assert main(ws + ["runs", "health", "hv"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("run hv: model health at step 8 (2 records)")
    table = [line.split() for line in out[2:5]]
    for i, cells in enumerate(table):
        assert cells[0] == str(i)
        for q, cell in zip(health.QUANTITIES, cells[1:]):
            assert float(cell) == pytest.approx(rows[-1][q][i], rel=5e-3)
    assert main(ws + ["runs", "health", "hv", "--quantity", "grad_norm"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].split() == ["step", "L0", "L1", "L2"]
    assert [int(line.split()[0]) for line in out[3:5]] == [4, 8]
    assert float(out[4].split()[3]) == pytest.approx(rows[-1]["grad_norm"][2], rel=5e-3)
    assert main(ws + ["runs", "health", "hv", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["latest"] == rows[-1] and data["step"] == 8
    assert main(ws + ["runs", "health", "hv", "--quantity", "nope"]) != 0
    assert "--quantity 'nope' is not one of update_ratio, grad_norm" in capsys.readouterr().err
