"""The Trace pane, driven by keyboard: trace a trained run, unfold ``layers ×N`` to the
attention scores, the heatmap, diff against the untrained model, meta mode, saving; plus the
pure view functions (folding, anomalies) and a snapshot."""

from __future__ import annotations

import json

import pytest

from workbench.tui.widgets import trace_views as tv

from helpers import wait_for
from helpers import TINY_RUN, copy_ws, tiny_run_root


@pytest.fixture
def trained_ws(tmp_path_factory, built_root, story_file, tmp_path):
    return copy_ws(tiny_run_root(tmp_path_factory, built_root, story_file), tmp_path)


async def cursor_to(pilot, tree, pred, what, limit=80):
    """Press down until the tree's cursor is on a node whose label matches."""
    for _ in range(limit):
        node = tree.cursor_node
        if node is not None and pred(str(node.label)):
            return node
        await pilot.press("down")
    raise AssertionError(f"no tree node {what}")


async def trace_now(pilot, pane):
    await pilot.press("ctrl+g")
    await wait_for(pilot, lambda: not pane.tracing and pane.app.focused is not None
                   and pane.app.focused.id == "tr-tree", what="the trace")


async def test_trace_run_unfold_scores_heatmap_diff(trained_ws, make_app):
    from textual.widgets import Static, Tree

    from workbench.tokenizer.tokenizer import Tokenizer

    app = make_app(trained_ws)
    async with app.run_test(size=(140, 44)) as pilot:
        await pilot.press("4")
        pane = app.query_one("#trace-pane")
        pane.open_run(TINY_RUN)
        await trace_now(pilot, pane)
        r = pane.result
        assert r["source"] == f"run {TINY_RUN}" and r["checkpoint"] == "step_000020"
        assert "no anomalies" in str(app.query_one("#tr-status", Static).render())

        tree = app.query_one("#tr-tree", Tree)
        group = await cursor_to(pilot, tree, lambda s: s.startswith("layers ×2"), "layers ×2")
        assert not group.is_expanded
        await pilot.press("space")
        await cursor_to(pilot, tree, lambda s: s.startswith("layers.0 "), "layers.0")
        await pilot.press("space")
        await cursor_to(pilot, tree, lambda s: s.startswith("attn "), "attn")
        await pilot.press("space")
        scores = await cursor_to(pilot, tree, lambda s: s.startswith("· scores"), "scores")

        tok = Tokenizer.load(trained_ws.run_path(TINY_RUN) / "tokenizer")
        T = len(tok.encode(app.query_one("#tr-text").value))
        H = r["model"]["n_heads"]
        assert scores.data.rec["shape"] == [1, H, T, T]
        assert f"(1, {H}, {T}, {T})" in str(scores.label)
        assert scores.data.call["path"] == "layers.0.attn"

        heat = app.query_one("#tr-heatmap", Static)
        assert f"layer 0 · head 1/{H}" in str(heat.render())
        side = list(app.query_one("#tr-side").children)
        assert side.index(heat) < side.index(app.query_one("#tr-detail"))  # on attention: the heatmap first
        lines = str(heat.render()).splitlines()
        labels = [tok.surface(i).replace(" ", "·") for i in tok.encode(app.query_one("#tr-text").value)]
        assert lines[1].strip().startswith("keys →")  # the columns are labelled by their tokens
        assert lines[1].split("keys →")[1].strip().startswith(labels[0][:2])
        assert lines[2].split()[:3] == ["0", "1", "2"]  # and by their positions
        await pilot.press("right_square_bracket")
        assert f"layer 0 · head 2/{H}" in str(heat.render())

        # diff: pin the trained trace, trace the untrained weights, compare at the root
        await pilot.press("ctrl+b")
        assert app.query_one("#tr-base").value == "@pinned"
        app.query_one("#tr-ckpt").value = "@init"
        await pilot.pause()
        await trace_now(pilot, pane)
        assert pane.result["checkpoint"] == "random init"
        summary = tv.diff_summary(pane.baseline[1], pane.result, pane.baseline[0]).plain
        assert "diff vs pinned" in summary and "std" in summary
        rows = tv.diff_rows(pane.baseline[1], pane.result)
        assert rows and all("only in" not in ch for _, _, ch in rows)

        # save as JSON and text, atomically, into traces/
        await pilot.press("ctrl+s")
        out = trained_ws.root / "traces"
        saved = json.loads((out / f"{TINY_RUN}-init.json").read_text())
        assert saved["root"]["class"] == "Transformer" and saved["checkpoint"] == "random init"
        assert "total FLOPs" in (out / f"{TINY_RUN}-init.txt").read_text()
        assert not [p for p in out.iterdir() if ".tmp-" in p.name]


async def test_meta_mode_shapes_only(built_ws, make_app):
    from textual.widgets import Static, Switch

    app = make_app(built_ws)
    async with app.run_test(size=(100, 30)) as pilot:  # narrow: the columns stack
        await pilot.press("4")
        pane = app.query_one("#trace-pane")
        app.query_one("#tr-meta", Switch).value = True
        await trace_now(pilot, pane)
        assert pane.result["device"] == "meta" and not pane.tensors
        assert "meta (shapes only)" in str(app.query_one("#tr-status", Static).render())
        assert "shapes only" in str(app.query_one("#tr-heatmap", Static).render())
        scores = tv.calls_by_path(pane.result)["layers.0.attn"]["logs"]["scores"]
        assert scores["shape"][1] == pane.result["model"]["n_heads"] and "mean" not in scores


async def test_bad_input_named_in_place(built_ws, make_app):
    from textual.widgets import Input, Static

    app = make_app(built_ws)
    async with app.run_test(size=(140, 44)) as pilot:
        await pilot.press("4")
        pane = app.query_one("#trace-pane")
        app.query_one("#tr-text", Input).value = "Lily " * 100
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: not pane.tracing and "max_seq_len" in
                       str(app.query_one("#tr-status", Static).render()), what="the error")
        assert "text:" in str(app.query_one("#tr-status", Static).render())


def _rec(shape, **kw):
    return {"shape": shape, "dtype": "float32", "device": "cpu", **kw}


def test_fold_and_anomalies():
    good = _rec([1, 4, 8], min=-1.0, max=1.0, mean=0.0, std=0.5, nonfinite=0)
    zero = _rec([1, 4, 8], min=0.0, max=0.0, mean=0.0, std=0.0, nonfinite=0)
    nan = _rec([1, 4, 8], min=None, max=None, mean=None, std=None, nonfinite=32)

    def call(path, out, cls="Block", children=()):
        return {"path": path, "class": cls, "params": 1, "flops": 10, "inputs": {"x": good},
                "outputs": {"out": out}, "logs": {}, "children": list(children)}

    root = call("", good, "Transformer", [call("tok_emb", good, "Embedding"),
                                          call("layers.0", good), call("layers.1", zero),
                                          call("layers.2", nan), call("norm", good, "RMSNorm")])
    root["children"][3]["nan_origin"] = True
    nodes = tv.fold(root["children"])
    assert [n.kind for n in nodes] == ["call", "group", "call"]
    assert len(nodes[1].calls) == 3 and nodes[1].name == "layers"
    label = tv.group_label(nodes[1], "", 50).plain
    assert label.startswith("layers ×3") and "(1, 4, 8) → (1, 4, 8)" in label and "!!" in label
    assert "!!" not in tv.call_label(root["children"][0], "", 50).plain
    found = dict((f, p) for p, f in tv.anomaly_list(root))
    assert found["out: all zero"] == "layers.1"
    assert found["out: 32 non-finite"] == "layers.2"
    assert found["non-finite appears here"] == "layers.2"


def test_summary_and_heatmap_say_what_there_is():
    import numpy as np

    rec = _rec([1, 3], min=0.0, max=0.0, mean=0.0, std=0.0, nonfinite=0)
    root = {"path": "", "class": "Transformer", "params": 1, "flops": 10, "inputs": {}, "outputs": {"out": rec},
            "logs": {}, "children": []}
    r = {"source": "run r", "checkpoint": "step_000012", "input_shape": [1, 3], "device": "meta", "params": 41120,
         "total_flops": 2_500_000, "root": root, "labels": ["a", "b", "c"]}
    assert tv.summary(r) == ("run r, step_000012: input (1, 3) on meta (shapes only) · 41,120 parameters · "
                             "2.5M FLOPs\n[b red]!! 1 anomalies[/]: (model) out: all zero")
    assert tv.layer_heatmap(r, {}, 0, 3) == ("[dim]attention heatmap: shapes only on the meta device[/dim]", 3)
    probs = np.full((1, 2, 3, 3), 1 / 3)
    shown, head = tv.layer_heatmap({**r, "device": "cpu"}, {("layers.0.attn", "probs"): probs}, 0, 3)
    assert head == 1 and "attention · layer 0 · head 2/2" in shown.plain


def test_trace_pane_snapshot(snap_compare, snapshot_size, built_ws, make_app):
    async def run_before(pilot):
        await pilot.press("4")
        pane = pilot.app.query_one("#trace-pane")
        await trace_now(pilot, pane)
        tree = pilot.app.query_one("#tr-tree")
        await cursor_to(pilot, tree, lambda s: s.startswith("layers ×2"), "layers ×2")
        await pilot.press("space")
        await cursor_to(pilot, tree, lambda s: s.startswith("layers.1 "), "layers.1")
        await pilot.press("space")
        await cursor_to(pilot, tree, lambda s: s.startswith("attn "), "attn")
        await pilot.pause()

    assert snap_compare(make_app(built_ws), terminal_size=snapshot_size, run_before=run_before)


async def test_the_meta_switch_says_whether_it_is_on(built_ws, make_app):
    from textual.widgets import Label, Switch

    from helpers import focus

    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("4")
        await pilot.pause()
        state = app.query_one("#tr-meta-state", Label)
        assert str(state.render()) == "off" and app.query_one("#tr-meta", Switch).value is False
        await focus(pilot, app, "tr-meta")
        await pilot.press("space")
        await wait_for(pilot, lambda: str(state.render()) == "on", what="the switch's state in words")
        assert app.query_one("#tr-meta", Switch).value is True
