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
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import make_stories, write_txt
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
