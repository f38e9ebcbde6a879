"""The run folder ``trained_models/<run>/``: create, list, read (folder), checkpoints written
atomically (checkpoint), the model loaded from a run (load), and curves compared (compare).
"""
