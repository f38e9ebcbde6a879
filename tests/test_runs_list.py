"""One run summary, two tables: `workbench runs list` and the Runs pane make their cells with
``runs.summary_cells`` from ``runs.summaries``, which a broken run never hides the others from."""

from __future__ import annotations

import pytest

from workbench.cli import main
from workbench.runs.folder import summaries, summary_cells
from workbench.tui.widgets.train_views import si

ROW = {"name": "r1", "preset": "debug", "params": 1_234_567, "tokens": 102_400, "steps": 200,
       "best_val_loss": 1.234567, "best_bpb": 0.98765, "tok_s": 5321.7, "created": "2024-05-01T12:34:56",
       "status": "finished"}


def test_cells_in_the_clis_and_the_panes_units():
    assert summary_cells(ROW, "{:,.0f}".format, "-") == {
        "name": "r1", "preset": "debug", "params": "1,234,567", "tokens": "102,400", "val": "1.2346",
        "bpb": "0.988", "tok_s": "5,322", "created": "2024-05-01T12:34:56", "status": "finished"}
    pane = summary_cells(ROW, si, "—")
    assert (pane["params"], pane["tokens"], pane["tok_s"]) == ("1.2M", "102.4K", "5.3K")


def test_a_damaged_runs_row_lacks_numbers_and_says_so():
    cells = summary_cells({"name": "bad", "status": "unreadable: OSError"}, si, "—")
    assert cells == {"name": "bad", "preset": "—", "params": "—", "tokens": "—", "val": "—", "bpb": "—",
                     "tok_s": "—", "created": "—", "status": "unreadable: OSError"}


@pytest.fixture
def two_runs(trained):
    """The trained run, and a copy whose metrics cannot be read at all (a folder, not a file)."""
    import shutil

    from helpers import TRAINED_RUN

    bad = trained.runs_dir() / "zz-broken"
    shutil.copytree(trained.run_path(TRAINED_RUN), bad)
    (bad / "metrics.jsonl").unlink()
    (bad / "metrics.jsonl").mkdir()
    return trained, TRAINED_RUN


def test_a_broken_run_gets_a_row_and_never_hides_the_others(two_runs, capsys):
    ws, good = two_runs
    rows, curves = summaries(ws, curves=True)
    by_name = {r["name"]: r for r in rows}
    assert by_name["zz-broken"]["status"] == "unreadable: IsADirectoryError" and "zz-broken" not in curves
    assert by_name[good]["status"] == "finished" and curves[good]
    assert main(["--workspace", str(ws.root), "runs", "list"]) == 0
    out = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:]}
    cells = summary_cells(by_name[good], "{:,.0f}".format, "-")
    assert out[good] == [good, cells["preset"], cells["params"], cells["tokens"], cells["val"], cells["bpb"],
                         cells["tok_s"], cells["status"], cells["created"]]
    assert out["zz-broken"] == ["zz-broken", "-", "-", "-", "-", "-", "-", "unreadable:", "IsADirectoryError", "-"]


def test_compare_matches_runs_logged_at_other_steps_by_tokens(built, corpus_dir, capsys):
    """Two runs the real engine trained, evaluated at different steps (every 2 and every 3): the
    comparison interpolates the other run at the baseline's tokens, for loss and top-1 alike."""
    import json

    from helpers import tiny_config
    from workbench.runs.folder import get_run
    from workbench.training.trainer import Trainer

    for name, every in (("base", 2), ("other", 3)):
        cfg = tiny_config(max_steps=6, eval_interval=every, lr=3e-3 if name == "other" else 1e-3)
        assert Trainer.new(built, cfg, "tok", str(corpus_dir), name=name).run()["state"] == "finished"

    def curve(run, metric):
        return [(r["tokens"], r[metric]) for r in get_run(built, run).metrics() if r["kind"] == "eval"]

    def at(points, x):  # linear interpolation, by hand
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            if x0 <= x <= x1:
                return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
        return None

    assert main(["--workspace", str(built.root), "runs", "compare", "other", "--baseline", "base", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["vs_baseline"][0]
    last = {}
    for metric, key in (("val_loss", "diff_vs_baseline"), ("top1", "top1_diff_vs_baseline")):
        base, other = curve("base", metric), curve("other", metric)
        assert {x for x, _ in base} != {x for x, _ in other}  # logged at other tokens
        want = [(x, at(other, x) - y) for x, y in base if at(other, x) is not None]
        assert len(want) == 2  # the baseline's 512 and 768 tokens (256 is before the other's first, 384)
        assert [x for x, _ in row[key]] == [x for x, _ in want]
        assert [d for _, d in row[key]] == pytest.approx([d for _, d in want], abs=1e-9)
        last[metric] = want[-1][1]
    # the same differences as CSV, one row per baseline point the other run reaches
    import csv

    out_csv = built.root / "cmp.csv"
    assert main(["--workspace", str(built.root), "runs", "compare", "other", "--baseline", "base",
                 "--csv", str(out_csv)]) == 0
    table = list(csv.DictReader(out_csv.open()))
    assert [r["tokens"] for r in table] == [str(x) for x, _ in row["diff_vs_baseline"]]
    assert [float(r["val_loss_diff"]) for r in table] == pytest.approx([d for _, d in row["diff_vs_baseline"]])
    assert [float(r["top1_diff"]) for r in table] == pytest.approx([d for _, d in row["top1_diff_vs_baseline"]])
    assert {r["run"] for r in table} == {"other"} and {r["baseline"] for r in table} == {"base"}
    assert main(["--workspace", str(built.root), "runs", "compare", "other", "--csv", "-"]) == 2
    assert "give --baseline RUN" in capsys.readouterr().err
    assert main(["--workspace", str(built.root), "runs", "compare", "other", "--baseline", "base"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"(768 tokens) val loss {last['val_loss']:+.4f}, top-1 {last['top1']:+.4f}" in line  # numbers, not "-"


def test_export_metrics_writes_every_logged_point_of_each_run(trained, capsys):
    """The CSV against the run's metrics.jsonl read here: a row per line, every key a column."""
    import csv
    import json

    from helpers import TRAINED_RUN

    lines = [json.loads(line) for line in (trained.run_path(TRAINED_RUN) / "metrics.jsonl").read_text().splitlines()]
    out = trained.root / "m.csv"
    assert main(["--workspace", str(trained.root), "runs", "export-metrics", TRAINED_RUN, "--csv", str(out)]) == 0
    assert f"wrote {len(lines):,} rows" in capsys.readouterr().err
    table = list(csv.DictReader(out.open()))
    assert len(table) == len(lines) and {r["run"] for r in table} == {TRAINED_RUN}
    header = next(csv.reader(out.open()))
    assert header[:5] == ["run", "kind", "step", "tokens", "elapsed"]
    assert set(header) == {"run"} | {k for line in lines for k in line}
    for row, line in zip(table, lines):
        for key in header[1:]:
            want = line.get(key)
            if want is None:
                assert row[key] == ""  # a metric this point did not log
            elif isinstance(want, (int, float)) and not isinstance(want, bool):
                assert float(row[key]) == pytest.approx(want, rel=1e-12)
            else:
                assert row[key] == str(want)
    assert main(["--workspace", str(trained.root), "runs", "export-metrics", "nope", "--csv", str(out)]) == 2
    assert len(list(csv.DictReader(out.open()))) == len(lines)  # a bad run name leaves the file as it was


def test_tags_and_a_note_live_in_the_run_folder_and_filter_the_list(trained, capsys):
    """`runs tag|note` on a run the real engine wrote; `runs list --filter` by name or tag; the
    labels move with a rename; a bad tag or pattern is one line and writes nothing."""
    import json

    from helpers import TRAINED_RUN

    cli = ["--workspace", str(trained.root)]
    assert main([*cli, "runs", "tag", TRAINED_RUN, "baseline", "lr:3e-3"]) == 0
    assert main([*cli, "runs", "tag", TRAINED_RUN, "lr:3e-3", "--remove"]) == 0
    assert main([*cli, "runs", "note", TRAINED_RUN, "the first try; loss still falling"]) == 0
    labels = json.loads((trained.run_path(TRAINED_RUN) / "labels.json").read_text())
    assert labels == {"tags": ["baseline"], "note": "the first try; loss still falling"}
    capsys.readouterr()
    assert main([*cli, "runs", "tag", TRAINED_RUN, "two words"]) == 2
    assert "tag 'two words' is not allowed" in capsys.readouterr().err
    assert json.loads((trained.run_path(TRAINED_RUN) / "labels.json").read_text())["tags"] == ["baseline"]
    assert main([*cli, "runs", "note", TRAINED_RUN]) == 0
    assert capsys.readouterr().out.strip() == "the first try; loss still falling"
    assert main([*cli, "runs", "rename", TRAINED_RUN, "renamed"]) == 0
    capsys.readouterr()
    for pattern, listed in (("BASE", ["renamed"]), ("^ren", ["renamed"]), ("nothing", [])):
        assert main([*cli, "runs", "list", "--filter", pattern, "--json"]) == 0
        assert [r["name"] for r in json.loads(capsys.readouterr().out)] == listed
    assert main([*cli, "runs", "list", "--filter", "("]) == 2
    assert "filter '(' is not a regular expression" in capsys.readouterr().err
    assert main([*cli, "runs", "show", "renamed"]) == 0
    out = capsys.readouterr().out
    assert "tags: baseline" in out and "note: the first try; loss still falling" in out
    (trained.run_path("renamed") / "labels.json").write_text("{")  # damaged
    assert main([*cli, "runs", "list", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["status"] == "damaged" and "labels.json" in row["problem"]


def _ema(ys: list[float], w: float) -> list[float]:
    """The debiased EMA written out as the weighted mean it is (not runs.smooth's recurrence):
    point n is sum_i (1 - w) w^(n-i) y_i / (1 - w^n)."""
    return [sum((1 - w) * w ** (n - i) * ys[i] for i in range(n + 1)) / (1 - w ** (n + 1)) if w else ys[n]
            for n in range(len(ys))]


def test_pins_and_orders_by_a_smoothed_metric(trained, corpus_dir, capsys):
    """`runs pin` and `runs list --sort METRIC[:best|:last] --smoothing W` on runs the real engine
    wrote: the order and values against metrics.jsonl read and smoothed here; pinned runs first,
    the filter still hides them; bad orders are one line."""
    import json

    from helpers import tiny_config
    from workbench.training.trainer import Trainer

    for name, lr in (("fast", 3e-3), ("slow", 1e-4)):
        cfg = tiny_config(max_steps=6, eval_interval=2, lr=lr, min_lr=lr / 10)
        assert Trainer.new(trained, cfg, "tok", str(corpus_dir), name=name).run()["state"] == "finished"
    cli = ["--workspace", str(trained.root)]
    names = sorted(p.name for p in trained.runs_dir().iterdir() if (p / "config.yaml").is_file())
    assert len(names) == 3

    def logged(run: str, metric: str) -> list[float]:
        rows = [json.loads(line) for line in (trained.run_path(run) / "metrics.jsonl").read_text().splitlines()]
        return [r[metric] for r in rows if r["kind"] in ("train", "eval") and metric in r]

    def listed(*args) -> list[dict]:
        assert main([*cli, "runs", "list", *args, "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    # best: the lowest loss, the highest accuracy and speed; the better runs first, by last value too
    for metric, which, w, higher in (("val_loss", "best", 0.6, False), ("loss", "last", 0.9, False),
                                     ("top1", "best", 0.0, True), ("tok_s", "last", 0.5, True),
                                     ("grad_norm", "best", 0.5, False)):
        values = {}
        for n in names:
            smooth = _ema(logged(n, metric), w)
            values[n] = smooth[-1] if which == "last" else (max(smooth) if higher else min(smooth))
        want = sorted(names, key=lambda n: (-values[n] if higher else values[n], n))
        rows = listed("--sort", f"{metric}:{which}", "--smoothing", str(w))
        assert [r["name"] for r in rows] == want, metric
        assert [r["sort_value"] for r in rows] == pytest.approx([values[n] for n in want], rel=1e-9)
    assert [r["name"] for r in listed("--sort", "val_loss")] == [r["name"] for r in listed("--sort", "val_loss:best")]

    last = listed("--sort", "val_loss:best")[-1]["name"]  # the worst run, pinned, comes first
    assert main([*cli, "runs", "pin", last]) == 0
    assert capsys.readouterr().out.strip() == f"{last}: pinned"
    assert json.loads((trained.run_path(last) / "labels.json").read_text())["pinned"] is True
    assert listed("--sort", "val_loss:best")[0]["name"] == last
    assert [r["name"] for r in listed()] == [last] + [n for n in names if n != last]
    assert [r["pinned"] for r in listed()] == [True, False, False]
    other = next(n for n in names if n != last)
    assert [r["name"] for r in listed("--filter", f"^{other}$")] == [other]  # the filter hides a pinned run
    assert main([*cli, "runs", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[0] == last and lines[1].endswith("pinned") and not lines[2].endswith("pinned")
    assert main([*cli, "runs", "pin", last, "--remove"]) == 0
    assert capsys.readouterr().out.strip() == f"{last}: unpinned"
    assert "pinned" not in json.loads((trained.run_path(last) / "labels.json").read_text())
    assert [r["name"] for r in listed()] == names
    capsys.readouterr()

    for args, said in ((["--sort", "nope"], "no run logged metric 'nope'; they logged: bpb, grad_norm, loss"),
                       (["--sort", "val_loss:worst"], "is not name, bpb or METRIC[:best|:last]"),
                       (["--sort", "val_loss", "--smoothing", "1"], "--smoothing 1.0 must be from 0 to 0.99")):
        assert main([*cli, "runs", "list", *args]) == 2
        assert said in capsys.readouterr().err
    assert main([*cli, "runs", "pin", "nope"]) == 2
