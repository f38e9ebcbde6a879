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
