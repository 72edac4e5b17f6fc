"""Writing files so that a killed process never leaves a half-written one: temporary file, then rename.

Every file the package writes goes through :func:`atomic_write` (or :func:`write_json`), and every folder it
builds as a whole through :func:`atomic_dir`.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class DiskFullError(OSError):
    """A write failed because the device is full; the message names the file: ``no space left on device (PATH)``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(errno.ENOSPC, "no space left on device", os.fspath(path))

    def __str__(self) -> str:
        return f"no space left on device ({self.filename})"


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc``, or an exception it was raised from or while handling, is ENOSPC.

    ``torch.save`` to a Python file reports a full disk as a RuntimeError ("unexpected pos ...") raised while
    handling the OSError of the failed write, so the whole chain is searched.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def yaml_error(e: Exception) -> str:
    """``line L, column C: problem`` of a ``yaml.YAMLError`` (1-based, as editors count), or its first line."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if mark is None:
        return str(e).strip().splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem or 'syntax error'}"


def atomic_write(path: str | os.PathLike[str], write: Callable[[Any], None], mode: str = "w") -> Path:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it, then rename it over ``path``.

    Readers see the old file or the new one, never a part; on any error the temporary file is removed (closed
    first, so that a full disk gets its space back). A full disk raises :class:`DiskFullError` naming ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DiskFullError(path) from e
        raise
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(e) and not isinstance(e, DiskFullError):
            raise DiskFullError(path) from e
        raise
    return path


def write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 1) -> Path:
    """Write ``obj`` as JSON (and a final newline) to ``path`` atomically; returns the path."""
    return atomic_write(path, lambda f: f.write(json.dumps(obj, indent=indent) + "\n"))


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a folder in a temporary folder beside ``path``, then swap it in for ``path`` (replacing an older one).

    ``with atomic_dir(out) as tmp: ...`` writes into ``tmp``; when the block ends without error, the old ``path``
    (if any) is removed and ``tmp`` renamed to it, so readers never see a half-built folder under ``path``. On
    any error the temporary folder is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
