"""The Chat pane, driven by keyboard: stream a reply from a trained run, stop it with esc,
regenerate, copy, colour by probability and pick a token's alternatives, two checkpoints
side by side, bad settings named in place; and a snapshot with fixed seed and rates."""

from __future__ import annotations

import itertools

import pytest

from helpers import focus, wait_for
from helpers import TINY_RUN, copy_ws, tiny_run_root


@pytest.fixture
def trained_ws(tmp_path_factory, built_root, story_file, tmp_path):
    return copy_ws(tiny_run_root(tmp_path_factory, built_root, story_file), tmp_path)


def set_field(app, wid, value):
    app.query_one(f"#{wid}").value = value


async def test_chat_stop_with_escape_then_regenerate(trained_ws, make_app):
    from textual.widgets import Static, Switch, TextArea

    app = make_app(trained_ws)
    async with app.run_test(size=(140, 44)) as pilot:
        await pilot.press("5")
        pane = app.query_one("#chat-pane")
        assert app.query_one("#ch-run").value == TINY_RUN
        assert app.query_one("#ch-ckpt").value == "step_000020"
        set_field(app, "ch-max", "20000")  # far more than arrives before esc
        set_field(app, "ch-seed", "7")
        app.query_one("#ch-eos", Switch).value = False
        await focus(pilot, app, "ch-prompt")
        prompt = app.query_one("#ch-prompt", TextArea)
        prompt.text = ""
        await pilot.press(*"Lily", "enter", *"Tom")  # a multi-line prompt
        assert prompt.text == "Lily\nTom"

        await pilot.press("ctrl+g")
        stream = pane.streams[0]
        await wait_for(pilot, lambda: stream.n_tokens >= 5, what="the first tokens")
        await pilot.press("escape")
        col = app.query_one("#ch-reply-a")
        await wait_for(pilot, lambda: stream.done and stream.result is not None
                       and "stopped (esc)" in str(col.query_one(".ch-stats", Static).render()),
                       what="the stopped reply and its stats")
        assert stream.result.stop_reason == "cancelled"
        assert 5 <= stream.n_tokens < 20000
        assert app.focused is prompt  # esc stopped the reply; it did not also leave the box
        stats = str(col.query_one(".ch-stats", Static).render())
        assert f"{stream.n_tokens} tokens" in stats and "stopped (esc)" in stats
        body = str(col.query_one(".ch-body", Static).render())
        assert body.startswith("Lily↵") and len(body) > len("Lily↵\nTom")

        # regenerate: same prompt, the next seed, this time to the end
        set_field(app, "ch-max", "12")
        await pilot.press("ctrl+r")
        assert app.query_one("#ch-seed").value == "8"
        second = pane.streams[0]
        assert second is not stream
        await wait_for(pilot, lambda: second.done and second.result is not None, what="the regenerated reply")
        assert second.result.stop_reason == "max_tokens" and second.n_tokens == 12
        assert second.result.seed == 8 and second.result.prompt == "Lily\nTom"

        await pilot.press("ctrl+o")
        assert app.clipboard == "Lily\nTom" + second.result.text

        # colour by probability; select a token and see its top-5 alternatives
        await pilot.press("ctrl+t")
        assert app.query_one("#ch-colour", Switch).value
        await focus(pilot, app, "ch-scroll-a")
        await pilot.press("left", "left")
        alts = str(app.query_one("#ch-alts", Static).render())
        tok = second.result.tokens[10]
        assert alts.startswith("token 11/12") and f"p={tok.prob:.3f}" in alts
        assert len(tok.top) == 5 and all(repr(p) in alts for p in tok.top_pieces)

        await pilot.press("ctrl+l")
        assert str(col.query_one(".ch-body", Static).render()) == ""
        assert pane.streams == []


async def test_two_checkpoints_side_by_side(trained_ws, make_app):
    from textual.widgets import Static

    app = make_app(trained_ws)
    async with app.run_test(size=(140, 44)) as pilot:
        await pilot.press("5")
        pane = app.query_one("#chat-pane")
        app.query_one("#ch-ckpt2").value = f"{TINY_RUN}\x1fstep_000010"
        await pilot.pause()
        assert app.query_one("#ch-reply-b").display
        set_field(app, "ch-max", "16")
        set_field(app, "ch-seed", "3")
        set_field(app, "ch-temp", "0")
        await pilot.press("ctrl+g")
        a, b = pane.streams
        await wait_for(pilot, lambda: a.done and b.done, what="both replies")
        assert a.label.endswith("step_000020") and b.label.endswith("step_000010")
        assert a.result.seed == b.result.seed == 3
        assert a.result.prompt == b.result.prompt
        await wait_for(pilot, lambda: "step_000010" in str(app.query_one("#ch-reply-b").query_one(".ch-head", Static).render()),
                       what="the second column's heading")

        # a bad setting is named, and nothing starts
        set_field(app, "ch-topp", "1.5")
        await pilot.press("ctrl+g")
        err = str(app.query_one("#ch-status", Static).render())
        assert "top-p" in err and "1.5" in err and pane.streams == [a, b]


def test_chat_pane_snapshot(snap_compare, snapshot_size, built_ws, make_app, monkeypatch):
    """A random-init run (deterministic without training), a fixed seed and a fake clock."""
    from workbench.runs import checkpoint
    from workbench.config.schema import Config, ModelConfig
    from workbench.model import build_model
    from workbench.runs.folder import create_run
    from workbench.tui.widgets import chat_views

    cfg = ModelConfig(vocab_size=400, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=64)
    run = create_run(built_ws, "snap", Config(cfg), built_ws.tokenizer_path("stories-400"), {"name": "none"})
    checkpoint.save_checkpoint(run.path, 5, build_model(cfg, seed=0).eval(), {"step": 5}, keep_last=2)
    ticks = itertools.count()
    monkeypatch.setattr(chat_views, "clock", lambda: next(ticks) * 0.01)  # 100 tok/s

    async def run_before(pilot):
        app = pilot.app
        await pilot.press("5")
        set_field(app, "ch-max", "40")
        set_field(app, "ch-seed", "1")
        await pilot.press("ctrl+g")
        pane = app.query_one("#chat-pane")
        await wait_for(pilot, lambda: not pane.generating, what="the reply")
        await pilot.press("ctrl+t")
        await focus(pilot, app, "ch-scroll-a")
        await pilot.press("home", "right", "right")
        await pilot.wait_for_scheduled_animations()
        await pilot.pause()

    assert snap_compare(make_app(built_ws), terminal_size=snapshot_size, run_before=run_before)


async def test_beam_search_is_a_decoding_choice(trained_ws, make_app):
    """decoding: beam search shows only its own settings, names a bad one by its label, and
    replies with the best beam of the same search the engine runs (the CLI's), every beam with
    its log-probability listed under the replies; back to sample, the sampling rows return."""
    from textual.widgets import Static, TextArea

    from workbench.generation.beam import BeamSearch, beam_search
    from workbench.generation.generate import load_for_generation

    app = make_app(trained_ws)
    async with app.run_test(size=(140, 44)) as pilot:
        await pilot.press("5")
        pane = app.query_one("#chat-pane")
        app.query_one("#ch-decoding").value = "beam"
        await pilot.pause()
        assert not app.query_one("#ch-temp-row").display and not app.query_one("#ch-seed-row").display
        assert app.query_one("#ch-beams-row").display and app.query_one("#ch-lenpen-row").display
        set_field(app, "ch-beams", "0")
        await focus(pilot, app, "ch-prompt")
        await pilot.press("ctrl+g")
        assert "beams = 0 is not allowed: expected an integer from 1 to 256" in str(app.query_one("#ch-status").render())
        set_field(app, "ch-beams", "3")
        set_field(app, "ch-max", "12")
        app.query_one("#ch-prompt", TextArea).text = "Once upon a time"
        await pilot.press("ctrl+g")
        stream = pane.streams[0]
        await wait_for(pilot, lambda: stream.done, timeout=60, what="the beams")
        await wait_for(pilot, lambda: "beam 3" in str(app.query_one("#ch-alts", Static).render()), what="the beam list")
        model, tok, _, _ = load_for_generation(trained_ws, TINY_RUN, None, "auto", "auto")
        want = beam_search(model, tok.encode("Once upon a time", bos=True), BeamSearch(beams=3, max_tokens=12),
                           eos_id=tok.eos_id, vocab_limit=tok.vocab_size)
        assert stream.beams.beams[0].ids == want[0].ids
        assert [b.logprob for b in stream.beams.beams] == pytest.approx([b.logprob for b in want])
        assert stream.text == tok.decode(want[0].ids)
        col = app.query_one("#ch-reply-a")
        assert str(col.query_one(".ch-stats", Static).render()).startswith(f"{len(want[0].ids)} tokens · beam 1 of 3")
        alts = str(app.query_one("#ch-alts", Static).render()).splitlines()
        assert [line.split()[:2] for line in alts] == [["beam", "1"], ["beam", "2"], ["beam", "3"]]
        assert float(alts[1].split()[2]) == pytest.approx(want[1].logprob, abs=0.006)
        app.query_one("#ch-decoding").value = "sample"
        await pilot.pause()
        assert app.query_one("#ch-temp-row").display and not app.query_one("#ch-beams-row").display
