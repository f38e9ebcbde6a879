"""Widgets of the generated forms: Input validators that are the engine's own checks (the
config's ``parse_field``, the tokenizer build form's numbers), the help line under a form, and
the app's inputs, selects, switches and checkboxes, which take keys in the order they were typed
(``KeysInOrder``)."""

from __future__ import annotations

from textual.reactive import reactive
from textual.validation import ValidationResult, Validator
from textual.widget import Widget
from textual.widgets import Checkbox, Input, Select, Switch

from workbench.config.fields import parse_field
from workbench.errors import ConfigError, WorkbenchError
from workbench.tokenizer.build import parse_setting


class FieldValidator(Validator):
    """Marks an Input invalid with the message the config machinery gives for its text."""

    def __init__(self, section: str, info):
        super().__init__()
        self.section, self.info = section, info

    def validate(self, value: str) -> ValidationResult:
        try:
            parse_field(self.section, self.info, value)
        except ConfigError as e:
            return self.failure(str(e))
        return self.success()


class SettingValidator(Validator):
    """Marks a number of the tokenizer build form invalid exactly where the engine refuses it."""

    def __init__(self, setting: str):
        super().__init__()
        self.setting = setting

    def validate(self, value: str) -> ValidationResult:
        try:
            parse_setting(self.setting, value)
        except WorkbenchError as e:
            return self.failure(str(e))
        return self.success()


class HelpLine(Widget):
    """A fixed-height line of help: changing it repaints, without re-laying out the screen
    (a Static would, on every focus change)."""

    text = reactive("", layout=False)

    def render(self) -> str:
        return self.text

    def update(self, text: str) -> None:
        self.text = text


# --- keys in the order they were typed --------------------------------------------------------


class KeysInOrder:
    """Handles each key where it was typed, in the order typed, however fast they come.

    Textual gives a key to the focused widget and runs a binding for it (Tab, an Input's ctrl+u
    or backspace, a Switch's space) only when the key comes back up to the App, after the keys
    typed behind it have already been handed to the widget: typed fast, `12 Tab 8` became 128
    and `ctrl+u 8 9` lost the digits. A widget with this mixin runs the binding itself, in its
    place in the queue, and hands a key that reaches it after focus moved on (an earlier key of
    the same burst moved it) to the widget that has focus now. ``printable_bindings``: whether a
    printable key may run a binding here (not in an Input, where it is text); ``only``: the keys
    whose bindings it runs itself, when not all (a Select opens its list on a later refresh, and
    the keys after must reach the list, so it runs only Tab's itself)."""

    printable_bindings = True
    only: frozenset | None = None

    async def _on_key(self, event) -> None:
        from textual import events

        app = self.app
        check_bindings = getattr(app, "_check_bindings", None)  # Textual's own, not public API:
        if check_bindings is None or not hasattr(Widget, "_forward_event"):  # gone in another version,
            await super()._on_key(event)  # keys go Textual's way again rather than fail
            return
        focused = app.focused  # now, not `has_focus`, which follows a Focus message still on its way
        # (a key that bubbled up from a focused part of this widget, a Select's list, stays here)
        if focused is not None and focused is not self and self not in focused.ancestors:
            event.prevent_default()
            event.stop()
            focused._forward_event(events.Key(event.key, event.character))
            return
        mine = (self.printable_bindings or not event.is_printable) and (self.only is None or event.key in self.only)
        if mine and await check_bindings(event.key):
            event.prevent_default()
            event.stop()
            return
        await super()._on_key(event)


class FormInput(KeysInOrder, Input):
    printable_bindings = False


class FormSelect(KeysInOrder, Select):
    only = frozenset({"tab", "shift+tab"})


class FormSwitch(KeysInOrder, Switch):
    """A switch that says its state in words: a Label with id ``<its id>-state`` beside it shows
    ``states[value]`` (off/on by default; the Config form's true/false), kept up to date."""

    def __init__(self, value: bool = False, *, states: tuple[str, str] = ("off", "on"), **kw):
        super().__init__(value, **kw)
        self.states = states

    def state_text(self) -> str:
        return self.states[bool(self.value)]

    def on_mount(self) -> None:
        self._show_state()

    def on_switch_changed(self, event) -> None:
        self._show_state()

    def _show_state(self) -> None:
        from textual.css.query import NoMatches
        from textual.widgets import Label

        if self.id is None or self.parent is None:
            return
        try:
            self.parent.query_one(f"#{self.id}-state", Label).update(self.state_text())
        except NoMatches:
            pass


class FormCheckbox(KeysInOrder, Checkbox):
    pass
