"""The benchmark suite behind ``workbench bench``: each figure side by side with its peer.

``suite.run_bench`` runs the tasks (``tasks.py``; the app task is ``workbench.tui.bench_app``),
each in its own process; ``report.build_rows`` and ``report.render_markdown`` make the table.
"""

from .report import build_rows, render_markdown
from .suite import ALL_TASKS, PRESETS, TASK_NAMES, BenchOptions, run_bench

__all__ = ["ALL_TASKS", "BenchOptions", "PRESETS", "TASK_NAMES", "build_rows", "render_markdown", "run_bench"]
