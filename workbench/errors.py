"""User-facing errors.

A ``WorkbenchError`` carries a message meant for a person: it names the field or file, the
value, and what is allowed. The CLI prints it on one line without a traceback; the app shows
it in place.
"""


class WorkbenchError(Exception):
    """An error caused by input the user can fix."""


class ConfigError(WorkbenchError, ValueError):
    """An invalid config value; a ValueError so plain validation code can catch it too."""


class Cancelled(WorkbenchError):
    """Long work stopped because the user asked it to."""
