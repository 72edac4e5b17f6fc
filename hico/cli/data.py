"""``hico data scan`` and ``hico data synth``; :func:`load_data`, the commands' dataset loader."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``hico data scan`` and ``hico data synth`` to the ``hico`` sub-commands."""
    data = sub.add_parser("data", help="inspect or make datasets").add_subparsers(metavar="ACTION")
    scan = data.add_parser("scan", help="count a dataset's videos, frames, classes, groups and unreadable files")
    scan.add_argument("path", type=Path, help="dataset root folder")
    scan.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    scan.add_argument("--size", type=int, default=256, help="working size of the cached frames (default 256)")
    scan.add_argument("--cache-dir", type=Path, default=None, help="frame cache folder (default: ~/.cache/hico)")
    scan.add_argument("--no-cache", action="store_true", help="decode in memory only, write no cache")
    scan.set_defaults(func=cmd_data_scan)

    synth = data.add_parser("synth", help="make a synthetic lung-ultrasound video set")
    synth.add_argument("--out", type=Path, required=True, help="output folder (must not exist or be empty)")
    synth.add_argument("--videos-per-class", type=int, default=12)
    synth.add_argument("--frames", type=int, default=16, help="frames per video")
    synth.add_argument("--size", type=int, default=128, help="frame size in pixels")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    synth.set_defaults(func=cmd_data_synth)


def load_data(path: Path, size: int, cache_dir: Path | None, no_cache: bool, progress: bool):
    """The dataset a command names, decoded at ``size``: in the frame cache (``cache_dir``, default
    ``$HICO_CACHE`` or ``~/.cache/hico``), or in memory only with ``no_cache``; an error when none is readable."""
    from hico.data import load_dataset
    from hico.data.cache import default_cache_dir

    return load_dataset(
        path, size, cache_dir=None if no_cache else (cache_dir or default_cache_dir()), progress=progress
    )


def cmd_data_scan(args: argparse.Namespace) -> int:
    """``hico data scan PATH``: print what a dataset holds; exit 2 when it is empty or unreadable."""
    ds = load_data(args.path, args.size, args.cache_dir, args.no_cache, progress=not args.json)
    summary = ds.summary()
    if args.json:
        print(json.dumps(summary))
        return 0
    print(format_scan_table(ds))
    return 0


def format_scan_table(ds) -> str:
    """A plain-text table of a loaded dataset: per class videos, frames and groups, then totals."""
    from collections import defaultdict

    per: dict[str, list] = defaultdict(lambda: [0, 0, set()])
    kinds: dict[str, int] = defaultdict(int)
    for i, v in enumerate(ds.videos):
        row = per[v.label]
        row[0] += 1
        row[1] += ds.n_frames(i)
        row[2].add(v.group)
        kinds[v.kind] += 1
    lines = [f"dataset {ds.root}", f"{'class':<16}{'videos':>8}{'frames':>10}{'groups':>8}"]
    for label in sorted(per):
        n_videos, n_frames, groups = per[label]
        lines.append(f"{label:<16}{n_videos:>8}{n_frames:>10,}{len(groups):>8}")
    s = ds.summary()
    lines.append(f"{'total':<16}{s['videos']:>8}{s['frames']:>10,}{s['groups']:>8}")
    lines.append("kinds: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
    lines.append(f"unreadable: {len(ds.unreadable)}")
    lines += [f"  {reason}" for _, reason in ds.unreadable]
    if ds.refused:
        lines.append(f"refused (outside the dataset folder, not read): {len(ds.refused)}")
        lines += [f"  {reason}" for _, reason in ds.refused]
    return "\n".join(lines)


def cmd_data_synth(args: argparse.Namespace) -> int:
    """``hico data synth --out DIR``: write the synthetic sample set."""
    from hico.data.synth import write_dataset

    out = write_dataset(
        args.out, args.videos_per_class, args.frames, args.size, seed=args.seed, overwrite=args.overwrite
    )
    print(f"wrote {out}")
    return 0
