"""Frozen features of a pretrained backbone: a few evenly spaced frames per video -> pooled maps per level.

What is kept after pretraining is the ResNet backbone and its feature pyramid (the projection heads and the
classifier are discarded), so the default features are the global-average-pooled pyramid maps at the model's
three levels (``model.config.levels``, e.g. P2 / P4 / P5), named ``"local"``, ``"medium"`` and ``"global"``.
A model without the FPN (SimCLR / USCL baselines) gets pooled C2 / C4 / C5 under the same names, so that the
three levels stay comparable across methods.

Example::

    >>> videos = scan("data_samples", size=128).load_all()
    >>> feats = extract_features(resolve_backbone("runs/x"), videos, size=112, per_video=8)
    >>> {name: x.shape for name, x in feats.levels.items()}
    {'local': (288, 256), 'medium': (288, 256), 'global': (288, 256)}
    >>> feats.save("runs/x/features.npz"); Features.load("runs/x/features.npz")
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hico.data.augment import AugmentConfig, frames_to_input
from hico.data.cache import default_cache_dir
from hico.data.dataset import VideoDataset, load_dataset
from hico.io import atomic_write
from hico.names import LEVELS, NO_FPN_MAPS

_FORMAT = "hico-features"
_VERSION = 1
_FIXED_KEYS = ("labels", "video", "frame", "groups", "classes", "video_ids", "meta")


def frame_indices(n_frames: int, per_video: int | None) -> np.ndarray:
    """``per_video`` evenly spaced frame indices of an ``n_frames`` video, (n,) int64.

    The centres of ``per_video`` equal segments, ``floor((i + 0.5) * n_frames / per_video)``: distinct, in
    order, never the very first or last frame unless needed; all frames when ``per_video`` is None or
    ``>= n_frames``.
    """
    if per_video is None or per_video >= n_frames:
        return np.arange(n_frames, dtype=np.int64)
    if per_video < 1:
        raise ValueError(f"frames per video must be at least 1 (or None for all), got {per_video}")
    return np.floor((np.arange(per_video) + 0.5) * n_frames / per_video).astype(np.int64)


def pick_frames(videos: VideoDataset, per_video: int | None = 8) -> np.ndarray:
    """(F, 2) int64 rows ``(video_index, frame_index)``: :func:`frame_indices` of every video, in order.

    Deterministic (no randomness); a one-frame video (a still image) gives one row.
    """
    rows = [
        np.stack([np.full(len(idx), v, dtype=np.int64), idx], axis=1)
        for v in range(len(videos))
        for idx in [frame_indices(videos.n_frames(v), per_video)]
    ]
    return np.concatenate(rows) if rows else np.zeros((0, 2), dtype=np.int64)


@dataclass
class Features:
    """Per-frame features at three levels, and what each frame is.

    Attributes:
        levels: level name (``"local"``, ``"medium"``, ``"global"``) -> (F, D) float32 features.
        labels: (F,) int64 class of each frame's video, indexing :attr:`classes`.
        video: (F,) int64 index of each frame's video, indexing :attr:`video_ids`.
        frame: (F,) int64 frame index inside its video.
        groups: (F,) str patient group of each frame's video.
        classes: class names.
        video_ids: id of every video of the dataset the features come from.
        meta: what produced them (backbone, size, source, ...): JSON-serialisable.
        extra: further per-frame or per-level arrays (thumbnail paths, UMAP coordinates), saved as they are.
    """

    levels: dict[str, np.ndarray]
    labels: np.ndarray
    video: np.ndarray
    frame: np.ndarray
    groups: np.ndarray
    classes: list[str]
    video_ids: list[str]
    meta: dict = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def frame_video_ids(self) -> np.ndarray:
        """(F,) str: the video id of each frame."""
        return np.asarray(self.video_ids, dtype=str)[self.video]

    def subset(self, mask: np.ndarray) -> Features:
        """The frames selected by a boolean mask or an index array (per-frame extras are sliced too)."""
        n = len(self)
        extra = {k: (v[mask] if v.ndim and len(v) == n else v) for k, v in self.extra.items()}
        return Features(
            {k: v[mask] for k, v in self.levels.items()},
            self.labels[mask],
            self.video[mask],
            self.frame[mask],
            self.groups[mask],
            list(self.classes),
            list(self.video_ids),
            dict(self.meta),
            extra,
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything as plain numpy arrays (strings as unicode arrays; no object arrays): the npz content."""
        out = {f"level_{k}": np.asarray(v, dtype=np.float32) for k, v in self.levels.items()}
        out.update(
            labels=np.asarray(self.labels, dtype=np.int64),
            video=np.asarray(self.video, dtype=np.int64),
            frame=np.asarray(self.frame, dtype=np.int64),
            groups=np.asarray(self.groups, dtype=str),
            classes=np.asarray(self.classes, dtype=str),
            video_ids=np.asarray(self.video_ids, dtype=str),
            meta=np.asarray(json.dumps({"format": _FORMAT, "version": _VERSION, **self.meta})),
        )
        for k, v in self.extra.items():
            if k in out or k.startswith("level_"):
                raise ValueError(f"extra array name {k!r} clashes with a Features field")
            v = np.asarray(v)
            if v.dtype == object:
                raise ValueError(f"extra array {k!r} has dtype object: store strings as str arrays")
            out[k] = v
        return out

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write an uncompressed ``.npz`` (loadable without pickle) atomically; returns the path."""
        arrays = self.arrays()
        return atomic_write(path, lambda f: np.savez(f, **arrays), mode="wb")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Features:
        """Read a file written by :meth:`save` (``allow_pickle=False``); unknown arrays go to :attr:`extra`."""
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        missing = [k for k in _FIXED_KEYS if k not in data]
        if missing:
            raise ValueError(f"{path} is not a hico features file: no {missing[0]!r} array")
        meta = json.loads(str(data.pop("meta")))
        meta.pop("format", None)
        meta.pop("version", None)
        levels = {k[len("level_") :]: data.pop(k) for k in [k for k in data if k.startswith("level_")]}
        return cls(
            levels=levels,
            labels=data.pop("labels"),
            video=data.pop("video"),
            frame=data.pop("frame"),
            groups=data.pop("groups"),
            classes=data.pop("classes").tolist(),
            video_ids=data.pop("video_ids").tolist(),
            meta=meta,
            extra=data,
        )


def level_sources(model: nn.Module, source: str = "maps") -> dict[str, str]:
    """Level name -> the model output it is pooled from: ``{"local": "p2", ...}`` (maps) or the head names."""
    from hico.models.checkpoint import unwrap

    model = unwrap(model)
    cfg = model.config
    if source == "maps":
        keys = cfg.levels if cfg.fpn else NO_FPN_MAPS
        return dict(zip(LEVELS, keys, strict=True))
    if source == "heads":
        return {name: name for name in LEVELS if name in model.heads}
    raise ValueError(f"source must be 'maps' or 'heads', got {source!r}")


def _frame_batches(videos: VideoDataset, picks: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """The picked frames, (B, S, S) uint8 batches in the order of ``picks``; each video is read once."""
    pending: list[np.ndarray] = []
    n_pending = 0
    starts = np.flatnonzero(np.r_[True, picks[1:, 0] != picks[:-1, 0]]) if len(picks) else np.zeros(0, int)
    for start, stop in zip(starts, [*starts[1:], len(picks)], strict=True):
        frames = videos.frames(int(picks[start, 0]))
        chunk = np.asarray(frames[picks[start:stop, 1]])
        while len(chunk):
            take = min(batch_size - n_pending, len(chunk))
            pending.append(chunk[:take])
            n_pending += take
            chunk = chunk[take:]
            if n_pending == batch_size:
                yield np.concatenate(pending)
                pending, n_pending = [], 0
    if pending:
        yield np.concatenate(pending)


def extract_features(
    model: nn.Module,
    videos: VideoDataset,
    *,
    size: int = 224,
    per_video: int | None = 8,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    source: str = "maps",
    progress: bool = False,
    augment: AugmentConfig | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> Features:
    """Features of :func:`pick_frames` frames at the three levels, (F, D) float32 each.

    Args:
        model: a :class:`~hico.models.HiCoNet` (or one wrapped by DDP / ``torch.compile``). It is moved to
            ``device`` and run in eval mode; its train/eval mode is restored afterwards.
        videos: the dataset (its frames are resized from the working size to ``size``).
        size: input side in pixels.
        per_video: frames per video (None: all).
        batch_size: frames per forward pass.
        device: where the model runs; on CUDA under bf16 autocast (features are returned as float32).
        source: ``"maps"``: global-average-pooled maps (P-levels of ``config.levels``, 256-d, or C2/C4/C5,
            64/256/512-d, without FPN); ``"heads"``: the projection heads' embeddings (only ``"global"``
            without FPN).
        progress: show a tqdm bar.
        augment: the resampling and normalisation of the inputs (:func:`hico.data.augment.frames_to_input`,
            with ``size``); default :class:`~hico.data.augment.AugmentConfig`'s (mean 0.5, std 0.25): pass the
            training run's ``augment`` section to see frames exactly as its training views were normalised.
        on_batch: called after every batch with (frames done, frames in all), e.g. to draw a progress bar.
    """
    from tqdm.auto import tqdm

    from hico.models.checkpoint import unwrap

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    net = unwrap(model)
    sources = level_sources(net, source)
    device = torch.device(device)
    picks = pick_frames(videos, per_video)
    to_input = dataclasses.replace(augment or AugmentConfig(), size=size)
    was_training = net.training
    net.to(device).eval()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    outputs: dict[str, list[np.ndarray]] = {name: [] for name in sources}
    done = 0
    try:
        with (
            torch.inference_mode(),
            autocast,
            tqdm(total=len(picks), desc="features", unit="frame", disable=not progress) as bar,
        ):
            for batch in _frame_batches(videos, picks, batch_size):
                frames = torch.from_numpy(batch).to(device, non_blocking=True)
                x = frames_to_input(frames, to_input)
                if source == "maps":
                    maps = net.forward_maps(x)
                    pooled = {name: maps[key].float().mean(dim=(2, 3)) for name, key in sources.items()}
                else:
                    out = net(x)
                    pooled = {name: out[name].float() for name in sources}
                for name, v in pooled.items():
                    outputs[name].append(v.cpu().numpy())
                bar.update(len(batch))
                done += len(batch)
                if on_batch is not None:
                    on_batch(done, len(picks))
    finally:
        net.train(was_training)
    dims = _output_dims(net, sources, source)
    levels = {
        name: (np.concatenate(chunks) if chunks else np.zeros((0, dims[name]), np.float32)).astype(np.float32)
        for name, chunks in outputs.items()
    }
    vids = picks[:, 0]
    return Features(
        levels=levels,
        labels=videos.labels[vids] if len(vids) else np.zeros(0, np.int64),
        video=vids.copy(),
        frame=picks[:, 1].copy(),
        groups=videos.groups[vids] if len(vids) else np.zeros(0, dtype=str),
        classes=list(videos.classes),
        video_ids=[v.video_id for v in videos.videos],
        meta={"size": size, "per_video": per_video, "source": source, "sources": sources, "data": str(videos.root)},
    )


def _output_dims(net: nn.Module, sources: dict[str, str], source: str) -> dict[str, int]:
    """Feature width of every level (for empty outputs)."""
    from hico.models.backbone import STAGE_CHANNELS

    cfg = net.config
    if source == "heads":
        return dict.fromkeys(sources, cfg.head_dim)
    return {name: STAGE_CHANNELS.get(key, cfg.fpn_channels) for name, key in sources.items()}


# ------------------------------------------------------------------------------------------------------ data


def load_videos(
    path: str | os.PathLike[str],
    size: int,
    classes: list[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    no_cache: bool = False,
    progress: bool = True,
) -> VideoDataset:
    """Scan and decode a dataset for evaluation at input side ``size``, keeping the named classes.

    Frames are cached at the working size ``max(size, 64)`` (in ``cache_dir``, default
    :func:`hico.data.cache.default_cache_dir`, or in memory only with ``no_cache``).

    Raises:
        ValueError: the folder is missing or empty, no video is readable, or a class is unknown.
    """
    if size < 32:
        raise ValueError(f"the input size must be at least 32 px, got {size}")
    return load_dataset(path, max(size, 64), None if no_cache else cache_dir or default_cache_dir(), classes, progress)
