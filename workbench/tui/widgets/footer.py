"""The app's Footer on as many lines as its keys need.

Textual's Footer is one line that scrolls sideways, so at 80 columns a pane's last keys are
cut off. This one lays the same keys (``FooterKey``, grouped keys, the palette key) out in
rows that fit the screen's width: compact spacing below ``COMPACT_BELOW`` columns, and a
second (or third) line when even that does not fit.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import groupby

from textual.app import ComposeResult
from textual.containers import HorizontalGroup
from textual.widgets import Footer
from textual.widgets._footer import FooterKey, FooterLabel, KeyGroup

COMPACT_BELOW = 110


class FooterRow(HorizontalGroup):
    """One line of keys."""


class WrappingFooter(Footer):
    """Every key of the focused pane, wrapped onto more lines where one is too short."""

    DEFAULT_CSS = """
    WrappingFooter { layout: vertical; height: auto; max-height: 3; }
    WrappingFooter FooterRow { height: 1; width: 100%; }
    WrappingFooter.-compact FooterLabel { margin: 0 1 0 0; }
    """

    def __init__(self, **kw):
        super().__init__(**kw)
        self._width = 0

    def _entries(self) -> list[tuple[object, list]]:
        """(group or None, [(binding, enabled, tooltip)]) for each key or key group, in the
        Footer's order."""
        by_action: defaultdict[str, list] = defaultdict(list)
        for _, binding, enabled, tooltip in self.screen.active_bindings.values():
            if binding.show:
                by_action[binding.action].append((binding, enabled, tooltip))
        out: list[tuple[object, list]] = []
        for group, members in groupby(by_action.values(), lambda m: m[0][0].group):
            members = [m[0] for m in members]
            if group is not None and len(members) > 1:
                out.append((group, members))
            else:
                out += [(None, [m]) for m in members]
        return out

    def _width_of(self, group, members: list, compact: bool) -> int:
        keys = [len(self.app.get_key_display(b)) for b, _, _ in members]
        if group is not None:
            return sum(keys) + 2 + len(group.description) + 1
        binding = members[0][0]
        desc = len(binding.description) + 1 if binding.description else 0
        return keys[0] + desc + (1 if compact else 2)

    def _widgets(self, group, members: list) -> list:
        if group is None:
            binding, enabled, tooltip = members[0]
            return [FooterKey(binding.key, self.app.get_key_display(binding), binding.description,
                              binding.action, disabled=not enabled, tooltip=tooltip).data_bind(compact=Footer.compact)]
        keys = [FooterKey(b.key, self.app.get_key_display(b), "", b.action, disabled=not enabled,
                          tooltip=tooltip or b.description, classes="-grouped").data_bind(compact=Footer.compact)
                for b, enabled, tooltip in members]
        return [KeyGroup(*keys, classes="-compact" if group.compact else ""), FooterLabel(group.description)]

    def _palette(self) -> tuple[int, list]:
        if not (self.show_command_palette and self.app.ENABLE_COMMAND_PALETTE):
            return 0, []
        try:
            _, binding, enabled, tooltip = self.screen.active_bindings[self.app.COMMAND_PALETTE_BINDING]
        except KeyError:
            return 0, []
        key = FooterKey(binding.key, self.app.get_key_display(binding), binding.description, binding.action,
                        classes="-command-palette", disabled=not enabled,
                        tooltip=binding.tooltip or binding.description)
        return len(key.key_display) + len(binding.description) + 4, [key]

    def compose(self) -> ComposeResult:
        if not self._bindings_ready:
            return
        width = self._width = self.app.size.width
        entries = self._entries()
        pal_width, palette = self._palette()
        # roomy spacing where everything fits on one line; compact where it does not
        compact = width < COMPACT_BELOW or \
            sum(self._width_of(g, m, False) for g, m in entries) + pal_width > width
        self.set_reactive(Footer.compact, compact)
        self.set_class(compact, "-compact")
        rows: list[list] = [[]]
        used = 0
        for i, (group, members) in enumerate(entries):
            w = self._width_of(group, members, compact)
            room = width - (pal_width if i == len(entries) - 1 else 0)
            if rows[-1] and used + w > room:
                rows.append([])
                used = 0
            rows[-1] += self._widgets(group, members)
            used += w
        if used + pal_width > width and rows[-1]:
            rows.append([])
        rows[-1] += palette
        for row in rows:
            yield FooterRow(*row)

    def on_resize(self) -> None:
        if self.app.size.width != self._width and self.is_attached:
            self.call_after_refresh(self.recompose)
