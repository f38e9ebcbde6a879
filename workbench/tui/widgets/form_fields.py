"""Widgets of the Config pane's generated form: an Input validator that is the config's own
field check (``config.parse_field``), and the help line under the form."""

from __future__ import annotations

from textual.reactive import reactive
from textual.validation import ValidationResult, Validator
from textual.widget import Widget

from ...config import parse_field
from ...errors import ConfigError


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


class HelpLine(Widget):
    """A fixed-height line of help: changing it repaints, without re-laying out the screen
    (a Static would, on every focus change)."""

    text = reactive("", layout=False)

    def render(self) -> str:
        return self.text

    def update(self, text: str) -> None:
        self.text = text
