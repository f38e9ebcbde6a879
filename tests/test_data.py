"""Data sources: every source kind yields the same documents; bad input gets a one-line error."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers import make_stories, write_txt
from workbench.data.sources import HOLDOUT_STRIDE, resolve_source
from workbench.errors import WorkbenchError


def test_txt_splits_on_endoftext_lines(tmp_path):
    stories = ["First story.\nSecond line.", "  Indented start\n\nwith blank line", "Third 😀 漢字"]
    p = write_txt(tmp_path / "a.txt", stories)
    src = resolve_source(str(p))
    docs = list(src.documents("train")) + list(src.documents("validation"))
    assert sorted(docs) == sorted(stories)


def test_folder_uses_valid_files_for_validation(corpus_dir):
    src = resolve_source(str(corpus_dir))
    assert src.has_validation
    assert [p.name for p in src.files["train"]] == ["train.txt"]
    assert [p.name for p in src.files["validation"]] == ["valid.txt"]
    assert list(src.documents("validation")) == make_stories(60, seed=2)


def test_single_file_holds_out_every_hundredth_document(tmp_path):
    stories = make_stories(350, seed=3)
    src = resolve_source(str(write_txt(tmp_path / "one.txt", stories)))
    val = list(src.documents("validation"))
    train = list(src.documents("train"))
    assert val == [s for i, s in enumerate(stories) if i % HOLDOUT_STRIDE == 1]
    assert len(train) + len(val) == len(stories)
    # the split is by position: train is exactly every other document, in order
    assert train == [s for i, s in enumerate(stories) if i % HOLDOUT_STRIDE != 1]


def test_jsonl_and_parquet_folder_through_datasets(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    train, val = make_stories(40, seed=4), make_stories(10, seed=5)
    d = tmp_path / "hf"
    (d / "data").mkdir(parents=True)
    pq.write_table(pa.table({"story": train, "n": list(range(40))}), d / "data" / "train-00000-of-00001.parquet")
    with open(d / "data" / "validation-00000-of-00001.jsonl", "w", encoding="utf-8") as f:
        for s in val:
            f.write(json.dumps({"story": s}) + "\n")
    src = resolve_source(str(d), text_column="story")
    assert list(src.documents("train")) == train
    assert list(src.documents("validation")) == val


def test_save_to_disk_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    train, val = make_stories(30, seed=6), make_stories(5, seed=7)
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": train}),
        "validation": datasets.Dataset.from_dict({"text": val}),
    })
    dd.save_to_disk(str(tmp_path / "saved"))
    src = resolve_source(str(tmp_path / "saved"))
    assert src.kind == "saved"
    assert list(src.documents("train")) == train
    assert list(src.documents("validation")) == val


def test_real_sample_counts(ts_dir):
    src = resolve_source(str(ts_dir))
    assert sum(1 for _ in src.documents("validation")) == 6902
    assert sum(1 for _ in src.documents("train")) == 11171


# --- bad input ---------------------------------------------------------------------------------


def _err(spec, **kw) -> str:
    with pytest.raises(WorkbenchError) as e:
        src = resolve_source(spec, **kw)
        list(src.documents("train"))
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_missing_path(tmp_path):
    msg = _err(str(tmp_path / "nope.txt"))
    assert "no such file or folder" in msg and "nope.txt" in msg


def test_empty_file(tmp_path):
    (tmp_path / "e.txt").write_text("")
    assert "is empty" in _err(str(tmp_path / "e.txt"))


def test_binary_file(tmp_path):
    (tmp_path / "b.txt").write_bytes(b"abc\x00\x01\x02" * 100)
    assert "binary" in _err(str(tmp_path / "b.txt"))


def test_non_utf8_file(tmp_path):
    (tmp_path / "l1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    msg = _err(str(tmp_path / "l1.txt"))
    assert "not UTF-8" in msg and "0xe9" in msg


def test_non_utf8_deep_in_file(tmp_path):
    good = ("x" * 100 + "\n<|endoftext|>\n") * 2000
    (tmp_path / "late.txt").write_bytes(good.encode() + b"bad \xff byte\n")
    msg = _err(str(tmp_path / "late.txt"))
    assert "not UTF-8" in msg and f"offset {len(good.encode()) + 4}" in msg


def test_unsupported_extension(tmp_path):
    (tmp_path / "x.csv").write_text("text\nhello\n")
    msg = _err(str(tmp_path / "x.csv"))
    assert "unsupported file type '.csv'" in msg and ".parquet" in msg


def test_missing_column_jsonl(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"body": "hello"}\n{"body": "world"}\n')
    msg = _err(str(tmp_path / "d.jsonl"))
    assert "no column 'text'" in msg and "body" in msg and "--text-column" in msg


def test_missing_column_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"content": ["a", "b"]}), tmp_path / "d.parquet")
    msg = _err(str(tmp_path / "d.parquet"), text_column="text")
    assert "no column 'text'" in msg and "content" in msg


def test_folder_without_data_files(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.md").write_text("hi")
    assert "holds no data files" in _err(str(tmp_path / "d"))


def test_hub_offline_fails_fast_with_local_hint(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "workbench", "--workspace", str(tmp_path), "tokenizer", "build",
         "--data", "roneneldan/TinyStories", "--name", "t"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "roneneldan/TinyStories" in r.stderr and "--data path/to" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "tokenizers" / "t").exists()


def test_offline_train_from_a_hub_id_is_one_line_and_writes_no_run(built, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        [sys.executable, "-m", "workbench", "--workspace", str(built.root), "train", "--config", "debug",
         "--tokenizer", "tok", "--set", "model.vocab_size=400", "--data", "roneneldan/TinyStories",
         "--name", "offline"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.strip().splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "roneneldan/TinyStories" in lines[0] and "HF_HUB_OFFLINE is set" in lines[0]
    assert "Traceback" not in r.stderr
    assert not built.run_path("offline").exists()


@pytest.fixture
def no_network(monkeypatch):
    """The hub probe's socket, replaced: no test reaches the network."""
    import socket

    import workbench.data.sources as data

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(data, "HUB_PROBE_SECONDS", 0.3)
    release = __import__("threading").Event()
    calls = []

    def install(behaviour):
        def fake(address, timeout=None, *a, **k):
            calls.append((address, timeout))
            if behaviour == "hang":  # a blackholed connection: nothing ever answers
                release.wait(30)
                raise socket.timeout("timed out")
            raise socket.gaierror(-2, "Name or service not known")
        monkeypatch.setattr(data.socket, "create_connection", fake)
        return calls
    yield install
    release.set()


def test_hub_with_a_blackholed_connection_fails_on_its_own_timeout(no_network, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example:8443")
    calls = no_network("hang")
    msg = _err("some-user/some-dataset")
    assert calls == [(("hub.example", 8443), 0.3)]  # the probe's own timeout, not the OS's
    assert "cannot load hub dataset 'some-user/some-dataset'" in msg and "local copy" in msg
    assert "no answer from hub.example within 0.3 s" in msg


def test_hub_whose_name_does_not_resolve_says_so(no_network):
    calls = no_network("dns")
    msg = _err("some-user/some-dataset")
    assert calls and calls[0][0] == ("huggingface.co", 443)
    assert "cannot reach huggingface.co" in msg and "local copy" in msg


def test_hub_split_selection_and_held_out_fallback():
    # The same split logic serves hub and saved datasets; rows are dicts as datasets yields them.
    from workbench.data.sources import split_stream

    rows = [{"text": f"story {i}"} for i in range(250)]
    only_train = {"train": rows}
    val = list(split_stream(only_train, "validation", "hub", "text"))
    train = list(split_stream(only_train, "train", "hub", "text"))
    assert val == ["story 1", "story 101", "story 201"]
    assert len(train) == 247 and not set(val) & set(train)
    with_val = {"train": rows, "validation": [{"text": "v"}]}
    assert list(split_stream(with_val, "validation", "hub", "text")) == ["v"]
    assert len(list(split_stream(with_val, "train", "hub", "text"))) == 250


# --- data check: every problem of a source, with where it is ----------------------------------


def _check(tmp_path, capsys, *args) -> tuple[int, list[str]]:
    from workbench.cli import main

    code = main(["--workspace", str(tmp_path / "ws"), "data", "check", *args])
    return code, capsys.readouterr().out.strip().splitlines()


def test_data_check_names_every_problem_of_a_text_file_with_its_byte_offset(tmp_path, capsys):
    good = b"Once upon a time.\n<|endoftext|>\n"
    raw = (good + b"<|endoftext|>\n"              # an empty document right after a separator
           + b"A bad \xff byte.\n<|endoftext|>\n"  # not UTF-8
           + b"   \n<|endoftext|>\n"              # only whitespace
           + b"A NUL \x00 here.\n<|endoftext|>\n"
           + b"x" * (1 << 20) + b"\xc3\xa9" + b"y" * 10 + b"\n<|endoftext|>\n")  # one line over 1 MiB
    f = tmp_path / "bad.txt"
    f.write_bytes(raw)
    code, lines = _check(tmp_path, capsys, str(f))
    empty1 = len(good)
    bad = raw.index(b"\xff")
    empty2 = raw.index(b"   \n")
    nul = raw.index(b"\x00")
    long = raw.index(b"xxxx")
    assert code == 1
    assert lines[0].startswith("characters: ") and lines[1] == "control characters: '\\x00' 1"
    assert lines[2:-1] == [
        f"{f}: byte {empty1:,}: an empty document (nothing since the last separator)",
        f"{f}: byte {bad:,}: byte 0xff is not UTF-8",
        f"{f}: byte {empty2:,}: an empty document (nothing since the last separator)",
        f"{f}: byte {nul:,}: a NUL byte: this looks like a binary file, not UTF-8 text",
        f"{f}: byte {long:,}: a line of more than 1,048,576 bytes (training cuts it into pieces; is this file "
        "one text without line breaks?)"]
    assert lines[-1] == f"5 problems in 1 file: 4 documents, {len(raw):,} bytes read"
    assert f.read_bytes() == raw  # changed nothing


def test_data_check_reads_json_lines_parquet_and_folders(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "src"
    d.mkdir()
    rows = [b'{"text": "fine"}\n', b'{"text": ""}\n', b'not json\n', b'{"body": "x"}\n', b'[1]\n', b'{"text": 5}\n']
    (d / "a.jsonl").write_bytes(b"".join(rows))
    pq.write_table(pa.table({"text": ["one", "", None, "two"]}), d / "b.parquet")
    (d / "c.txt").write_text("para one.\n\npara two.\n\npara three.\n")
    code, lines = _check(tmp_path, capsys, str(d))
    at = [sum(map(len, rows[:i])) for i in range(len(rows))]
    assert code == 1
    read = "fine" + "one" + "two" + "para one.\n\npara two.\n\npara three.\n"  # the documents' text
    assert lines.pop(0).startswith(f"characters: {len(set(read))} distinct in {len(read)}; 0.00% outside ASCII")
    assert lines == [
        f"{d / 'a.jsonl'}:2: byte {at[1]}: an empty 'text'",
        f"{d / 'a.jsonl'}:3: byte {at[2]}: not JSON (Expecting value)",
        f"{d / 'a.jsonl'}:4: byte {at[3]}: no 'text' field (it has body)",
        f"{d / 'a.jsonl'}:5: byte {at[4]}: a list, not an object with a 'text' field",
        f"{d / 'a.jsonl'}:6: byte {at[5]}: 'text' is a number, not text",
        f"{d / 'b.parquet'}: row 1: an empty text",
        f"{d / 'b.parquet'}: row 2: null",
        f"{d / 'c.txt'}: no <|endoftext|> line in 3 paragraphs: the whole file would be one document (training "
        "cuts it at blank lines past 1 MB)",
        lines[-1]]
    assert lines[-1].startswith("8 problems in 3 files: 4 documents")
    code, lines = _check(tmp_path, capsys, str(d / "b.parquet"), "--text-column", "story")
    assert code == 1 and lines[0] == f"{d / 'b.parquet'}: no column 'story' (its columns: text)"


def test_data_check_of_a_clean_source_and_of_what_it_cannot_read(tmp_path, corpus_dir, capsys):
    code, lines = _check(tmp_path, capsys, str(corpus_dir))
    assert code == 0 and lines[-1].startswith("no problems in 2 files: 660 documents")
    from workbench.cli import main

    assert main(["--workspace", str(tmp_path / "ws"), "data", "check", "some/hub-id"]) == 2
    assert "`data check` reads local files" in capsys.readouterr().err


def test_data_info_gives_document_lengths_byte_fallback_and_frequent_tokens(trained, corpus_dir, capsys):
    """Checked against the documents themselves: each encoded here (BOS … EOS, as prepare does)
    and measured in UTF-8 bytes."""
    import numpy as np

    from workbench.cli import main
    from workbench.data.sources import resolve_source
    from workbench.runs.folder import get_run
    from workbench.tokenizer.tokenizer import load_tokenizer

    name = get_run(trained, "real").raw_config()["data"]["name"]
    assert main(["--workspace", str(trained.root), "data", "info", name, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)["stats"]
    tok = load_tokenizer(trained, "tok")
    docs = list(resolve_source(str(corpus_dir)).documents("train"))
    ids = [tok.encode(d, bos=True, eos=True) for d in docs]
    lengths = np.array([len(x) for x in ids])
    nbytes = np.array([len(d.encode("utf-8")) for d in docs])
    s = stats["train"]
    assert s["documents"] == len(docs) and s["bytes"] == int(nbytes.sum())
    assert s["tokens_per_document"] == {"min": int(lengths.min()), "median": float(np.median(lengths)),
                                        "p95": float(np.percentile(lengths, 95)), "max": int(lengths.max())}
    assert s["bytes_per_document"]["max"] == int(nbytes.max()) and s["bytes_per_document"]["min"] == int(nbytes.min())
    flat = [i for x in ids for i in x]
    fallback = sum(1 for i in flat if tok.sp.is_byte(i)) / len(flat)
    assert s["byte_fallback_share"] == pytest.approx(fallback)
    counts = np.bincount(flat, minlength=tok.vocab_size)
    assert [r["id"] for r in s["top"]] == list(np.argsort(-counts, kind="stable")[:10])
    assert s["top"][0]["piece"] == tok.surface(s["top"][0]["id"])
    assert main(["--workspace", str(trained.root), "data", "info", name]) == 0
    assert "tokens each: min " in capsys.readouterr().out


@pytest.mark.parametrize("chunk", [1, 7, 100])
def test_data_stats_are_the_same_read_in_small_chunks(trained, monkeypatch, chunk):
    """Documents cut across reads (and a BOS as a chunk's first or last token) are counted whole."""
    from workbench.data import stats
    from workbench.data.tokens import data_info
    from workbench.runs.folder import get_run
    from workbench.tokenizer.tokenizer import load_tokenizer

    info = data_info(trained, get_run(trained, "real").raw_config()["data"]["name"])
    tok = load_tokenizer(trained, "tok")
    whole = stats.data_stats(info, tok)
    monkeypatch.setattr(stats, "CHUNK", chunk)
    assert stats.data_stats(info, tok) == whole


def test_data_check_counts_the_character_set_of_the_documents(tmp_path, capsys):
    """The characters of the documents (not the separators), counted here independently: how
    many distinct, the share outside ASCII, the rarest first, control characters by count."""
    import collections
    import json

    docs = ["Once upon a time, Tom saw a café.\n", "Lily said “hi” 😀\tand\x07 left.\n", "The end.\n"]
    f = tmp_path / "s.txt"
    f.write_text("<|endoftext|>\n".join(docs), encoding="utf-8")
    want = collections.Counter("".join(docs))
    code, lines = _check(tmp_path, capsys, str(f))
    assert code == 0
    non_ascii = sum(n for c, n in want.items() if ord(c) > 127) / sum(want.values())
    rarest = sorted(want.items(), key=lambda kv: (kv[1], kv[0]))[:10]
    assert lines[0] == (f"characters: {len(want)} distinct in {sum(want.values())}; {100 * non_ascii:.2f}% outside "
                        "ASCII; rarest: " + ", ".join(f"{c!r} {n}" for c, n in rarest))
    assert lines[1] == "control characters: '\\x07' 1"
    from workbench.cli import main

    assert main(["--workspace", str(tmp_path), "data", "check", str(f), "--json"]) == 0
    cs = json.loads(capsys.readouterr().out)["charset"]
    assert cs["distinct"] == len(want) and cs["characters"] == sum(want.values())
    assert cs["rarest"] == [list(x) for x in rarest] and cs["control"] == [["\x07", 1]]
