"""Temporary files named after the process that owns them, and removal of dead owners' files.

Partial map files, spill files and kept composites carry ``pid<PID>-<HOST>`` in their
names. A process killed outright (SIGKILL, out of memory, a node failure) cannot remove
them; the next predict does: it removes the entries whose owner ran on this host and is
no longer alive. Entries of other hosts (a shared file system) and of live processes are
never touched, nor names without an owner.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
from pathlib import Path

__all__ = ["is_stale", "owner_tag", "remove_stale"]

log = logging.getLogger(__name__)

_OWNER = re.compile(r"pid(?P<pid>\d+)-(?P<host>[A-Za-z0-9_]+)")


def _host() -> str:
    """This host's name reduced to letters, digits and ``_`` (no dots: names keep suffixes)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname()) or "localhost"


def owner_tag(pid: int | None = None) -> str:
    """``pid<PID>-<HOST>`` of this process (or of ``pid`` on this host), for file names."""
    return f"pid{os.getpid() if pid is None else pid}-{_host()}"


def _alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(name: str) -> bool:
    """Whether ``name`` carries the owner tag of a process of this host that has ended."""
    match = _OWNER.search(name)
    return bool(match) and match["host"] == _host() and not _alive(int(match["pid"]))


def remove_stale(folder: Path, pattern: str) -> list[Path]:
    """Remove the entries of ``folder`` matching ``pattern`` whose owner is gone; the list."""
    removed = []
    for path in sorted(folder.glob(pattern)) if folder.is_dir() else []:
        if not is_stale(path.name):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:  # another process of this host removed it first
            continue
        except OSError as error:
            log.warning("could not remove %s, left by an ended process: %s", path, error)
            continue
        removed.append(path)
    if removed:
        log.info(
            "removed %d file(s) left in %s by ended processes: %s",
            len(removed),
            folder,
            ", ".join(p.name for p in removed),
        )
    return removed
