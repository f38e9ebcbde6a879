"""The fault suite (`pytest -m faults`): faults injected into training, data preparation,
tokenizer builds and damaged run folders, each with the behaviour that must hold — one clear
line naming the file or the holder, no traceback, no lost checkpoint, no silently wrong result.

Every fault here was once a real failure (issue 15): weights that went non-finite one step before
the loss did, data prepared again under a run's feet, two trainers on one run, a full disk, damaged
files, a 12 MB line, a killed build leaving its child behind.
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import make_stories, write_big_corpus, write_txt
from helpers import SETS, tiny_config
from workbench.runs import checkpoint
from workbench.cli import main
from workbench.locks import holder
from workbench.model import build_model
from workbench.runs.folder import delete_run, get_run, run_config
from workbench.training.trainer import Trainer

pytestmark = pytest.mark.faults
WB = [sys.executable, "-m", "workbench"]


def _cli(ws, *args) -> int:
    return main(["--workspace", str(ws.root), *args])


def _one_line(err: str, needle: str) -> None:
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert "Traceback" not in err, err
    assert lines and needle in lines[-1], err


@pytest.fixture
def private(built, tmp_path):
    """A workspace of this test's own holding the suite's tokenizer ``tok`` (tests that build
    tokenizers must not add to the shared one)."""
    from workbench.workspace import Workspace

    w = Workspace.at(tmp_path / "private-ws")
    shutil.copytree(built.tokenizers_dir(), w.tokenizers_dir())
    return w


def _hold_lock(path: Path, what: str) -> subprocess.Popen:
    """Another process holding the lock at ``path`` (until killed)."""
    proc = subprocess.Popen([sys.executable, "-c", (
        "import time; from workbench.locks import acquire; "
        f"l = acquire({str(path)!r}, {what!r}, 'x'); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _train(ws, corpus_dir, name, **train) -> Trainer:
    t = Trainer.new(ws, tiny_config(**train), "tok", str(corpus_dir), name=name)
    t.setup()
    return t


# --- training: weights, loss and gradients that go bad -----------------------------------------


def test_inf_weights_are_never_checkpointed_and_the_last_good_one_survives(built, corpus_dir, capsys):
    t = _train(built, corpus_dir, "f-inf", max_steps=20, checkpoint_interval=1, keep_last=1, eval_interval=100)
    step = t.optimizer.step

    def poisoned_step(*a, **k):
        out = step(*a, **k)
        if t.step == 6:  # the update of step 7 overflows; its loss was still finite
            with torch.no_grad():
                next(t.raw_model.parameters()).view(-1)[0] = float("inf")
        return out

    t.optimizer.step = poisoned_step
    s = t.run()
    assert s["state"] == "failed" and "non-finite" in s["message"] and "by step 7" in s["message"]
    assert "the last good checkpoint (step_000006) is kept" in s["message"]
    run = get_run(built, "f-inf")
    assert run.latest_checkpoint() == "step_000006" and run.checkpoints() == ["step_000006"]  # keep_last 1: not pruned
    model = build_model(run_config(run).model)
    checkpoint.load_weights(model, run.path)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert _cli(built, "eval", "f-inf", "--batches", "1", "--json") == 0
    assert json.loads(capsys.readouterr().out)["val_loss"] < 100  # finite, from the good weights
    r = Trainer.resume(built, "f-inf", {"max_steps": 8})  # and it resumes from them
    assert r.run()["state"] == "finished"


def test_nan_loss_from_the_cli_is_one_line_and_exit_1(built, corpus_dir, capsys, monkeypatch):
    from workbench.model.transformer import Transformer

    forward, calls = Transformer.forward, {"n": 0}

    def nan_at_eighth_step(self, idx, *a, targets=None, **k):
        out = forward(self, idx, *a, targets=targets, **k)
        if targets is not None:
            calls["n"] += 1
            if calls["n"] == 8:
                out = out * float("nan")
        return out

    monkeypatch.setattr(Transformer, "forward", nan_at_eighth_step)
    assert _cli(built, "train", "--config", "debug", "--tokenizer", "tok", "--data", str(corpus_dir), "--name", "f-nan",
                *SETS, "--set", "train.max_steps=20", "--set", "train.checkpoint_interval=5",
                "--set", "train.keep_last=1", "--set", "train.eval_interval=1000") == 1
    err = capsys.readouterr().err
    _one_line(err, "error: training stopped: the loss became nan at step 8; the last good checkpoint "
                   "(step_000005) is kept")
    run = get_run(built, "f-nan")
    assert run.status()["state"] == "failed" and run.latest_checkpoint() == "step_000005"
    model = build_model(run_config(run).model)
    checkpoint.load_weights(model, run.path)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_non_finite_gradient_stops_before_the_update(built, corpus_dir):
    t = _train(built, corpus_dir, "f-grad", max_steps=10, checkpoint_interval=2)
    first = next(t.raw_model.parameters())

    def bad_grad(grad):
        return grad * float("inf") if t.step == 4 else grad

    first.register_hook(bad_grad)
    s = t.run()
    assert s["state"] == "failed" and "gradient norm became" in s["message"] and "at step 5" in s["message"]
    assert t.step == 4 and all(torch.isfinite(p).all() for p in t.raw_model.parameters())  # no update was applied
    model = build_model(t.cfg.model)
    checkpoint.load_weights(model, get_run(built, "f-grad").path)
    assert all(torch.isfinite(p).all() for p in model.parameters())


# --- one trainer per run -------------------------------------------------------------------------


def test_a_second_trainer_on_a_live_run_is_refused_naming_the_holder(built, corpus_dir, capsys):
    Trainer.new(built, tiny_config(max_steps=2), "tok", str(corpus_dir), name="f-two").run()
    first = Trainer.resume(built, "f-two", {"max_steps": 4})
    first.setup()  # holds the run's lock from here until it ends
    with pytest.raises(Exception, match=r"run 'f-two' is already training in this app \(training, since"):
        Trainer.resume(built, "f-two", {"max_steps": 6})
    # another process: refused too, in one line, and it writes nothing into the run
    r = subprocess.run([*WB, "--workspace", str(built.root), "train", "--resume", "f-two"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2
    _one_line(r.stderr, f"is already training in process {os.getpid()} (training, since")
    rows = get_run(built, "f-two").metrics()
    assert first.run()["state"] == "finished"
    steps = [x["step"] for x in get_run(built, "f-two").metrics() if x["kind"] == "train"]
    assert steps == sorted(set(steps)) == [1, 2, 3, 4] and len(rows) <= len(get_run(built, "f-two").metrics())
    assert get_run(built, "f-two").trainer() is None  # released at the end


def test_a_stale_lock_of_a_dead_process_is_taken_over(built, corpus_dir):
    Trainer.new(built, tiny_config(max_steps=2), "tok", str(corpus_dir), name="f-stale").run()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = get_run(built, "f-stale").lock_path()
    lock.write_text(json.dumps({"pid": dead.pid, "started": time.time(), "what": "training", "since": time.time()}))
    assert get_run(built, "f-stale").trainer() is None
    # a live pid that started at another time (a recycled pid) is not the holder either
    lock.write_text(json.dumps({"pid": os.getppid(), "started": 12345.0, "what": "training"}))
    assert holder(lock) is None
    assert Trainer.resume(built, "f-stale", {"max_steps": 3}).run()["state"] == "finished"
    assert not lock.exists()


def test_rename_and_delete_wait_for_the_trainer(built, corpus_dir):
    Trainer.new(built, tiny_config(max_steps=2), "tok", str(corpus_dir), name="f-busy").run()
    holder_proc = _hold_lock(get_run(built, "f-busy").lock_path(), "training")
    try:
        with pytest.raises(Exception, match=f"is training in process {holder_proc.pid}"):
            delete_run(built, "f-busy")
        assert built.run_path("f-busy").is_dir()
    finally:
        holder_proc.kill()
        holder_proc.wait()
    delete_run(built, "f-busy")  # its holder is gone
    assert not built.run_path("f-busy").exists()


# --- disk full and I/O errors --------------------------------------------------------------------


def _no_core():
    resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))  # no file past 400 KB: a checkpoint fits
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails with EFBIG instead


def test_a_full_disk_fails_the_run_in_one_line_and_keeps_the_last_checkpoint(built, corpus_dir):
    # the first checkpoints fit; training metrics grow until one append cannot be written
    r = subprocess.run([*WB, "--workspace", str(built.root), "train", "--config", "debug", "--tokenizer", "tok",
                        "--data", str(corpus_dir), "--name", "f-full", *SETS, "--set", "train.max_steps=100000",
                        "--set", "train.log_interval=1", "--set", "train.checkpoint_interval=100",
                        "--set", "train.eval_interval=100000", "--set", "train.num_threads=1"],
                       capture_output=True, text=True, timeout=300, preexec_fn=_no_core)
    assert r.returncode == 1, r.stderr[-2000:]
    _one_line(r.stderr, "error: cannot write ")
    assert ("File too large" in r.stderr or "disk may be full" in r.stderr) and "the last good checkpoint (step_" in r.stderr
    run = get_run(built, "f-full")
    assert run.status()["state"] == "failed" and run.trainer() is None
    model = build_model(run_config(run).model)
    checkpoint.load_weights(model, run.path)  # loadable


def test_an_io_error_while_checkpointing_marks_the_run_failed(built, corpus_dir, monkeypatch):
    import errno

    t = _train(built, corpus_dir, "f-io", max_steps=10, checkpoint_interval=3)
    real = checkpoint.save_checkpoint

    def failing(run_dir, step, *a, **k):
        if step == 6:
            raise OSError(errno.ENOSPC, "No space left on device", str(run_dir / "checkpoints" / "step_000006"))
        return real(run_dir, step, *a, **k)

    monkeypatch.setattr(checkpoint, "save_checkpoint", failing)
    s = t.run()
    assert s["state"] == "failed"
    assert s["message"].startswith("cannot write ") and "step_000006: No space left on device" in s["message"]
    assert "the last good checkpoint (step_000003) is kept" in s["message"]
    run = get_run(built, "f-io")
    assert run.status()["state"] == "failed" and run.latest_checkpoint() == "step_000003"


def test_a_status_that_could_not_be_written_does_not_keep_a_run_alive(built, corpus_dir, monkeypatch):
    t = _train(built, corpus_dir, "f-status", max_steps=4, checkpoint_interval=2)
    run = get_run(built, "f-status")
    calls = {"n": 0}
    real = type(run).set_status

    def failing(self, state, **kw):
        calls["n"] += 1
        if state == "failed":
            raise OSError(28, "No space left on device", str(self.path / "status.json"))
        return real(self, state, **kw)

    monkeypatch.setattr(type(run), "set_status", failing)

    def boom(trainer):  # the disk fills during the run (a step hook: the loop's own OSError path)
        raise OSError(28, "No space left on device", str(run.path / "metrics.jsonl"))

    t.step_hooks.append(boom)
    assert t.run()["state"] == "failed"
    assert calls["n"] >= 2  # the failed status was attempted (and failed) after a running one
    monkeypatch.undo()
    st = get_run(built, "f-status").status()
    assert st["state"] == "interrupted"  # status.json said running, but nobody holds the run
    delete_run(built, "f-status")  # so it can be deleted (the app could not, before)


# --- SIGKILL: one history, and the resumed run is the run that was never stopped ----------------


def test_sigkill_resumes_give_the_uninterrupted_losses(built, corpus_dir):
    rng = random.Random(7)
    sets = [*SETS, "--set", "train.max_steps=100000", "--set", "train.checkpoint_interval=1",
            "--set", "train.eval_interval=1000000", "--set", "train.log_interval=1", "--set", "train.num_threads=1",
            "--set", "model.dropout=0.1", "--set", "train.grad_accum=2"]
    base = [*WB, "--workspace", str(built.root), "train"]
    cmd = [*base, "--config", "debug", "--tokenizer", "tok", "--data", str(corpus_dir), "--name", "f-kill", *sets]
    run_dir = built.run_path("f-kill")
    last = 0
    for _ in range(4):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            latest = checkpoint.latest_name(run_dir) if run_dir.exists() else None
            if latest and int(latest.split("_")[1]) >= last + 3:
                break
            time.sleep(0.02)
        # killed while training, at least 3 steps past the last kill (not after it ended or hung)
        assert proc.poll() is None, f"the training process ended on its own (exit status {proc.returncode})"
        assert latest and int(latest.split("_")[1]) >= last + 3, f"no progress past step {last} in 90 s"
        time.sleep(rng.uniform(0.0, 0.2))  # a random moment within a step: the kill's timing, not a verdict
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        last = checkpoint.load_state(run_dir, checkpoint.latest_name(run_dir))["step"]
        cmd = [*base, "--resume", "f-kill"]
    rows = [r for r in get_run(built, "f-kill").metrics() if r["kind"] == "train"]
    steps = [r["step"] for r in rows]
    assert steps[:last] == list(range(1, last + 1))  # one history: no step twice, none missing
    # the same config trained without interruption, to the same step
    ref_cfg = run_config(get_run(built, "f-kill"))
    ref_cfg.train = ref_cfg.train.replace(checkpoint_interval=10**6)
    ref = Trainer.new(built, ref_cfg, "tok", str(corpus_dir), name="f-kill-ref")
    ref.setup()
    ref.step_hooks.append(lambda t: t.stop() if t.step >= last else None)
    assert ref.run()["state"] == "stopped"
    ref_rows = [r for r in get_run(built, "f-kill-ref").metrics() if r["kind"] == "train"][:last]
    assert [r["loss"] for r in ref_rows] == [r["loss"] for r in rows[:last]]


# --- data: identity, locks, temps, memory --------------------------------------------------------


def test_another_folder_of_the_same_name_gets_its_own_data(built, tmp_path, capsys):
    a, b = tmp_path / "a" / "tinystories", tmp_path / "b" / "tinystories"
    write_txt(a / "train.txt", make_stories(300, seed=11))
    write_txt(a / "valid.txt", make_stories(30, seed=12))
    write_txt(b / "train.txt", ["zzz qqq xxx " * 20] * 300)
    write_txt(b / "valid.txt", ["zzz qqq " * 20] * 30)
    Trainer.new(built, tiny_config(max_steps=3), "tok", str(a), name="f-ident").run()
    assert _cli(built, "eval", "f-ident", "--json") == 0
    before = json.loads(capsys.readouterr().out)["bpb"]
    Trainer.new(built, tiny_config(max_steps=3), "tok", str(b), name="f-ident-b").run()
    da = get_run(built, "f-ident").raw_config()["data"]["name"]
    db = get_run(built, "f-ident-b").raw_config()["data"]["name"]
    assert da != db and da.startswith("tok-tinystories-") and db.startswith("tok-tinystories-")
    assert _cli(built, "eval", "f-ident", "--json") == 0
    assert json.loads(capsys.readouterr().out)["bpb"] == before  # untouched by the other folder
    # the run's own data prepared again from other text, by force: resume and eval refuse, naming both
    assert _cli(built, "data", "prepare", "--tokenizer", "tok", "--data", str(b), "--name", da) == 2
    assert "already holds" in capsys.readouterr().err
    assert _cli(built, "data", "prepare", "--tokenizer", "tok", "--data", str(b), "--name", da, "--force") == 0
    capsys.readouterr()
    assert _cli(built, "eval", "f-ident") == 2
    _one_line(capsys.readouterr().err, f"data {da!r} no longer holds what run 'f-ident' was trained on")
    assert _cli(built, "train", "--resume", "f-ident") == 2
    err = capsys.readouterr().err
    _one_line(err, "no longer holds what run 'f-ident' was trained on")
    assert str(a) in err and str(b) in err


def test_a_prepare_in_progress_is_not_disturbed(built, corpus_dir, tmp_path):
    from workbench.fileio import remove_stale_temps
    from workbench.data.tokens import data_lock_path
    from workbench.data.prepare import prepare_data

    built.data_dir().mkdir(parents=True, exist_ok=True)
    other = _hold_lock(data_lock_path(built, "f-busy-data"), "preparing")
    try:
        with pytest.raises(Exception, match=f"data 'f-busy-data' is busy: process {other.pid} \\(preparing"):
            prepare_data(built, "tok", str(corpus_dir), name="f-busy-data")
        # its live temp file survives another process's cleanup; a dead writer's does not
        d = built.data_path("f-busy-data")
        d.mkdir(parents=True, exist_ok=True)
        live = d / f".train.bin.tmp-{other.pid}"
        live.write_bytes(b"x")
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        gone = d / f".train.bin.tmp-{dead.pid}"
        gone.write_bytes(b"x")
        remove_stale_temps(d)
        assert live.exists() and not gone.exists()
    finally:
        other.kill()
        other.wait()
    info = prepare_data(built, "tok", str(corpus_dir), name="f-busy-data")  # its holder is gone
    assert info.meta["splits"]["train"]["tokens"] > 0


def _peak_mb(cmd) -> tuple[int, float, str]:
    from workbench.bench.measure import run_measured

    code, _, mb, err = run_measured(cmd, {**os.environ, "OMP_NUM_THREADS": "1"})
    return code, mb, err


def test_one_huge_line_takes_bounded_memory(private, tmp_path):
    built = private
    rng = random.Random(3)
    words = ["once", "upon", "a", "time", "little", "girl", "Lily", "dog", "park", "happy"]
    line = " ".join(rng.choice(words) for _ in range(2_400_000))  # ~12 MB, no newline at all
    src = tmp_path / "huge"
    src.mkdir()
    (src / "train.txt").write_text(line, encoding="utf-8")
    write_txt(src / "valid.txt", make_stories(30, seed=5))
    mb_in = (src / "train.txt").stat().st_size / 2**20
    code, peak, err = _peak_mb([*WB, "--workspace", str(built.root), "tokenizer", "build", "--data", str(src),
                                "--vocab-size", "300", "--name", "f-huge", "--sample-mb", "20"])
    assert code == 0, err[-2000:]
    stats = json.loads((built.tokenizer_path("f-huge") / "stats.json").read_text())
    assert stats["split_documents"] >= 5  # cut into pieces of at most 1 MiB
    code, peak2, err = _peak_mb([*WB, "--workspace", str(built.root), "data", "prepare", "--tokenizer", "f-huge",
                                 "--data", str(src), "--name", "f-huge-data"])
    assert code == 0, err[-2000:]
    meta = json.loads((built.data_path("f-huge-data") / "meta.json").read_text())
    assert meta["splits"]["train"]["split_documents"] >= 5 and meta["splits"]["train"]["documents"] >= mb_in
    # it was ~50x the input (677 MB for 11.8 MB) when the line was encoded whole
    assert peak2 < 8 * mb_in + 250, (peak2, mb_in)


# --- damaged run folders ---------------------------------------------------------------------------


@pytest.fixture
def damaged(built, corpus_dir):
    """Two good runs and a fresh one to damage, in a private copy of the workspace."""

    for name in ("f-good", "f-bad"):
        if not built.run_path(name).exists():
            Trainer.new(built, tiny_config(max_steps=2), "tok", str(corpus_dir), name=name).run()
    return built, get_run(built, "f-bad")


DAMAGE = {
    "bad YAML": lambda run: (run.path / "config.yaml").write_text("model: [unclosed\n"),
    "python tag": lambda run: (run.path / "config.yaml").write_text(
        "version: 1\nmodel: !!python/object/apply:os.system ['echo pwned > /tmp/wb-pwned']\n"),
    "data not a mapping": lambda run: (run.path / "config.yaml").write_text(
        (run.path / "config.yaml").read_text().replace("data:\n", "data: just text\nold_data:\n", 1)),
    "empty tokenizer": lambda run: (run.path / "tokenizer" / "tokenizer.model").write_bytes(b""),
    "garbage metrics": lambda run: (run.path / "metrics.jsonl").write_text('5\n"x"\n{"kind": "eval"}\n{bad\n'),
}


@pytest.mark.parametrize("what", list(DAMAGE))
def test_a_damaged_run_is_named_and_the_others_still_list(damaged, what, capsys, tmp_path):
    ws, run = damaged
    backup = run.path.parent / ".backup"
    shutil.copytree(run.path, backup)
    try:
        DAMAGE[what](run)
        assert _cli(ws, "runs", "list", "--json") == 0
        rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
        assert rows["f-good"]["status"] == "finished"
        whole = what == "garbage metrics"  # the run is whole: the metrics' bad lines are skipped
        if whole:
            assert rows["f-bad"]["status"] == "finished" and not rows["f-bad"].get("problem"), rows["f-bad"]
        else:
            assert rows["f-bad"]["status"] == "damaged" and rows["f-bad"]["problem"]
        for verb in (["eval", "f-bad", "--batches", "1"], ["generate", "f-bad", "--max-tokens", "2"],
                     ["train", "--resume", "f-bad"], ["export", "f-bad", "--to", str(tmp_path / "x")]):
            code = _cli(ws, *verb)
            out, err = capsys.readouterr()
            if whole:  # every verb works on it, as on any finished run
                assert code == 0 and "Traceback" not in err and "error:" not in err, (verb, err)
                assert out.strip(), verb
            else:
                assert code == 2, (verb, err)
                _one_line(err, "error: ")
        if whole:
            assert (tmp_path / "x" / "config.json").is_file()
        assert not Path("/tmp/wb-pwned").exists()
    finally:
        shutil.rmtree(run.path)
        shutil.move(backup, run.path)


def test_a_replaced_tokenizer_is_refused_not_decoded_into_gibberish(damaged, private, capsys, tmp_path):
    from workbench.tokenizer.tokenizer import TokenizerSettings
    from workbench.tokenizer.build import build_tokenizer

    ws, run = damaged
    write_txt(tmp_path / "other.txt", make_stories(600, seed=99) + ["Zebras quietly jumped over 42 foxes."] * 50)
    build_tokenizer(private, "f-other-tok", TokenizerSettings(vocab_size=400, data=str(tmp_path / "other.txt"),
                                                               byte_fallback=True))
    model_file = run.tokenizer_path() / "tokenizer.model"
    saved = model_file.read_bytes()
    try:
        shutil.copy(private.tokenizer_path("f-other-tok") / "tokenizer.model", model_file)
        assert _cli(ws, "generate", "f-bad", "--max-tokens", "3") == 2
        _one_line(capsys.readouterr().err, "is not the tokenizer run 'f-bad' was trained with")
    finally:
        model_file.write_bytes(saved)


def test_a_state_file_of_the_wrong_structure_is_named(damaged, capsys):
    ws, run = damaged
    state = run.path / "checkpoints" / run.latest_checkpoint() / "state.pt"
    saved = state.read_bytes()
    try:
        for bad in ({"step": 1}, [1, 2, 3], {"step": "two", "tokens": 0, "elapsed": 0.0, "optimizer": {}, "data_rng": []}):
            torch.save(bad, state)
            assert _cli(ws, "train", "--resume", "f-bad") == 2
            _one_line(capsys.readouterr().err, f"{state} is not a training state this workbench wrote")
    finally:
        state.write_bytes(saved)


# --- tokenizer build: a killed build leaves nothing running and nothing behind --------------------


def _threads(proc) -> int:
    import psutil

    try:
        return proc.num_threads()
    except psutil.Error:
        return 0


def test_a_killed_build_takes_its_child_with_it(private, tmp_path):
    import psutil

    built = private
    src = tmp_path / "big.txt"
    write_txt(src, make_stories(20000, seed=9))
    proc = subprocess.Popen([*WB, "--workspace", str(built.root), "tokenizer", "build", "--data", str(src),
                             "--vocab-size", "2000", "--name", "f-killed"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    children = []
    while time.monotonic() < deadline and not children:
        children = psutil.Process(proc.pid).children(recursive=True)
        children = [c for c in children if "resource_tracker" not in " ".join(c.cmdline())]
        time.sleep(0.05)
    assert children, "the build never started its child"
    # kill once the child is at work: its parent-death watch is a second thread, started first thing
    while time.monotonic() < deadline and proc.poll() is None and not any(_threads(c) > 1 for c in children):
        time.sleep(0.02)
    assert proc.poll() is None and any(_threads(c) > 1 for c in children), "the build's child never got going"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for c in children:
        try:
            c.wait(timeout=10)
        except psutil.TimeoutExpired:
            pytest.fail(f"the build's child {c.pid} outlived its parent")
    # the next build cleans what the killed one left
    assert _cli(built, "tokenizer", "build", "--data", str(src), "--vocab-size", "400", "--name", "f-after",
                "--sample-mb", "1") == 0
    assert not [p for p in built.tokenizers_dir().iterdir() if p.name.startswith(".")]


# --- signals: SIGTERM and SIGHUP are a stop; no trainer outlives a sweep ----------------------------


def _train_rows(ws, name):
    path = ws.run_path(name) / "metrics.jsonl"
    return [r["step"] for r in get_run(ws, name).metrics() if r["kind"] == "train"] if path.is_file() else []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_sweep_ended_by_a_signal_takes_its_trainer_with_it_and_the_trainer_keeps_a_checkpoint(
        built, corpus_dir, sig, tmp_path):
    import psutil

    name = f"f-sw-{sig.name.lower()}"
    cmd = [*WB, "--workspace", str(built.root), "sweep", "--config", "debug", "--tokenizer", "tok", "--data",
           str(corpus_dir), "--name", name, "--steps", "100000", "--grid", "train.lr=0.001,0.002,0.003", *SETS,
           "--set", "train.log_interval=1", "--set", "train.eval_interval=100000",
           "--set", "train.checkpoint_interval=100000", "--set", "train.num_threads=1"]
    err_file = tmp_path / "err"
    with open(err_file, "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True)
    first = f"{name}-1"
    try:
        deadline = time.monotonic() + 120
        while len(_train_rows(built, first)) < 3:
            assert proc.poll() is None, err_file.read_text()
            assert time.monotonic() < deadline, "the sweep's first run never trained"
            time.sleep(0.05)
        trainers = psutil.Process(proc.pid).children()
        assert len(trainers) == 1, trainers
        proc.send_signal(sig)
        proc.wait(timeout=120)
        trainers[0].wait(timeout=60)  # psutil.TimeoutExpired: an orphan trainer
    finally:
        if proc.poll() is None:
            proc.kill()
    err = err_file.read_text()
    run = get_run(built, first)
    last = _train_rows(built, first)[-1]
    # the trainer stopped after a step, with a checkpoint of that step, also when the sweep was killed
    assert run.status()["state"] == "stopped" and run.status()["step"] == last, run.status()
    assert run.checkpoints() == [f"step_{last:06d}"]
    assert not built.run_path(f"{name}-2").exists()
    if sig == signal.SIGTERM:
        assert proc.returncode == 128 + signal.SIGTERM
        assert f"sweep {name!r} stopped {first} (each keeps its last checkpoint" in err
        assert f"sweep {name!r} did not start {name}-2, {name}-3; train one with `workbench train --config " in err
        assert "Traceback" not in err
        # the line it gives trains the point that did not run
        line = err.split("train one with `workbench ", 1)[1].split("`", 1)[0]
        args = line.split(" ")
        args[args.index("--name") + 1] = f"{name}-2b"
        assert _cli(built, *args, "--set", "train.max_steps=2") == 0


# --- checkpoints: weights that load but are not finite, a lost `latest`, a run killed early ---------


def _poison(run, name: str) -> tuple[str, int]:
    """Write 3 NaNs and one infinity into one tensor of checkpoint ``name``; (tensor, its size)."""
    from safetensors.torch import load_file, save_file

    path = run.path / "checkpoints" / name / "model.safetensors"
    sd = load_file(str(path))
    key = sorted(k for k in sd if k.endswith("w1.weight"))[0]
    flat = sd[key].view(-1)
    flat[[1, 5, 9]] = float("nan")
    flat[7] = float("inf")
    save_file(sd, str(path), metadata={"step": name})
    return key, flat.numel()


def test_non_finite_weights_are_refused_by_name_and_the_default_falls_back_to_the_last_finite_one(
        trained, capsys, tmp_path):
    from safetensors.torch import load_file

    from workbench.training.evaluate import EvalRequest, evaluate_run

    run = get_run(trained, "real")
    key, n = _poison(run, "step_000012")
    what = f"holds weights that are not finite: 4 of {n:,} values of {key} are NaN or infinite"
    for verb in (["eval", "real", "--checkpoint", "step_000012", "--batches", "1"],
                 ["generate", "real", "--checkpoint", "step_000012", "--max-tokens", "2"],
                 ["export", "real", "--checkpoint", "step_000012", "--to", str(tmp_path / "nan"), "--format", "weights"],
                 ["trace", "--run", "real", "--checkpoint", "step_000012", "--tokens", "4"]):
        assert _cli(trained, *verb) == 2, verb
        _one_line(capsys.readouterr().err, what)
    assert not (tmp_path / "nan").exists()
    # no checkpoint named: the newest finite one, said on stderr, and its numbers exactly
    assert _cli(trained, "eval", "real", "--batches", "2", "--json") == 0
    out, err = capsys.readouterr()
    assert "note: run 'real': checkpoint file" in err and what in err and "using step_000006" in err
    got = json.loads(out)
    want = evaluate_run(trained, EvalRequest("real", "step_000006", batches=2))
    assert got["checkpoint"] == "step_000006" and got["val_loss"] == want["val_loss"]
    assert _cli(trained, "export", "real", "--to", str(tmp_path / "ok"), "--format", "weights") == 0
    assert "using step_000006" in capsys.readouterr().err
    exported = load_file(str(tmp_path / "ok" / "model.safetensors"))
    saved = load_file(str(run.path / "checkpoints" / "step_000006" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in exported.values())
    assert torch.equal(exported[key], saved[key])
    # a resume starts from the newest whole, finite checkpoint and says which
    assert _cli(trained, "train", "--resume", "real", "--set", "train.max_steps=14") == 0
    err = capsys.readouterr().err
    assert "using step_000006, the newest whole checkpoint" in err and "resumed from step_000006" in err
    assert [r["step"] for r in run.metrics() if r["kind"] == "train"] == [2, 4, 6, 8, 10, 12, 14]


LOST_LATEST = {
    "missing": (lambda p: p.unlink(), "the 'latest' pointer is missing"),
    "empty": (lambda p: p.write_text(""), "the 'latest' pointer is empty"),
    "dangling": (lambda p: p.write_text("step_000099\n"), "the 'latest' pointer names 'step_000099'"),
    "not text": (lambda p: p.write_bytes(b"\xff\xfe\x00"), "the 'latest' pointer names"),
}


@pytest.mark.parametrize("what", list(LOST_LATEST))
def test_a_lost_latest_pointer_falls_back_to_the_newest_whole_checkpoint(trained, capsys, what):
    damage, said = LOST_LATEST[what]
    run = get_run(trained, "real")
    damage(run.path / "latest")
    assert run.latest_checkpoint() == "step_000012"
    assert _cli(trained, "runs", "list", "--json") == 0
    row = {r["name"]: r for r in json.loads(capsys.readouterr().out)}["real"]
    assert row["checkpoint"] == "step_000012" and row["status"] == "finished"
    assert _cli(trained, "eval", "real", "--batches", "1") == 0
    out, err = capsys.readouterr()
    assert "@ step_000012" in out and "using step_000012" in err
    if what != "not text":
        assert said in err
    assert _cli(trained, "train", "--resume", "real", "--set", "train.max_steps=14") == 0
    assert "resumed from step_000012" in capsys.readouterr().err
    assert run.latest_checkpoint() == "step_000014" and (run.path / "latest").read_text().strip() == "step_000014"


def test_a_run_killed_before_its_first_checkpoint_is_started_again_by_resume(built, corpus_dir, capsys):
    name = "f-early"
    cmd = [*WB, "--workspace", str(built.root), "train", "--config", "debug", "--tokenizer", "tok", "--data",
           str(corpus_dir), "--name", name, *SETS, "--set", "train.max_steps=100000", "--set", "train.log_interval=1",
           "--set", "train.eval_interval=100000", "--set", "train.checkpoint_interval=100000",
           "--set", "train.num_threads=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(_train_rows(built, name)) < 3:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()
    run = get_run(built, name)
    assert run.checkpoints() == [] and run.status()["state"] == "interrupted"
    assert _cli(built, "train", "--config", "debug", "--tokenizer", "tok", "--data", str(corpus_dir),
                "--name", name, *SETS) == 2
    _one_line(capsys.readouterr().err, f"choose another --name or --resume {name}")
    assert _cli(built, "train", "--resume", name, "--set", "train.max_steps=5", "--set", "train.log_interval=1") == 0
    err = capsys.readouterr().err
    assert f"run {name!r} has no checkpoint (it ended before its first one); starting it again from step 0" in err
    assert _train_rows(built, name) == [1, 2, 3, 4, 5]  # the dead attempt's rows are gone, none twice
    assert run.checkpoints() == ["step_000005"] and run.status()["state"] == "finished"
    assert run.raw_config()["resumes"][-1]["from"] is None


CKPT_DAMAGE = {
    "truncated state": ("state.pt", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
                        "state.pt is truncated or empty"),
    "empty state": ("state.pt", lambda p: p.write_bytes(b""), "state.pt is truncated or empty"),
    "truncated weights": ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[:-100]),
                          "model.safetensors is truncated"),
}


@pytest.mark.parametrize("what", list(CKPT_DAMAGE))
def test_runs_list_calls_a_damaged_latest_checkpoint_damaged_and_resume_uses_the_one_before(trained, capsys, what):
    fname, damage, said = CKPT_DAMAGE[what]
    run = get_run(trained, "real")
    damage(run.path / "checkpoints" / "step_000012" / fname)
    assert _cli(trained, "runs", "list", "--json") == 0
    row = {r["name"]: r for r in json.loads(capsys.readouterr().out)}["real"]
    assert row["status"] == "damaged" and said in row["problem"], row
    assert row["problem"].endswith("verbs fall back to step_000006")
    assert _cli(trained, "train", "--resume", "real", "--set", "train.max_steps=14") == 0
    assert "using step_000006, the newest whole checkpoint" in capsys.readouterr().err


# --- a tokenizer build takes a lock and replaces nothing without --overwrite ------------------------


def test_a_second_build_of_one_tokenizer_name_is_refused(private, corpus_dir, capsys):
    path = private.tokenizers_dir() / ".f-tk.lock"
    other = _hold_lock(path, "building")
    try:
        assert _cli(private, "tokenizer", "build", "--data", str(corpus_dir), "--vocab-size", "400",
                    "--name", "f-tk") == 2
        _one_line(capsys.readouterr().err, f"tokenizer 'f-tk' is busy: process {other.pid} (building")
        assert not private.tokenizer_path("f-tk").exists()
    finally:
        other.kill()
        other.wait()
    assert _cli(private, "tokenizer", "build", "--data", str(corpus_dir), "--vocab-size", "400", "--name", "f-tk") == 0
    model = private.tokenizer_path("f-tk") / "tokenizer.model"
    before = model.read_bytes()
    capsys.readouterr()
    assert _cli(private, "tokenizer", "build", "--data", str(corpus_dir), "--vocab-size", "420", "--name", "f-tk") == 2
    _one_line(capsys.readouterr().err, "tokenizer 'f-tk' already exists")
    assert model.read_bytes() == before
    assert not list(private.tokenizers_dir().glob(".*.lock"))  # the killed holder's stale lock went too


# --- one line, never a traceback --------------------------------------------------------------------


def _enospc(*a, **k):
    import errno

    raise OSError(errno.ENOSPC, "No space left on device", str(a[0]) if a else None)


def test_a_full_disk_while_preparing_data_is_one_line(private, corpus_dir, capsys, monkeypatch, tmp_path):
    from workbench.data import prepare

    monkeypatch.setattr(prepare.fileio, "write_json", _enospc)
    src = write_txt(tmp_path / "more.txt", make_stories(200, seed=4))
    assert _cli(private, "data", "prepare", "--tokenizer", "tok", "--data", str(src), "--name", "f-full") == 2
    _one_line(capsys.readouterr().err, "cannot write data 'f-full'")
    assert not private.data_path("f-full").exists()  # a first prepare leaves no folder behind
    # and the same inside `train`, which prepares on the fly
    assert _cli(private, "train", "--config", "debug", "--tokenizer", "tok", "--data", str(src), *SETS,
                "--set", "train.max_steps=1") == 2
    _one_line(capsys.readouterr().err, "the disk is full; free some space and prepare it again")


def test_a_full_disk_while_exporting_is_one_line_and_keeps_the_old_export(trained, capsys, monkeypatch, tmp_path):
    import safetensors.torch
    from safetensors import SafetensorError

    dest = tmp_path / "exp"
    assert _cli(trained, "export", "real", "--to", str(dest), "--format", "weights") == 0
    before = (dest / "model.safetensors").read_bytes()

    def full(*a, **k):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    capsys.readouterr()
    assert _cli(trained, "export", "real", "--to", str(dest), "--format", "weights", "--force") == 2
    _one_line(capsys.readouterr().err, "the disk is full (the previous export, if any, is kept)")
    assert (dest / "model.safetensors").read_bytes() == before


def test_a_read_only_workspace_is_one_line(built, tmp_path, capsys):
    from workbench.workspace import Workspace

    w = Workspace.at(tmp_path / "ro")
    w.root.mkdir(parents=True, exist_ok=True)
    os.symlink("/sys", w.root / "models", target_is_directory=True)  # not writable, even by root
    assert _cli(w, "config", "new", "mine", "--from", "debug") == 1
    _one_line(capsys.readouterr().err, "cannot use")


def test_token_ids_outside_the_vocabulary_are_named_with_the_first_offset(trained, capsys):
    import numpy as np

    run = get_run(trained, "real")
    data = trained.data_path(run.raw_config()["data"]["name"])
    for split in ("val", "train"):
        f = data / f"{split}.bin"
        ids = np.fromfile(f, dtype=np.uint16)
        ids[37] = 400  # the first id past the vocabulary of 400
        ids[90] = 400  # and a second one after it
        ids.tofile(f)
        expected = f"{str(f)!r} holds token id 400 at token 37 (byte offset 74), outside the vocabulary of 400"
        verbs = [["train", "--resume", "real", "--set", "train.max_steps=14"]]
        if split == "val":
            verbs.append(["eval", "real", "--batches", "1"])
        for verb in verbs:
            assert _cli(trained, *verb) == 2, verb
            _one_line(capsys.readouterr().err, expected)
        ids[37] = ids[90] = 3
        ids.tofile(f)
    assert get_run(trained, "real").status()["state"] == "finished"  # not left `running`


GARBLED = {
    "not JSON": (b"{garbled", "is damaged: not JSON"),
    "not UTF-8": (b"\xff\xfe{}", "is damaged: not UTF-8 text (byte 0 is 0xff)"),
    "wrong shape": (b'{"splits": 3}', "is damaged (TypeError"),
}


@pytest.mark.parametrize("what", list(GARBLED))
def test_a_garbled_data_meta_file_is_one_line(trained, capsys, what):
    raw, said = GARBLED[what]
    run = get_run(trained, "real")
    meta = trained.data_path(run.raw_config()["data"]["name"]) / "meta.json"
    meta.write_bytes(raw)
    assert _cli(trained, "eval", "real", "--batches", "1") == 2
    _one_line(capsys.readouterr().err, said)
    assert _cli(trained, "data", "list") == 0
    assert said in capsys.readouterr().err


def test_non_utf8_configs_are_one_line_and_the_run_is_listed_damaged(trained, capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"model:\n  dim: 64 \xff\n")
    for verb in (["config", "show", str(bad)], ["train", "--config", str(bad), "--tokenizer", "tok"]):
        assert _cli(trained, *verb) == 2, verb
        _one_line(capsys.readouterr().err, f"is damaged: not UTF-8 text (byte {len(b'model:  dim: 64 ') + 1} is 0xff)")
    run = get_run(trained, "real")
    (run.path / "config.yaml").write_bytes(b"name: \xff\n")
    assert _cli(trained, "runs", "list", "--json") == 0
    row = {r["name"]: r for r in json.loads(capsys.readouterr().out)}["real"]
    assert row["status"] == "damaged" and "not UTF-8 text" in row["problem"]


def test_out_of_memory_while_training_fails_the_run_in_one_line_and_keeps_the_checkpoint(built, corpus_dir):
    from workbench.machine.estimate import fmt_bytes, training_memory

    t = _train(built, corpus_dir, "f-oom", max_steps=20, checkpoint_interval=2, eval_interval=100)

    def allocator_fails(trainer):
        if trainer.step == 3:  # what torch's CPU allocator raises under `ulimit -v`
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
                               "memory: you tried to allocate 1073741824 bytes. Error code 12")

    t.step_hooks.append(allocator_fails)
    out = t.run()
    cfg = t.cfg
    peak = training_memory(cfg.model, cfg.train.batch_size, None, t.precision.name, "cpu", cfg.train.optimizer).total
    assert out["state"] == "failed"
    assert out["message"].startswith(f"out of memory on cpu at train.batch_size = {cfg.train.batch_size}")
    assert f"the estimate expected a peak of {fmt_bytes(peak)}" in out["message"]
    assert "raise train.grad_accum" in out["message"] and "the last checkpoint (step_000002) is kept" in out["message"]
    run = get_run(built, "f-oom")
    assert run.status()["state"] == "failed" and run.checkpoints() == ["step_000002"]


def test_too_little_memory_to_import_torch_is_one_line(trained, monkeypatch, capsys):
    """At 400 MB torch's library cannot even be mapped (an ImportError); a little more and an
    allocation fails while it initialises (a MemoryError): both are the same line."""
    from workbench.cli import eval_cmd

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (400 * 2**20, 400 * 2**20))

    p = subprocess.run([*WB, "--workspace", str(trained.root), "eval", "real", "--batches", "1"],
                       capture_output=True, text=True, preexec_fn=cap, timeout=120)
    assert p.returncode == 1, p.stderr
    _one_line(p.stderr, "error: out of memory")

    def no_memory(args, ws):
        raise MemoryError

    monkeypatch.setattr(eval_cmd, "cmd_eval", no_memory)
    assert _cli(trained, "eval", "real") == 1
    _one_line(capsys.readouterr().err, "error: out of memory")


def test_sigterm_ends_a_data_prepare_in_one_line_and_leaves_nothing_half_written(private, tmp_path):
    src = write_big_corpus(tmp_path / "big.txt", mbytes=24)
    lock = private.data_dir() / ".f-term.lock"
    proc = subprocess.Popen([*WB, "--workspace", str(private.root), "data", "prepare", "--tokenizer", "tok",
                             "--data", str(src), "--name", "f-term"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(private.data_path("f-term").glob(".*.tmp-*")):  # writing its token file
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the prepare never started writing"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    _one_line(err, "ended by SIGTERM; whatever was being written was left out, all else is kept")
    assert not private.data_path("f-term").exists() and not lock.exists()


def test_a_node_lost_mid_run_fails_the_survivor_in_one_line_and_the_run_resumes(built, corpus_dir, tmp_path, capsys):
    import psutil

    from helpers import start_two_nodes

    name = "f-node-lost"
    procs = start_two_nodes(built, corpus_dir, name, "--set", "train.max_steps=100000", "--set",
                            "train.log_interval=1", "--set", "train.eval_interval=100000", "--set",
                            "train.checkpoint_interval=20", env={"WORKBENCH_DIST_TIMEOUT": "60"}, stderr_dir=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not (built.run_path(name) / "checkpoints").is_dir() or not get_run(built, name).checkpoints():
            assert all(p.poll() is None for p in procs) and time.monotonic() < deadline
            time.sleep(0.05)
        # the second node goes away: its launcher and its worker (a session of its own) at once
        node = [procs[1].pid, *(c.pid for c in psutil.Process(procs[1].pid).children(recursive=True))]
        for pid in node:
            os.kill(pid, signal.SIGKILL)
        procs[0].wait(timeout=90)  # no hang
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    logs = {i: (tmp_path / f"node{i}.log").read_text() for i in range(2)}
    run = get_run(built, name)
    kept = run.latest_checkpoint()
    said = [line for text in logs.values() for line in text.splitlines() if line.startswith("error (rank ")]
    assert len(said) == 1, logs  # the survivor's one line (the lost node said nothing)
    assert re.match(r"error \(rank [01]\): lost contact with the other training processes at step \d+ \(", said[0])
    assert said[0].endswith(f"the last checkpoint ({kept}) is kept: start the run again with --resume {name} "
                            "on every node")
    assert "Traceback" not in said[0]
    assert run.status()["state"] == "failed"
    # resumable here on one process, from that checkpoint
    step = int(kept.split("_")[1])
    assert _cli(built, "train", "--resume", name, "--set", f"train.max_steps={step + 3}") == 0
    assert f"resumed from {kept}" in capsys.readouterr().err
    assert run.latest_checkpoint() == f"step_{step + 3:06d}"


def test_runs_list_calls_a_run_whose_data_would_be_refused_damaged(trained, capsys):
    import numpy as np

    run = get_run(trained, "real")
    f = trained.data_path(run.raw_config()["data"]["name"]) / "val.bin"
    ids = np.fromfile(f, dtype=np.uint16)
    ids[5] = 400
    ids.tofile(f)
    assert _cli(trained, "runs", "list", "--json") == 0
    row = {r["name"]: r for r in json.loads(capsys.readouterr().out)}["real"]
    assert row["status"] == "damaged"
    assert row["problem"].startswith(f"its data: {str(f)!r} holds token id 400 at token 5")
    f.write_bytes(b"")  # and one shorter than its meta.json says
    assert _cli(trained, "runs", "list", "--json") == 0
    row = {r["name"]: r for r in json.loads(capsys.readouterr().out)}["real"]
    assert row["status"] == "damaged" and "does not match meta.json" in row["problem"]
