"""Data throughput: positive pairs per second of sampling + augmentation, from the cache and on the first pass.

    python bench/data_throughput.py [--data PATH] [--batch 64] [--seconds 10]

Uses ../shared/data/pocus when present (real clips of every container), else data_samples/. Everything is
measured in one run, on this machine, so the ratios are comparable even on a noisy machine:

- first pass: decoding every video into a fresh cache (frames/s, videos/s);
- from the cache: a DataLoader of HiCo pairs (uint8 frames) and the batched augmentation to 224 px (from 256 px
  frames) and to 112 px (from 128 px frames), pairs/s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from hico.data import scan
from hico.data.augment import BatchAugment
from hico.data.pairs import HiCoPairs, PairDataset, make_views

ROOT = Path(__file__).resolve().parent.parent


def default_data() -> Path:
    pocus = ROOT.parent / "shared" / "data" / "pocus"
    return pocus if pocus.is_dir() else ROOT / "data_samples"


def first_pass(data: Path, size: int, cache_dir: Path) -> tuple[float, int, int]:
    t = time.perf_counter()
    ds = scan(data, size=size, cache_dir=cache_dir).load_all(progress=False)
    seconds = time.perf_counter() - t
    return seconds, len(ds), ds.summary()["frames"]


def pairs_per_second(
    data: Path, size: int, out: int, cache_dir: Path, batch: int, seconds: float
) -> tuple[float, float]:
    """(pairs/s of sampling alone, pairs/s of sampling + augmentation) from a warm cache."""
    ds = PairDataset(
        scan(data, size=size, cache_dir=cache_dir).load_all(progress=False), HiCoPairs(), samples_per_video=64
    )
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=1, persistent_workers=True)
    augment = BatchAugment(size=out)
    gen = torch.Generator().manual_seed(0)
    rates = []
    for with_augment in (False, True):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for b in loader:
                if with_augment:
                    make_views(b, HiCoPairs(), augment, gen)
                n += len(b["frames"])
                if time.perf_counter() - t0 >= seconds:
                    break
        rates.append(n / (time.perf_counter() - t0))
    return rates[0], rates[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=default_data())
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seconds", type=float, default=10.0, help="time per measurement")
    args = p.parse_args()
    print(f"data: {args.data}   torch threads: {torch.get_num_threads()}   batch: {args.batch}")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        print(f"{'measure':<44}{'value':>12}")
        for size in (256, 128):
            sec, videos, frames = first_pass(args.data, size, cache)
            print(
                f"first pass at {size} px: decode + cache{'':<11}{frames / sec:>9.0f} frames/s ({videos / sec:.1f} videos/s)"
            )
        for size, out in ((256, 224), (128, 112)):
            raw, aug = pairs_per_second(args.data, size, out, cache, args.batch, args.seconds)
            print(f"from cache {size} px: sampling only{'':<15}{raw:>9.0f} pairs/s")
            print(f"from cache {size} px -> {out} px: sampling + augment{'':<3}{aug:>9.0f} pairs/s")


if __name__ == "__main__":
    main()
