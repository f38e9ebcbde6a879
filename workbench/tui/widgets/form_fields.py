"""Widgets of the generated forms: Input validators that are the engine's own checks (the
config's ``parse_field``, the tokenizer build form's numbers), and the help line under a form."""

from __future__ import annotations

from textual.reactive import reactive
from textual.validation import ValidationResult, Validator
from textual.widget import Widget

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
