"""Decode ultrasound frames from clips and still images into grey uint8 arrays at a working size.

Every source, whatever its container (mp4, avi, mpeg, mov, gif), colour model (grey, RGB, RGBA, YUV) or
frame size, becomes one array of shape (T, S, S), dtype uint8: T frames, resized once to S x S. Ultrasound is
grey; keeping one channel makes the cache three times smaller and the augmentation three times cheaper (the
model sees the grey frame as 3 identical channels, as in the USCL/HiCo code).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

VIDEO_EXTS = frozenset({".mp4", ".avi", ".mpeg", ".mpg", ".mov", ".gif", ".mkv", ".webm", ".m4v"})
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})
DEEP_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
"""Pillow modes of grey images deeper than 8 bits (16-bit PNG/TIFF, 32-bit integer or float TIFF)."""


class DecodeError(RuntimeError):
    """A file could not be decoded into frames (corrupt, empty or of an unknown format)."""


def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers numerically: ``frame_2`` before ``frame_10``.

    >>> sorted(["10.jpg", "2.jpg", "1.jpg"], key=natural_key)
    ['1.jpg', '2.jpg', '10.jpg']
    """
    parts = re.split(r"(\d+)", name.lower())
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p)


def is_video(path: Path) -> bool:
    """True when the file name has a video-container extension (case-insensitive)."""
    return path.suffix.lower() in VIDEO_EXTS


def is_image(path: Path) -> bool:
    """True when the file name has a still-image extension (case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTS


def read_image(path: Path, size: int) -> np.ndarray:
    """Read one still image as a grey (S, S) uint8 array (area resampling when shrinking).

    Deep images (16-bit, 32-bit integer or float grey) are scaled to 0..255 by their own range, min to 0 and max
    to 255 (a constant image becomes 0), instead of being clipped at 255 as Pillow's 8-bit conversion does.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode in DEEP_MODES:
                return _deep_to_uint8(im, size)
            if im.mode in ("RGBA", "LA", "P"):  # flatten transparency onto black, like an ultrasound background
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (0, 0, 0, 255))
                im = Image.alpha_composite(bg, im)
            grey = im.convert("L").resize((size, size), Image.Resampling.BOX, reducing_gap=None)
            return np.asarray(grey, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DecodeError(f"{path}: not a readable image ({e})") from e


def _deep_to_uint8(im, size: int) -> np.ndarray:
    """A deep grey Pillow image, range-scaled to 0..255 in float, area-resampled to (S, S), rounded to uint8."""
    from PIL import Image

    values = np.asarray(im).astype(np.float64)
    lo, hi = float(values.min()), float(values.max())
    scaled = (values - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(values)
    grey = Image.fromarray(scaled.astype(np.float32)).resize((size, size), Image.Resampling.BOX)
    return np.clip(np.rint(np.asarray(grey)), 0, 255).astype(np.uint8)


def read_clip(path: Path, size: int) -> np.ndarray:
    """Decode every frame of a clip as grey (T, S, S) uint8, with FFmpeg (PyAV) threads and scaling."""
    import av

    frames: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DecodeError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(width=size, height=size, format="gray", interpolation="AREA"))
    except DecodeError:
        raise
    except (av.FFmpegError, OSError, ValueError, RuntimeError) as e:
        if not frames:
            raise DecodeError(f"{path}: not a readable video ({e})") from e
        # a clip truncated at the end keeps the frames decoded so far
    if not frames:
        raise DecodeError(f"{path}: the video has no frames")
    return np.stack(frames)


def read_source(files: Sequence[Path], size: int, skipped: list[tuple[Path, str]] | None = None) -> np.ndarray:
    """Decode a video source into (T, S, S) uint8.

    ``files`` is either one clip, one still image (a one-frame video), or the ordered frame files of a
    frame-folder video. A frame folder keeps its readable frames: each frame that cannot be read is left out
    and appended to ``skipped`` as ``(path, reason)``; only a folder with no readable frame is a DecodeError.
    """
    if len(files) == 1 and is_video(files[0]):
        return read_clip(files[0], size)
    if len(files) == 1:
        return read_image(files[0], size)[None]
    frames, bad = [], []
    for f in files:
        try:
            frames.append(read_image(f, size))
        except DecodeError as e:
            bad.append((Path(f), str(e)))
    if not frames:
        raise DecodeError(f"{Path(files[0]).parent}: none of its {len(files)} frames is readable ({bad[0][1]})")
    if skipped is not None:
        skipped += bad
    return np.stack(frames)
