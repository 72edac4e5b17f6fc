"""What ``hico probe`` and ``hico embed`` share: their backbone/data/frames options and the feature extraction."""

from __future__ import annotations

import argparse
from pathlib import Path

from hico.cli.args import frames_arg


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``hico probe`` and ``hico embed`` share: backbone, data, classes, size, frames, device."""
    parser.add_argument(
        "--backbone", required=True, help="run directory, backbone/checkpoint .pt file, 'random' or 'imagenet'"
    )
    parser.add_argument("--data", type=Path, required=True, help="dataset root folder")
    parser.add_argument(
        "--classes", nargs="+", default=None, metavar="CLASS", help="keep these classes only (default: all)"
    )
    parser.add_argument("--size", type=int, default=224, help="input side in pixels (default 224)")
    parser.add_argument(
        "--frames-per-video",
        type=frames_arg,
        default=8,
        metavar="N",
        help="evenly spaced frames per video; 'all' or 0 for every frame (default 8)",
    )
    parser.add_argument(
        "--source",
        choices=("maps", "heads"),
        default="maps",
        help="pooled backbone/FPN maps (default; what pretraining keeps) or projection-head embeddings",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="frames per forward pass (default 64)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--cache-dir", type=Path, default=None, help="frame cache folder (default: ~/.cache/hico)")
    parser.add_argument("--no-cache", action="store_true", help="decode in memory only, write no cache")


def features_from_args(args: argparse.Namespace):
    """Load the backbone and the data named on the command line and extract features.

    The backbone is built with seed 0 (:func:`hico.models.resolve_backbone`), so ``random`` is the same network
    on every run. Returns the features, the loaded videos and the timings (``load_s``, ``features_s``,
    ``device``).
    """
    import time

    from hico.dist import resolve_device
    from hico.eval.features import extract_features, load_videos
    from hico.models import resolve_backbone

    device = resolve_device(args.device)
    model = resolve_backbone(args.backbone, seed=0)  # before decoding: a wrong --backbone fails at once
    t0 = time.perf_counter()
    videos = load_videos(args.data, args.size, args.classes, args.cache_dir, args.no_cache)
    t1 = time.perf_counter()
    feats = extract_features(
        model,
        videos,
        size=args.size,
        per_video=args.frames_per_video,
        batch_size=args.batch_size,
        device=device,
        source=args.source,
        progress=True,
    )
    t2 = time.perf_counter()
    feats.meta.update(backbone=str(args.backbone), data=str(args.data))
    return feats, videos, {"load_s": t1 - t0, "features_s": t2 - t1, "device": str(device)}
