"""Ultrasound videos -> frames -> positive pairs.

The public entry points: :func:`scan` finds a dataset's videos, :class:`VideoDataset` serves their frames
from a cache, :mod:`hico.data.splits` splits by patient, :mod:`hico.data.pairs` draws positive pairs, and
:mod:`hico.data.augment` augments them on the training device.
"""

from hico.data.dataset import DatasetError, Video, VideoDataset, scan

__all__ = ["DatasetError", "Video", "VideoDataset", "scan"]
