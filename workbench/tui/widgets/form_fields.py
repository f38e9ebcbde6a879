"""Widgets of the generated forms: Input validators that are the engine's own checks (the
config's ``parse_field``, the tokenizer build form's numbers), and the help line under a form."""

from __future__ import annotations

from textual.reactive import reactive
from textual.validation import ValidationResult, Validator
from textual.widget import Widget

from workbench.config.fields import parse_field
from workbench.errors import ConfigError, WorkbenchError
from workbench.tokenizer.build import parse_form_number


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


class FormNumberValidator(Validator):
    """Marks a number of the tokenizer build form invalid exactly where the engine refuses it."""

    def __init__(self, label: str):
        super().__init__()
        self.label = label

    def validate(self, value: str) -> ValidationResult:
        try:
            parse_form_number(self.label, value)
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
