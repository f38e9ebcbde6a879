"""workbench: a terminal workbench for building and studying tiny language models.

The engine (this package, minus ``workbench.tui``) never imports Textual, so everything the
app does can be scripted.
"""

__version__ = "0.1.0"
