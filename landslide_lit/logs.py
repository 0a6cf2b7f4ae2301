"""The package's log lines on stderr: ``[landslide-lit] ...``, set up once by the commands.

Every module logs to a child of the ``landslide_lit`` logger; :func:`configure_logging`
gives that logger its one handler. Library users who never call it keep Python's defaults.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["configure_logging"]


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (tests and notebooks replace it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging() -> None:
    """Show the package's INFO lines on stderr, prefixed ``[landslide-lit]`` (once)."""
    log = logging.getLogger("landslide_lit")
    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("[landslide-lit] %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
