"""The ``workbench`` command: the app when run bare, and a headless subcommand per pane.

Each command group lives in its own module here and exposes ``register(subparsers)``; a
command sets ``func(args, workspace) -> int``. User errors (``WorkbenchError``) are printed on
one line with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading

from workbench.errors import Cancelled, Terminated, WorkbenchError
from workbench.workspace import Workspace

# Command-group modules, in the order `--help` lists them. A module missing here simply
# contributes no commands, so groups can be developed independently.
GROUPS = ["tokenizer", "data", "config", "plan", "trace", "train", "sweep", "eval", "runs", "generate", "export", "import",
          "experiment", "probe", "bench"]


def quiet_native_logs() -> None:
    """Native libraries write to fd 2 directly; keep them quiet before they are imported."""
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench",
        description="A terminal workbench for building and studying tiny language models. "
        "Run with no command to open the app.",
    )
    parser.add_argument(
        "--workspace",
        metavar="DIR",
        default=None,
        help="folder holding models/, tokenizers/, data/ and trained_models/ (default: current folder)",
    )
    parser.add_argument("--experiments", metavar="DIR", action="append", default=[],
                        help="also load the experiment files of DIR (repeatable; the workspace's experiments/ "
                             "always, and $WORKBENCH_EXPERIMENTS)")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="no progress lines (off a terminal, long commands print one every 30 s or 10%%)")
    parser.add_argument("--trust-code", action="store_true",
                        help="let runs made in another workspace run the experiment code in their folders")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        try:
            mod = importlib.import_module(f"{__name__}.{group}_cmd")
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{group}_cmd":
                continue
            raise
        mod.register(sub)
    _own_usage(parser)
    return parser


def _own_usage(parser: argparse.ArgumentParser) -> None:
    """Each (sub)command remembers its parser, so an option it does not know is refused with its
    own usage line, not the top-level one (``main``)."""
    parser.set_defaults(_usage=parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _own_usage(child)


def main(argv: list[str] | None = None) -> int:
    quiet_native_logs()
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the subcommand that was given them, with its own usage (exits 2)
        getattr(args, "_usage", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.quiet:  # in the environment: child processes (torchrun workers, a sweep's runs) too
        from workbench.cli.common import QUIET_ENV

        os.environ[QUIET_ENV] = "1"
    try:
        ws = Workspace.at(args.workspace)
        load_workspace_experiments(ws, args.experiments, args.trust_code)
        if args.command is None:
            return run_app(ws)
        func = getattr(args, "func", None)
        if func is None:  # a group given without its subcommand
            parser.parse_args([*(argv if argv is not None else sys.argv[1:]), "--help"])
            return 2
        with end_on_signals():
            return int(func(args, ws) or 0)
    except WorkbenchError as e:
        if isinstance(e, Cancelled):
            print(f"cancelled: {e}", file=sys.stderr)
            return 130
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Terminated as e:
        print(f"\nended by {e}; whatever was being written was left out, all else is kept", file=sys.stderr)
        return 128 + e.signum
    except BrokenPipeError:
        return 0
    except OSError as e:  # a full disk, a read-only folder, a lost mount: the files say what is kept
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        return 1
    except (MemoryError, ImportError) as e:
        # too little memory to import torch shows as an ImportError ("failed to map segment")
        if isinstance(e, ImportError) and not any(s in str(e).lower() for s in ("failed to map segment",
                                                                               "cannot allocate memory")):
            raise
        print("error: out of memory: this machine (or its memory limit, `ulimit -v`) has too little free memory for "
              "this command; close other programs or raise the limit", file=sys.stderr)
        return 1


def os_error_line(e: OSError) -> str:
    """An operating-system error as one line: what failed, on which file, and what it means."""
    import errno

    where = f" {e.filename!r}" if e.filename else ""
    hint = {errno.ENOSPC: "; the disk is full: free some space and run it again (finished files are kept)",
            errno.EROFS: "; the folder is on a read-only file system: use a writable --workspace",
            errno.EACCES: "; check the folder's permissions or use another --workspace",
            errno.EDQUOT: "; the disk quota is used up"}.get(e.errno, "")
    return f"cannot use{where}: {e.strerror or e}{hint}"


TERMINATING = (signal.SIGTERM, signal.SIGHUP)  # what `kill`, a closed terminal, docker stop and schedulers send


@contextlib.contextmanager
def end_on_signals():
    """While a command runs, SIGTERM and SIGHUP unwind it like Ctrl+C (raising ``Terminated`` in
    the main thread), so its cleanup runs; `train` turns them into a stop after the step."""
    def handler(signum, frame):
        raise Terminated(signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, handler) for s in TERMINATING}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def load_workspace_experiments(ws: Workspace, extra: list[str], trust_code: bool) -> None:
    """Register the workspace's experiment variants (and those of ``extra`` folders) before any
    config is read; a file that fails to load is said in one line and left out. The folders and
    the trust go into the environment, so child processes (torchrun workers, sweeps) see them."""
    from workbench.experiments.loader import ENV, experiment_dirs, load_experiments
    from workbench.runs.code import TRUST_ENV

    if extra:
        os.environ[ENV] = os.pathsep.join([*(os.path.abspath(d) for d in extra),
                                           *filter(None, os.environ.get(ENV, "").split(os.pathsep))])
    if trust_code:
        os.environ[TRUST_ENV] = "1"
    for line in load_experiments(experiment_dirs(ws.root)).errors:
        print(f"warning: experiment not loaded: {line}", file=sys.stderr)


def run_app(ws: Workspace) -> int:
    try:
        from workbench.tui.app import run
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("workbench.tui"):
            print("the app is not built yet; see `workbench --help` for the commands", file=sys.stderr)
            return 2
        raise
    return run(ws)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
