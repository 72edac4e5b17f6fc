"""The end-to-end demo run by ``hico demo`` (and ``make run`` until the app exists).

It draws positive pairs from a dataset with each sampler, augments them as training does, and saves one
picture: per row, a video's raw frames, then HiCo's two views, then USCL's two mixed views.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from hico.data.augment import BatchAugment
from hico.data.dataset import VideoDataset
from hico.data.pairs import HiCoPairs, PairDataset, USCLPairs, make_views
from hico.io import atomic_write


def run_demo(videos: VideoDataset, out: Path, rows: int = 6, size: int = 112, seed: int = 0) -> Path:
    """Save ``out/pairs.png``: for ``rows`` videos, raw frames | HiCo views | USCL views. Returns its path."""
    augment = BatchAugment(size=size)
    gen = torch.Generator().manual_seed(seed)
    picks = torch.linspace(0, len(videos) - 1, rows).long().tolist()
    tiles = []
    for sampler in (HiCoPairs(), USCLPairs()):
        ds = PairDataset(videos, sampler, seed=seed)
        batch = torch.utils.data.default_collate([ds[i] for i in picks])
        if isinstance(sampler, HiCoPairs):  # the raw frames of the pair, resized, for reference
            raw = batch["frames"].float().div(255).unsqueeze(2).expand(-1, -1, 3, -1, -1)
            raw = torch.nn.functional.interpolate(raw.flatten(0, 1), size=size, mode="bilinear")
            tiles.append(raw.unflatten(0, (rows, 2)))
        v1, v2 = make_views(batch, sampler, augment, gen)
        tiles.append(torch.stack([v1, v2], 1) * augment.cfg.std + augment.cfg.mean)
    grid = torch.cat(tiles, 1).flatten(0, 1).clamp(0, 1)  # (rows * 6, 3, size, size)
    image = make_grid(grid, nrow=6, padding=2, pad_value=1.0)
    return atomic_write(Path(out) / "pairs.png", lambda f: save_image(image, f, format="png"), mode="wb")


def pair_images(
    videos: VideoDataset, video: int, sampler: str = "hico", size: int = 112, seed: int = 0, augment: dict | None = None
) -> dict:
    """One positive pair of video ``video`` as pictures: what the app's Data page shows.

    Returns ``{"frames": [(S, S) uint8 source frames], "indices": [frame numbers], "weight": mix weight,
    "views": [two (size, size) uint8 augmented views]}``; ``augment`` overrides :class:`BatchAugment` settings.
    """
    from hico.data.pairs import make_sampler

    pairs = make_sampler(sampler)
    item = PairDataset(videos, pairs, seed=seed)[video]  # item i comes from video i: each video its own draw
    batch = torch.utils.data.default_collate([item])
    aug = BatchAugment(size=size, **(augment or {}))
    v1, v2 = make_views(batch, pairs, aug, torch.Generator().manual_seed(seed))
    views = [((v[0, 0] * aug.cfg.std + aug.cfg.mean).clamp(0, 1) * 255).byte().numpy() for v in (v1, v2)]
    return {
        "frames": list(item["frames"].numpy()),
        "indices": item["index"].tolist(),
        "weight": float(item["weight"]),
        "views": views,
    }
