"""``hico demo``: the end-to-end demo on data_samples/ (scan, pairs, augmentations)."""

from __future__ import annotations

import argparse
from pathlib import Path

from hico.paths import PROJECT_ROOT, SAMPLES


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``hico demo`` to the ``hico`` sub-commands."""
    demo = sub.add_parser("demo", help="end-to-end demo on data_samples/: scan, pairs, augmentations")
    demo.add_argument("--data", type=Path, default=SAMPLES)
    demo.add_argument("--out", type=Path, default=PROJECT_ROOT / "runs" / "demo")
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """``hico demo``: scan the sample data, draw HiCo and USCL pairs, augment them, save a picture."""
    from hico.cli.data import format_scan_table, load_data
    from hico.demo import run_demo

    ds = load_data(args.data, 128, None, no_cache=True, progress=True)
    print(format_scan_table(ds))
    png = run_demo(ds, args.out)
    print(f"pairs and their augmentations: {png}")
    return 0
