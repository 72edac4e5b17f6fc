"""``hico embed``: per-frame features, thumbnails and optional UMAP coordinates in one npz (:mod:`hico.eval.embed`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hico.cli.features import add_common_arguments, features_from_args
from hico.eval.embed import THUMB_SIZE


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``hico embed`` to the ``hico`` sub-commands."""
    p = sub.add_parser(
        "embed",
        help="save per-frame local/medium/global features, thumbnails and optional UMAP coordinates",
        description="Per-frame embeddings for inspection: features at three levels, frame thumbnails, optional 2-D UMAP.",
    )
    add_common_arguments(p)
    p.add_argument("--out", type=Path, required=True, help="output .npz file (thumbnails go to <name>_thumbs/)")
    p.add_argument("--umap", action="store_true", help="add 2-D UMAP coordinates per level (cached by content)")
    p.add_argument("--thumb-size", type=int, default=THUMB_SIZE, help="thumbnail side in pixels (default 64)")
    p.set_defaults(func=cmd_embed)


def cmd_embed(args: argparse.Namespace) -> int:
    """``hico embed``: features + thumbnails (+ UMAP) of the picked frames, into one npz."""
    import time

    import numpy as np

    from hico.eval.embed import UMAP_DEFAULTS, thumbs_dir, umap_2d, write_thumbnails

    out = Path(args.out)
    if out.suffix != ".npz":
        raise ValueError(f"--out must name a .npz file, got {out}")
    if args.thumb_size < 8:
        raise ValueError(f"--thumb-size must be at least 8 px, got {args.thumb_size}")
    feats, videos, timing = features_from_args(args)
    t1 = time.perf_counter()
    folder = thumbs_dir(out)
    names = write_thumbnails(videos, np.stack([feats.video, feats.frame], axis=1), folder, args.thumb_size)
    feats.meta["thumb_size"] = args.thumb_size
    feats.extra["thumb"] = np.asarray([f"{folder.name}/{n}" for n in names], dtype=str)
    feats.extra["class_name"] = np.asarray(feats.classes, dtype=str)[feats.labels]
    feats.extra["video_id"] = feats.frame_video_ids
    t2 = time.perf_counter()
    if args.umap:
        for name, x in feats.levels.items():
            feats.extra[f"umap_{name}"] = umap_2d(x)
        feats.meta["umap"] = UMAP_DEFAULTS
    t3 = time.perf_counter()
    feats.save(out)
    dims = ", ".join(f"{k} {v.shape[1]}" for k, v in feats.levels.items())
    print(f"{len(feats)} frames of {len(videos)} videos; levels: {dims}")
    print(
        f"time: load {timing['load_s']:.1f} s, features {timing['features_s']:.1f} s ({timing['device']}), "
        f"thumbnails {t2 - t1:.1f} s" + (f", UMAP {t3 - t2:.1f} s" if args.umap else "")
    )
    print(f"wrote {out} and {len(names)} thumbnails in {folder}")
    return 0
