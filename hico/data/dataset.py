"""Datasets of ultrasound videos: find the videos, their classes and patients, and load their frames.

Two on-disk layouts are read, and can be mixed:

- frame folders (the USCL/HiCo authors' layout): ``root/<class>/<video>/<n>.jpg|png``;
- raw clips: ``root/<class>/<video>.mp4|avi|mpeg|mov|gif``; a still image ``root/<class>/<name>.jpg`` is a
  one-frame video. Files directly under ``root`` get the class ``unlabelled``.

An optional ``root/index.csv`` (columns ``file, video_id, class`` and optionally ``split_group``; other columns
are ignored) overrides the folder names: rows that share a ``video_id`` are the frames of one video. Without a
``split_group`` column the ``patient_id`` column is used, and without either each video is its own group.
Every ``file`` an index names must lie inside ``root`` once resolved (``..``, absolute paths and symbolic links
included): a row that points elsewhere is refused without the file being opened, and is listed in
:attr:`VideoDataset.refused` with its line and the path as written (a video with such a row is left out).

Frames are always ordered by the numbers in their names (``frame_2`` before ``frame_10``).
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hico.data.cache import FrameCache
from hico.data.decode import DecodeError, is_image, is_video, natural_key
from hico.errors import UserError

UNLABELLED = "unlabelled"
INDEX_FILE = "index.csv"


class DatasetError(UserError):
    """The dataset cannot be used as given (missing folder, empty, malformed index). One-line message."""


@dataclass(frozen=True)
class Video:
    """One video: its id, class, patient group and the file(s) its frames come from.

    ``files`` is one clip, one still image, or the ordered frame files of a frame folder.
    """

    video_id: str
    label: str
    group: str
    files: tuple[Path, ...]

    @property
    def kind(self) -> str:
        """``clip``, ``image`` (a one-frame video) or ``frames`` (a frame folder)."""
        if len(self.files) == 1:
            return "clip" if is_video(self.files[0]) else "image"
        return "frames"


@dataclass
class VideoDataset:
    """The videos of one dataset, with their frames loaded on demand through a :class:`FrameCache`.

    Build it with :func:`scan`. ``frames(i)`` returns video ``i`` as a (T, S, S) uint8 array.
    """

    root: Path
    videos: list[Video]
    cache: FrameCache
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    """Index rows refused because their file lies outside ``root``: (the path as written, reason)."""
    _served: dict[tuple[Path, ...], np.ndarray] = field(default_factory=dict, repr=False, compare=False)
    """The frames ``frames(i)`` returned, by source files: each later call is a lookup, with no ``stat`` of
    every source file (:func:`hico.data.cache.source_key`). Shared with :meth:`subset` datasets."""

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def classes(self) -> list[str]:
        """Sorted class names (the index of a class in this list is its integer label)."""
        return sorted({v.label for v in self.videos})

    @property
    def labels(self) -> np.ndarray:
        """Integer class of each video, (V,) int64, indexing :attr:`classes`."""
        lookup = {c: i for i, c in enumerate(self.classes)}
        return np.array([lookup[v.label] for v in self.videos], dtype=np.int64)

    @property
    def groups(self) -> np.ndarray:
        """Patient group of each video, (V,) str."""
        return np.array([v.group for v in self.videos])

    def frames(self, i: int) -> np.ndarray:
        """Frames of video ``i``, (T, S, S) uint8 (decoded once, then served from the cache).

        The source files are looked at (``stat``) on the first call only: this dataset then serves the same
        frames for its lifetime, even if a file is edited meanwhile (``scan`` the folder again to see the edit).
        A training step calls this for every pair, so a stat of every frame file per call was the loader's cost.
        """
        files = tuple(self.videos[i].files)
        if (arr := self._served.get(files)) is None:
            arr = self._served[files] = self.cache.load(files)
        return arr

    def n_frames(self, i: int) -> int:
        """Number of frames of video ``i``."""
        return len(self.frames(i))

    def load_all(self, workers: int | None = None, progress: bool = True) -> VideoDataset:
        """Decode every video once (in threads), moving the ones that fail to :attr:`unreadable`.

        A frame folder with some unreadable frames keeps its readable ones; each unreadable frame is listed in
        :attr:`unreadable` by its own path. After this every ``frames(i)`` is served from the cache, so training
        never decodes again. Returns self.
        """
        from tqdm.auto import tqdm

        workers = workers or min(8, os.cpu_count() or 1)

        def load(v: Video) -> str | None:
            try:
                self.cache.load(v.files)
                return None
            except (DecodeError, OSError) as e:
                return str(e)

        with ThreadPoolExecutor(workers) as pool:
            results = list(
                tqdm(
                    pool.map(load, self.videos),
                    total=len(self.videos),
                    desc=f"decoding {self.root.name or self.root}",
                    unit="video",
                    disable=not progress,
                )
            )
        bad = [(v, err) for v, err in zip(self.videos, results, strict=True) if err is not None]
        self.unreadable += [(v.files[0], err) for v, err in bad]
        self.unreadable += [
            s for v, err in zip(self.videos, results, strict=True) if err is None for s in self.cache.skipped(v.files)
        ]
        self.videos = [v for v, err in zip(self.videos, results, strict=True) if err is None]
        return self

    def require_videos(self) -> VideoDataset:
        """Self, when at least one video is left; else :class:`DatasetError` "no readable video in ROOT (N
        unreadable; first: REASON)". Call it after :meth:`load_all`. Returns self."""
        if not self.videos:
            first = self.unreadable[0][1] if self.unreadable else ""
            raise DatasetError(f"no readable video in {self.root} ({len(self.unreadable)} unreadable; first: {first})")
        return self

    def subset(self, indices: Iterable[int]) -> VideoDataset:
        """A dataset of the chosen videos, sharing this one's cache."""
        videos = [self.videos[i] for i in indices]
        return VideoDataset(self.root, videos, self.cache, list(self.unreadable), list(self.refused), self._served)

    def with_classes(self, classes: Sequence[str]) -> VideoDataset:
        """The videos of the named classes only; an unknown class name is an error naming it."""
        unknown = sorted(set(classes) - set(self.classes))
        if unknown:
            raise DatasetError(f"unknown class {unknown[0]!r}: {self.root} has {', '.join(self.classes)}")
        keep = set(classes)
        return self.subset(i for i, v in enumerate(self.videos) if v.label in keep)

    def summary(self) -> dict:
        """Counts: ``{"videos", "frames", "classes": {class: videos}, "groups", "unreadable": [paths],
        "refused": [index paths as written, outside the dataset folder]}``."""
        return {
            "videos": len(self.videos),
            "frames": int(sum(self.n_frames(i) for i in range(len(self)))),
            "classes": dict(sorted(Counter(v.label for v in self.videos).items())),
            "groups": len({v.group for v in self.videos}),
            "unreadable": [str(p) for p, _ in self.unreadable],
            "refused": [p for p, _ in self.refused],
        }


def scan(root: str | Path, size: int = 256, cache_dir: str | Path | None = None, index: bool = True) -> VideoDataset:
    """Find the videos under ``root`` (nothing is decoded yet; see :meth:`VideoDataset.load_all`).

    Args:
        root: dataset folder (see the module docstring for the layouts).
        size: working size S of the cached frames.
        cache_dir: disk cache folder, or None for memory only.
        index: read ``root/index.csv`` when present.

    Raises:
        DatasetError: the folder does not exist, holds no video, or its index is malformed.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"dataset folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder: give the dataset's root folder")
    cache = FrameCache(size, cache_dir)
    refused: list[tuple[str, str]] = []
    if index and (root / INDEX_FILE).is_file():
        videos, missing, refused = _from_index(root, root / INDEX_FILE)
    else:
        videos, missing = _from_folders(root), []
    if not videos and refused:
        raise DatasetError(f"no usable video under {root}: {len(refused)} refused, first: {refused[0][1]}")
    if not videos:
        raise DatasetError(
            f"no videos found under {root}: expected <class>/<video>.mp4|avi|mpeg|mov|gif, "
            "<class>/<video>/<n>.jpg|png, or an index.csv"
        )
    return VideoDataset(root, videos, cache, missing, refused)


def _from_folders(root: Path) -> list[Video]:
    videos: list[Video] = []
    for entry in sorted(_visible(root), key=lambda p: natural_key(p.name)):
        if entry.is_dir():
            videos += _videos_in_class(entry, entry.name, root)
        elif is_video(entry) or is_image(entry):
            videos.append(_video(entry.relative_to(root), UNLABELLED, (entry,)))
    return videos


def _videos_in_class(folder: Path, label: str, root: Path) -> list[Video]:
    videos = []
    for entry in sorted(_visible(folder), key=lambda p: natural_key(p.name)):
        if entry.is_dir():
            frames = sorted((f for f in _visible(entry) if is_image(f)), key=lambda p: natural_key(p.name))
            if frames:
                videos.append(_video(entry.relative_to(root), label, tuple(frames)))
        elif is_video(entry) or is_image(entry):
            videos.append(_video(entry.relative_to(root), label, (entry,)))
    return videos


def _video(rel: Path, label: str, files: tuple[Path, ...]) -> Video:
    video_id = rel.with_suffix("").as_posix() if rel.suffix else rel.as_posix()
    return Video(video_id=video_id, label=label, group=video_id, files=files)


def _visible(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if not p.name.startswith(".")]


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path`` lies inside the (resolved) folder ``root`` once ``..`` and symbolic links are resolved.

    Only the names along the path are looked up (as ``os.path.realpath`` does); the file is never opened.
    """
    return path.resolve().is_relative_to(root)


def _from_index(root: Path, index_path: Path) -> tuple[list[Video], list[tuple[Path, str]], list[tuple[str, str]]]:
    with open(index_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = set(reader.fieldnames or ())
        for required in ("file", "video_id", "class"):
            if required not in columns:
                raise DatasetError(
                    f"{index_path}: missing column {required!r} (needs file, video_id, class[, split_group])"
                )
        group_col = next((c for c in ("split_group", "patient_id") if c in columns), "video_id")
        rows = list(reader)
    by_video: dict[str, list[dict]] = {}
    refused: list[tuple[str, str]] = []
    refused_videos: set[str] = set()
    real_root = root.resolve()
    for line, row in enumerate(rows, start=2):
        if not row["file"] or not row["video_id"] or not row["class"]:
            raise DatasetError(f"{index_path}, line {line}: empty file, video_id or class")
        if not _inside(root / row["file"], real_root):
            reason = f"{index_path.name}, line {line}: {row['file']} is outside the dataset folder (refused, not read)"
            refused.append((row["file"], reason))
            refused_videos.add(row["video_id"])
        by_video.setdefault(row["video_id"], []).append(row)

    videos, missing = [], []
    for video_id, vrows in by_video.items():
        if video_id in refused_videos:
            continue  # a video with a frame outside the dataset is left out whole
        labels = {r["class"] for r in vrows}
        if len(labels) > 1:
            raise DatasetError(f"{index_path}: video {video_id!r} has rows of several classes {sorted(labels)}")
        paths = [root / r["file"] for r in vrows]
        absent = [p for p in paths if not p.exists()]
        if absent:
            missing += [(p, f"{p}: listed in {index_path.name} but missing") for p in absent]
            continue
        if len(paths) == 1 and paths[0].is_dir():
            files = tuple(sorted((f for f in _visible(paths[0]) if is_image(f)), key=lambda p: natural_key(p.name)))
        else:
            files = tuple(sorted(paths, key=lambda p: natural_key(p.name)))
        if not files:
            missing.append((paths[0], f"{paths[0]}: no frames"))
            continue
        group = vrows[0].get(group_col) or video_id
        videos.append(Video(video_id=video_id, label=labels.pop(), group=group, files=files))
    return videos, missing, refused


def load_dataset(
    root: str | Path,
    size: int = 256,
    cache_dir: str | Path | None = None,
    classes: Sequence[str] | None = None,
    progress: bool = True,
) -> VideoDataset:
    """:func:`scan` ``root``, keep the named ``classes`` (None: all), decode every video at ``size``, and check
    that one is left (:meth:`VideoDataset.require_videos`): what every command and page that reads a dataset does.

    ``cache_dir``: the frame cache folder (None: decode in memory only, write nothing).

    Raises:
        DatasetError: the folder is missing or empty, a class is unknown, or no video is readable.
    """
    videos = scan(root, size=size, cache_dir=cache_dir)
    if classes:
        videos = videos.with_classes(classes)
    return videos.load_all(progress=progress).require_videos()
