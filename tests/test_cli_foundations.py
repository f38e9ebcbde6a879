"""The tokenizer and data commands end to end, through `workbench` itself."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from workbench.cli import main


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_build_list_show_encode_prepare_info(tmp_path, corpus_dir, capsys):
    ws = tmp_path / "w"
    assert main(["--workspace", str(ws), "tokenizer", "build", "--data", str(corpus_dir), "--vocab-size", "420", "--name", "t1"]) == 0
    assert "built tokenizer t1" in capsys.readouterr().out
    assert sorted(p.name for p in ws.iterdir()) == ["tokenizers"]  # folders are made on demand

    assert main(["--workspace", str(ws), "tokenizer", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in listed] == ["t1"] and listed[0]["stats"]["vocab_size"] == 420

    assert main(["--workspace", str(ws), "tokenizer", "show", "t1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["settings"]["data"] == str(corpus_dir)

    assert main(["--workspace", str(ws), "tokenizer", "encode", "t1", "Once upon a time", "--json"]) == 0
    enc = json.loads(capsys.readouterr().out)
    assert enc["count"] == len(enc["ids"]) == len(enc["pieces"]) and "".join(enc["pieces"]) == "Once upon a time"

    assert main(["--workspace", str(ws), "data", "prepare", "--tokenizer", "t1", "--data", str(corpus_dir), "--json"]) == 0
    prepared = json.loads(capsys.readouterr().out)
    assert prepared["name"].startswith("t1-corpus")
    assert main(["--workspace", str(ws), "data", "info", prepared["name"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["splits"]["train"]["tokens"] > 0


def test_workspace_defaults_to_current_folder(tmp_path, corpus_dir):
    r = run("tokenizer", "build", "--data", str(corpus_dir), "--vocab-size", "400", "--name", "here", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "tokenizers" / "here" / "tokenizer.model").is_file()


@pytest.mark.parametrize("args,needle", [
    (["tokenizer", "build", "--data", "/no/such/file.txt", "--name", "x"], "no such file or folder"),
    (["tokenizer", "show", "missing"], "tokenizer 'missing' not found"),
    (["data", "prepare", "--tokenizer", "missing", "--data", "/tmp"], "tokenizer 'missing' not found"),
    (["data", "info", "nothing"], "data 'nothing' not found"),
    (["tokenizer", "build", "--data", "/tmp", "--name", "a/b"], "is not allowed"),
])
def test_errors_are_one_line_without_traceback(tmp_path, args, needle):
    r = run("--workspace", str(tmp_path), *args)
    assert r.returncode == 2
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_help_everywhere():
    for args in ([], ["tokenizer"], ["tokenizer", "build"], ["data", "prepare"], ["data", "info"]):
        r = run(*args, "--help")
        assert r.returncode == 0 and "usage:" in r.stdout


@pytest.mark.parametrize("group", ["tokenizer", "data", "plan", "trace", "train", "sweep", "eval", "runs",
                                   "generate", "chat", "export", "bench"])
def test_every_help_reads_as_plain_text(group, capsys):
    from workbench.cli import main

    with pytest.raises(SystemExit) as e:
        main([group, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "``" not in out and out.count("`") % 2 == 0, out[:400]


def test_a_caught_error_is_one_line_for_a_person():
    from workbench.errors import ConfigError, user_message

    assert user_message(ConfigError("model.dim = 0 is not allowed")) == "model.dim = 0 is not allowed"
    assert user_message(KeyError("x")) == "KeyError: 'x'"


@pytest.mark.parametrize("args,usage", [
    (["train", "--bogus"], "usage: workbench train "),
    (["tokenizer", "encode", "tok", "hi", "--bogus"], "usage: workbench tokenizer encode "),
    (["runs", "list", "--x", "1"], "usage: workbench runs list "),
    (["--bogus", "runs", "list"], "usage: workbench runs list "),
])
def test_an_unknown_option_gets_the_usage_of_the_command_it_was_given_to(args, usage, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage), err
    unknown = [a for a in args if a.startswith("--")] + (["1"] if "--x" in args else [])
    assert err.strip().splitlines()[-1].endswith(f"error: unrecognized arguments: {' '.join(unknown)}")


def test_tokenizer_decode_gives_back_the_encoded_text(built, capsys):
    from workbench.tokenizer.tokenizer import load_tokenizer

    text = "Once upon a time, Lily found a red ball."
    ids = load_tokenizer(built, "tok").encode(text)
    ws = ["--workspace", str(built.root)]
    assert main([*ws, "tokenizer", "decode", "tok", *map(str, ids[:3]), ",".join(map(str, ids[3:]))]) == 0
    assert capsys.readouterr().out == text + "\n"
    assert main([*ws, "tokenizer", "decode", "tok", str(ids[0]), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ids"] == ids[:1] and out["text"] == text[: len(out["text"])] and out["pieces"]
    for bad, said in (("400", "token id 400 is out of range: tokenizer 'tok' has ids 0 to 399"),
                      ("x1", "token id 'x1' is not a whole number")):
        assert main([*ws, "tokenizer", "decode", "tok", "5", bad]) == 2
        assert capsys.readouterr().err.strip() == f"error: {said}"


def test_long_commands_print_plain_progress_lines_off_a_terminal(built, corpus_dir):
    """stderr to a pipe (a log, nohup, CI): a line when the work starts and one each tenth of it
    (the 30-second clock is set out of reach here); --quiet silences them."""
    import os
    import re

    from helpers import SETS

    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_QUIET"}
    env["WORKBENCH_PROGRESS_EVERY"] = "100000"
    base = [sys.executable, "-m", "workbench", "--workspace", str(built.root)]
    train = ["train", "--config", "debug", "--tokenizer", "tok", "--data", str(corpus_dir), *SETS,
             "--set", "train.max_steps=40", "--set", "train.num_threads=1"]
    r = subprocess.run([*base, *train, "--name", "progress"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    shares = [float(m) for m in re.findall(r"^train +([\d.]+)%  ETA ", r.stderr, flags=re.M)]
    assert shares[0] < 10 and shares[-1] == 100.0, r.stderr
    tenths = [int(s // 10) for s in shares[1:]]
    assert tenths == sorted(set(tenths)) and len(tenths) >= 9, shares  # one line per tenth, in order
    assert "\r" not in r.stderr
    r = subprocess.run([*base, "eval", "progress"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and re.search(r"^eval  100\.0%  ETA 00:00  elapsed \d\d:\d\d  batch (\d+) of \1$",
                                            r.stderr, flags=re.M), r.stderr
    r = subprocess.run([*base, "--quiet", *train, "--name", "progress-quiet"], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0 and "%  ETA" not in r.stderr, r.stderr


def test_setup_installs_nothing_when_nothing_it_depends_on_changed(tmp_path):
    """scripts/app relaunches straight into the app: scripts/setup --check passes while the
    stamp matches pyproject.toml, constraints.txt and the extras, and fails when any changes."""
    import shutil
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    stamp = repo / ".venv" / ".setup-stamp"
    if not stamp.is_file():
        pytest.skip("this .venv was not made by scripts/setup")
    for f in ("scripts/setup", "pyproject.toml", "constraints.txt"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / f, tmp_path / f)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / ".venv" / "bin" / "workbench").symlink_to(repo / ".venv" / "bin" / "workbench")
    shutil.copy(stamp, tmp_path / ".venv" / ".setup-stamp")

    def check(*extras):
        return subprocess.run([str(tmp_path / "scripts" / "setup"), "--check", *extras]).returncode

    installed = stamp.read_text().split()[1:] or [""]
    assert check(installed[0]) == 0 and check() == 0
    assert check("not-an-extra") == 1
    with open(tmp_path / "pyproject.toml", "a") as f:
        f.write("\n# changed\n")
    assert check() == 1
