"""Positive pairs from videos: which frames make a pair, and how augmented frames become two views.

A sampler decides, for one video of T frames, which frame indices to draw (and a mixing weight), then, after
the frames are augmented on the training device, how they combine into the two views:

- :class:`HiCoPairs`: two random frames of one video (HiCo, Algorithm 1);
- :class:`IVPPPairs`: IVPP's intra-video positive pairs: two frames at most D apart, the pair weighted in the loss
  by (D - |d| + 1) / (D + 1);
- :class:`UCLFrames`: UCL's anchor, positive within +-3 frames and intra-video hard negatives (a third output
  of :func:`make_views`);
- :class:`USCLPairs`: USCL's sample-pair generation: three distinct frames f1, f2, f3 and one w ~ Beta(a, a),
  view1 = w*f1 + (1-w)*f2 and view2 = w*f3 + (1-w)*f2, mixed after augmentation and normalisation with the
  same augmented f2 in both views, as in the authors' code.

Randomness comes from ``np.random.default_rng([seed, epoch, index])`` for each sample: different for every
sample, data-loader worker and epoch (the authors' workers repeated their NumPy draws), independent of the
number of workers, and reproducible on resume.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch

from hico.data.dataset import VideoDataset


@dataclass(frozen=True)
class HiCoPairs:
    """Two distinct random frames of one video (the same frame twice for a one-frame video)."""

    name: str = "hico"
    frames_per_sample: int = 2

    def sample(self, n_frames: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """Frame indices (2,) and a mixing weight (unused: 1.0)."""
        if n_frames == 1:
            return np.zeros(2, dtype=np.int64), 1.0
        return rng.choice(n_frames, size=2, replace=False).astype(np.int64), 1.0

    def combine(self, views: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2, C, H, W) augmented frames -> the two views, each (B, C, H, W)."""
        return views[:, 0], views[:, 1]


@dataclass(frozen=True)
class USCLPairs:
    """USCL sample-pair generation: three frames of a video mixed with one Beta(a, a) weight."""

    name: str = "uscl"
    frames_per_sample: int = 3
    beta: float = 0.5

    def sample(self, n_frames: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """Frame indices (3,) of f1, f2, f3 (distinct when the video has 3 frames) and the weight w."""
        replace = n_frames < 3
        idx = rng.choice(n_frames, size=3, replace=replace).astype(np.int64)
        return idx, float(rng.beta(self.beta, self.beta))

    def combine(self, views: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, C, H, W) augmented f1, f2, f3 and (B,) weights -> view1, view2, each (B, C, H, W)."""
        w = weights.to(views.dtype).view(-1, 1, 1, 1)
        f1, f2, f3 = views.unbind(1)
        return w * f1 + (1 - w) * f2, w * f3 + (1 - w) * f2


@dataclass(frozen=True)
class IVPPPairs:
    """IVPP (VanBerlo et al. 2024): an anchor frame and a partner at most ``max_distance`` frames away.

    The anchor is uniform over the video, the partner uniform over the frames 1 .. D away on either side; the
    pair's weight (D - |d| + 1) / (D + 1) multiplies its contrastive loss (``loss_weights``): 1 - 1/(D + 1) for
    neighbours, 1/(D + 1) at distance D. A one-frame video gives the frame twice, weight 1.
    """

    max_distance: int = 30
    name: str = "ivpp"
    frames_per_sample: int = 2
    loss_weights: bool = True  # the weight goes to the loss (USCL's weight mixes frames instead)

    def __post_init__(self) -> None:
        if self.max_distance < 1:
            raise ValueError(f"IVPPPairs: max_distance must be at least 1 frame, got {self.max_distance}")

    def sample(self, n_frames: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """Frame indices (anchor, partner) and the pair's loss weight."""
        if n_frames == 1:
            return np.zeros(2, dtype=np.int64), 1.0
        d_max = self.max_distance
        anchor = int(rng.integers(n_frames))
        partner = frame_near(n_frames, anchor, d_max, rng)
        weight = (d_max - abs(partner - anchor) + 1) / (d_max + 1)
        return np.array([anchor, partner], dtype=np.int64), weight

    def combine(self, views: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2, C, H, W) augmented frames -> the two views, each (B, C, H, W)."""
        return views[:, 0], views[:, 1]


def frame_near(n_frames: int, anchor: int, max_distance: int, rng: np.random.Generator) -> int:
    """A frame 1 .. ``max_distance`` frames from ``anchor``, uniform over those in the video (IVPP's partner, UCL's
    positive); ``anchor`` itself in a one-frame video."""
    near = np.arange(max(0, anchor - max_distance), min(n_frames, anchor + max_distance + 1))
    near = near[near != anchor]
    return int(rng.choice(near)) if len(near) else anchor


def intra_video_negatives(
    n_frames: int,
    anchor: int,
    k: int,
    rng: np.random.Generator,
    window: tuple[float, float] = (0.2, 0.4),
    min_distance: int = 1,
) -> np.ndarray:
    """UCL's intra-video hard negatives: ``k`` frames whose distance to ``anchor`` is in window * T.

    Frames on either side of the anchor qualify if they are also at least ``min_distance`` away (UCL: farther
    than the positive window); when none does (short videos, a collapsed window), the nearest frames at least
    ``min_distance`` away are used, and in a video too short even for that, the farthest frames. Drawn with
    replacement only when fewer than ``k`` frames qualify. Returns (k,) int64 indices.
    """
    lo, hi = window
    d = np.abs(np.arange(n_frames) - anchor)
    far = d >= max(1, min_distance)
    ok = np.flatnonzero((d >= lo * n_frames) & (d <= hi * n_frames) & far)
    if len(ok) == 0:
        ok = np.flatnonzero(far & (d == d[far].min())) if far.any() else np.flatnonzero(d == d.max())
    return rng.choice(ok, size=k, replace=len(ok) < k).astype(np.int64)


@dataclass(frozen=True)
class UCLFrames:
    """UCL (Basu et al. 2022): an anchor frame, a positive at most ``positive_window`` frames away, and
    ``negatives`` intra-video hard negatives at window * T frames from the anchor (T the video's length).

    From epoch ``shrink_epoch`` on, both window bounds shrink by 1/2 (1 + cos(pi * min(1, (e - shrink_epoch) /
    shrink_epochs))), so the negatives come ever closer to the anchor (harder), but never inside the positive
    window. Call :meth:`at_epoch` for the sampler of epoch e (``PairDataset.set_epoch`` does).
    """

    negatives: int = 3
    positive_window: int = 3
    window: tuple[float, float] = (0.2, 0.4)
    shrink_epoch: int = 30
    shrink_epochs: int = 30
    epoch: int = 0
    name: str = "ucl"
    loss_weights: bool = False

    def __post_init__(self) -> None:
        lo, hi = self.window
        if not (0 <= lo <= hi <= 1):
            raise ValueError(f"UCLFrames: window must be 0 <= lo <= hi <= 1, got {self.window}")
        if self.negatives < 1 or self.positive_window < 1 or self.shrink_epochs < 1:
            raise ValueError("UCLFrames: negatives, positive_window and shrink_epochs must be at least 1")

    @property
    def frames_per_sample(self) -> int:
        return 2 + self.negatives

    def at_epoch(self, epoch: int) -> UCLFrames:
        """This sampler at ``epoch`` (0-based): the same settings, that epoch's window."""
        return replace(self, epoch=epoch)

    def current_window(self) -> tuple[float, float]:
        """The negatives' window (fractions of the video length) at this sampler's epoch."""
        if self.epoch < self.shrink_epoch:
            return self.window
        scale = 0.5 * (1 + math.cos(math.pi * min(1.0, (self.epoch - self.shrink_epoch) / self.shrink_epochs)))
        return self.window[0] * scale, self.window[1] * scale

    def sample(self, n_frames: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """Frame indices (anchor, positive, negative_1 .. negative_M) and a weight (unused: 1.0)."""
        anchor = int(rng.integers(n_frames))
        positive = frame_near(n_frames, anchor, self.positive_window, rng)
        negs = intra_video_negatives(
            n_frames, anchor, self.negatives, rng, self.current_window(), min_distance=self.positive_window + 1
        )
        return np.concatenate([[anchor, positive], negs]).astype(np.int64), 1.0

    def combine(self, views: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, 2 + M, C, H, W) -> anchor view (B, C, H, W), positive view (B, C, H, W), negatives (B, M, C, H, W)."""
        return views[:, 0], views[:, 1], views[:, 2:]


SAMPLERS = {"hico": HiCoPairs, "uscl": USCLPairs, "ivpp": IVPPPairs, "ucl": UCLFrames}
Sampler = HiCoPairs | USCLPairs | IVPPPairs | UCLFrames


def make_sampler(name: str, **params) -> Sampler:
    """The pair sampler called ``name`` (``hico``, ``uscl``, ``ivpp`` or ``ucl``), with its ``params``
    (e.g. ``max_distance`` for ``ivpp``)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown pair sampler {name!r}: choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[name](**params)


class PairDataset(torch.utils.data.Dataset):
    """Positive-pair samples from a :class:`VideoDataset`, for a ``DataLoader``.

    Item ``i`` is a sample from video ``i % V``: ``{"frames": (k, S, S) uint8, "index": (k,) frame numbers,
    "weight": float, "label": int (-1 when unlabelled), "video": int}`` with k = ``sampler.frames_per_sample``. Call
    :meth:`set_epoch` at the start of every epoch.

    Args:
        videos: the videos (load them first with ``videos.load_all()``).
        sampler: a pair sampler (:class:`HiCoPairs`, :class:`USCLPairs`, :class:`IVPPPairs`).
        labels: per-video labels (V,), -1 for unlabelled; None means all unlabelled.
        seed: base seed.
        samples_per_video: samples drawn from each video per epoch.
    """

    def __init__(
        self,
        videos: VideoDataset,
        sampler: Sampler,
        labels: np.ndarray | None = None,
        seed: int = 0,
        samples_per_video: int = 1,
    ) -> None:
        if len(videos) == 0:
            raise ValueError("cannot sample pairs from an empty dataset")
        self.videos, self.sampler, self.seed = videos, sampler, seed
        self.samples_per_video = samples_per_video
        self.labels = np.full(len(videos), -1, np.int64) if labels is None else np.asarray(labels, np.int64)
        if len(self.labels) != len(videos):
            raise ValueError(f"labels has {len(self.labels)} entries for {len(videos)} videos")
        self.epoch = 0
        singles = sum(videos.n_frames(i) == 1 for i in range(len(videos)))
        self.single_frame_videos = singles
        if singles:
            warnings.warn(
                f"{singles} of {len(videos)} videos have a single frame: their positive pairs are two "
                "augmentations of the same frame",
                stacklevel=2,
            )

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass draw fresh pairs (each epoch has its own random stream, and a sampler with an
        ``at_epoch`` method, UCL's, its window of that epoch)."""
        self.epoch = epoch
        if hasattr(self.sampler, "at_epoch"):
            self.sampler = self.sampler.at_epoch(epoch)

    def __len__(self) -> int:
        return len(self.videos) * self.samples_per_video

    def __getitem__(self, i: int | tuple[int, int]) -> dict:
        """Sample ``i`` of the current epoch, or ``(epoch, i)``: sample ``i`` of that epoch, whatever
        :meth:`set_epoch` said (what a persistent data-loader worker gets, see ``EpochBatchSampler(with_epoch)``)."""
        epoch, i = i if isinstance(i, tuple) else (self.epoch, i)
        sampler = self.sampler
        if epoch != self.epoch and hasattr(sampler, "at_epoch"):
            sampler = sampler.at_epoch(epoch)
        v = i % len(self.videos)
        rng = np.random.default_rng([self.seed, epoch, i])
        frames = self.videos.frames(v)
        idx, w = sampler.sample(len(frames), rng)
        return {
            "frames": torch.from_numpy(np.ascontiguousarray(frames[idx])),
            "index": torch.as_tensor(np.asarray(idx, dtype=np.int64)),
            "weight": torch.tensor(w, dtype=torch.float32),
            "label": torch.tensor(self.labels[v]),
            "video": torch.tensor(v),
        }


def make_views(
    batch: dict, sampler: Sampler, augment: torch.nn.Module, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, ...]:
    """Augment a collated batch on its device and combine it into the two views, each (B, 3, s, s) (and, for
    UCL, a third output: the intra-video negatives, (B, M, 3, s, s)).

    ``batch["frames"]`` is (B, k, S, S) uint8; every frame gets its own augmentation parameters.
    """
    frames = batch["frames"]
    b, k = frames.shape[:2]
    views = augment(frames.flatten(0, 1), generator=generator)
    return sampler.combine(views.unflatten(0, (b, k)), batch["weight"].to(views.device))
