"""Keys typed faster than the app handles them (a burst the terminal delivers in one read, as
tmux send-keys or a fast typist does) land where they were typed, in order: editing keys and
Tab act between the characters around them, never after them."""

from __future__ import annotations

from textual import events
from textual.widgets import Input

from helpers import open_config_pane, wait_for


def _burst(app, keys: list[str]) -> None:
    """Hand the app every key at once, as the terminal driver does with one read."""
    chars = {"tab": "\t", "ctrl+u": "\x15", "backspace": "\x7f"}
    for key in keys:
        app.post_message(events.Key(key, chars.get(key, key if len(key) == 1 else None)))


async def test_a_burst_of_keys_fills_the_config_form_field_by_field(built_ws, make_app):
    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_config_pane(pilot, app)
        app.query_one("#model-dim", Input).focus()
        await pilot.pause()
        # dim 240, n_layers 8, n_heads 4, n_kv_heads 2: each field cleared, typed, left by Tab
        _burst(app, ["ctrl+u", "2", "4", "0", "tab", "ctrl+u", "8", "tab", "ctrl+u", "4", "tab",
                     "ctrl+u", "3", "backspace", "2", "tab"])
        # every key handled (the last one moved focus on), however slowly this machine goes
        await wait_for(pilot, lambda: app.focused.id == "model-hidden_dim", what="the burst")
        got = {f: app.query_one(f"#model-{f}", Input).value for f in ("dim", "n_layers", "n_heads", "n_kv_heads")}
        assert got == {"dim": "240", "n_layers": "8", "n_heads": "4", "n_kv_heads": "2"}


async def test_a_burst_reaches_a_switch_and_the_tokenizer_form_in_order(built_ws, make_app):
    from textual.widgets import Switch

    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        name = app.query_one("#tok-name", Input)
        name.focus()
        await pilot.pause()
        # name "abc", vocab 900, sample 2, then space on the byte-fallback switch: all in one burst
        _burst(app, ["ctrl+u", "a", "b", "c", "tab", "ctrl+u", "9", "0", "0", "tab", "ctrl+u", "2", "tab", "space"])
        switch = app.query_one("#tok-bytefb", Switch)
        await wait_for(pilot, lambda: app.focused is switch and not switch.value, what="the burst")
        assert name.value == "abc"
        assert app.query_one("#tok-vocab", Input).value == "900"
        assert app.query_one("#tok-sample", Input).value == "2"
        assert app.query_one("#tok-bytefb", Switch).value is False


async def test_a_thousand_keys_typed_without_a_pause_land_in_their_fields(built_ws, make_app):
    """The figure: bursts of random values into four fields of the Config form, 1,000 keys."""
    import random

    rng = random.Random(0)
    fields = ("dim", "n_layers", "n_heads", "n_kv_heads")
    app = make_app(built_ws)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_config_pane(pilot, app)
        sent = 0
        while sent < 1000:
            app.query_one("#model-dim", Input).focus()
            await pilot.pause()
            want, keys = {}, []
            for f in fields:
                value = str(rng.randint(1, 999))
                want[f] = value
                keys += ["ctrl+u", *value, "tab"]
            _burst(app, keys)
            sent += len(keys)
            await wait_for(pilot, lambda: app.focused.id == "model-hidden_dim", what=f"the burst at key {sent}")
            got = {f: app.query_one(f"#model-{f}", Input).value for f in fields}
            assert got == want, sent
