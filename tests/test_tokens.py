"""Prepared token files: equal to a direct encode, atomic under SIGKILL, windows for training/eval."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import make_stories, write_txt
from workbench.data.sources import resolve_source
from workbench.errors import WorkbenchError
from workbench.tokenizer.tokenizer import load_tokenizer
from workbench.data.tokens import data_info, token_dtype
from workbench.data.prepare import ensure_prepared, prepare_data


def _expected(tok, docs):
    return np.array([i for d in docs for i in tok.encode(d, bos=True, eos=True)], dtype=np.int64)


def test_prepared_tokens_equal_direct_encode(built, corpus_dir):
    info = prepare_data(built, "tok", str(corpus_dir), name="p1", workers=2)
    tok = load_tokenizer(built, "tok")
    src = resolve_source(str(corpus_dir))
    for split, src_split in (("train", "train"), ("val", "validation")):
        docs = list(src.documents(src_split))
        tf = info.split(split)
        got = np.fromfile(tf.path, dtype=tf.dtype).astype(np.int64)
        assert np.array_equal(got, _expected(tok, docs))
        m = info.meta["splits"][split]
        assert m["documents"] == len(docs)
        assert m["bytes"] == sum(len(d.encode()) for d in docs)
        assert m["tokens"] == len(got)
    assert info.meta["tokenizer"]["sha256"] == tok.sha256
    assert info.meta["dtype"] == "uint16"
    assert data_info(built, "p1").meta == info.meta


def test_dtype_switches_past_uint16():
    assert token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32


def test_ensure_prepared_reuses(built, corpus_dir):
    a = ensure_prepared(built, "tok", str(corpus_dir), name="p2")
    mtime = (a.path / "train.bin").stat().st_mtime_ns
    b = ensure_prepared(built, "tok", str(corpus_dir), name="p2")
    assert (b.path / "train.bin").stat().st_mtime_ns == mtime


def test_sample_batch_and_windows(built, corpus_dir):
    info = ensure_prepared(built, "tok", str(corpus_dir), name="p3")
    tf = info.train
    full = np.fromfile(tf.path, dtype=tf.dtype).astype(np.int64)
    rng = np.random.default_rng(0)
    b = tf.sample_batch(4, 16, rng)
    assert b.shape == (4, 17) and b.dtype == np.int64
    for row in b:  # every row is a real window of the file
        starts = np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(full, 17) == row, axis=1))
        assert len(starts) >= 1
    # Same seed, same batches: training can resume exactly.
    assert np.array_equal(tf.sample_batch(4, 16, np.random.default_rng(0)), b)
    wins = list(info.val.windows(B=3, T=8))
    rows = np.concatenate(wins)
    assert rows.shape[1] == 9
    assert rows.shape[0] == info.val.n_windows(8)
    val = np.fromfile(info.val.path, dtype=info.val.dtype).astype(np.int64)
    # Windows overlap by one token, so each target is predicted exactly once.
    assert np.array_equal(np.concatenate([rows[0], *[r[1:] for r in rows[1:]]]), val[: rows.shape[0] * 8 + 1])


def test_data_shorter_than_a_window(built, tmp_path):
    p = write_txt(tmp_path / "c" / "train.txt", ["hi there"] * 2)
    write_txt(tmp_path / "c" / "valid.txt", ["yo"])
    info = prepare_data(built, "tok", str(tmp_path / "c"), name="short")
    with pytest.raises(WorkbenchError, match="fewer than one window"):
        info.train.sample_batch(2, 512, np.random.default_rng(0))
    del p


def test_killed_prepare_leaves_no_partial_file(built, tmp_path):
    big = write_txt(tmp_path / "big" / "train.txt", make_stories(40000, seed=11))
    write_txt(tmp_path / "big" / "valid.txt", make_stories(50, seed=12))
    out = built.data_path("killed")
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench", "--workspace", str(built.root), "data", "prepare",
         "--tokenizer", "tok", "--data", str(big.parent), "--name", "killed"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until it is writing a temp token file
            if out.is_dir() and any(p.name.startswith(".train.bin") and p.stat().st_size > 0 for p in out.iterdir()):
                break
            time.sleep(0.01)
        else:
            pytest.fail("prepare never started writing")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert not (out / "train.bin").exists()
    assert not (out / "val.bin").exists()
    assert not (out / "meta.json").exists()
    with pytest.raises(WorkbenchError, match="not found"):
        data_info(built, "killed")
    # The next run cleans up and succeeds.
    info = prepare_data(built, "tok", str(big.parent), name="killed")
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "train.bin", "val.bin"]
    assert info.meta["splits"]["train"]["documents"] == 40000


def test_truncated_token_file_is_detected(built, corpus_dir):
    info = ensure_prepared(built, "tok", str(corpus_dir), name="p4")
    with open(info.path / "val.bin", "r+b") as f:
        f.truncate(10)
    with pytest.raises(WorkbenchError, match="does not match meta.json"):
        data_info(built, "p4")


def test_cancel_event_stops_prepare(built, corpus_dir):
    import threading

    from workbench.errors import Cancelled

    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled):
        prepare_data(built, "tok", str(corpus_dir), name="p5", cancel_event=ev)
    assert not built.data_path("p5").exists()  # a failed first prepare leaves no empty folder
    assert not [p for p in built.data_dir().iterdir() if "p5" in p.name]  # nor its lock or temps


def test_a_changed_source_or_tokenizer_is_prepared_again(built, corpus_dir, tmp_path):
    """The data a run gets is always its tokenizer's encoding of the source as it is now: an
    edited file gets a folder of its own (its fingerprint) or, in a folder named by the user, is
    prepared again; a rebuilt tokenizer under the same name re-prepares a named folder instead of
    reusing the old tokens."""
    import shutil

    from workbench.tokenizer.tokenizer import TokenizerSettings
    from workbench.tokenizer.build import build_tokenizer

    src = tmp_path / "src"
    shutil.copytree(corpus_dir, src)
    a = ensure_prepared(built, "tok", str(src))
    assert ensure_prepared(built, "tok", str(src)).path == a.path  # unchanged: reused
    stories = make_stories(300, seed=9)
    write_txt(src / "train.txt", stories)  # the source changes
    b = ensure_prepared(built, "tok", str(src))
    assert b.path != a.path and a.path.is_dir()  # a new folder; the old one is left as it was
    tok = load_tokenizer(built, "tok")
    assert np.array_equal(np.fromfile(b.train.path, dtype=b.dtype).astype(np.int64), _expected(tok, stories))

    # a folder named by the user: the same name, a changed source, prepared again
    named = ensure_prepared(built, "tok", str(src), name="named")
    edited = make_stories(200, seed=11)
    write_txt(src / "train.txt", edited)
    again = ensure_prepared(built, "tok", str(src), name="named")
    assert again.path == named.path
    assert np.array_equal(np.fromfile(again.train.path, dtype=again.dtype).astype(np.int64), _expected(tok, edited))

    # the same tokenizer name, rebuilt with another vocab: the named folder is prepared again
    build_tokenizer(built, "tok2", TokenizerSettings(vocab_size=330, data=str(corpus_dir), sample_mb=5))
    c = ensure_prepared(built, "tok2", str(src), name="retok")
    shutil.rmtree(built.tokenizer_path("tok2"))
    build_tokenizer(built, "tok2", TokenizerSettings(vocab_size=360, data=str(corpus_dir), sample_mb=5))
    d = ensure_prepared(built, "tok2", str(src), name="retok")
    assert d.meta["tokenizer"]["sha256"] != c.meta["tokenizer"]["sha256"]
    tok2 = load_tokenizer(built, "tok2")
    assert np.array_equal(np.fromfile(d.train.path, dtype=d.dtype).astype(np.int64), _expected(tok2, edited))
