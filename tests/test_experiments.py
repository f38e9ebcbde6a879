"""Experiments: a user's variant in a file of the workspace, registered, offered by the config,
trained, resumed step for step, traced, evaluated, generated from; the run keeps its own copy of
the file; a broken file is one line; a run's code from another workspace does not run unasked."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from helpers import MINE, SETS, losses, tiny_config
from workbench.cli import main
from workbench.config.schema import ModelConfig
from workbench.errors import ConfigError
from workbench.experiments import registry
from workbench.experiments.loader import experiment_dirs, load_experiments
from workbench.runs.folder import get_run
from workbench.workspace import Workspace




pytestmark = pytest.mark.usefixtures("clean_registry")


def _ws_with_mine(built, tmp_path) -> Workspace:
    root = tmp_path / "ws"
    shutil.copytree(built.root, root)
    (root / "experiments").mkdir()
    (root / "experiments" / "mine.py").write_text(MINE)
    return Workspace.at(root)


def _cli(ws, *args) -> int:
    return main(["--workspace", str(ws.root), *args])


def test_a_file_registers_a_variant_the_config_offers(built, tmp_path):
    ws = _ws_with_mine(built, tmp_path)
    with pytest.raises(ConfigError, match="model.mlp = 'mine' is not allowed"):
        ModelConfig(mlp="mine")
    report = load_experiments(experiment_dirs(ws.root))
    assert report.errors == [] and report.registered == [("mlp", "mine", "mine.py")]
    from workbench.config.fields import fields_of

    info = next(f for f in fields_of(ModelConfig) if f.name == "mlp")
    assert "mine" in info.choices and "swiglu" in info.choices  # the form's select, --set and YAML
    assert ModelConfig(mlp="mine").mlp == "mine"


def test_an_experiment_run_trains_resumes_and_keeps_its_own_copy(built, corpus_dir, tmp_path, capsys):
    from workbench.training.trainer import Trainer

    ws = _ws_with_mine(built, tmp_path)
    load_experiments(experiment_dirs(ws.root))
    cfg = tiny_config({"mlp": "mine"}, max_steps=8, checkpoint_interval=4, eval_interval=4)
    evs1, evs2, evs3 = [], [], []
    assert Trainer.new(ws, cfg, "tok", str(corpus_dir), name="straight", on_event=evs1.append).run()["state"] == "finished"
    half = Trainer.new(ws, cfg, "tok", str(corpus_dir), name="half", on_event=evs2.append)
    half.step_hooks.append(lambda t: t.stop() if t.step == 4 else None)
    assert half.run()["state"] == "stopped"
    run = get_run(ws, "half")
    copy = run.path / "experiments" / "mine.py"
    assert copy.read_text() == MINE
    rec = run.raw_config()["experiments"]
    import hashlib

    assert rec["files"] == {"mine.py": hashlib.sha256(MINE.encode()).hexdigest()}
    # the workspace file changes (it would break on import now); the run goes on with its copy
    (ws.root / "experiments" / "mine.py").write_text("raise RuntimeError('edited')\n")
    registry.unregister_source(str((ws.root / "experiments" / "mine.py").resolve()))
    resumed = Trainer.resume(ws, "half", on_event=evs3.append)
    assert resumed.run()["state"] == "finished"
    assert losses(evs2) + losses(evs3) == losses(evs1)  # step for step
    assert registry.get("mlp", "mine").source == str(copy.resolve())


def test_an_experiment_run_is_traced_evaluated_and_generated_from_after_its_file_is_gone(
        built, corpus_dir, tmp_path, capsys):
    ws = _ws_with_mine(built, tmp_path)
    assert _cli(ws, "train", "--config", "debug", "--tokenizer", "tok", "--data", str(corpus_dir), "--name", "exp",
                *SETS, "--set", "model.mlp=mine", "--set", "train.max_steps=4", "--set", "train.eval_interval=2",
                "--set", "train.eval_batches=1") == 0
    os.remove(ws.root / "experiments" / "mine.py")  # deleted: the run has its copy
    registry.unregister_source(str((ws.root / "experiments" / "mine.py").resolve()))
    capsys.readouterr()
    out_json = tmp_path / "trace.json"
    assert _cli(ws, "trace", "--run", "exp", "--json", str(out_json)) == 0
    trace = json.loads(out_json.read_text())

    def logs(node):
        yield from node["logs"]
        for c in node["children"]:
            yield from logs(c)
    assert "mine_hidden" in set(logs(trace["root"]))  # the variant's own self.log shows in the trace
    assert "mine_hidden" in capsys.readouterr().out  # and in the printed tree
    assert _cli(ws, "eval", "exp", "--json") == 0
    assert json.loads(capsys.readouterr().out)["val_loss"] > 0
    assert _cli(ws, "generate", "exp", "--prompt", "Once", "--max-tokens", "5", "--temperature", "0") == 0
    assert capsys.readouterr().out.strip()
    assert _cli(ws, "export", "exp", "--format", "hf", "--to", str(tmp_path / "hf")) == 2
    assert "mlp is 'mine'" in capsys.readouterr().err  # a Llama format cannot hold it, said by name
    assert _cli(ws, "export", "exp", "--format", "weights", "--to", str(tmp_path / "w")) == 0


def test_a_broken_file_is_one_line_naming_its_file_and_line(built, tmp_path, capsys):
    ws = _ws_with_mine(built, tmp_path)
    (ws.root / "experiments" / "broken.py").write_text("import torch\n\n\nx = 1\ny = x / 0\n")
    assert _cli(ws, "experiment", "list") == 0
    out, err = capsys.readouterr()
    assert err.strip().splitlines() == [
        f"warning: experiment not loaded: {ws.root.resolve() / 'experiments' / 'broken.py'}:5: "
        "ZeroDivisionError: division by zero"]
    assert "mine" in out  # the other file still loaded
    (ws.root / "experiments" / "syntax.py").write_text("def f(:\n")
    assert _cli(ws, "experiment", "check", "mine") == 0
    assert "syntax.py:1: SyntaxError" in capsys.readouterr().err


def test_an_untrusted_runs_code_does_not_run(built, corpus_dir, tmp_path, capsys, monkeypatch):
    ws = _ws_with_mine(built, tmp_path)
    assert _cli(ws, "train", "--config", "debug", "--tokenizer", "tok", "--data", str(corpus_dir), "--name", "exp",
                *SETS, "--set", "model.mlp=mine", "--set", "train.max_steps=2") == 0
    other = Workspace.at(tmp_path / "other")
    shutil.copytree(ws.run_path("exp"), other.run_path("exp"))  # a run folder copied from elsewhere
    registry.unregister_source(str((ws.root / "experiments" / "mine.py").resolve()))
    marker = tmp_path / "marker"
    monkeypatch.setenv("EXPERIMENT_MARKER", str(marker))
    capsys.readouterr()
    assert _cli(other, "trace", "--run", "exp") == 2
    err = capsys.readouterr().err
    assert "holds experiment code made in another workspace" in err and "--trust-code" in err
    assert len(err.strip().splitlines()) == 1 and not marker.exists()  # one line; the code never ran
    monkeypatch.delenv("WORKBENCH_TRUST_CODE", raising=False)
    assert main(["--workspace", str(other.root), "--trust-code", "trace", "--run", "exp"]) == 0
    assert marker.read_text() == "ran"  # asked to: it runs
    monkeypatch.delenv("WORKBENCH_TRUST_CODE", raising=False)


def test_new_copies_a_built_in_part_that_checks_and_trains(tmp_path, capsys):
    ws = Workspace.at(tmp_path / "ws")
    assert _cli(ws, "experiment", "new", "my_attention", "--from", "attention") == 0
    path = ws.root / "experiments" / "my_attention.py"
    text = path.read_text()
    assert '@register("attention", "my_attention"' in text and "class MyAttention(LoggingModule):" in text
    assert "def forward(self, x" in text  # the built-in's source, to edit
    assert _cli(ws, "experiment", "new", "my_attention", "--from", "attention") == 2  # never overwritten
    assert "already" in capsys.readouterr().err
    assert _cli(ws, "experiment", "check", "my_attention") == 0
    assert capsys.readouterr().out.startswith("ok: model.attention=my_attention builds the debug shape")
    # a change that breaks the shape is said in one line, at the user's own line
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if "y = y.transpose(1, 2).reshape(B, T, H * D)" in line)
    lines.insert(i + 1, lines[i][:len(lines[i]) - len(lines[i].lstrip())] + "y = y[:, :, :-1]")
    path.write_text("\n".join(lines) + "\n")
    assert _cli(ws, "experiment", "check", "my_attention") == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "my_attention.py:" in err and "RuntimeError" in err


@pytest.mark.parametrize("name", ["parallel", "value_norm", "value_embed", "adagrad"])
def test_the_shipped_examples_check(name, capsys):
    from workbench.experiments.verbs import check_experiment

    examples = os.path.join(os.path.dirname(__file__), "..", "examples", "experiments")
    assert load_experiments(experiment_dirs(None, [examples])).errors == []
    result = check_experiment(name)
    assert result.ok, result.line


def test_a_damaged_record_or_copy_is_one_line(built, corpus_dir, tmp_path, capsys):
    import yaml

    ws = _ws_with_mine(built, tmp_path)
    assert _cli(ws, "train", "--config", "debug", "--tokenizer", "tok", "--data", str(corpus_dir), "--name", "exp",
                *SETS, "--set", "model.mlp=mine", "--set", "train.max_steps=2") == 0
    run = get_run(ws, "exp")
    (run.path / "experiments" / "mine.py").write_text(MINE + "\n# changed\n")  # not the file it trained with
    capsys.readouterr()
    assert _cli(ws, "trace", "--run", "exp") == 2
    assert "is not the file the run was trained with" in capsys.readouterr().err
    cfg = yaml.safe_load(run.config_path.read_text())
    cfg["experiments"] = "oops"
    run.config_path.write_text(yaml.safe_dump(cfg))
    assert _cli(ws, "trace", "--run", "exp") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'experiments' must be a mapping" in err
