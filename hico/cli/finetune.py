"""``hico finetune``: fine-tune a backbone k-fold by patient (:mod:`hico.eval.finetune`)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from hico.cli.args import frames_arg
from hico.cli.data import load_data
from hico.errors import UserError
from hico.eval.finetune_config import TRAINABLE, FinetuneConfig


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``hico finetune`` to the ``hico`` sub-command parsers."""
    d = FinetuneConfig()
    p = sub.add_parser(
        "finetune",
        help="fine-tune a backbone k-fold by patient; honest and optimistic (best-test-epoch) metrics",
        description="Fine-tune a pretrained backbone on a labelled video set, k-fold cross-validation grouped by "
        "patient. Reports three protocols from one run per fold: the final epoch (honest), the epoch chosen on an "
        "inner validation split (honest), and the epoch with the best test accuracy (the authors' protocol: "
        "optimistic). Writes OUT/results.json and prints a table.",
    )
    p.add_argument("--backbone", required=True, help="RUNDIR, a backbone / checkpoint .pt file, random or imagenet")
    p.add_argument("--data", type=Path, required=True, help="dataset root folder")
    p.add_argument("--out", type=Path, required=True, help="output folder (results.json)")
    p.add_argument("--folds", type=int, default=d.folds, help=f"cross-validation folds (default {d.folds})")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs per fold (default {d.epochs})")
    p.add_argument("--trainable", choices=TRAINABLE, default=d.trainable, help="what is trained (default last_block)")
    p.add_argument("--size", type=int, default=d.size, help=f"input size in pixels (default {d.size})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"default {d.batch_size}")
    p.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default {d.lr})")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"default {d.weight_decay}")
    p.add_argument(
        "--frames-per-video",
        type=frames_arg,
        default=d.frames_per_video,
        help=f"evenly spaced frames per training video, or 'all' (default {d.frames_per_video})",
    )
    p.add_argument(
        "--test-frames-per-video",
        type=frames_arg,
        default=d.test_frames_per_video,
        help="evenly spaced frames per test / inner-validation video, or 'all' (default all)",
    )
    p.add_argument("--val-fraction", type=float, default=d.val_fraction, help="inner validation share (default 0.2)")
    p.add_argument("--classes", nargs="+", default=None, help="classes to keep (default: all)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="auto (default), cpu, cuda, cuda:N")
    p.add_argument(
        "--frame-size",
        type=int,
        default=None,
        help="working size of the cached frames (default: ceil(size * 8 / 7), e.g. 256 for 224 px)",
    )
    p.add_argument("--cache-dir", type=Path, default=None, help="frame cache folder (default: ~/.cache/hico)")
    p.add_argument("--no-cache", action="store_true", help="decode in memory only, write no cache")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_finetune)


def cmd_finetune(args: argparse.Namespace) -> int:
    """``hico finetune``: run :func:`hico.eval.finetune.finetune`, write ``OUT/results.json`` atomically, print the table."""
    from hico.dist import resolve_device
    from hico.eval.finetune import finetune, format_results
    from hico.io import write_json

    cfg = FinetuneConfig(
        folds=args.folds,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        trainable=args.trainable,
        size=args.size,
        frames_per_video=args.frames_per_video,
        test_frames_per_video=args.test_frames_per_video,
        seed=args.seed,
        device=args.device,
        classes=args.classes,
        val_fraction=args.val_fraction,
    )
    resolve_device(cfg.device)  # fail before decoding anything
    if args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out {args.out} exists and is not a folder")
    frame_size = args.frame_size or math.ceil(cfg.size * 8 / 7)
    if frame_size < 1:
        raise UserError(f"--frame-size must be positive, got {frame_size}")
    videos = load_data(args.data, frame_size, args.cache_dir, args.no_cache, progress=not args.no_progress)
    args.out.mkdir(parents=True, exist_ok=True)
    progress_file = args.out / "progress.json"  # what the app shows while it runs: fold, epoch, seconds
    results = finetune(
        args.backbone, videos, cfg, progress=not args.no_progress, on_epoch=lambda p: write_json(progress_file, p)
    )
    path = write_json(args.out / "results.json", results)
    print(format_results(results))
    print(f"results: {path}")
    return 0
