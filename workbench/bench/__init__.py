"""The benchmark suite behind ``workbench bench``: each figure side by side with its peer.

``suite.run_bench`` runs the tasks (``tasks.py``; the reference trainers, ``peers.py`` and
``anchor.py``; the checks across sizes, ``sizes.py``; the app, ``app_task.py``), each in its own
process; ``report.build_rows`` and ``report.render_markdown`` make the table.
"""

from workbench.bench.report import build_rows, render_markdown
from workbench.bench.suite import ALL_TASKS, PRESETS, TASK_NAMES, BenchOptions, run_bench

__all__ = ["ALL_TASKS", "BenchOptions", "PRESETS", "TASK_NAMES", "build_rows", "render_markdown", "run_bench"]
