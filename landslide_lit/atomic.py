"""One atomic writer for every file that must never be seen half-written.

``write_atomically(path, write)`` lets ``write`` fill a hidden temporary path beside the
target (same folder, so the rename stays within one file system; same suffix, so writers
that pick a format by suffix, such as matplotlib, still do), then renames it over the
target with :func:`os.replace`: a reader sees the old file or the new one, never a part.
``durable=True`` also fsyncs the file and its folder, for files whose loss after a power
cut costs work (checkpoints).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def temporary_path(path: Path) -> Path:
    """A hidden name beside ``path`` owned by this process, with ``path``'s suffix."""
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


def write_atomically(
    path: str | os.PathLike, write: Callable[[Path], Any], durable: bool = False
) -> Path:
    """Call ``write(temporary)``, then rename the temporary file over ``path``; ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        write(temporary)
        if durable:
            _fsync(temporary)
        os.replace(temporary, path)
    except BaseException:
        remove(temporary)
        raise
    if durable:
        _fsync(path.parent)
    return path


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_atomically(path, lambda temporary: temporary.write_text(text, encoding="utf-8"))


def write_json_atomically(path: str | os.PathLike, data: Any, **dump_options: Any) -> Path:
    """Write ``data`` as indented JSON (and a final newline) to ``path`` atomically."""
    text = json.dumps(data, indent=2, **dump_options) + "\n"
    return write_text_atomically(path, text)


def move_into_place(partial: Path, path: Path) -> Path:
    """Rename a finished ``partial`` file or folder (a Zarr store) to ``path``; ``path``.

    A folder cannot be renamed over another, so an existing ``path`` is first moved aside
    under a hidden name, then removed: a reader sees the old one or the new one, never a mix.
    """
    if not path.exists():
        partial.rename(path)
        return path
    old = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
    path.rename(old)
    partial.rename(path)
    remove(old)
    return path


def remove(path: Path) -> None:
    """Remove a file or a folder (not following a link to a folder); none is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file, or a folder after a rename) to the disk where it can be."""
    with contextlib.suppress(OSError):  # some file systems cannot sync a folder
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
