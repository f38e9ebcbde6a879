"""The Textual app. The only package in workbench that imports ``textual``; it calls the engine."""
