"""The training engine: exact resume, crash safety under SIGKILL, NaN stops, bad input, DDP."""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from workbench.runs import checkpoint
from workbench.cli import main
from workbench.config.schema import load_config
from workbench.model import build_model
from workbench.runs.folder import get_run, list_runs, run_config
from workbench.training.events import (CheckpointSaved, Evaluated, Failed, Finished, Logged, Notice, Sampled, Started,
                                       Stepped)
from workbench.training.trainer import Trainer

from helpers import SETS, losses, tiny_config

def train_new(ws, corpus_dir, name, **train):
    evs = []
    t = Trainer.new(ws, tiny_config(**train), "tok", str(corpus_dir), name=name, on_event=evs.append)
    return t, evs


def test_exact_resume(built, corpus_dir):
    straight, ev1 = train_new(built, corpus_dir, "straight", max_steps=12)
    assert straight.run()["state"] == "finished"
    half, ev2 = train_new(built, corpus_dir, "half", max_steps=12)
    half.step_hooks.append(lambda t: t.stop() if t.step == 6 else None)
    assert half.run()["state"] == "stopped"
    assert half.step == 6
    ev3 = []
    resumed = Trainer.resume(built, "half", on_event=ev3.append)
    assert resumed.run()["state"] == "finished"
    a, b = losses(ev1), losses(ev2) + losses(ev3)
    assert len(a) == len(b) == 12
    assert a == b  # bit-for-bit, not approximately
    # The log is one history: no step appears twice.
    steps = [r["step"] for r in get_run(built, "half").metrics() if r["kind"] == "train"]
    assert steps == sorted(set(steps)) == list(range(1, 13))


def test_events_metrics_and_run_folder(built, corpus_dir):
    t, evs = train_new(built, corpus_dir, "folder", max_steps=6, eval_interval=3, checkpoint_interval=3)
    s = t.run()
    assert s["state"] == "finished" and s["checkpoint"] == "step_000006"
    run = get_run(built, "folder")
    assert (run.path / "config.yaml").is_file() and (run.tokenizer_path() / "tokenizer.model").is_file()
    assert run.checkpoints() == ["step_000003", "step_000006"]
    rows = run.metrics()
    ev = [r for r in rows if r["kind"] == "eval"]
    assert [r["step"] for r in ev] == [3, 6]
    for r in ev:
        assert math.isclose(r["val_ppl"], math.exp(r["val_loss"]), rel_tol=1e-9)
        assert 0 <= r["top1"] <= r["top5"] <= 1
        bpt = t.data.bytes_per_token("val")
        assert math.isclose(r["bpb"], r["val_loss"] / math.log(2) / bpt, rel_tol=1e-9)
    assert len(run.samples()) == 4
    kinds = {type(e) for e in evs}
    assert {Started, Stepped, Logged, Evaluated, Sampled, CheckpointSaved, Finished} <= kinds
    assert run.status()["state"] == "finished"
    # Weights load with weights_only and as safetensors.
    import torch

    st = torch.load(run.path / "checkpoints/step_000006/state.pt", weights_only=True)
    assert st["step"] == 6
    from safetensors.torch import load_file

    assert load_file(str(run.path / "checkpoints/step_000006/model.safetensors"))


def test_eval_is_fixed_and_dropout_free(trained):
    """The session run has dropout 0.1: evaluating a model left in train mode must give the
    eval-mode loss every time (dropout off), over the same fixed windows, and leave the mode."""
    import torch
    import torch
    import torch.nn.functional as F

    from helpers import TRAINED_RUN
    from workbench.training.evaluate import evaluate
    from workbench.runs.load import load_run_model
    from workbench.data.tokens import run_data

    run = get_run(trained, TRAINED_RUN)
    model, tok, cfg, _ = load_run_model(run)
    assert cfg.model.dropout == 0.1
    val = run_data(trained, run.name, run.raw_config()["data"], tok.sha256).val
    model.train()  # evaluate must switch dropout off itself
    a = evaluate(model, val, 4, 32, 2, 4.0, torch.device("cpu"))
    b = evaluate(model, val, 4, 32, 2, 4.0, torch.device("cpu"))
    assert a == b and model.training
    model.eval()
    with torch.no_grad():
        windows = [torch.from_numpy(w).long() for w in val.windows(4, 32, 2)]
        total = sum(F.cross_entropy(model(w[:, :-1]).flatten(0, 1), w[:, 1:].flatten(), reduction="sum").item()
                    for w in windows)
    assert a["val_loss"] == pytest.approx(total / sum(w[:, 1:].numel() for w in windows), rel=1e-6)


def test_injected_nan_stops_and_keeps_checkpoint(built, corpus_dir):
    import torch

    t, evs = train_new(built, corpus_dir, "nan", max_steps=20, checkpoint_interval=5, eval_interval=100)
    t.setup()
    def poison(module, inputs, output):
        if t.step == 7:
            return output * float("nan")
        return output

    t.raw_model.register_forward_hook(poison)
    s = t.run()
    assert s["state"] == "failed"
    assert "loss became nan at step 8" in s["message"] and "step_000005" in s["message"]
    run = get_run(built, "nan")
    assert run.latest_checkpoint() == "step_000005"
    assert run.status()["state"] == "failed"
    assert [e for e in evs if isinstance(e, Failed)][0].message == s["message"]
    model = build_model(t.cfg.model)
    checkpoint.load_weights(model, run.path)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_non_finite_gradient_norm_stops_and_keeps_checkpoint(built, corpus_dir):
    """The loss stays finite but a gradient does not: the gradient-norm guard stops the run
    before the optimizer step writes NaN into the weights."""
    import torch

    t, _ = train_new(built, corpus_dir, "nan-grad", max_steps=20, checkpoint_interval=5, eval_interval=100)
    t.setup()
    p = next(t.raw_model.parameters())
    p.register_hook(lambda g: g * float("nan") if t.step == 7 else g)
    s = t.run()
    assert s["state"] == "failed"
    assert "gradient norm became nan at step 8" in s["message"] and "step_000005" in s["message"]
    run = get_run(built, "nan-grad")
    assert run.latest_checkpoint() == "step_000005" and run.status()["state"] == "failed"
    assert all(torch.isfinite(q).all() for q in t.raw_model.parameters())


def test_with_a_gradient_scaler_a_non_finite_step_is_skipped_not_fatal(built, corpus_dir):
    """fp16 (CUDA) trains with a gradient scaler: an overflowing step is skipped by the scaler,
    which lowers its scale, and training goes on. The scaler branch runs here on the CPU with the
    same torch GradScaler, so the guard's ``scaler is None`` condition is tested."""
    import torch

    t, _ = train_new(built, corpus_dir, "nan-scaled", max_steps=10, checkpoint_interval=5, eval_interval=100)
    t.setup()
    t.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    p = next(t.raw_model.parameters())
    before = {}

    def poison(g):
        if t.step == 6:
            before["p"] = p.detach().clone()
            return g * float("inf")
        return g
    p.register_hook(poison)
    s = t.run()
    assert s["state"] == "finished" and s["step"] == 10
    assert t.scaler.get_scale() < 2.0 ** 10  # the overflow lowered the scale
    assert all(torch.isfinite(q).all() for q in t.raw_model.parameters())
    assert get_run(built, "nan-scaled").latest_checkpoint() == "step_000010"


def test_cli_nan_is_one_line_and_exit_code_1(built, corpus_dir, capsys, monkeypatch):
    import workbench.model as model_mod

    real = model_mod.build_model

    def poisoned(*a, **k):
        m = real(*a, **k)
        calls = {"n": 0}

        def hook(module, inputs, output):
            calls["n"] += 1
            return output * float("nan") if calls["n"] > 3 else output
        m.register_forward_hook(hook)
        return m
    monkeypatch.setattr(model_mod, "build_model", poisoned)
    rc = _cli(built, "--config", "debug", "--tokenizer", "tok", *SETS, "--data", str(corpus_dir), "--name", "nan-cli",
              "--set", "train.max_steps=10", "--set", "train.eval_interval=100", "--set", "train.checkpoint_interval=2")
    err = capsys.readouterr().err
    assert rc == 1
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert lines == ["error: training stopped: the loss became nan at step 4; the last good checkpoint "
                     "(step_000002) is kept. Try a lower train.lr, more train.warmup_steps or train.grad_clip"]
    assert "Traceback" not in err
    assert get_run(built, "nan-cli").status()["state"] == "failed"


def _wait(proc, cond, what, timeout=120):
    t0 = time.monotonic()
    while not cond():
        assert proc.poll() is None, f"exited while waiting for {what}: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)


def _train_steps(ws, name):
    path = ws.run_path(name)
    return [r["step"] for r in get_run(ws, name).metrics() if r["kind"] == "train"] if path.is_dir() else []


@pytest.mark.parametrize("sig,said", [(signal.SIGINT, "Ctrl+C"), (signal.SIGTERM, "SIGTERM"), (signal.SIGHUP, "SIGHUP")])
def test_ctrl_c_or_kill_in_workbench_train_stops_between_steps_and_keeps_a_checkpoint(built, corpus_dir, sig, said):
    """Ctrl+C, `kill` (SIGTERM: also systemd, docker stop, job schedulers) and a closed terminal
    (SIGHUP) all stop after the step with a checkpoint of that step; none loses the steps."""
    name = f"stop-{said.lower().replace('+', '')}"
    cmd = [sys.executable, "-m", "workbench", "--workspace", str(built.root), "train", "--config", "debug",
           "--tokenizer", "tok", "--data", str(corpus_dir), "--name", name, *SETS, "--set", "train.max_steps=100000",
           "--set", "train.log_interval=1", "--set", "train.eval_interval=100000",
           "--set", "train.checkpoint_interval=100000", "--set", "train.num_threads=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait(proc, lambda: len(_train_steps(built, name)) >= 3, "the first steps")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert f"{said}: stopping after this step, with a checkpoint ({said} again to abort)" in err
    assert "Traceback" not in err
    run = get_run(built, name)
    last = _train_steps(built, name)[-1]
    assert run.status()["state"] == "stopped" and run.status()["step"] == last
    assert run.checkpoints() == [f"step_{last:06d}"]
    assert f"stopped: run {name}, step {last}," in out


def test_ctrl_c_under_torchrun_stops_every_rank_at_one_step(built, corpus_dir):
    """Ctrl+C in a terminal sends SIGINT to torchrun and both workers (one process group)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "workbench",
           "--workspace", str(built.root), "train", "--config", "debug", "--tokenizer", "tok", "--data", str(corpus_dir),
           "--name", "torchrun-int", *SETS, "--set", "train.max_steps=100000", "--set", "train.log_interval=1",
           "--set", "train.eval_interval=100000", "--set", "train.checkpoint_interval=100000",
           "--set", "train.num_threads=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    try:
        _wait(proc, lambda: len(_train_steps(built, "torchrun-int")) >= 3, "the first steps")
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    run = get_run(built, "torchrun-int")
    last = _train_steps(built, "torchrun-int")[-1]
    assert run.status()["state"] == "stopped" and run.status()["step"] == last, err[-3000:]
    assert run.checkpoints() == [f"step_{last:06d}"]
    # torchrun itself reports the signal with a traceback of its own code; none comes from ours
    assert not re.search(r'File "[^"]*/workbench/', err), err[-3000:]


# --- bad input: a clear error and nothing half-done -------------------------------------------


def _cli(ws, *args):
    return main(["--workspace", str(ws.root), "train", *args])


@pytest.mark.parametrize("args,needle", [
    (["--config", "debug", "--tokenizer", "missing"], "tokenizer 'missing' not found"),
    (["--config", "debug", "--tokenizer", "tok", "--set", "model.vocab_size=512"],
     "model.vocab_size = 512 does not match tokenizer 'tok', which has 400 pieces"),
    (["--config", "debug", "--tokenizer", "tok", *SETS, "--set", "train.bogus=1"], "unknown train field 'bogus'; valid fields: batch_size"),
    (["--config", "debug", "--tokenizer", "tok", *SETS, "--set", "train.compile=maybe"],
     "train.compile = 'maybe' is not allowed: expected true or false"),
    (["--config", "debug", "--tokenizer", "tok", "--minutes", "0"], "minutes = 0.0 is not allowed"),
    (["--config", "debug"], "choose a tokenizer"),
    (["--config", "debug", "--tokenizer", "tok", *SETS, "--set", "train.lr=-1"], "train.lr = '-1' is not allowed: expected a number > 0 and <= 1"),
    (["--config", "debug", "--tokenizer", "tok", *SETS, "--set", "model.n_heads=3"], "model.n_heads = 3 is not allowed"),
    (["--config", "debug", "--tokenizer", "tok", *SETS, "--set", "nosection"], "is not SECTION.FIELD=VALUE"),
    (["--config", "nope", "--tokenizer", "tok"], "no config or preset named 'nope'"),
])
def test_bad_input(built, corpus_dir, capsys, args, needle):
    before = sorted(p.name for p in built.runs_dir().iterdir()) if built.runs_dir().exists() else []
    assert _cli(built, *args, "--data", str(corpus_dir)) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    after = sorted(p.name for p in built.runs_dir().iterdir()) if built.runs_dir().exists() else []
    assert after == before


def test_the_tokenizer_sets_the_vocab_and_says_so(built, corpus_dir, capsys):
    """A preset made for another vocab trains with the tokenizer's, said in one line; the run's
    config and its model have the tokenizer's vocab."""
    assert _cli(built, "--config", "debug", "--tokenizer", "tok", "--data", str(corpus_dir), "--name", "vocab-flow",
                "--set", "model.max_seq_len=32", "--set", "model.dim=32", "--set", "model.n_layers=1",
                "--set", "train.max_steps=2", "--set", "train.eval_interval=2", "--set", "train.eval_batches=1") == 0
    err = capsys.readouterr().err
    assert "model.vocab_size 512 → 400 from tokenizer tok" in err.splitlines()
    run = get_run(built, "vocab-flow")
    assert run.config().model.vocab_size == 400 and run.status()["state"] == "finished"


def test_data_shorter_than_one_window(built, tmp_path, capsys):
    from helpers import write_txt

    write_txt(tmp_path / "s" / "train.txt", ["a b"] * 3)
    write_txt(tmp_path / "s" / "valid.txt", ["c"])
    assert _cli(built, "--config", "debug", "--tokenizer", "tok", *SETS, "--data", str(tmp_path / "s"), "--name", "short") == 2
    assert "fewer than one window of model.max_seq_len + 1 = 33" in capsys.readouterr().err
    assert not built.run_path("short").exists()


def test_unwritable_run_folder(tmp_path, built, corpus_dir, capsys):
    """A runs folder nobody may write to: read-only for a user, and for root (who may write to
    any mode) a folder of the kernel's where even root cannot create one (/sys)."""
    import shutil

    from workbench.workspace import Workspace

    w = Workspace.at(tmp_path / "w")
    shutil.copytree(built.tokenizers_dir(), w.tokenizers_dir())
    if os.geteuid() == 0:
        os.symlink("/sys", w.root / "trained_models", target_is_directory=True)
    else:
        w.runs_dir().mkdir()
        os.chmod(w.runs_dir(), 0o500)
    try:
        assert _cli(w, "--config", "debug", "--tokenizer", "tok", *SETS, "--data", str(corpus_dir)) == 2
        err = capsys.readouterr().err
        assert "cannot write the run folder" in err and len(err.strip().splitlines()) == 1
    finally:
        if os.geteuid() != 0:
            os.chmod(w.runs_dir(), 0o700)


def test_run_folder_that_is_a_file(tmp_path, built, corpus_dir, capsys):
    import shutil

    from workbench.workspace import Workspace

    w = Workspace.at(tmp_path / "w")
    shutil.copytree(built.tokenizers_dir(), w.tokenizers_dir())
    w.root.mkdir(exist_ok=True)
    (w.root / "trained_models").write_text("not a folder")
    assert _cli(w, "--config", "debug", "--tokenizer", "tok", *SETS, "--data", str(corpus_dir)) == 2
    assert "cannot write the run folder" in capsys.readouterr().err


def test_resume_refuses_model_changes(built, corpus_dir, capsys):
    t, _ = train_new(built, corpus_dir, "r1", max_steps=2)
    t.run()
    assert _cli(built, "--resume", "r1", "--set", "model.dim=64") == 2
    assert "model fields cannot change when a run is resumed" in capsys.readouterr().err


# --- crash safety ----------------------------------------------------------------------------


def test_sigkill_at_random_moments_always_leaves_a_resumable_run(built, corpus_dir):
    """Ten SIGKILLs at random moments of a CLI run (dropout and gradient accumulation on), each
    followed by `train --resume` in a new process: every time a checkpoint loads, and in the end
    the run is one history whose every step's loss equals an uninterrupted run's, bit for bit."""
    rng = random.Random(1234)
    base = [sys.executable, "-m", "workbench", "--workspace", str(built.root), "train"]
    sets = [*SETS, "--set", "train.max_steps=100000", "--set", "train.checkpoint_interval=1",
            "--set", "train.keep_last=2", "--set", "train.eval_interval=1000000", "--set", "train.log_interval=1",
            "--set", "train.num_threads=1", "--set", "model.dropout=0.1", "--set", "train.grad_accum=2",
            "--set", "train.schedule=constant"]  # the final resume changes max_steps: keep the lr independent of it
    first = base + ["--config", "debug", "--tokenizer", "tok", "--data", str(corpus_dir), "--name", "crash", *sets]
    run_dir = built.run_path("crash")
    kills, last_step = 0, 0
    cmd = first
    while kills < 10:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # Wait until it has made progress past where it started, then kill at a random moment.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            latest = checkpoint.latest_name(run_dir) if run_dir.exists() else None
            if latest and int(latest.split("_")[1]) > last_step:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        run = get_run(built, "crash")
        latest = run.latest_checkpoint()
        assert latest is not None
        model = build_model(run_config(run).model)
        checkpoint.load_weights(model, run.path)
        st = checkpoint.load_state(run.path, latest)
        assert st["step"] >= last_step
        last_step = st["step"]
        cmd = base + ["--resume", "crash"]
    # A final resume runs to a (short) end cleanly.
    r = subprocess.run(base + ["--resume", "crash", "--set", f"train.max_steps={last_step + 2}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert get_run(built, "crash").latest_checkpoint() == f"step_{last_step + 2:06d}"
    ckdir = run_dir / "checkpoints"
    assert all(not p.name.startswith(".") for p in ckdir.iterdir())  # leftovers were cleaned
    # one history, equal to a run that was never interrupted (same config, same budget)
    rows = [x for x in get_run(built, "crash").metrics() if x["kind"] == "train"]
    assert [x["step"] for x in rows] == list(range(1, last_step + 3))
    ref = [*sets[:-len(sets)], *[a if a != "train.max_steps=100000" else f"train.max_steps={last_step + 2}" for a in sets]]
    r = subprocess.run(base + ["--config", "debug", "--tokenizer", "tok", "--data", str(corpus_dir), "--name", "crash-ref", *ref],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    ref_rows = [x for x in get_run(built, "crash-ref").metrics() if x["kind"] == "train"]
    assert [x["loss"] for x in rows] == [x["loss"] for x in ref_rows]


# --- distributed ------------------------------------------------------------------------------


def test_ddp_two_gloo_processes(built, corpus_dir):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "workbench",
           "--workspace", str(built.root), "train", "--config", "debug", "--tokenizer", "tok", "--data", str(corpus_dir),
           "--name", "ddp", *SETS, "--set", "train.max_steps=30", "--set", "train.log_interval=5",
           "--set", "train.eval_interval=30", "--set", "train.checkpoint_interval=30", "--set", "train.num_threads=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    runs = [x.name for x in list_runs(built) if x.name.startswith("ddp")]
    assert runs == ["ddp"]
    rows = get_run(built, "ddp").metrics()
    train = [x for x in rows if x["kind"] == "train"]
    assert [x["step"] for x in train] == [5, 10, 15, 20, 25, 30]  # written once, by rank 0
    assert train[-1]["tokens"] == 30 * 4 * 32 * 2  # both ranks' tokens count
    assert train[-1]["loss"] < train[0]["loss"]
    assert len([x for x in rows if x["kind"] == "eval"]) == 1
    assert get_run(built, "ddp").checkpoints() == ["step_000030"]


def test_torchrun_with_minutes_trains_rank_zeros_plan_on_every_rank(built, corpus_dir, tmp_path):
    """Under torchrun, ``train --minutes`` without a config: rank 0 plans and the others train
    its plan. Each rank here reads its own speed cache (a sitecustomize picks it by RANK), filled
    so that planning apart would pick dim 96 on rank 0 and dim 64 on rank 1."""
    from workbench.planning import planner
    from workbench.machine import probe

    law = planner.load_law()
    optimizer = law["recipe"].get("train", {}).get("optimizer", "adamw")
    fast = {"0": (96, 3), "1": (64, 2)}
    for rank, winner in fast.items():
        entries = {}
        for dim, layers in planner.SHAPES:
            cfg = planner.shape_config(dim, layers, 400, law["recipe"])
            key = planner.throughput_key(cfg, planner.BATCH, "auto", 1, optimizer)
            entries[key] = {"tok_s": 1e6 if (dim, layers) == winner else 10.0, "precision": "fp32",
                            "attention": "sdpa", "threads": 1, "measured": "2026-01-01 00:00:00"}
        os.environ[probe.CACHE_ENV], old = str(tmp_path / f"cache-rank{rank}"), os.environ[probe.CACHE_ENV]
        try:
            probe.write_cached(entries)
        finally:
            os.environ[probe.CACHE_ENV] = old
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os\n"
        f"os.environ[{probe.CACHE_ENV!r}] = {str(tmp_path)!r} + '/cache-rank' + os.environ.get('RANK', '0')\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "workbench",
           "--workspace", str(built.root), "train", "--minutes", "5", "--tokenizer", "tok", "--data", str(corpus_dir),
           "--name", "ddp-plan", "--set", "model.max_seq_len=32", "--set", "train.batch_size=4",
           "--set", "train.max_steps=4", "--set", "train.eval_batches=1", "--set", "train.num_threads=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "picked dim 96, 3 layers" in r.stderr and "dim 64, 2 layers" not in r.stderr.split("picked")[1]
    cfg = run_config(get_run(built, "ddp-plan"))
    assert (cfg.model.dim, cfg.model.n_layers) == (96, 3)
    assert get_run(built, "ddp-plan").status()["state"] == "finished"


# --- the real sample --------------------------------------------------------------------------


def test_debug_preset_on_tinystories_beats_unigram_entropy(ts_dir, tmp_path):
    from workbench.tokenizer.tokenizer import TokenizerSettings
    from workbench.tokenizer.build import build_tokenizer
    from workbench.workspace import Workspace

    w = Workspace.at(tmp_path)
    build_tokenizer(w, "ts512", TokenizerSettings(vocab_size=512, data=str(ts_dir / "train.txt")))
    trainer = Trainer.new(w, load_config("debug"), "ts512", str(ts_dir))
    s = trainer.run()
    assert s["state"] == "finished"
    val = np.fromfile(trainer.data.val.path, dtype=trainer.data.val.dtype)
    p = np.bincount(val, minlength=512) / len(val)
    unigram = float(-(p[p > 0] * np.log(p[p > 0])).sum())
    final = [r for r in get_run(w, s["run"]).metrics() if r["kind"] == "eval"][-1]["val_loss"]
    assert final < unigram, (final, unigram)


def test_runs_list_summary_and_compare(built, corpus_dir, capsys):
    t, _ = train_new(built, corpus_dir, "cmp-a", max_steps=6, eval_interval=3)
    t.run()
    t, _ = train_new(built, corpus_dir, "cmp-b", max_steps=6, eval_interval=3, lr=1e-2)
    t.run()
    s = get_run(built, "cmp-a").summary()
    assert s["params"] == tiny_config().model.n_params and s["steps"] == 6 and s["status"] == "finished"
    assert s["best_val_loss"] is not None and s["tokens"] == 6 * 4 * 32
    assert main(["--workspace", str(built.root), "runs", "compare", "cmp-a", "cmp-b", "--baseline", "cmp-a", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in out["vs_baseline"]}
    assert rows["cmp-a"]["tokens_to_baseline_final"] <= 6 * 4 * 32
    assert all(abs(d) < 1e-12 for _, d in rows["cmp-a"]["diff_vs_baseline"])
    # cmp-b against the baseline: at each evaluation, its validation loss minus cmp-a's
    def train_loss(name):
        return {r["tokens"]: r["val_loss"] for r in get_run(built, name).metrics() if r["kind"] == "eval"}
    la, lb = train_loss("cmp-a"), train_loss("cmp-b")
    diff = rows["cmp-b"]["diff_vs_baseline"]
    assert len(diff) == 2 and [t for t, _ in diff] == sorted(la) == sorted(lb)
    for tokens, d in diff:
        assert d == pytest.approx(lb[tokens] - la[tokens], abs=1e-9)
    assert any(abs(d) > 1e-6 for _, d in diff)  # another lr: another curve
    assert main(["--workspace", str(built.root), "eval", "cmp-a", "--json", "--batches", "2"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["checkpoint"] == "step_000006" and math.isclose(ev["val_ppl"], math.exp(ev["val_loss"]))


def test_ddp_wall_clock_budget_ends_every_rank_together(built, corpus_dir):
    # Each rank measures its own time; without agreeing on the budget one rank would leave
    # the loop a step early and the other would hang in its next all-reduce.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "workbench",
           "--workspace", str(built.root), "train", "--config", "debug", "--tokenizer", "tok", "--data", str(corpus_dir),
           "--name", "ddp-time", *SETS, "--set", "train.max_steps=null", "--set", "train.max_minutes=0.05",
           "--set", "train.checkpoint_interval=7", "--set", "train.eval_interval=5", "--set", "train.num_threads=1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    run = get_run(built, "ddp-time")
    assert run.status()["state"] == "finished"
    last = run.status()["step"]
    assert last > 0 and run.latest_checkpoint() == f"step_{last:06d}"
    assert [x for x in run.metrics() if x["kind"] == "eval"][-1]["step"] == last


def test_rename_and_delete_runs(built, corpus_dir, capsys):
    t, _ = train_new(built, corpus_dir, "ren", max_steps=2)
    t.run()
    ws = ["--workspace", str(built.root), "runs"]
    assert main([*ws, "rename", "ren", "ren2"]) == 0
    assert get_run(built, "ren2").latest_checkpoint() == "step_000002"
    assert main([*ws, "rename", "ren2", "bad/name"]) == 2
    assert "is not allowed" in capsys.readouterr().err
    from workbench.locks import acquire

    lock = acquire(get_run(built, "ren2").lock_path(), "training", "run 'ren2'")  # as a live trainer holds it
    assert main([*ws, "delete", "ren2", "--yes"]) == 2
    assert "is training in this app (training, since" in capsys.readouterr().err
    assert main([*ws, "rename", "ren2", "ren3"]) == 2
    assert "stop it before you rename it" in capsys.readouterr().err
    lock.release()
    assert main([*ws, "delete", "ren2", "--yes"]) == 0
    assert not built.run_path("ren2").exists()
    assert not [p for p in built.runs_dir().iterdir() if "ren2" in p.name]


def test_ddp_pause_resume_stop_and_resume_again(built, corpus_dir):
    """Both ranks of a 2-process run pause together, go on, and stop at the same step with one
    checkpoint, through the run's control file (what the app and `workbench runs` use)."""
    from workbench.training.trainer import request_control

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "workbench",
           "--workspace", str(built.root), "train", "--config", "debug", "--tokenizer", "tok", "--data", str(corpus_dir),
           "--name", "ddp-ctl", *SETS, "--set", "train.max_steps=100000", "--set", "train.log_interval=1",
           "--set", "train.eval_interval=100000", "--set", "train.checkpoint_interval=100000",
           "--set", "train.num_threads=1", "--set", "train.schedule=constant", "--set", "model.dropout=0.1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    run_dir = built.run_path("ddp-ctl")

    def wait_for(cond, what, timeout=120):
        t0 = time.monotonic()
        while not cond():
            assert proc.poll() is None or what == "exit", f"torchrun exited while waiting for {what}: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
            time.sleep(0.05)

    def steps():
        return [r["step"] for r in get_run(built, "ddp-ctl").metrics() if r["kind"] == "train"] if run_dir.is_dir() else []

    try:
        wait_for(lambda: len(steps()) >= 3, "the first steps")
        request_control(run_dir, "pause")
        wait_for(lambda: get_run(built, "ddp-ctl").status()["state"] == "paused", "the pause")
        held = len(steps())
        time.sleep(1.0)  # paused: not one more step is logged (both ranks wait; rank 0 logs)
        assert len(steps()) == held
        request_control(run_dir, "resume")
        wait_for(lambda: len(steps()) > held + 2, "training to go on")
        request_control(run_dir, "stop")
        wait_for(lambda: proc.poll() is not None, "exit")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, proc.stderr.read()[-3000:]
    run = get_run(built, "ddp-ctl")
    last = steps()[-1]
    assert run.status()["state"] == "stopped" and run.status()["step"] == last
    assert run.checkpoints() == [f"step_{last:06d}"]  # one checkpoint, at the step both ranks stopped
    # and it goes on from there, extended by a new budget that is recorded in the run
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                        "workbench", "--workspace", str(built.root), "train", "--resume", "ddp-ctl",
                        "--set", f"train.max_steps={last + 3}"], capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert get_run(built, "ddp-ctl").status()["state"] == "finished"
    assert steps()[-3:] == [last + 1, last + 2, last + 3]
    resumes = get_run(built, "ddp-ctl").raw_config()["resumes"]
    assert resumes[-1]["changes"] == {"train.max_steps": [100000, last + 3]} and resumes[-1]["step"] == last
    # exact: the same losses, step for step, as a 2-process run that was never paused or stopped
    ref = [a if a not in ("ddp-ctl", "train.max_steps=100000") else ("ddp-ref" if a == "ddp-ctl" else
                                                                     f"train.max_steps={last + 3}") for a in cmd]
    r = subprocess.run(ref, capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    loss = {n: [x["loss"] for x in get_run(built, n).metrics() if x["kind"] == "train"] for n in ("ddp-ctl", "ddp-ref")}
    assert len(loss["ddp-ref"]) == last + 3 and loss["ddp-ctl"] == loss["ddp-ref"]


def test_train_from_the_config_a_run_wrote(trained, corpus_dir, capsys):
    """`workbench train --config trained_models/RUN/config.yaml` trains a new run with that run's
    model and training settings (its bookkeeping keys — created, data, tokenizer — are not
    settings and do not get in the way)."""
    from helpers import TRAINED_RUN

    src = get_run(trained, TRAINED_RUN)
    path = src.path / "config.yaml"
    assert "created" in src.raw_config()
    assert _cli(trained, "--config", str(path), "--tokenizer", "tok", "--data", str(corpus_dir), "--name", "again",
                "--set", "train.max_steps=2") == 0
    a, b = run_config(src), run_config(get_run(trained, "again"))
    assert a.model == b.model
    assert a.train.replace(max_steps=2) == b.train
    assert get_run(trained, "again").latest_checkpoint() == "step_000002"


@pytest.mark.parametrize("option, said", [
    (["--data", "other.txt"], "data"), (["--tokenizer", "tok"], "tokenizer"), (["--name", "again"], "name"),
    (["--text-column", "story"], "text column"), (["--data", "x.txt", "--tokenizer", "tok"], "tokenizer and data"),
])
def test_a_resume_refuses_an_option_it_cannot_honour(trained, capsys, option, said):
    """A resume goes on with the run's own data, tokenizer and name: an option asking otherwise
    is refused in one line naming it, and nothing is trained or recorded (it used to be dropped
    silently, exit 0)."""
    from helpers import TRAINED_RUN

    before = get_run(trained, TRAINED_RUN).raw_config()
    capsys.readouterr()
    assert main(["--workspace", str(trained.root), "train", "--resume", TRAINED_RUN, *option,
                 "--set", "train.max_steps=20"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"a resumed run keeps its own {said}:" in err
    assert get_run(trained, TRAINED_RUN).raw_config() == before and get_run(trained, TRAINED_RUN).checkpoints()[-1] == "step_000012"


def test_a_larger_budget_on_resume_stretches_the_schedule_from_there(trained):
    """README: resuming with a larger budget stretches the schedule from that point, so the
    learning rate jumps where the decay had started. The session run trained 12 of 12 steps
    (cosine, warm-up 2); resumed to 24, step 13 takes the cosine of (12 - 2) / (24 - 2),
    written out here, not the rate the finished schedule ended on."""
    from helpers import TRAINED_RUN

    ended = [r["lr"] for r in get_run(trained, TRAINED_RUN).metrics() if r["kind"] == "train"][-1]
    evs = []
    t = Trainer.resume(trained, TRAINED_RUN, {"max_steps": 24}, on_event=evs.append)
    tc = t.cfg.train
    assert (tc.schedule, tc.warmup_steps, tc.max_steps) == ("cosine", 2, 24)
    assert t.run()["state"] == "finished"
    got = [e.lr for e in evs if isinstance(e, Stepped)]

    def cosine(step):
        p = (step - 2) / (24 - 2)
        return tc.min_lr + 0.5 * (tc.lr - tc.min_lr) * (1 + math.cos(math.pi * p))

    assert got == pytest.approx([cosine(step) for step in range(12, 24)], rel=1e-12)
    assert got[0] > ended * 1.5  # the jump: the decay starts again from much higher


def test_a_platform_that_cannot_compile_trains_without_it(built, corpus_dir, monkeypatch):
    """train.compile on a platform where torch.compile fails: one notice says so and the run
    trains uncompiled to its budget (the fallback; the suite never pays a real compile)."""
    import torch

    def broken(model, *a, **k):
        raise RuntimeError("no compiler for this platform\nmore detail")

    monkeypatch.setattr(torch, "compile", broken)
    evs = []
    t = Trainer.new(built, tiny_config(compile=True, max_steps=3), "tok", str(corpus_dir), name="nocompile",
                    on_event=evs.append)
    assert t.run()["state"] == "finished" and t.step == 3
    said = [e.text for e in evs if isinstance(e, Notice)]
    assert said == ["torch.compile is not available here (RuntimeError: no compiler for this platform); "
                    "training without it"]
    assert t.model is t.raw_model  # nothing compiled is left in place


def test_two_nodes_train_one_run_and_a_stop_reaches_every_rank(built, corpus_dir, tmp_path):
    """`torchrun --nnodes 2` with a c10d rendezvous, both "nodes" here over loopback: one run
    folder, written once (by rank 0), with both ranks' tokens; a stop asked through the run
    folder (as the app asks it) ends both ranks at one step with one checkpoint."""
    from helpers import start_two_nodes
    from workbench.training.trainer import request_control

    name = "two-nodes"
    procs = start_two_nodes(built, corpus_dir, name, "--set", "train.max_steps=100000", "--set",
                            "train.log_interval=1", "--set", "train.eval_interval=100000", "--set",
                            "train.checkpoint_interval=100000", stderr_dir=tmp_path)
    try:
        _wait(procs[0], lambda: len(_train_steps(built, name)) >= 5, "the first steps")
        request_control(built.run_path(name), "stop")
        for p in procs:
            p.wait(timeout=120)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    logs = "".join((tmp_path / f"node{i}.log").read_text() for i in range(2))
    assert [p.returncode for p in procs] == [0, 0], logs[-3000:]
    run = get_run(built, name)
    steps = _train_steps(built, name)
    assert steps == list(range(1, steps[-1] + 1))  # each step written once
    last = steps[-1]
    assert run.status()["state"] == "stopped" and run.status()["step"] == last
    assert run.checkpoints() == [f"step_{last:06d}"]
    rows = [r for r in run.metrics() if r["kind"] == "train"]
    assert rows[-1]["tokens"] == last * 4 * 32 * 2  # both nodes' tokens count
    assert logs.count(f"stopped: run {name}, step {last},") == 1


# --- a new run from another run's weights -----------------------------------------------------


@pytest.mark.parametrize("origin", ["real", "real:step_000006"])
def test_init_from_starts_a_new_run_at_the_origins_weights(trained, corpus_dir, capsys, origin):
    from workbench.training.evaluate import EvalRequest, evaluate_run

    ckpt = origin.partition(":")[2] or "step_000012"
    assert main(["--workspace", str(trained.root), "train", "--init-from", origin, "--data", str(corpus_dir),
                 "--name", "ft", "--set", "train.max_steps=2", "--set", "train.precision=fp32"]) == 0
    err = capsys.readouterr().err
    assert f"starting from the weights of run 'real' at {ckpt} (tokenizer 'tok')" in err
    run = get_run(trained, "ft")
    assert run.raw_config()["init_from"] == {"run": "real", "checkpoint": ckpt}
    first = run.metrics()[0]
    assert first["kind"] == "eval" and first["step"] == 0
    # the origin's checkpoint scored on the same validation windows, by the eval verb
    want = evaluate_run(trained, EvalRequest("real", ckpt, batches=run.config().train.eval_batches, precision="fp32"))
    assert first["val_loss"] == pytest.approx(want["val_loss"], rel=1e-6)
    st = checkpoint.load_state(run.path, "step_000002")
    assert st["step"] == 2 and st["tokens"] == 2 * 4 * 32  # a new schedule: from step 0
    assert get_run(trained, "real").checkpoints() == ["step_000006", "step_000012"]  # the origin is untouched


@pytest.mark.parametrize("args,said", [
    (["--init-from", "real", "--set", "model.dim=64"],
     "run 'real''s weights do not fit this config: tok_emb.weight has shape (400, 32) there, the model expects (400, 64)"),
    (["--init-from", "real:step_000099"], "checkpoint 'step_000099' of run 'real' is missing; available: step_000006, "
                                          "step_000012"),
    (["--init-from", "real", "--tokenizer", "other"], "tokenizer 'other' is not the one run 'real' was trained with"),
    (["--init-from", "real", "--resume", "real"], "a resumed run goes on from its own weights"),
])
def test_init_from_refusals_are_one_line_and_write_nothing(trained, corpus_dir, capsys, args, said):
    from workbench.tokenizer.tokenizer import TokenizerSettings
    from workbench.tokenizer.build import build_tokenizer

    if "other" in args:
        build_tokenizer(trained, "other", TokenizerSettings(vocab_size=420, data=str(corpus_dir), sample_mb=5))
    before = sorted(p.name for p in trained.runs_dir().iterdir())
    extra = [] if "--resume" in args else ["--data", str(corpus_dir), "--name", "ft-bad"]
    assert main(["--workspace", str(trained.root), "train", *args, *extra]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and said in err.strip().splitlines()[-1]
    assert sorted(p.name for p in trained.runs_dir().iterdir()) == before


# --- evaluating a run on other text ---------------------------------------------------------------


def _by_hand(trained, text_file, T: int) -> tuple[float, int]:
    """The mean next-token loss of run ``real`` over every window of the file's documents,
    tokenized here document by document (BOS ... EOS, as data prepare does) in fp32."""
    import torch
    import torch.nn.functional as F

    from workbench.runs.load import load_run_model

    model, tok, _, _ = load_run_model(get_run(trained, "real"))
    docs = [d.strip("\n") for d in text_file.read_text().split("<|endoftext|>") if d.strip()]
    ids = [i for d in docs for i in tok.encode(d, bos=True, eos=True)]
    n = (len(ids) - 1) // T
    windows = torch.tensor([ids[r * T: r * T + T + 1] for r in range(n)])
    with torch.no_grad():
        logits = model(windows[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), windows[:, 1:].reshape(-1))
    return float(loss), n * T


def test_eval_on_a_file_scores_all_of_it_records_it_and_leaves_nothing_behind(trained, tmp_path, capsys):
    from helpers import make_stories, write_txt

    text = write_txt(tmp_path / "mine.txt", make_stories(80, seed=11))
    before = {d: sorted(p.name for p in (trained.root / d).iterdir()) for d in ("tokenizers", "data")}
    assert main(["--workspace", str(trained.root), "eval", "real", "--data", str(text), "--precision", "fp32",
                 "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    loss, n = _by_hand(trained, text, 32)
    assert got["val_tokens"] == n and got["split"] == "all" and got["data"] == str(text)
    assert got["val_loss"] == pytest.approx(loss, rel=1e-5)
    assert {d: sorted(p.name for p in (trained.root / d).iterdir()) for d in ("tokenizers", "data")} == before
    row = get_run(trained, "real").metrics()[-1]
    assert row["kind"] == "data_eval" and row["checkpoint"] == "step_000012" and row["step"] == 12
    assert row["data"] == str(text) and row["split"] == "all" and row["val_loss"] == got["val_loss"]
    # the run's own curves and best figures ignore it; `runs show` lists it
    assert get_run(trained, "real").summary()["best_val_loss"] == min(
        r["val_loss"] for r in get_run(trained, "real").metrics() if r["kind"] == "eval")
    assert main(["--workspace", str(trained.root), "runs", "show", "real"]) == 0
    assert f"  eval @ step_000012 on {text}: loss {got['val_loss']:.4f}, bits/byte {got['bpb']:.4f}" in \
        capsys.readouterr().out


def test_eval_on_a_folder_takes_its_test_files_and_split_picks_them(trained, tmp_path, capsys):
    from helpers import make_stories, write_txt

    folder = tmp_path / "only-test"
    write_txt(folder / "test.txt", make_stories(60, seed=12))
    ws = ["--workspace", str(trained.root)]
    assert main([*ws, "eval", "real", "--data", str(folder), "--precision", "fp32", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["split"] == "test" and got["data"] == f"{folder} (test.txt)"
    assert got["val_loss"] == pytest.approx(_by_hand(trained, folder / "test.txt", 32)[0], rel=1e-5)
    # the test figures in `runs compare` and in the run's summary (the Runs pane's line)
    assert main([*ws, "runs", "compare", "real"]) == 0
    out = capsys.readouterr().out
    assert f"\non {folder} (test.txt), test split (workbench eval --data):\n  real" in out
    assert f"loss {got['val_loss']:.4f}, bits/byte {got['bpb']:.4f}, top-1 {got['top1']:.4f} @ step_000012" in out
    d = get_run(trained, "real").summary()["last_data_eval"]
    assert (d["split"], d["val_loss"], d["checkpoint"]) == ("test", got["val_loss"], "step_000012")
    for args, said in ((["--data", str(folder), "--split", "valid"], f"folder {str(folder)!r} has no valid files"),
                       (["--data", str(folder / "test.txt"), "--split", "test"], "a file is evaluated whole"),
                       (["--split", "test"], "--split picks the files of --data")):
        assert main([*ws, "eval", "real", *args]) == 2
        assert said in capsys.readouterr().err


def test_a_run_from_another_runs_weights_killed_before_its_first_checkpoint_restarts_from_them(trained, corpus_dir,
                                                                                              capsys):
    """Its first attempt's rows go (the step-0 evaluation too) and the restart loads the origin's
    weights again, so its step-0 evaluation is the origin's once more, and only once."""
    import shutil

    ws = ["--workspace", str(trained.root)]
    assert main([*ws, "train", "--init-from", "real", "--data", str(corpus_dir), "--name", "ft-early",
                 "--set", "train.max_steps=2", "--set", "train.precision=fp32"]) == 0
    run = get_run(trained, "ft-early")
    first = run.metrics()[0]
    # as a process killed before its first checkpoint leaves it: no checkpoint, its rows kept
    shutil.rmtree(run.path / "checkpoints")
    (run.path / "latest").unlink()
    capsys.readouterr()
    assert main([*ws, "train", "--resume", "ft-early"]) == 0
    assert "starting it again from step 0" in capsys.readouterr().err
    evals = [r for r in run.metrics() if r["kind"] == "eval" and r["step"] == 0]
    assert len(evals) == 1 and evals[0]["val_loss"] == pytest.approx(first["val_loss"], rel=1e-6)
