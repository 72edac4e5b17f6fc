"""Pool several datasets into one folder for self-supervised pretraining without their labels.

    python bench/pool_videos.py DST SRC [SRC ...]

Every video of every SRC goes to ``DST/<SRC name>/`` (its files hard-linked when DST is on the same file system,
copied otherwise), and ``DST/index.csv`` lists them with the class ``<SRC name>`` (so no method can learn a
source's labels from it: pretrain with ``--set data.label_rate=0``), their patient groups (a group name that an
earlier source already used becomes ``<SRC name>:<group>``, so two sources' patients never merge), and their video
ids unchanged, so that ``hico study`` can report which evaluation videos a pretraining saw. The README's second
COVID-BLUES -> POCUS study pretrains on such a pool.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
from pathlib import Path

from hico.data import scan
from hico.errors import UserError
from hico.io import atomic_write

INDEX_COLUMNS = ("file", "video_id", "class", "split_group")


def link(src: Path, dst: Path) -> None:
    """``dst`` becomes a hard link to ``src``, or a copy where linking is not possible."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def pool(dst: Path, sources: list[Path]) -> int:
    """Pool ``sources`` into ``dst`` (see the module docstring); returns the number of videos. Every source is
    scanned and checked before the first file is linked, so a refused pool leaves nothing behind."""
    if dst.exists() and any(dst.iterdir()):
        raise UserError(f"{dst} is not empty: pool into a new folder")
    names = [s.resolve().name for s in sources]
    if len(set(names)) < len(names):
        raise UserError(f"two sources have the same folder name ({', '.join(names)}): rename one")
    datasets, seen = [scan(source, cache_dir=None) for source in sources], {}
    for source, data in zip(sources, datasets, strict=True):
        for video in data.videos:
            if video.video_id in seen:
                raise UserError(f"video id {video.video_id!r} is in both {seen[video.video_id]} and {source}")
            seen[video.video_id] = source
    rows, groups = [], set()
    for name, data in zip(names, datasets, strict=True):
        root = data.root.resolve()
        own = {v.group for v in data.videos}
        taken, groups = own & groups, groups | own  # taken: patient names an earlier source used
        for video in data.videos:
            group = f"{name}:{video.group}" if video.group in taken else video.group
            for file in video.files:
                relative = Path(name) / Path(file).resolve().relative_to(root)
                link(Path(file), dst / relative)
                rows.append((relative.as_posix(), video.video_id, name, group))
    atomic_write(dst / "index.csv", lambda f: csv.writer(f, lineterminator="\n").writerows([INDEX_COLUMNS, *rows]))
    return len(seen)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dst", type=Path, help="new folder for the pool")
    p.add_argument("sources", type=Path, nargs="+", help="dataset folders (any layout hico reads)")
    args = p.parse_args(argv)
    try:
        n = pool(args.dst, args.sources)
    except UserError as e:
        print(f"pool_videos: error: {e}", file=sys.stderr)
        return 2
    print(f"pooled {n} videos of {len(args.sources)} datasets into {args.dst} (index.csv: class = source name)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
