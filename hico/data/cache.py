"""A two-level frame cache: decoded videos in memory, and on disk as memory-mapped ``.npy`` files.

A video is decoded once per working size. The disk entry's name is a hash of the source files' absolute paths,
modification times and byte sizes, plus the working size, so an edited or replaced file is decoded again and
nothing stale is ever served. Entries are written to a temporary file and renamed, so a run killed mid-write
never leaves a truncated entry. Loading an entry memory-maps it: data-loader workers share the OS page cache
instead of each holding a copy. The frames of a frame folder that could not be read are listed beside the entry
(``<key>.skipped.json``), so a warm cache reports them as the first decode did. ``CACHE_VERSION`` is part of the
key: it changes whenever decoding does, so no entry decoded the old way is served.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hico.data.decode import read_source
from hico.io import atomic_write

CACHE_VERSION = 2
"""Part of every key; raised when decoding changes (2: deep images range-scaled, frame folders keep their readable
frames), so entries decoded the old way are decoded again."""


def default_cache_dir() -> Path:
    """``$HICO_CACHE`` if set, else ``$XDG_CACHE_HOME/hico`` (``~/.cache/hico``)."""
    if env := os.environ.get("HICO_CACHE"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hico"


def source_key(files: Sequence[Path], size: int) -> str:
    """Hash of (absolute path, mtime, byte size) of every source file, and the working size."""
    h = hashlib.sha1(f"v{CACHE_VERSION}|{size}".encode())
    for f in files:
        st = os.stat(f)
        h.update(f"|{Path(f).resolve()}|{st.st_mtime_ns}|{st.st_size}".encode())
    return h.hexdigest()


class FrameCache:
    """Decoded videos by source, at one working size.

    Args:
        size: working size S; every frame is stored as S x S grey uint8.
        cache_dir: folder for the disk cache, or None to keep decoded videos in memory only.

    Example:
        >>> cache = FrameCache(128, cache_dir=None)
        >>> frames = cache.load([Path("data_samples/covid/covid_v00/0.jpg")])  # (1, 128, 128) uint8
    """

    def __init__(self, size: int, cache_dir: str | Path | None = None) -> None:
        if size < 8:
            raise ValueError(f"working size must be at least 8 px, got {size}")
        self.size = size
        self.dir = Path(cache_dir) / f"frames{size}" if cache_dir is not None else None
        self._memory: dict[str, np.ndarray] = {}
        self._skipped: dict[str, list[tuple[Path, str]]] = {}

    def path_for(self, key: str) -> Path | None:
        """Where the disk entry for ``key`` lives (None without a disk cache)."""
        return None if self.dir is None else self.dir / key[:2] / f"{key}.npy"

    def load(self, files: Sequence[Path]) -> np.ndarray:
        """Frames of one video source, (T, S, S) uint8: from memory, else disk, else decoded and stored."""
        key = source_key(files, self.size)
        if (arr := self._memory.get(key)) is not None:
            return arr
        path = self.path_for(key)
        arr, skipped = None, []
        if path is not None and path.exists():
            try:
                arr = np.load(path, mmap_mode="r")
                skipped = _read_skipped(path)
            except (OSError, ValueError):  # unreadable entry (disk trouble): decode again
                arr, skipped = None, []
        if arr is None:
            arr = read_source(files, self.size, skipped)
            if path is not None:
                if skipped:  # first the list, then the frames: an entry on disk always has its list
                    text = json.dumps([[str(p), reason] for p, reason in skipped])
                    atomic_write(_skipped_path(path), lambda f: f.write(text))
                atomic_write(path, lambda f: np.save(f, arr), mode="wb")
        self._memory[key] = arr
        self._skipped[key] = skipped
        return arr

    def skipped(self, files: Sequence[Path]) -> list[tuple[Path, str]]:
        """The frames of the source that could not be read and were left out, as ``(path, reason)``."""
        self.load(files)
        return list(self._skipped.get(source_key(files, self.size), []))

    def is_cached(self, files: Sequence[Path]) -> bool:
        """True when the source is in memory or on disk (it will not be decoded again)."""
        key = source_key(files, self.size)
        path = self.path_for(key)
        return key in self._memory or (path is not None and path.exists())


def _skipped_path(entry: Path) -> Path:
    return entry.with_name(f"{entry.stem}.skipped.json")


def _read_skipped(entry: Path) -> list[tuple[Path, str]]:
    side = _skipped_path(entry)
    if not side.exists():
        return []
    return [(Path(p), str(reason)) for p, reason in json.loads(side.read_text())]
