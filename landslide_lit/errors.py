"""The one base class of every error a user can cause and fix.

Everything the package raises for a bad cube, config, region, option, checkpoint,
encoder weights or output folder derives from :class:`LandslideLitError`; its message
says what is wrong, which file, variable or option, and the fix. ``main()`` turns it into
one ``error: ...`` block on stderr and exits with its ``exit_code``, never a traceback
(unless ``LANDSLIDE_LIT_TRACEBACK=1``).
"""

from __future__ import annotations

__all__ = ["TRACEBACK_ENV", "ConfigError", "LandslideLitError", "NoCommandError", "OutputError"]

TRACEBACK_ENV = "LANDSLIDE_LIT_TRACEBACK"
"""Set to 1 to see an error's traceback instead of its one-line message (bug reports)."""


class LandslideLitError(Exception):
    """An error the user can fix; the message names the file, variable or option and the fix."""

    exit_code: int = 2
    """The exit status of the command this error stops (2, as argparse's usage errors)."""


class ConfigError(LandslideLitError, ValueError):
    """An option, region or config value that cannot be used as given."""


class NoCommandError(ConfigError):
    """A command line without a command; ``main()`` lists the commands after the message."""


class OutputError(LandslideLitError):
    """A file or folder the run must write cannot be written (read-only, full, a file)."""
