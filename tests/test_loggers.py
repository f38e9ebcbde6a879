"""train.log_to: tiny runs trained by the real engine send their metrics rows to TensorBoard, wandb
(offline) and trackio, and each tool's own reader finds every scalar of every metrics.jsonl row at
its step, once, also after a resume; a failing tool never stops training; a missing package or a
bad value is refused in one line."""

from __future__ import annotations

import glob
import json
import os
import struct
import sys
import tempfile
import zlib
from collections import defaultdict
from pathlib import Path

import pytest

# trackio reads its store's folder once, when it is imported: a folder of this session's, never
# the user's ~/.cache/huggingface/trackio
os.environ["TRACKIO_DIR"] = tempfile.mkdtemp(prefix="workbench-test-trackio-")

from workbench.cli import main  # noqa: E402
from workbench.config.schema import TrainConfig, config_from_dict  # noqa: E402
from workbench.config.overrides import parse_overrides  # noqa: E402
from workbench.errors import ConfigError, WorkbenchError  # noqa: E402
from workbench.runs.folder import read_jsonl  # noqa: E402
from workbench.training import loggers  # noqa: E402
from workbench.training.events import Notice  # noqa: E402
from workbench.training.trainer import Trainer  # noqa: E402

from helpers import SETS, tiny_config  # noqa: E402

ALL = "tensorboard,wandb,trackio"


@pytest.fixture(autouse=True)
def wandb_offline(monkeypatch, tmp_path):
    """wandb offline whatever this machine is logged in to, its own folders in the test's."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))


def _train(ws, corpus_dir, name, log_to=ALL, **train):
    evs = []
    t = Trainer.new(ws, tiny_config(log_to=log_to, **train), "tok", str(corpus_dir), name=name, on_event=evs.append)
    return t, evs


def _tools(log_to):
    for name in log_to.split(","):
        pytest.importorskip(name)


# --- the oracle and each tool's own reader -------------------------------------------------


def expected(run_dir: Path) -> dict:
    """(tag, step) -> value of every number of every train and eval row of metrics.jsonl, and
    of every layer's figure in health.jsonl (``health/QUANTITY/L<i>``)."""
    out = {}
    for row in read_jsonl(run_dir / "metrics.jsonl"):
        if row["kind"] in ("train", "eval"):
            for k, v in row.items():
                if k not in ("kind", "step") and isinstance(v, (int, float)) and not isinstance(v, bool):
                    assert (f"{row['kind']}/{k}", row["step"]) not in out
                    out[(f"{row['kind']}/{k}", row["step"])] = v
    for row in read_jsonl(run_dir / "health.jsonl"):
        for q in ("grad_norm", "update_ratio", "act_rms", "attn_entropy"):
            for i, v in enumerate(row[q]):
                out[(f"health/{q}/L{i}", row["step"])] = v
    return out


def tensorboard_values(run_dir: Path) -> dict:
    """(tag, step) -> [values], every scalar event of every event file, read by tensorboard's
    own event-file reader (raw events: nothing purged or merged on the way)."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    out = defaultdict(list)
    files = sorted(glob.glob(str(run_dir / "tensorboard" / "**" / "events.out.tfevents.*"), recursive=True))
    assert files, "no TensorBoard event file"
    for path in files:
        for ev in LegacyEventFileLoader(path).Load():
            for v in ev.summary.value:
                out[(v.tag, ev.step)].append(v.simple_value)
    return out


def wandb_records(run_dir: Path) -> list:
    """Every record of every offline run file ``<run>/wandb/offline-run-*/run-*.wandb`` (``latest-run`` links one of them), parsed with wandb's
    own protobuf (``wandb_internal_pb2.Record``). The framing is the transaction log's: a
    ``:W&B`` header, then 32 KiB blocks of chunks with a 7-byte header (crc32, length, type)."""
    from wandb.proto import wandb_internal_pb2 as pb

    files = sorted(glob.glob(str(run_dir / "wandb" / "*run-*" / "run-*.wandb")))
    assert files, "no wandb run file"
    records = []
    for path in files:
        data = Path(path).read_bytes()
        assert data[:4] == b":W&B"
        pos, block, pending = 7, 32768, b""
        while pos + 7 <= len(data):
            if block - pos % block < 7:  # a block's tail too short for a header is padding
                pos += block - pos % block
                continue
            crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
            if kind == 0 and n == 0:
                break
            chunk = data[pos + 7:pos + 7 + n]
            assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc, f"{path}: bad chunk at {pos}"
            pos += 7 + n
            pending = chunk if kind in (1, 2) else pending + chunk
            if kind in (1, 4):  # full, or last of several
                rec = pb.Record()
                rec.ParseFromString(pending)
                records.append(rec)
    return records


def wandb_values(run_dir: Path) -> dict:
    out = defaultdict(list)
    for rec in wandb_records(run_dir):
        if rec.WhichOneof("record_type") == "history":
            step = rec.history.step.num
            for item in rec.history.item:
                key = item.key or "/".join(item.nested_key)
                if not key.startswith("_"):  # wandb's own _step, _runtime, _timestamp
                    out[(key, step)].append(json.loads(item.value_json))
    return out


def trackio_values(run_dir: Path) -> dict:
    """Read from trackio's local store with trackio's own API, by the run id the run folder keeps."""
    import trackio
    from trackio.sqlite_storage import SQLiteStorage

    rec = json.loads((run_dir / loggers.TRACKIO_RECORD).read_text())
    assert [r.id for r in trackio.Api().runs(rec["project"]) if r.name == run_dir.name] == [rec["id"]]
    out = defaultdict(list)
    for log in SQLiteStorage.get_logs(rec["project"], rec["name"], run_id=rec["id"]):
        for k, v in log.items():
            if k not in ("step", "timestamp"):
                out[(k, log["step"])].append(v)
    return out


READERS = {"tensorboard": tensorboard_values, "wandb": wandb_values, "trackio": trackio_values}


def assert_same(run_dir: Path, tool: str) -> None:
    """The tool holds every (tag, step) of metrics.jsonl once, with its value, and nothing else."""
    want, got = expected(run_dir), READERS[tool](run_dir)
    assert want, "metrics.jsonl is empty"
    assert sorted(set(got) - set(want)) == [], f"{tool} has scalars metrics.jsonl lacks"
    assert sorted(set(want) - set(got)) == [], f"{tool} lacks scalars of metrics.jsonl"
    twice = {k: v for k, v in got.items() if len(v) != 1}
    assert twice == {}, f"{tool} holds these more than once"
    rel = 1e-6 if tool == "tensorboard" else 1e-12  # TensorBoard keeps float32
    wrong = {k: (got[k][0], v) for k, v in want.items() if got[k][0] != pytest.approx(v, rel=rel)}
    assert wrong == {}, f"{tool} values differ from metrics.jsonl"


# --- every scalar at every step ------------------------------------------------------------


def test_every_row_reaches_every_tool(built, corpus_dir):
    _tools(ALL)
    t, evs = _train(built, corpus_dir, "logged", max_steps=12, eval_interval=6, log_interval=2, health_interval=4)
    assert t.run()["state"] == "finished"
    run_dir = built.run_path("logged")
    steps = {(r["kind"], r["step"]) for r in read_jsonl(run_dir / "metrics.jsonl")}
    assert {("eval", 6), ("eval", 12), ("train", 2), ("train", 12)} <= steps
    assert [r["step"] for r in read_jsonl(run_dir / "health.jsonl")] == [4, 8, 12]
    for tool in ("tensorboard", "wandb", "trackio"):
        assert_same(run_dir, tool)
    # wandb keeps the run's name and config
    (run,) = [r.run for r in wandb_records(run_dir) if r.WhichOneof("record_type") == "run"]
    assert run.display_name == "logged"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["train"]["log_to"] == ALL and config["model"]["dim"] == 32
    # one line says where each tool writes, and nothing says a tool failed
    texts = [e.text for e in evs if isinstance(e, Notice)]
    (where,) = [x for x in texts if x.startswith("metrics also go to")]
    assert str(run_dir / "tensorboard") in where and "wandb" in where and "trackio" in where
    assert not [x for x in texts if "logging" in x]


def test_resume_gives_each_step_once(built, corpus_dir):
    """A run that dies in step 9 after its checkpoint at 6 has written rows 7 and 8 to every tool;
    resumed, it redoes them: each tool holds each step once, equal to metrics.jsonl."""
    _tools(ALL)

    def die(t):  # a step hook runs before the step's row is written
        if t.step == 9:
            raise WorkbenchError("killed in step 9")

    t, _ = _train(built, corpus_dir, "resumed", max_steps=12, eval_interval=4, checkpoint_interval=6, health_interval=2)
    t.step_hooks.append(die)
    s = t.run()
    assert s["state"] == "failed" and s["checkpoint"] == "step_000006"
    run_dir = built.run_path("resumed")
    assert max(r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")) == 8
    for tool in READERS:  # the dead attempt's rows 7 and 8 reached every tool
        assert ("train/loss", 8) in READERS[tool](run_dir)
    evs = []
    r = Trainer.resume(built, "resumed", on_event=evs.append)
    assert r.run()["state"] == "finished"
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "train"] == list(range(1, 13))
    for tool in READERS:
        assert_same(run_dir, tool)
    assert len(glob.glob(str(run_dir / "wandb" / "*run-*" / "run-*.wandb"))) == 1
    assert any("the 10 rows so far copied from metrics.jsonl and health.jsonl" in e.text for e in evs if isinstance(e, Notice))


def test_a_tool_added_on_resume_gets_the_whole_history(built, corpus_dir):
    _tools("tensorboard")
    t, _ = _train(built, corpus_dir, "later", log_to="", max_steps=6, checkpoint_interval=3)
    assert t.run()["state"] == "finished"
    r = Trainer.resume(built, "later", {"max_steps": 9, "log_to": "tensorboard"})
    assert r.run()["state"] == "finished"
    assert_same(built.run_path("later"), "tensorboard")
    assert ("train/loss", 1) in tensorboard_values(built.run_path("later"))


# --- failures -------------------------------------------------------------------------------


def test_a_failing_tool_never_stops_training(built, corpus_dir, monkeypatch):
    """TensorBoard raises at step 5: the run trains to its end, says so once, the other tools
    and metrics.jsonl have every row."""
    _tools("tensorboard,wandb")
    real = loggers._TensorBoard.write

    def write(self, step, values):
        if step == 5:
            raise OSError(28, "No space left on device")
        real(self, step, values)

    monkeypatch.setattr(loggers._TensorBoard, "write", write)
    t, evs = _train(built, corpus_dir, "failing", log_to="tensorboard,wandb", max_steps=9, eval_interval=3)
    assert t.run()["state"] == "finished" and t.step == 9
    failed = [e for e in evs if isinstance(e, Notice) and "logging" in e.text]
    assert [e.text for e in failed] == [
        "tensorboard logging failed at step 5 (OSError: [Errno 28] No space left on device); it is off for the "
        "rest of this run, and metrics.jsonl has every row"]
    run_dir = built.run_path("failing")
    assert_same(run_dir, "wandb")
    got = tensorboard_values(run_dir)
    assert ("train/loss", 4) in got and not [k for k in got if k[1] >= 5]
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if r["kind"] == "train"] == list(range(1, 10))


def test_a_tool_that_cannot_start_never_stops_training(built, corpus_dir, monkeypatch):
    _tools("trackio")

    def init(*a, **k):
        raise RuntimeError("database is locked")

    monkeypatch.setattr("trackio.init", init)
    t, evs = _train(built, corpus_dir, "nostart", log_to="trackio", max_steps=3)
    assert t.run()["state"] == "finished"
    assert [e.text for e in evs if isinstance(e, Notice) and "trackio" in e.text] == [
        "trackio logging could not start (RuntimeError: database is locked); it is off for the rest of this run, "
        "and metrics.jsonl has every row"]


@pytest.mark.parametrize("tool", ["tensorboard", "wandb", "trackio"])
def test_a_missing_package_is_refused_before_anything_is_written(built, corpus_dir, monkeypatch, tool):
    monkeypatch.setitem(sys.modules, tool, None)  # `import tool` fails as if it were not installed
    line = f"train.log_to asks for {tool}, which is not installed: pip install 'workbench[{tool}]'"
    with pytest.raises(WorkbenchError) as e:
        _train(built, corpus_dir, f"missing-{tool}", log_to=tool)
    assert str(e.value) == line
    assert not built.run_path(f"missing-{tool}").exists()


def test_the_cli_says_which_extra_to_install(built, corpus_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)
    rc = main(["--workspace", str(built.root), "train", "--config", "debug", "--tokenizer", "tok", "--data",
               str(corpus_dir), "--name", "cli-missing", *SETS, "--set", "train.log_to=tensorboard,wandb"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: train.log_to asks for wandb, which is not installed: pip install 'workbench[wandb]'"]


# --- the config field -------------------------------------------------------------------------


def test_log_to_values():
    assert TrainConfig().log_to == ""
    assert TrainConfig(log_to=["wandb", "tensorboard"]).log_to == "tensorboard,wandb"
    assert TrainConfig(log_to="trackio, wandb wandb").log_to == "wandb,trackio"
    for off in (None, [], "", "none"):
        assert TrainConfig(log_to=off).log_to == ""
    cfg = config_from_dict({"version": 1, "model": {"dim": 64}, "train": {"log_to": ["tensorboard", "trackio"]}})
    assert cfg.train.log_to == "tensorboard,trackio"
    assert config_from_dict(cfg.to_dict()).train.log_to == "tensorboard,trackio"  # as saved, read back
    assert parse_overrides(["train.log_to=tensorboard,wandb"])["train"] == {"log_to": "tensorboard,wandb"}
    assert parse_overrides(["train.log_to="])["train"] == {"log_to": ""}


@pytest.mark.parametrize("value", ["tensorbord", ["wandb", "mlflow"], 3, [1]])
def test_bad_log_to_names_the_field_the_value_and_the_choices(value):
    with pytest.raises(ConfigError) as e:
        TrainConfig(log_to=value)
    assert str(e.value) == (f"train.log_to = {value!r} is not allowed: expected names from tensorboard, wandb, "
                            "trackio separated by commas (or a YAML list), or empty for none")
    assert e.value.fields == ("train.log_to",)


def test_bad_log_to_from_set():
    with pytest.raises(ConfigError, match=r"train.log_to = 'tb' is not allowed: expected names from tensorboard"):
        parse_overrides(["train.log_to=tb"])


def test_wandb_goes_online_only_when_logged_in(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert not loggers.wandb_logged_in()
    (tmp_path / "netrc").write_text("machine example.com login user password abc\n")
    assert not loggers.wandb_logged_in()
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password abc\n")
    assert loggers.wandb_logged_in()
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("WANDB_API_KEY", "abc")
    assert loggers.wandb_logged_in()


def test_under_torchrun_rank_zero_alone_logs(built, corpus_dir):
    """Two gloo processes: one TensorBoard event file, each step once, equal to metrics.jsonl."""
    import subprocess

    _tools("tensorboard")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "workbench",
           "--workspace", str(built.root), "train", "--config", "debug", "--tokenizer", "tok", "--data", str(corpus_dir),
           "--name", "tb-under-torchrun", *SETS, "--set", "train.max_steps=10", "--set", "train.log_interval=2",
           "--set", "train.eval_interval=5", "--set", "train.num_threads=1", "--set", "train.log_to=tensorboard"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir = built.run_path("tb-under-torchrun")
    assert len(list((run_dir / "tensorboard").iterdir())) == 1
    assert_same(run_dir, "tensorboard")
