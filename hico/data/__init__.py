"""Ultrasound videos -> frames -> positive pairs.

The public entry points: :func:`scan` finds a dataset's videos (:func:`load_dataset` also decodes them), :class:`VideoDataset` serves their frames
from a cache, :mod:`hico.data.splits` splits by patient, :mod:`hico.data.pairs` draws positive pairs, and
:mod:`hico.data.augment` augments them on the training device.
"""

from hico.data.dataset import DatasetError, Video, VideoDataset, load_dataset, scan

__all__ = ["DatasetError", "Video", "VideoDataset", "load_dataset", "scan"]
