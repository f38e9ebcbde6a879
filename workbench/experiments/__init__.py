"""Your own ideas as experiments: variants of the model's parts, registered by name.

``registry`` holds every variant a config field may name (the built-in parts register there
too); ``loader`` imports the Python files of a workspace's ``experiments/`` folder (and of
``--experiments DIR`` / ``$WORKBENCH_EXPERIMENTS``), reporting a broken file by its own file and
line; ``runs`` copies the files a run used into its folder and loads that copy back. The public
API for an experiment file is ``from workbench.experiments import register, option``.
"""

from workbench.experiments.registry import option, register

__all__ = ["option", "register"]
