"""The Config pane plans: a budget in minutes and ctrl+b fill the form from the planner (with
this machine's speeds and the fitted rule injected, so the pick is known), the reasons show, every
field stays editable, and the estimates show the tokens the budget buys at the measured speed."""

from __future__ import annotations

import json

from textual.widgets import Input, Static

from workbench.planning import planner

from helpers import focus, open_config_pane, type_into, wait_for

LAW = {"E": 0.6, "A": 40.0, "alpha": 0.4, "B": 60.0, "beta": 0.3, "source": "a test law",
       "recipe": {"model": {}, "train": {"lr": 0.004, "min_lr": 0.0004, "schedule": "cosine",
                                         "optimizer": "adamw", "warmup_steps": 100}}}


def _inject(vocab: int, tok_s_of) -> None:
    from helpers import inject_speed

    inject_speed(LAW, vocab, tok_s_of)


async def test_plan_fills_the_form_and_the_budget_shows_tokens(built_ws, make_app, tmp_path, monkeypatch):
    law = tmp_path / "law.json"
    law.write_text(json.dumps(LAW))
    monkeypatch.setattr(planner, "LAW_FILE", law)
    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_config_pane(pilot, app)
        vocab = int(pane.query_one("#model-vocab_size", Input).value)
        _inject(vocab, lambda dim, layers: 2.0e9 / (dim * dim * layers))
        expected = planner.plan(built_ws, planner.PlanRequest(None, 20, vocab=vocab))

        # a bad budget is refused in place, naming the value
        await focus(pilot, app, "cfg-minutes")
        await type_into(pilot, "0")
        await pilot.press("ctrl+b")
        status = pane.query_one("#cfg-status", Static)
        assert "minutes = '0' is not allowed" in str(status.render())
        assert pane.plan is None

        pane.query_one("#cfg-minutes", Input).value = "20"
        await pilot.press("ctrl+b")
        await wait_for(pilot, lambda: pane.plan is not None, what="the plan")
        assert pane.query_one("#model-dim", Input).value == str(expected.config.model.dim)
        assert pane.query_one("#model-n_layers", Input).value == str(expected.config.model.n_layers)
        assert pane.query_one("#train-max_minutes", Input).value == "20.0"
        assert pane.query_one("#model-vocab_size", Input).value == str(vocab)  # the vocab is kept
        assert "picked dim" in str(status.render())
        estimates = str(pane.query_one("#cfg-estimates", Static).render())
        tokens = int(expected.tok_s * 20 * 60 * planner.STEP_SHARE)
        assert f"{expected.tok_s:,.0f} tok/s measured" in estimates and "budget buys" in estimates
        assert f"{tokens / 1e6:.2f}M tokens in 20 min" in estimates
        assert pane.valid

        # every field stays editable: a change shows in the diff against the plan
        pane.query_one("#train-lr", Input).value = "0.001"
        await wait_for(pilot, lambda: "lr: 0.004 → " in str(pane.query_one("#cfg-diff", Static).render()),
                       what="the diff against the plan")


async def test_every_placeholder_fits_its_box(built_ws, make_app):
    """An empty optional field shows what empty means; that text is whole, at 80×24 and 120×40."""
    from textual.widgets import Input

    for size in ((80, 24), (120, 40)):
        app = make_app(built_ws)
        async with app.run_test(size=size) as pilot:
            await pilot.press("2")
            await pilot.pause()
            boxes = [b for b in app.query_one("#config-pane").query(Input) if b.placeholder]
            assert len(boxes) > 5
            for box in boxes:
                box.scroll_visible(animate=False)
                await pilot.pause()
                assert len(box.placeholder) <= box.content_size.width, (size, box.id, box.placeholder)


async def test_the_chosen_tokenizer_sets_the_vocab(built_ws, make_app):
    """Choosing a tokenizer puts its vocab in the form, said in one line; a config loaded
    afterwards (made for another vocab) gets the same; the Train pane receives that form."""
    from textual.widgets import Select

    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_config_pane(pilot, app)
        vocab = pane.query_one("#model-vocab_size", Input)
        status = pane.query_one("#cfg-status", Static)
        assert vocab.value == "512"
        pane.query_one("#cfg-tokenizer", Select).value = "stories-400"
        await wait_for(pilot, lambda: vocab.value == "400", what="the tokenizer's vocab")
        assert str(status.render()) == "model.vocab_size 512 → 400 from tokenizer stories-400"
        pane.query_one("#cfg-load", Select).value = "tiny-1m"
        await wait_for(pilot, lambda: pane.base is not None and pane.base.name == "tiny-1m", what="tiny-1m")
        await wait_for(pilot, lambda: vocab.value == "400", what="the vocab kept")
        assert "from tokenizer stories-400" in str(status.render())
        assert pane.valid
        config, error = app.panes["train"]._form  # what the Train pane would train, through the App
        assert config is not None and config.model.vocab_size == 400 and error == ""


async def test_the_estimates_say_which_export_formats_hold_the_form(built_ws, make_app):
    """Before training: the debug form exports everywhere; a ReLU² MLP (the planner's recipe)
    leaves hf and weights, gguf and llama2c saying why; back to SwiGLU, all again."""
    from textual.widgets import Select

    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_config_pane(pilot, app)
        box = pane.query_one("#cfg-estimates", Static)
        await wait_for(pilot, lambda: "exports to" in str(box.render()), what="the estimates")
        assert "exports to      hf, gguf, llama2c, weights" in str(box.render())
        pane.query_one("#model-mlp", Select).value = "relu2"
        await wait_for(pilot, lambda: "not gguf: mlp is 'relu2'" in str(box.render()), what="the refusal")
        text = str(box.render())
        assert "exports to      hf, weights" in text and "not llama2c: mlp is 'relu2' (run.c uses 'swiglu')" in text
        pane.query_one("#model-mlp", Select).value = "swiglu"
        await wait_for(pilot, lambda: "exports to      hf, gguf, llama2c, weights" in str(box.render()),
                       what="every format again")
