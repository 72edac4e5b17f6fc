"""Training throughput: images/s of the full HiCo step, of the bare backbone+FPN step, and from the real loader.

    python bench/train_throughput.py                                  # CPU, 16 pairs, 224 px
    python bench/train_throughput.py --device cuda --pairs 128        # GPU: bf16, channels_last, 256 images/step

Three measurements in one run, alternated round by round so that machine noise hits them alike:

- bare: backbone + FPN forward/backward on 2 x pairs random images, a trivial loss, Adam step;
- full: the HiCo step as the trainer runs it (``hico.engine.train_step``: one forward for both views, all six
  terms, backward, Adam step) on the same images;
- loader: the full step fed by the real pipeline (cached uint8 frames -> DataLoader -> augmentation on the
  device), from --data (default: ../shared/data/covid_blues, else data_samples/). On CUDA the GPU's
  utilisation is sampled while it runs (needs nvidia-ml-py; otherwise the busy fraction is estimated from
  the time the step spends waiting for data).

Prints images/s for each and the ratio full / bare in time (target <= 1.10).
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

import torch

from hico.config import load_method
from hico.data import scan
from hico.data.augment import BatchAugment
from hico.data.cache import default_cache_dir
from hico.data.pairs import PairDataset, make_sampler, make_views
from hico.engine import train_step, trainable_parameters
from hico.methods import build_method
from hico.models import HiCoNet

ROOT = Path(__file__).resolve().parent.parent


def default_data() -> Path:
    blues = ROOT.parent / "shared" / "data" / "covid_blues"
    return blues if blues.is_dir() else ROOT / "data_samples"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gpu_utilisation(device: torch.device, stop: threading.Event, out: list[float]) -> None:
    """Sample nvidia-smi's utilisation every 100 ms until ``stop`` (silently nothing without NVML)."""
    try:
        while not stop.is_set():
            out.append(float(torch.cuda.utilization(device)))
            time.sleep(0.1)
    except Exception:  # no NVML: the caller falls back to the data-wait estimate
        return


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=16, help="positive pairs per step (2x images)")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--reps", type=int, default=3, help="timed rounds (after one warm-up round)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data", type=Path, default=default_data())
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: 0 on CPU, 8 on CUDA)")
    p.add_argument("--loader-steps", type=int, default=3, help="steps per round of the loader measurement")
    args = p.parse_args()

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    bf16 = torch.bfloat16 if cuda else None
    if cuda:
        torch.backends.cudnn.benchmark = True
    cfg = load_method("hico", ["model.init=random", f"augment.size={args.size}", "model.num_classes=3"])  # labels below
    torch.manual_seed(0)
    model = HiCoNet(cfg.model).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    method = build_method(cfg, model).to(device)
    opt = torch.optim.Adam([*model.parameters(), *trainable_parameters(method)], lr=3e-4, weight_decay=1e-4)
    fmt = torch.channels_last if cuda else torch.contiguous_format
    v1, v2 = (
        v.contiguous(memory_format=fmt) for v in torch.randn(2, args.pairs, 3, args.size, args.size, device=device)
    )
    labels = torch.randint(0, 3, (args.pairs,), device=device)
    labels[::2] = -1

    videos = scan(args.data, size=max(args.size, 256) if args.size > 128 else 128, cache_dir=default_cache_dir())
    videos.load_all(progress=True)
    pairs = PairDataset(videos, make_sampler("hico"), seed=0, samples_per_video=64)
    workers = args.workers if args.workers is not None else (8 if cuda else 0)
    loader = torch.utils.data.DataLoader(
        pairs, batch_size=args.pairs, shuffle=True, drop_last=True, num_workers=workers,
        pin_memory=cuda, persistent_workers=workers > 0, prefetch_factor=4 if workers else None,
    )  # fmt: skip
    batches = iter(loader)
    augment = BatchAugment(cfg.augment).to(device)
    gen = torch.Generator(device).manual_seed(0)

    def bare() -> None:
        with torch.autocast(device.type, dtype=bf16 or torch.float32, enabled=bf16 is not None):
            maps = model.forward_maps(torch.cat([v1, v2]))
            loss = sum(maps[level].float().mean() for level in cfg.model.levels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def full() -> None:
        train_step(method, model, opt, v1, v2, labels, autocast_dtype=bf16)

    waits: list[float] = []

    def from_loader() -> None:
        nonlocal batches
        for _ in range(args.loader_steps):
            t = time.perf_counter()
            try:
                batch = next(batches)
            except StopIteration:
                batches = iter(loader)
                batch = next(batches)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            waits.append(time.perf_counter() - t)
            with torch.no_grad():
                a, b = make_views(batch, pairs.sampler, augment, gen)
            a, b = a.contiguous(memory_format=fmt), b.contiguous(memory_format=fmt)
            train_step(method, model, opt, a, b, batch["label"], autocast_dtype=bf16)

    times: dict[str, list[float]] = {"bare": [], "full": [], "loader": []}
    util: list[float] = []
    stop = threading.Event()
    for rep in range(args.reps + 1):
        for name, fn in (("bare", bare), ("full", full), ("loader", from_loader)):
            if name == "loader" and cuda and rep == 1:
                threading.Thread(target=gpu_utilisation, args=(device, stop, util), daemon=True).start()
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            if rep > 0:
                steps = args.loader_steps if name == "loader" else 1
                times[name].append((time.perf_counter() - t) / steps)
    stop.set()
    images = 2 * args.pairs
    bare_s, full_s, load_s = (statistics.median(times[k]) for k in ("bare", "full", "loader"))
    print(f"device {device}{' (bf16, channels_last)' if cuda else ''}, {args.pairs} pairs = {images} images "
          f"at {args.size} px, median of {args.reps} rounds, {torch.get_num_threads()} CPU threads")  # fmt: skip
    print(f"bare backbone+FPN step   {images / bare_s:9.1f} images/s   ({bare_s:.3f} s/step)")
    print(f"full HiCo step           {images / full_s:9.1f} images/s   ({full_s:.3f} s/step)")
    print(f"full step, real loader   {images / load_s:9.1f} images/s   ({load_s:.3f} s/step, data: {args.data.name})")
    print(f"ratio full / bare (time): {full_s / bare_s:.3f}   (target <= 1.10)")
    wait = statistics.median(waits[args.loader_steps :]) if len(waits) > args.loader_steps else float("nan")
    print(f"loader wait per step: {wait * 1000:.1f} ms ({100 * wait / load_s:.1f}% of the step)")
    if util:
        print(f"GPU utilisation while training from the loader: median {statistics.median(util):.0f}%, "
              f"min {min(util):.0f}% ({len(util)} samples)")  # fmt: skip


if __name__ == "__main__":
    main()
