"""Tokenizer: lossless round trips, vocab edge cases, the build job (cancel, nothing half-written)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import make_stories, write_txt
from workbench.errors import Cancelled, WorkbenchError
from workbench.tokenizer.tokenizer import (SPACE_MARK, TokenizerSettings, list_tokenizers, load_tokenizer, min_vocab_size, tokenizer_info)
from workbench.tokenizer.build import BuildJob, build_request, build_tokenizer, default_name

TRICKY = [
    "", " ", "  ", "\n", "\n\n\n", "\t", " \t \n ", "a  b   c", "trailing   ", "   leading",
    SPACE_MARK, f"a{SPACE_MARK}b", f"{SPACE_MARK} {SPACE_MARK}", "😀👍🏽", "漢字かな交じり文", "x\r\ny",
    "<s></s><unk><pad>", "<|endoftext|>", "digits 1234567890", "\u00a0nbsp", "e\u0301",
]


@pytest.fixture(scope="module")
def tok(built):
    return load_tokenizer(built, "tok")


def test_folder_holds_model_settings_and_stats(built):
    info = tokenizer_info(built, "tok")
    assert (info.path / "tokenizer.model").is_file()
    assert info.settings["vocab_size"] == 400 and info.settings["byte_fallback"] is True
    st_ = info.stats
    assert st_["vocab_size"] == 400
    assert st_["alphabet_size"] > 20
    assert 1.0 < st_["bytes_per_token"] < 10 and 1.0 < st_["chars_per_token"] < 10
    assert st_["heldout_split"] == "validation"
    assert st_["build_seconds"] > 0
    assert [t.name for t in list_tokenizers(built)] == ["tok"]


@pytest.mark.parametrize("text", TRICKY)
def test_round_trip_tricky(tok, text):
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab ▁\n\t😀漢字é.")), max_size=40) | st.text(max_size=60))
def test_round_trip_property(tok, text):
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode_batch([text])[0] == tok.encode(text)


def test_specials_and_pieces(tok):
    assert tok.specials == {"unk": 0, "bos": 1, "eos": 2, "pad": 3}
    ids = tok.encode("once upon", bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    pieces = tok.pieces("Once upon a time 😀")
    assert "".join(p for _, p in pieces if not p.startswith("<0x")).startswith("Once upon a time")
    assert any(p.startswith("<0x") for _, p in pieces)  # the emoji falls back to bytes
    vocab = tok.vocab()
    assert len(vocab) == 400 and vocab[1]["kind"] == "control" and vocab[4]["kind"] == "byte"


def test_round_trip_every_valid_story(ts_dir, tmp_path):
    from workbench.workspace import Workspace

    w = Workspace.at(tmp_path)
    build_tokenizer(w, "ts", TokenizerSettings(vocab_size=1024, data=str(ts_dir / "train.txt"), sample_mb=4))
    tok = load_tokenizer(w, "ts")
    text = (ts_dir / "valid.txt").read_text(encoding="utf-8")
    stories = [s for s in text.split("<|endoftext|>\n") if s]
    assert len(stories) == 6902
    batch = tok.encode_batch(stories)
    bad = [i for i, (s, ids) in enumerate(zip(stories, batch)) if tok.decode(ids) != s]
    assert bad == []


def test_too_small_vocab_is_refused_with_the_minimum(corpus_dir, ws):
    info_alpha = None
    with pytest.raises(WorkbenchError) as e:
        build_tokenizer(ws, "small", TokenizerSettings(vocab_size=100, data=str(corpus_dir)))
    alphabet = len(set((corpus_dir / "train.txt").read_text(encoding="utf-8").replace("\n<|endoftext|>\n", "\n").strip("\n")))
    expected = min_vocab_size(alphabet, True)
    assert f"the minimum is {expected}" in str(e.value) and "--no-byte-fallback" in str(e.value)
    assert not ws.tokenizer_path("small").exists()
    del info_alpha


def test_char_level_build_at_the_exact_minimum(corpus_dir, ws):
    text = (corpus_dir / "train.txt").read_text(encoding="utf-8")
    docs = [d.strip("\n") for d in text.split("<|endoftext|>\n") if d.strip()]
    alphabet = len(set("".join(docs)))
    n = min_vocab_size(alphabet, byte_fallback=False)
    info = build_tokenizer(ws, "char", TokenizerSettings(vocab_size=n, byte_fallback=False, data=str(corpus_dir)))
    assert info.stats["vocab_size"] == n
    tok = load_tokenizer(ws, "char")
    sample = docs[0]
    assert tok.decode(tok.encode(sample)) == sample
    with pytest.raises(WorkbenchError, match=f"the minimum is {n}"):
        build_tokenizer(ws, "char2", TokenizerSettings(vocab_size=n - 1, byte_fallback=False, data=str(corpus_dir)))


def test_too_large_vocab_is_explained(tmp_path, ws):
    p = write_txt(tmp_path / "tiny.txt", ["ab ab ab", "ba ba"] * 3)
    with pytest.raises(WorkbenchError, match="too large for this sample: at most"):
        build_tokenizer(ws, "big", TokenizerSettings(vocab_size=5000, data=str(p)))


@pytest.mark.parametrize("bad,match", [
    ({"vocab_size": 3}, "vocab_size 3 is out of range"),
    ({"vocab_size": 40000}, "vocab_size 40000 is out of range"),
    ({"sample_mb": 0}, "sample_mb 0 is out of range"),
])
def test_invalid_settings(corpus_dir, ws, bad, match):
    with pytest.raises(WorkbenchError, match=match):
        BuildJob(ws, "x", TokenizerSettings(data=str(corpus_dir), **bad))


def test_bad_name_and_existing_name(built, corpus_dir):
    with pytest.raises(WorkbenchError, match="name '../evil' is not allowed"):
        BuildJob(built, "../evil", TokenizerSettings(data=str(corpus_dir)))
    with pytest.raises(WorkbenchError, match="already exists"):
        BuildJob(built, "tok", TokenizerSettings(data=str(corpus_dir)))


def test_missing_tokenizer_lists_what_exists(built):
    with pytest.raises(WorkbenchError, match="tokenizer 'nope' not found .*built tokenizers: tok"):
        tokenizer_info(built, "nope")


def test_cancel_leaves_nothing(tmp_path, ws):
    import os
    import signal

    p = write_txt(tmp_path / "big.txt", make_stories(20000, seed=9))
    job = BuildJob(ws, "c", TokenizerSettings(vocab_size=2000, data=str(p))).start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        evs = job.poll(timeout=0.05)
        if any(e.kind == "progress" for e in evs):
            break
    # hold the child where it is (mid-build, however fast this machine), then cancel it
    os.kill(job.proc.pid, signal.SIGSTOP)
    job.poll(timeout=0.2)
    assert not job.finished
    job.cancel()
    assert not job.proc.is_alive()
    assert not ws.tokenizer_path("c").exists()
    assert [p.name for p in ws.tokenizers_dir().iterdir()] == []


def test_wait_raises_cancelled_from_event(tmp_path, ws):
    import threading

    p = write_txt(tmp_path / "big.txt", make_stories(20000, seed=9))
    ev = threading.Event()
    ev.set()
    with pytest.raises(Cancelled):
        build_tokenizer(ws, "c", TokenizerSettings(vocab_size=2000, data=str(p)), cancel_event=ev)
    assert not ws.tokenizer_path("c").exists()


def test_overwrite_replaces(built, corpus_dir, tmp_path):
    import shutil

    from workbench.workspace import Workspace

    w = Workspace.at(tmp_path)
    shutil.copytree(built.tokenizer_path("tok"), w.tokenizer_path("tok"))
    info = build_tokenizer(w, "tok", TokenizerSettings(vocab_size=450, data=str(corpus_dir)), overwrite=True)
    assert info.stats["vocab_size"] == 450
    assert sorted(p.name for p in w.tokenizers_dir().iterdir()) == ["tok"]


def test_the_form_and_the_cli_ask_for_a_build_alike():
    """The Tokenizer pane's text and `workbench tokenizer build`'s options: one request."""
    form = build_request(" stories.txt ", "512", "10", True, "")
    cli = build_request("stories.txt", 512, 10.0, True, "stories-512")
    assert form == cli == ("stories-512", TokenizerSettings(vocab_size=512, sample_mb=10.0, data="stories.txt"))
    assert build_request("", "600", "1", False)[0] == "tinystories-600"  # the hub id by default
    assert default_name("/data/My Corpus.jsonl", 99) == "my-corpus-99"


def test_form_text_is_refused_naming_the_field():
    allowed = {"vocab size": "an integer from 5 to 32768", "sample MB": "a number above 0, up to 4096"}
    for vocab, sample, bad in [("99999", "10", "vocab size"), ("4", "10", "vocab size"), ("5.5", "10", "vocab size"),
                               ("512", "0", "sample MB"), ("512", "nan", "sample MB")]:
        with pytest.raises(WorkbenchError) as e:
            build_request("x.txt", vocab, sample, True)
        text = vocab if bad == "vocab size" else sample
        assert str(e.value) == f"{bad} {text!r} is not allowed: expected {allowed[bad]}"
