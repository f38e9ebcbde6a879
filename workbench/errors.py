"""User-facing errors.

A ``WorkbenchError`` carries a message meant for a person: it names the field or file, the
value, and what is allowed. The CLI prints it on one line without a traceback; the app shows
it in place.
"""


class WorkbenchError(Exception):
    """An error caused by input the user can fix."""


class ConfigError(WorkbenchError, ValueError):
    """An invalid config value; a ValueError so plain validation code can catch it too.

    ``fields`` names the fields involved ("model.dim", ...) so a form can show the message
    beside each of them (a cross-field rule names several)."""

    def __init__(self, message: str, fields: tuple[str, ...] = ()):
        super().__init__(message)
        self.fields = tuple(fields)


class Cancelled(WorkbenchError):
    """Long work stopped because the user asked it to."""


class Terminated(BaseException):
    """The process was asked to end (SIGTERM, SIGHUP): raised in the main thread so that work
    unwinds like a Ctrl+C, its cleanup runs and its files stay whole. Not an ``Exception``, so
    no ``except Exception`` swallows it."""

    def __init__(self, signum: int):
        import signal

        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def not_found(what: str, name: str, folder, names: list[str], listed: str, none_yet: str,
              hint: str = "") -> WorkbenchError:
    """The error for a named thing that is not in its workspace folder, listing what is there
    (``listed``: the words before the names) or saying there is nothing yet (``none_yet``)."""
    have = f"{listed}: {', '.join(names)}" if names else none_yet
    return WorkbenchError(f"{what} {name!r} not found in {str(folder)!r} ({have}{hint})")


def user_message(e: BaseException) -> str:
    """The line a person reads for an exception a client caught: a WorkbenchError's own
    message; anything else (a bug, a library failing) with its type, never a traceback."""
    return str(e) if isinstance(e, WorkbenchError) else f"{type(e).__name__}: {e}"
