"""Configs: the field machinery (fields), the model and training dataclasses with presets and YAML
(schema), overrides and the vocab a tokenizer sets (overrides), sizes derived from a config
(sizes: parameters, FLOPs), and the text `workbench config` and the Config pane show (report).

Nothing here imports torch: the app validates configs long before it needs a model.
"""
